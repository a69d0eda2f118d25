//! The `tandem` binary: parses the command line, sets up logging and hands over to
//! the library.

fn main() -> std::process::ExitCode {
    tandem::cli::main()
}

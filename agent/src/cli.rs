//! The command line.

use std::process::ExitCode;

/// Parses the command line, runs the command and maps its outcome to an exit code.
#[must_use]
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}

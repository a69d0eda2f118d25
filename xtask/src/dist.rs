//! `cargo xtask dist`: the man pages and the shell completions, generated from the
//! command line's clap definitions.
//!
//! The definitions are `agent/src/cli/args.rs`, compiled here as a module of xtask
//! (it depends on clap and std only): the agent binary carries no man page generator
//! (only `tandem completions`), and xtask does not have to build the agent (eBPF
//! objects, QUIC, ...) to run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

// Compiled twice (here and in the agent): xtask only builds the `Command` from the
// definitions, so their fields are never read here, and their `pub` is meant for
// the agent's crate.
#[allow(
    dead_code,
    unreachable_pub,
    reason = "the agent's CLI definitions, of which xtask only uses the clap Command"
)]
#[path = "../../agent/src/cli/args.rs"]
mod args;

/// The clap command of the `tandem` binary, as `tandem --help` sees it.
fn command() -> clap::Command {
    args::Cli::command()
}

/// Writes the completions to `out/completions` and the man pages to
/// `out/man/man1` (where man(1) looks below a MANPATH entry), replacing what an
/// earlier run left there. Returns the directory of the man pages (`tandem.1`
/// and one page per subcommand, `tandem-config-check.1`, ...).
pub(crate) fn dist(out: &Path) -> anyhow::Result<PathBuf> {
    let completions = out.join("completions");
    let man = out.join("man/man1");
    for dir in [&completions, &man] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = command();
        let path = clap_complete::generate_to(shell, &mut cmd, "tandem", &completions)
            .with_context(|| format!("cannot write the {shell} completions"))?;
        eprintln!("wrote {}", path.display());
    }
    clap_mangen::generate_to(command(), &man)
        .with_context(|| format!("cannot write the man pages to {}", man.display()))?;
    eprintln!("wrote the man pages to {}", man.display());
    Ok(man)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definitions_are_consistent() {
        // clap's own checks (conflicting names, bad defaults), which otherwise run
        // only when the binary parses its arguments in a debug build.
        command().debug_assert();
    }

    #[test]
    fn the_man_page_names_every_command() {
        let mut page = Vec::new();
        clap_mangen::Man::new(command())
            .render(&mut page)
            .expect("render");
        let page = String::from_utf8_lossy(&page);
        for sub in [
            "run", "status", "swap", "prim", "second", "config", "keygen",
        ] {
            assert!(page.contains(sub), "{sub} is missing from the man page");
        }
        // The summary is the binary's, not xtask's (a bare `about` would take the
        // description of the crate that compiles the definitions).
        assert!(page.contains("synchronous file replication"), "{page}");
    }
}

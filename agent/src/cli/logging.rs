//! Where the logs go: the systemd journal, with every event's fields as journal
//! fields, when standard error is connected to it; otherwise formatted lines on
//! standard error. `TANDEM_LOG` (an `EnvFilter` directive such as
//! `tandem=debug`) overrides the level.
//!
//! systemd says that standard error goes to the journal by setting
//! `JOURNAL_STREAM` to its device and inode; a child whose standard error was
//! redirected still inherits the variable, hence the comparison with what
//! standard error really is (systemd.exec(5) recommends exactly this check).

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// The prefix of the journal fields made from an event's fields: a transition's
/// `from`, `to` and `reason` become `TANDEM_FROM`, `TANDEM_TO` and
/// `TANDEM_REASON` (`journalctl TANDEM_TO=ALONE` finds every takeover).
const FIELD_PREFIX: &str = "TANDEM";

/// Installs the global subscriber; `default` is the level without `TANDEM_LOG`.
pub(super) fn init(default: &str) {
    let filter = EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let journal = stderr_is_journal()
        .then(tracing_journald::layer)
        // No journald socket (a container without systemd): lines on stderr.
        .and_then(Result::ok)
        .map(|layer| {
            layer
                .with_syslog_identifier("tandem".to_owned())
                .with_field_prefix(Some(FIELD_PREFIX.to_owned()))
        });
    let registry = tracing_subscriber::registry().with(filter);
    match journal {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
}

/// Whether standard error is the journal stream systemd gave this process.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    journal_stream_matches(&value.to_string_lossy(), stderr.dev(), stderr.ino())
}

/// `JOURNAL_STREAM` is `DEVICE:INODE`, both in decimal.
fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        .is_some_and(|(d, i)| d == dev && i == ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_stream_is_recognised_only_when_it_names_stderr() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 12346));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("8", 8, 12345));
        assert!(!journal_stream_matches("x:y", 8, 12345));
        assert!(!journal_stream_matches("", 0, 0));
    }
}

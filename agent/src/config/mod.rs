//! The agent's configuration file (`tandem run -c FILE`): YAML read with
//! serde-saphyr into raw structs (unknown keys rejected), then validated into a
//! typed [`Config`]. Every problem is reported at once, each with its file, line,
//! column and key path; docs/configuration.md describes every key.

mod duration;
mod error;
mod host;
mod locate;
mod raw;
mod types;
mod validate;

use std::path::Path;

pub use self::{
    duration::{DurationError, format_duration, parse_duration},
    error::{ConfigError, ConfigErrors},
    host::{CheckOutcome, Host, HostReport, check_file},
    types::*,
};

/// Every key of the schema, as it is written in docs/configuration.md; items of a
/// list are written `list[].key`. Kept next to the raw structs' fields by the
/// tests, which check that the full examples use exactly these keys.
pub const KEYS: &[&str] = &[
    "node",
    "listen",
    "identity",
    "identity.certificate",
    "identity.key",
    "peer",
    "peer.name",
    "peer.address",
    "peer.certificate",
    "peer.fingerprint",
    "state_dir",
    "control_socket",
    "role",
    "replicated",
    "replicated[].name",
    "replicated[].path",
    "heartbeat",
    "heartbeat.interval",
    "heartbeat.timeout",
    "heartbeat.secret_file",
    "heartbeat.nice",
    "heartbeat.networks",
    "heartbeat.networks[].name",
    "heartbeat.networks[].local",
    "heartbeat.networks[].peer",
    "resync",
    "resync.block_size",
    "application",
    "application.start",
    "application.stop",
    "application.timeout",
    "application.max_restarts",
    "application.restart_window",
    "application.checkers",
    "application.checkers[].name",
    "application.checkers[].tcp",
    "application.checkers[].command",
    "application.checkers[].process",
    "application.checkers[].docker",
    "application.checkers[].docker_socket",
    "application.checkers[].interval",
    "application.checkers[].timeout",
    "application.checkers[].failures",
    "application.checkers[].action",
    "application.checkers[].scope",
    "vip",
    "vip.address",
    "vip.interface",
    "vip.announce_count",
    "vip.announce_interval",
    "vip.refresh",
    "vip.probe_wait",
    "failover",
    "failover.preferred",
    "failover.boot_wait",
    "failover.witnesses",
    "metrics",
    "metrics.listen",
    "console",
    "console.listen",
    "console.password_hash",
    "console.token_file",
    "console.test_hooks",
];

/// The largest configuration file read; a configuration is a few hundred bytes.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

// === impl Config ===

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let unreadable = |message: String| {
            ConfigErrors(vec![ConfigError::unplaced(path.to_path_buf(), "", message)])
        };
        let meta = std::fs::metadata(path).map_err(|e| unreadable(format!("cannot read: {e}")))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(unreadable(format!(
                "is {} bytes; a configuration file is at most {MAX_FILE_BYTES}",
                meta.len()
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| unreadable(format!("cannot read: {e}")))?;
        Self::parse(&text, path)
    }

    /// Validates configuration `text`; `origin` names it in messages and is the
    /// directory relative certificate and key paths are taken from.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigErrors> {
        let options = serde_saphyr::options! {
            with_snippet: false,
        };
        // An empty document is an empty mapping: every required key is then
        // reported as missing rather than as "unexpected end of input".
        let raw: raw::RawConfig = if text.trim().is_empty() {
            raw::RawConfig::default()
        } else {
            serde_saphyr::from_str_with_options(text, options)
                .map_err(|e| ConfigErrors(vec![parse_error(&e, text, origin)]))?
        };
        validate::validate(raw, text, origin)
    }
}

/// A syntax or shape error from the YAML reader, placed at its line and column
/// with the key path recovered from the text.
fn parse_error(e: &serde_saphyr::Error, text: &str, origin: &Path) -> ConfigError {
    use serde_saphyr::MessageFormatter;
    let bare = e.without_snippet();
    let message = serde_saphyr::DefaultMessageFormatter.format_message(bare);
    // The message may quote the file (an unknown key's name); keep it on one line.
    let message: String = message
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    let mut err = ConfigError::unplaced(origin.to_path_buf(), "", message);
    if let Some(loc) = bare.location().filter(|l| l.line() > 0) {
        err.line = Some(loc.line());
        err.column = Some(loc.column());
        err.key = locate::key_path_at(text, loc.line(), loc.column());
    }
    err
}

#[cfg(test)]
mod tests;

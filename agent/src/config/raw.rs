//! The configuration file as YAML spells it: every key optional and every scalar
//! a string with its position, so that validation (in `validate`) can report all
//! missing and malformed values at once, each with its line and column. Unknown
//! keys are rejected by serde itself (`deny_unknown_fields`), since a misspelt
//! optional key would otherwise silently fall back to its default.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A scalar and where it was written.
pub(super) type Text = Spanned<String>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) node: Option<Text>,
    pub(super) listen: Option<Text>,
    pub(super) identity: Option<Spanned<RawIdentity>>,
    pub(super) peer: Option<Spanned<RawPeer>>,
    pub(super) state_dir: Option<Text>,
    pub(super) control_socket: Option<Text>,
    pub(super) role: Option<Text>,
    pub(super) replicated: Option<Spanned<Vec<Spanned<RawReplicated>>>>,
    pub(super) heartbeat: Option<Spanned<RawHeartbeat>>,
    pub(super) resync: Option<Spanned<RawResync>>,
    pub(super) application: Option<Spanned<RawApplication>>,
    pub(super) vip: Option<Spanned<RawVip>>,
    pub(super) failover: Option<Spanned<RawFailover>>,
    pub(super) metrics: Option<Spanned<RawMetrics>>,
    pub(super) console: Option<Spanned<RawConsole>>,
}

/// `identity:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) certificate: Option<Text>,
    pub(super) key: Option<Text>,
}

/// `peer:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) name: Option<Text>,
    pub(super) address: Option<Text>,
    pub(super) certificate: Option<Text>,
    pub(super) fingerprint: Option<Text>,
}

/// One item of `replicated:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplicated {
    pub(super) name: Option<Text>,
    pub(super) path: Option<Text>,
}

/// `heartbeat:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeartbeat {
    pub(super) interval: Option<Text>,
    pub(super) timeout: Option<Text>,
    pub(super) secret_file: Option<Text>,
    pub(super) networks: Option<Spanned<Vec<Spanned<RawHeartbeatNetwork>>>>,
    pub(super) nice: Option<Text>,
}

/// One item of `heartbeat.networks:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeartbeatNetwork {
    pub(super) name: Option<Text>,
    pub(super) local: Option<Text>,
    pub(super) peer: Option<Text>,
}

/// `resync:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResync {
    pub(super) block_size: Option<Text>,
}

/// `application:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApplication {
    pub(super) start: Option<Text>,
    pub(super) stop: Option<Text>,
    pub(super) timeout: Option<Text>,
    pub(super) max_restarts: Option<Text>,
    pub(super) restart_window: Option<Text>,
    pub(super) checkers: Option<Spanned<Vec<Spanned<RawChecker>>>>,
}

/// One item of `application.checkers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChecker {
    pub(super) name: Option<Text>,
    pub(super) tcp: Option<Text>,
    pub(super) command: Option<Text>,
    pub(super) process: Option<Text>,
    // Read also without the `docker` feature, so that such a binary names the
    // missing feature instead of calling the key unknown.
    pub(super) docker: Option<Text>,
    pub(super) docker_socket: Option<Text>,
    pub(super) interval: Option<Text>,
    pub(super) timeout: Option<Text>,
    pub(super) failures: Option<Text>,
    pub(super) action: Option<Text>,
    pub(super) scope: Option<Text>,
}

/// `vip:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVip {
    pub(super) address: Option<Text>,
    pub(super) interface: Option<Text>,
    pub(super) announce_count: Option<Text>,
    pub(super) announce_interval: Option<Text>,
    pub(super) refresh: Option<Text>,
    pub(super) probe_wait: Option<Text>,
}

/// `failover:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFailover {
    pub(super) preferred: Option<Text>,
    pub(super) boot_wait: Option<Text>,
    pub(super) witnesses: Option<Spanned<Vec<Text>>>,
}

/// `metrics:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Text>,
}

/// `console:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    pub(super) listen: Option<Text>,
    pub(super) password_hash: Option<Text>,
    pub(super) token_file: Option<Text>,
    pub(super) test_hooks: Option<Text>,
}

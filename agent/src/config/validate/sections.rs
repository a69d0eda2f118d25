//! Checks of the list and timing sections: replicated directories (names, nesting),
//! heartbeat timing, resync, application commands and the metrics endpoint;
//! shared checks of durations and counts.

use super::*;

impl Validator<'_> {
    /// At least one directory; unique names; absolute paths that neither equal nor
    /// contain each other (a change under both would be replicated twice).
    pub(super) fn replicated(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<RawReplicated>>>>,
    ) -> Option<Vec<Replicated>> {
        let Some(raw) = raw else {
            self.error(
                "replicated",
                None,
                "is required: list at least one directory",
            );
            return None;
        };
        if raw.value.is_empty() {
            self.error(
                "replicated",
                Some(raw.referenced),
                "list at least one directory",
            );
            return None;
        }
        // Valid names and paths seen so far, with their item index, so that each
        // later item is compared with every earlier one even when some are invalid.
        let mut names: Vec<(usize, String)> = Vec::new();
        let mut paths: Vec<(usize, PathBuf)> = Vec::new();
        let mut out = Vec::new();
        for (i, item) in raw.value.iter().enumerate() {
            let at = Some(item.referenced);
            let key = |field: &str| format!("replicated[{i}].{field}");
            let name = self
                .required(item.value.name.as_ref(), &key("name"), at)
                .and_then(|t| self.replicated_name(t, &key("name"), &names));
            let path = self
                .required(item.value.path.as_ref(), &key("path"), at)
                .and_then(|t| {
                    let path = self.absolute_path(t, &key("path"))?;
                    self.not_nested(t, &key("path"), &path, &paths)?;
                    Some(path)
                });
            if let Some(name) = &name {
                names.push((i, name.clone()));
            }
            if let Some(path) = &path {
                paths.push((i, path.clone()));
            }
            out.push(name.zip(path).map(|(name, path)| Replicated { name, path }));
        }
        out.into_iter().collect()
    }

    fn replicated_name(
        &mut self,
        t: &Text,
        key: &str,
        earlier: &[(usize, String)],
    ) -> Option<String> {
        let ok = !t.value.is_empty()
            && t.value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            self.error(
                key,
                Some(t.referenced),
                format!(
                    "`{}` is not a directory name: use a-z, A-Z, 0-9, - and _",
                    t.value.escape_debug()
                ),
            );
            return None;
        }
        if let Some((j, _)) = earlier.iter().find(|(_, name)| *name == t.value) {
            self.error(
                key,
                Some(t.referenced),
                format!("`{}` is already the name of replicated[{j}]", t.value),
            );
            return None;
        }
        Some(t.value.clone())
    }

    fn not_nested(
        &mut self,
        t: &Text,
        key: &str,
        path: &Path,
        earlier: &[(usize, PathBuf)],
    ) -> Option<()> {
        for (j, other) in earlier {
            let relation = if other == path {
                "is the same directory as"
            } else if path.starts_with(other) {
                "is inside"
            } else if other.starts_with(path) {
                "contains"
            } else {
                continue;
            };
            self.error(
                key,
                Some(t.referenced),
                format!(
                    "`{}` {relation} replicated[{j}] (`{}`)",
                    path.display(),
                    other.display()
                ),
            );
            return None;
        }
        Some(())
    }

    /// The agent's own files must not be replicated: they differ per node, and the
    /// state directory records what replication did. `or_contains` also rejects a
    /// path that contains a replicated directory (right for a directory, not for a
    /// socket file).
    pub(super) fn outside_replicated(
        &mut self,
        raw: Option<&Text>,
        path: Option<&Path>,
        key: &str,
        replicated: &[Replicated],
        or_contains: bool,
    ) {
        let Some(path) = path else { return };
        for (j, r) in replicated.iter().enumerate() {
            let relation = if path.starts_with(&r.path) {
                "is inside"
            } else if or_contains && r.path.starts_with(path) {
                "contains"
            } else {
                continue;
            };
            self.error(
                key,
                raw.map(|t| t.referenced),
                format!(
                    "`{}` {relation} replicated[{j}] (`{}`); the agent's own files must not be replicated",
                    path.display(),
                    r.path.display()
                ),
            );
        }
    }

    /// A duration longer than 0.
    pub(super) fn duration(&mut self, t: &Text, key: &str) -> Option<Duration> {
        match parse_duration(&t.value) {
            Ok(d) if d.is_zero() => {
                self.error(key, Some(t.referenced), "must be longer than 0");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(key, Some(t.referenced), e.to_string());
                None
            }
        }
    }

    /// An optional duration, `default` when not given.
    pub(super) fn duration_or(
        &mut self,
        t: Option<&Text>,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        t.map_or(Some(default), |t| self.duration(t, key))
    }

    /// A whole number in `range`.
    pub(super) fn count(&mut self, t: &Text, key: &str, range: RangeInclusive<u32>) -> Option<u32> {
        match t.value.trim().parse::<u32>() {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                let expected = if *range.end() == u32::MAX {
                    format!("a whole number, at least {}", range.start())
                } else {
                    format!("a whole number from {} to {}", range.start(), range.end())
                };
                self.error(
                    key,
                    Some(t.referenced),
                    format!("`{}` must be {expected}", t.value.escape_debug()),
                );
                None
            }
        }
    }

    /// Timing, secret and networks; `ends` gives the default network.
    pub(super) fn heartbeat(
        &mut self,
        raw: Option<&Spanned<RawHeartbeat>>,
        ends: Ends<'_>,
    ) -> Option<Heartbeat> {
        let raw = raw.map(|h| &h.value);
        let interval = self.duration_or(
            raw.and_then(|h| h.interval.as_ref()),
            "heartbeat.interval",
            DEFAULT_HEARTBEAT_INTERVAL,
        );
        let timeout_text = raw.and_then(|h| h.timeout.as_ref());
        let timeout =
            self.duration_or(timeout_text, "heartbeat.timeout", DEFAULT_HEARTBEAT_TIMEOUT);
        let secret_file = match raw.and_then(|h| h.secret_file.as_ref()) {
            Some(t) => self.secret_file(t).map(Some),
            None => Some(None),
        };
        let networks = self.heartbeat_networks(raw.and_then(|h| h.networks.as_ref()), ends);
        let nice = match raw.and_then(|h| h.nice.as_ref()) {
            Some(t) => self.nice(t),
            None => Some(DEFAULT_NICE),
        };
        let (interval, timeout) = (interval?, timeout?);
        // Three heartbeats may be lost before the peer is declared gone, so a
        // single dropped packet never triggers a failover.
        if interval.checked_mul(3).is_none_or(|three| timeout <= three) {
            self.error(
                "heartbeat.timeout",
                timeout_text.map(|t| t.referenced),
                format!(
                    "{} must be more than 3 x heartbeat.interval ({})",
                    format_duration(timeout),
                    format_duration(interval)
                ),
            );
            return None;
        }
        Some(Heartbeat {
            interval,
            timeout,
            networks: networks?,
            secret_file: secret_file?,
            nice: nice?,
        })
    }

    /// A nice value, -20 (most favoured) to 19.
    fn nice(&mut self, t: &Text) -> Option<i32> {
        match t.value.trim().parse::<i32>() {
            Ok(n) if (-20..=19).contains(&n) => Some(n),
            _ => {
                self.error(
                    "heartbeat.nice",
                    Some(t.referenced),
                    format!(
                        "`{}` must be a whole number from -20 to 19",
                        t.value.escape_debug()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn resync(&mut self, raw: Option<&RawResync>) -> Option<Resync> {
        let Some(t) = raw.and_then(|r| r.block_size.as_ref()) else {
            return Some(Resync {
                block_size: DEFAULT_BLOCK_SIZE,
            });
        };
        let size = t.value.trim().parse::<u64>().ok();
        match size {
            Some(n) if n.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&n) => {
                u32::try_from(n)
                    .ok()
                    .map(|block_size| Resync { block_size })
            }
            _ => {
                self.error(
                    "resync.block_size",
                    Some(t.referenced),
                    format!(
                        "`{}` must be a number of bytes, a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}",
                        t.value.escape_debug()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn application(
        &mut self,
        raw: &RawApplication,
        at: Location,
    ) -> Option<Application> {
        let command = |c: &mut Self, t: Option<&Text>, key: &str| {
            let t = c.required(t, key, Some(at))?;
            c.command(t, key)
        };
        let start = command(self, raw.start.as_ref(), "application.start");
        let stop = command(self, raw.stop.as_ref(), "application.stop");
        let timeout = self.duration_or(
            raw.timeout.as_ref(),
            "application.timeout",
            DEFAULT_APPLICATION_TIMEOUT,
        );
        let max_restarts = raw
            .max_restarts
            .as_ref()
            .map_or(Some(DEFAULT_MAX_RESTARTS), |t| {
                self.count(t, "application.max_restarts", 0..=u32::MAX)
            });
        let restart_window = self.duration_or(
            raw.restart_window.as_ref(),
            "application.restart_window",
            DEFAULT_RESTART_WINDOW,
        );
        let checkers = self.checkers(raw.checkers.as_ref());
        Some(Application {
            start: start?,
            stop: stop?,
            timeout: timeout?,
            max_restarts: max_restarts?,
            restart_window: restart_window?,
            checkers: checkers?,
        })
    }

    /// The Prometheus endpoint: given only to turn it on, so its address is
    /// required. Any address is allowed (a monitoring network may need one);
    /// the documentation says why loopback is the safe choice.
    pub(super) fn metrics(&mut self, raw: &RawMetrics, at: Location) -> Option<Metrics> {
        let listen = self
            .required(raw.listen.as_ref(), "metrics.listen", Some(at))
            .and_then(|t| self.socket_addr(t, "metrics.listen", true))?;
        Some(Metrics { listen })
    }

    /// A shell command: anything but blank.
    pub(super) fn command(&mut self, t: &Text, key: &str) -> Option<String> {
        if t.value.trim().is_empty() {
            self.error(key, Some(t.referenced), "must not be empty");
            return None;
        }
        Some(t.value.clone())
    }
}

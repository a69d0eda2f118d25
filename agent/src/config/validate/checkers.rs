//! Checks of `application.checkers`: unique names, exactly one kind each, their
//! timing, and a scope with an action that makes sense for it. A `docker` checker
//! is read in every build; a binary built without the `docker` feature rejects it
//! with one error naming the feature.

use super::*;

/// The longest process name the kernel keeps (`comm`, 16 bytes with the NUL).
const MAX_COMM: usize = 15;
/// The longest container name accepted. Docker sets no limit of its own; this one
/// only keeps the request line short, and real names are far shorter.
#[cfg(feature = "docker")]
const MAX_CONTAINER_NAME: usize = 255;

impl Validator<'_> {
    /// The list of checkers (empty when not given).
    pub(super) fn checkers(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<RawChecker>>>>,
    ) -> Option<Vec<Checker>> {
        let Some(raw) = raw else {
            return Some(Vec::new());
        };
        let mut names: Vec<(usize, String)> = Vec::new();
        let mut out = Vec::new();
        for (i, item) in raw.value.iter().enumerate() {
            let (name, checker) = self.checker(i, item, &names);
            if let Some(name) = name {
                names.push((i, name));
            }
            out.push(checker);
        }
        out.into_iter().collect()
    }

    /// One checker, and its name when that is valid (also when something else is
    /// not), so that later items are still compared with it.
    fn checker(
        &mut self,
        i: usize,
        item: &Spanned<RawChecker>,
        names: &[(usize, String)],
    ) -> (Option<String>, Option<Checker>) {
        let at = Some(item.referenced);
        let raw = &item.value;
        let key = |field: &str| format!("application.checkers[{i}].{field}");
        let name = self
            .required(raw.name.as_ref(), &key("name"), at)
            .and_then(|t| {
                let name = self.short_name(t, &key("name"), "checker name")?;
                self.unique_name(t, &key("name"), "application.checkers", names)?;
                Some(name)
            });
        let kind = self.checker_kind(i, item);
        let interval = self.duration_or(
            raw.interval.as_ref(),
            &key("interval"),
            DEFAULT_CHECK_INTERVAL,
        );
        let timeout = self.duration_or(
            raw.timeout.as_ref(),
            &key("timeout"),
            DEFAULT_CHECK_INTERVAL,
        );
        let failures = raw
            .failures
            .as_ref()
            .map_or(Some(DEFAULT_CHECK_FAILURES), |t| {
                self.count(t, &key("failures"), 1..=u32::MAX)
            });
        let scope = raw
            .scope
            .as_ref()
            .map_or(Some(CheckerScope::Application), |t| {
                self.checker_scope(t, &key("scope"))
            });
        let action = match (&raw.action, scope) {
            // A node checker cannot be repaired by restarting the application, so
            // its one action is the default.
            (None, Some(CheckerScope::Node)) => Some(CheckerAction::Failover),
            (None, _) => Some(CheckerAction::Restart),
            (Some(t), scope) => self
                .checker_action(t, &key("action"))
                .and_then(|a| self.action_for_scope(t, &key("action"), a, scope)),
        };
        let checker = (|| {
            Some(Checker {
                name: name.clone()?,
                scope: scope?,
                kind: kind?,
                interval: interval?,
                timeout: timeout?,
                failures: failures?,
                action: action?,
            })
        })();
        (name, checker)
    }

    /// Exactly one of `tcp`, `command`, `process` and `docker`; `docker_socket`
    /// only with `docker`.
    fn checker_kind(&mut self, i: usize, item: &Spanned<RawChecker>) -> Option<CheckerKind> {
        let raw = &item.value;
        let given: Vec<(&str, &Text)> = [
            ("tcp", raw.tcp.as_ref()),
            ("command", raw.command.as_ref()),
            ("process", raw.process.as_ref()),
            ("docker", raw.docker.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, t)| Some((k, t?)))
        .collect();
        let kind = self.one_kind(i, item, &given);
        if let Some(s) = &raw.docker_socket
            && raw.docker.is_none()
        {
            self.error(
                &format!("application.checkers[{i}].docker_socket"),
                Some(s.referenced),
                "is only for a `docker` checker",
            );
            return None;
        }
        kind
    }

    fn one_kind(
        &mut self,
        i: usize,
        item: &Spanned<RawChecker>,
        given: &[(&str, &Text)],
    ) -> Option<CheckerKind> {
        let key = |field: &str| format!("application.checkers[{i}].{field}");
        match given {
            [] => {
                self.error(
                    &format!("application.checkers[{i}]"),
                    Some(item.referenced),
                    "needs one of `tcp`, `command`, `process` or `docker` to say what it checks",
                );
                None
            }
            [("tcp", t)] => self
                .socket_addr(t, &key("tcp"), false)
                .map(CheckerKind::Tcp),
            [("command", t)] => self.command(t, &key("command")).map(CheckerKind::Command),
            [("docker", t)] => self.docker(t, item.value.docker_socket.as_ref(), &key),
            // `process`, the one key left.
            [(_, t)] => self
                .process_name(t, &key("process"))
                .map(CheckerKind::Process),
            [(first, _), (second, t), ..] => {
                self.error(
                    &key(second),
                    Some(t.referenced),
                    format!(
                        "a checker checks one thing: give only one of `tcp`, `command`, `process` and `docker` (this one also has `{first}`)"
                    ),
                );
                None
            }
        }
    }

    /// A Docker container's name or id and the daemon's socket.
    #[cfg(feature = "docker")]
    fn docker(
        &mut self,
        t: &Text,
        socket: Option<&Text>,
        key: &dyn Fn(&str) -> String,
    ) -> Option<CheckerKind> {
        let container = self.container_name(t, &key("docker"));
        let socket = match socket {
            Some(s) => self.socket_path(s, &key("docker_socket")),
            None => Some(PathBuf::from(crate::config::DEFAULT_DOCKER_SOCKET)),
        };
        Some(CheckerKind::Docker {
            container: container?,
            socket: socket?,
        })
    }

    /// Without the feature the file is still read, and the one error says why it
    /// cannot be used.
    #[cfg(not(feature = "docker"))]
    fn docker(
        &mut self,
        t: &Text,
        _socket: Option<&Text>,
        key: &dyn Fn(&str) -> String,
    ) -> Option<CheckerKind> {
        self.error(
            &key("docker"),
            Some(t.referenced),
            "this tandem binary was built without the `docker` feature, which `docker` checkers need",
        );
        None
    }

    /// A container name as Docker accepts one (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`),
    /// which includes full and abbreviated ids: nothing in it needs escaping in
    /// the API's URL path.
    #[cfg(feature = "docker")]
    fn container_name(&mut self, t: &Text, key: &str) -> Option<String> {
        let name = t.value.as_str();
        let ok = crate::config::is_container_name(name) && name.len() <= MAX_CONTAINER_NAME;
        if ok {
            Some(name.to_owned())
        } else {
            self.error(
                key,
                Some(t.referenced),
                format!(
                    "`{}` is not a container name or id: use 1 to {MAX_CONTAINER_NAME} of a-z, A-Z, 0-9, _, . and -, starting with a letter or digit",
                    name.escape_debug()
                ),
            );
            None
        }
    }

    /// A process name as the kernel keeps it (`comm`): 1 to 15 bytes.
    fn process_name(&mut self, t: &Text, key: &str) -> Option<String> {
        let name = t.value.as_str();
        if name.trim().is_empty() {
            self.error(key, Some(t.referenced), "must not be empty");
            return None;
        }
        if name.len() > MAX_COMM {
            let mut cut = MAX_COMM;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            self.error(
                key,
                Some(t.referenced),
                format!(
                    "`{}` is longer than the {MAX_COMM} bytes the kernel keeps of a process name; write its first {MAX_COMM}: `{}`",
                    name.escape_debug(),
                    name[..cut].escape_debug()
                ),
            );
            return None;
        }
        Some(name.to_owned())
    }

    fn checker_scope(&mut self, t: &Text, key: &str) -> Option<CheckerScope> {
        match t.value.as_str() {
            "application" => Some(CheckerScope::Application),
            "node" => Some(CheckerScope::Node),
            other => {
                self.error(
                    key,
                    Some(t.referenced),
                    format!(
                        "`{}` is not a scope: use application or node",
                        other.escape_debug()
                    ),
                );
                None
            }
        }
    }

    /// A node checker watches what the node needs, not the application: restarting
    /// the application would not repair it, so only `failover` is accepted.
    fn action_for_scope(
        &mut self,
        t: &Text,
        key: &str,
        action: CheckerAction,
        scope: Option<CheckerScope>,
    ) -> Option<CheckerAction> {
        if scope == Some(CheckerScope::Node) && action == CheckerAction::Restart {
            self.error(
                key,
                Some(t.referenced),
                "a node checker (`scope: node`) cannot restart the application, which would not repair the node: use failover or leave `action` out",
            );
            return None;
        }
        Some(action)
    }

    fn checker_action(&mut self, t: &Text, key: &str) -> Option<CheckerAction> {
        match t.value.as_str() {
            "restart" => Some(CheckerAction::Restart),
            "failover" => Some(CheckerAction::Failover),
            other => {
                self.error(
                    key,
                    Some(t.referenced),
                    format!(
                        "`{}` is not an action: use restart or failover",
                        other.escape_debug()
                    ),
                );
                None
            }
        }
    }
}

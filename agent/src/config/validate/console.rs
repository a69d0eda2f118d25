//! Checks of `console`: its address, and at least one credential that can be
//! used: a password hash that parses as an argon2 PHC string, or a token file
//! that is readable, not empty and not readable by every user.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::config::types::DEFAULT_CONSOLE_LISTEN;

/// The shortest token accepted: a token is compared, not hashed slowly, so it
/// must be too long to guess (`openssl rand -hex 32` writes 64 characters).
pub(crate) const MIN_TOKEN_CHARS: usize = 16;

impl Validator<'_> {
    pub(super) fn console(&mut self, raw: &RawConsole, at: Location) -> Option<Console> {
        let listen = raw
            .listen
            .as_ref()
            .map_or(Some(DEFAULT_CONSOLE_LISTEN), |t| {
                self.socket_addr(t, "console.listen", true)
            });
        let password_hash = match &raw.password_hash {
            Some(t) => self.password_hash(t).map(Some),
            None => Some(None),
        };
        let token_file = match &raw.token_file {
            Some(t) => self.token_file(t).map(Some),
            None => Some(None),
        };
        let test_hooks = raw
            .test_hooks
            .as_ref()
            .map_or(Some(false), |t| self.boolean(t, "console.test_hooks"));
        if raw.password_hash.is_none() && raw.token_file.is_none() {
            self.error(
                "console",
                Some(at),
                "set `password_hash` (tandem console hash-password) or `token_file`: the console's actions need a credential",
            );
            return None;
        }
        Some(Console {
            listen: listen?,
            password_hash: password_hash?,
            token_file: token_file?,
            test_hooks: test_hooks?,
        })
    }

    fn password_hash(&mut self, t: &Text) -> Option<String> {
        let key = "console.password_hash";
        let value = t.value.trim();
        match argon2::PasswordHash::new(value) {
            Ok(h) if h.algorithm.as_str().starts_with("argon2") && h.hash.is_some() => {
                Some(value.to_string())
            }
            Ok(h) => {
                self.error(
                    key,
                    Some(t.referenced),
                    format!(
                        "`{}` hashes are not supported: use an argon2 PHC string (tandem console hash-password)",
                        h.algorithm.as_str().escape_debug()
                    ),
                );
                None
            }
            Err(e) => {
                self.error(
                    key,
                    Some(t.referenced),
                    format!(
                        "is not a PHC string such as $argon2id$v=19$m=19456,t=2,p=1$SALT$HASH ({e}); make one with tandem console hash-password"
                    ),
                );
                None
            }
        }
    }

    fn token_file(&mut self, t: &Text) -> Option<PathBuf> {
        let key = "console.token_file";
        let path = self.readable_file(t, key)?;
        let problem = match (std::fs::metadata(&path), std::fs::read_to_string(&path)) {
            (Err(e), _) | (_, Err(e)) => Some(format!("cannot read `{}`: {e}", path.display())),
            (Ok(meta), _) if meta.permissions().mode() & 0o004 != 0 => Some(format!(
                "`{}` is readable by every user; chmod 600 it",
                path.display()
            )),
            (_, Ok(text)) if text.trim().chars().count() < MIN_TOKEN_CHARS => Some(format!(
                "`{}` must hold a token of at least {MIN_TOKEN_CHARS} characters (openssl rand -hex 32)",
                path.display()
            )),
            _ => None,
        };
        match problem {
            Some(message) => {
                self.error(key, Some(t.referenced), message);
                None
            }
            None => Some(path),
        }
    }

    /// `true` or `false`, as YAML 1.2 spells them.
    fn boolean(&mut self, t: &Text, key: &str) -> Option<bool> {
        match t.value.trim() {
            "true" => Some(true),
            "false" => Some(false),
            other => {
                self.error(
                    key,
                    Some(t.referenced),
                    format!("`{}` is not true or false", other.escape_debug()),
                );
                None
            }
        }
    }
}

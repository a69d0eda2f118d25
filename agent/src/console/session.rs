//! Browser sessions and their CSRF tokens.
//!
//! A login opens a session: a random 256-bit id sent as an `HttpOnly`,
//! `SameSite=Strict` cookie, and a second random 256-bit value, the CSRF token,
//! handed to the page's script in the login answer. Every state-changing request
//! made with the cookie must carry the token in the `X-CSRF-Token` header: a
//! page of another site can make the browser send the cookie (were `SameSite`
//! ever not honoured) but can neither read the token nor set the header on a
//! cross-site request without CORS, which the console never grants. Sessions
//! expire a fixed time after login; their number is capped so that a flood of
//! logins cannot grow the agent's memory.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use subtle::ConstantTimeEq;

/// How long a session lasts after login.
pub(super) const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// The most sessions kept; the oldest is dropped to make room.
pub(super) const MAX_SESSIONS: usize = 64;

/// The open sessions, by id.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    open: HashMap<String, Session>,
}

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
}

/// What a login hands out.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) id: String,
    pub(super) csrf: String,
}

// === impl Sessions ===

impl Sessions {
    /// Opens a session at `now`.
    pub(super) fn open(&mut self, now: Instant) -> Result<Opened, getrandom::Error> {
        self.open.retain(|_, s| s.expires > now);
        if self.open.len() >= MAX_SESSIONS {
            let oldest = self
                .open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                self.open.remove(&id);
            }
        }
        let id = random_hex()?;
        let csrf = random_hex()?;
        self.open.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        Ok(Opened { id, csrf })
    }

    /// The CSRF token of session `id` if it is open at `now`. The id is looked
    /// up in a hash map: a 256-bit random value cannot be found by timing.
    #[must_use]
    pub(super) fn csrf_of(&mut self, id: &str, now: Instant) -> Option<String> {
        match self.open.get(id) {
            Some(s) if s.expires > now => Some(s.csrf.clone()),
            Some(_) => {
                self.open.remove(id);
                None
            }
            None => None,
        }
    }

    /// Closes session `id` (logout).
    pub(super) fn close(&mut self, id: &str) {
        self.open.remove(id);
    }
}

/// Whether the presented CSRF token is the session's, compared in constant
/// time (lengths are public: every token is 64 hex digits).
#[must_use]
pub(super) fn csrf_matches(expected: &str, presented: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// 32 random bytes from the kernel, as 64 lowercase hex digits.
fn random_hex() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_its_own_csrf_token_until_it_expires() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let a = s.open(t0).expect("open");
        let b = s.open(t0).expect("open");
        assert_eq!(a.id.len(), 64);
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(s.csrf_of(&a.id, t0).as_deref(), Some(a.csrf.as_str()));
        assert_eq!(s.csrf_of("not-a-session", t0), None);
        let later = t0 + SESSION_LIFETIME;
        assert_eq!(s.csrf_of(&a.id, later), None);
        s.close(&b.id);
        assert_eq!(s.csrf_of(&b.id, t0), None);
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        let mut s = Sessions::default();
        let a = s.open(Instant::now()).expect("open");
        assert!(csrf_matches(&a.csrf, &a.csrf));
        assert!(!csrf_matches(&a.csrf, &a.csrf[..63]));
        assert!(!csrf_matches(&a.csrf, ""));
        let mut flipped = a.csrf.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        assert!(!csrf_matches(
            &a.csrf,
            &String::from_utf8(flipped).expect("hex")
        ));
    }

    #[test]
    fn the_number_of_sessions_is_capped() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let first = s.open(t0).expect("open");
        for i in 1..=MAX_SESSIONS {
            s.open(t0 + Duration::from_secs(i as u64)).expect("open");
        }
        assert_eq!(s.open.len(), MAX_SESSIONS);
        assert_eq!(s.csrf_of(&first.id, t0), None, "the oldest made room");
    }
}

//! A simple limit on failed logins: after [`MAX_FAILURES`] failures from one
//! address within [`WINDOW`], that address may not try again until the window
//! ends. Argon2 already makes each guess cost tens of milliseconds; this keeps a
//! guesser to a handful of tries a minute. The table is bounded: when it is full
//! of live entries, new addresses are refused too (fail closed) until entries
//! expire; the bearer token still works meanwhile.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

pub(super) const MAX_FAILURES: u32 = 5;
pub(super) const WINDOW: Duration = Duration::from_secs(60);
/// The most addresses tracked at once.
pub(super) const MAX_TRACKED: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct LoginLimiter {
    failures: HashMap<IpAddr, Failures>,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    since: Instant,
}

// === impl LoginLimiter ===

impl LoginLimiter {
    /// Whether `ip` may try to log in at `now`.
    pub(super) fn allows(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.failures.get(&ip) {
            Some(f) if now.duration_since(f.since) >= WINDOW => {
                self.failures.remove(&ip);
                true
            }
            Some(f) => f.count < MAX_FAILURES,
            None => {
                if self.failures.len() >= MAX_TRACKED {
                    self.failures
                        .retain(|_, f| now.duration_since(f.since) < WINDOW);
                }
                self.failures.len() < MAX_TRACKED
            }
        }
    }

    /// Records a failed login from `ip` at `now`.
    pub(super) fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&ip) {
            return;
        }
        let f = self.failures.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
        });
        f.count = f.count.saturating_add(1);
    }

    /// Forgets `ip`'s failures after a successful login.
    pub(super) fn succeeded(&mut self, ip: IpAddr) {
        self.failures.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn too_many_failures_lock_an_address_for_the_window() {
        let mut l = LoginLimiter::default();
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        );
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(l.allows(a, t0));
            l.failed(a, t0);
        }
        assert!(!l.allows(a, t0 + Duration::from_secs(1)));
        assert!(l.allows(b, t0), "another address is not affected");
        assert!(l.allows(a, t0 + WINDOW), "the window ended");
    }

    #[test]
    fn a_success_clears_the_count() {
        let mut l = LoginLimiter::default();
        let a = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(a, t0);
        }
        l.succeeded(a);
        l.failed(a, t0);
        assert!(l.allows(a, t0));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..u32::try_from(MAX_TRACKED).expect("small") {
            l.failed(IpAddr::V4(Ipv4Addr::from(i)), t0);
        }
        let new = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert!(!l.allows(new, t0), "full of live entries: refused");
        assert!(l.allows(new, t0 + WINDOW), "expired entries make room");
    }
}

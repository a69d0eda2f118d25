//! Node checkers (`scope: node`): checks of what this node needs to run the
//! application, run from start-up to shutdown in every state, SECOND and WAIT
//! included, so that a node that could not run the application does not take it
//! over. Each reports its first result and then every change (crossing its failure
//! threshold, passing again) to the failover actor; the engine decides what the
//! result means in the node's state (see `failover::node_checks`).

use tokio::{sync::mpsc, task::JoinHandle};

use super::app::check_once;
use crate::{
    config::{Checker, CheckerScope},
    failover::Event,
    metrics::Metrics,
};

/// The running node checkers; dropping this stops them.
pub struct NodeCheckers {
    tasks: Vec<JoinHandle<()>>,
}

impl NodeCheckers {
    /// Starts every checker of `checkers` whose scope is the node; events go to the
    /// failover actor, failures are also counted in `metrics`.
    #[must_use]
    pub fn start(checkers: &[Checker], events: &mpsc::Sender<Event>, metrics: &Metrics) -> Self {
        let tasks = checkers
            .iter()
            .filter(|c| c.scope == CheckerScope::Node)
            .map(|c| {
                metrics.checker_known(&c.name);
                tokio::spawn(node_check_loop(c.clone(), events.clone(), metrics.clone()))
            })
            .collect();
        Self { tasks }
    }
}

impl Drop for NodeCheckers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Turns a checker's successive results into what the engine needs to hear: the
/// first result, then only changes. A failure counts once `threshold` checks in a
/// row failed, so that one slow answer does not make the node ineligible.
#[derive(Debug)]
struct Verdict {
    threshold: u32,
    failures: u32,
    /// What was last reported: `Some(true)` passing, `Some(false)` failing.
    reported: Option<bool>,
}

impl Verdict {
    fn new(threshold: u32) -> Self {
        Self {
            threshold,
            failures: 0,
            reported: None,
        }
    }

    /// Records one check; returns what to report, if anything changed.
    fn record(&mut self, ok: bool) -> Option<bool> {
        let now = if ok {
            self.failures = 0;
            true
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures < self.threshold {
                return None;
            }
            false
        };
        if self.reported == Some(now) {
            return None;
        }
        self.reported = Some(now);
        Some(now)
    }
}

async fn node_check_loop(c: Checker, events: mpsc::Sender<Event>, metrics: Metrics) {
    let mut verdict = Verdict::new(c.failures);
    let mut tick = tokio::time::interval(c.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = tokio::time::timeout(c.timeout, check_once(&c.kind))
            .await
            .unwrap_or(false);
        let was_failing = verdict.reported == Some(false);
        let ev = match verdict.record(ok) {
            None => continue,
            Some(true) => {
                if was_failing {
                    tracing::info!(checker = %c.name, "node checker passes again");
                }
                Event::NodeCheckerOk {
                    checker: c.name.clone(),
                }
            }
            Some(false) => {
                tracing::warn!(
                    checker = %c.name,
                    failures = c.failures,
                    "node checker failed: this node cannot run the application until it passes"
                );
                metrics.checker_failed(&c.name);
                Event::NodeCheckerFailed {
                    checker: c.name.clone(),
                }
            }
        };
        if events.send(ev).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{CheckerAction, CheckerKind};

    #[test]
    fn verdict_reports_the_first_result_then_changes_only() {
        let mut v = Verdict::new(3);
        assert_eq!(v.record(true), Some(true), "first result");
        assert_eq!(v.record(true), None);
        assert_eq!(v.record(false), None, "below the threshold");
        assert_eq!(v.record(false), None);
        assert_eq!(v.record(false), Some(false), "threshold crossed");
        assert_eq!(v.record(false), None, "still failing: nothing new");
        assert_eq!(v.record(true), Some(true), "recovery");
        assert_eq!(v.record(false), None, "a fresh count");
    }

    #[test]
    fn verdict_of_a_checker_failing_from_the_start() {
        let mut v = Verdict::new(2);
        assert_eq!(v.record(false), None, "no result before the threshold");
        assert_eq!(v.record(false), Some(false));
        let mut v = Verdict::new(1);
        assert_eq!(v.record(false), Some(false));
    }

    #[tokio::test]
    async fn node_checkers_run_without_the_application_and_report_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("ok");
        std::fs::write(&flag, b"").expect("write");
        let checker = |name: &str, scope| Checker {
            name: name.into(),
            scope,
            kind: CheckerKind::Command(format!("test -f {}", flag.display())),
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            failures: 2,
            action: CheckerAction::Failover,
        };
        let checkers = [
            checker("app", CheckerScope::Application),
            checker("mount", CheckerScope::Node),
        ];
        let (tx, mut rx) = mpsc::channel(8);
        let metrics = Metrics::new();
        let _c = NodeCheckers::start(&checkers, &tx, &metrics);
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("in time")
        };
        let ok = Some(Event::NodeCheckerOk {
            checker: "mount".into(),
        });
        assert_eq!(next().await, ok, "the first result, with no application");
        std::fs::remove_file(&flag).expect("remove");
        assert_eq!(
            next().await,
            Some(Event::NodeCheckerFailed {
                checker: "mount".into()
            })
        );
        std::fs::write(&flag, b"").expect("write");
        assert_eq!(
            next().await,
            ok,
            "recovery; the application's checker never runs"
        );
    }
}

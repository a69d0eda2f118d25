//! Tests of the metrics: their encoding, the paths that update them, the HTTP
//! endpoint and the Grafana dashboard.

use std::{
    io::{Read, Write},
    time::Duration,
};

use super::*;
use crate::status::{Network, Peer, Replication};

/// The family name a sample name belongs to: a counter's samples add `_total`.
fn family(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// The value of the sample written exactly as `series` (name and labels).
fn sample<'t>(text: &'t str, series: &str) -> Option<&'t str> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
    })
}

#[test]
fn every_family_is_encoded_with_help_type_and_unit() {
    // Families whose labels come from the configuration (networks, checkers)
    // are encoded once they have a series: give them one.
    let m = Metrics::new();
    m.checker_known("web");
    let status = Status {
        peer: Peer {
            networks: vec![Network {
                name: "lan".into(),
                up: true,
                rtt_us: Some(300),
            }],
            ..Peer::default()
        },
        ..Status::default()
    };
    let text = m.encode(&status);
    for name in NAMES {
        let f = family(name);
        assert!(
            text.contains(&format!("\n# HELP {f} ")) || text.starts_with(&format!("# HELP {f} ")),
            "no HELP for {f}:\n{text}"
        );
        assert!(text.contains(&format!("# TYPE {f} ")), "no TYPE for {f}");
        for unit in ["bytes", "seconds"] {
            if f.ends_with(&format!("_{unit}")) {
                assert!(
                    text.contains(&format!("# UNIT {f} {unit}\n")),
                    "no UNIT for {f}"
                );
            }
        }
    }
    let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(
        families,
        NAMES.len(),
        "a family is missing from NAMES:\n{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Series known in advance exist from the first scrape on.
    assert_eq!(sample(&text, "tandem_state{state=\"STOP\"}"), Some("1"));
    assert_eq!(
        sample(&text, "tandem_failovers_total{reason=\"peer_lost\"}"),
        Some("0")
    );
    assert_eq!(
        sample(&text, "tandem_capture_lost_events_total{source=\"kernel\"}"),
        Some("0")
    );
}

#[test]
fn gauges_are_refreshed_from_the_status() {
    let m = Metrics::new();
    let status = Status {
        state: State::Prim,
        peer: Peer {
            connected: true,
            networks: vec![
                Network {
                    name: "lan".into(),
                    up: true,
                    rtt_us: Some(1250),
                },
                Network {
                    name: "direct".into(),
                    up: true,
                    rtt_us: None,
                },
                Network {
                    name: "backup".into(),
                    up: false,
                    rtt_us: Some(900),
                },
            ],
            ..Peer::default()
        },
        replication: Replication {
            lag_bytes: 4096,
            lag_seconds: 0.25,
            resync_remaining_bytes: 1 << 20,
            ..Replication::default()
        },
        ..Status::default()
    };
    let text = m.encode(&status);
    assert_eq!(sample(&text, "tandem_state{state=\"PRIM\"}"), Some("1"));
    for other in ["STOP", "WAIT", "ALONE", "SECOND"] {
        let series = format!("tandem_state{{state=\"{other}\"}}");
        assert_eq!(sample(&text, &series), Some("0"), "{series}");
    }
    assert_eq!(sample(&text, "tandem_peer_up"), Some("1"));
    assert_eq!(sample(&text, "tandem_replication_lag_bytes"), Some("4096"));
    assert_eq!(
        sample(&text, "tandem_replication_lag_seconds"),
        Some("0.25")
    );
    assert_eq!(
        sample(&text, "tandem_resync_remaining_bytes"),
        Some("1048576")
    );
    assert_eq!(
        sample(&text, "tandem_heartbeat_rtt_seconds{network=\"lan\"}"),
        Some("0.00125")
    );
    // No measurement, or a network the peer is not heard on: no series.
    assert!(!text.contains("network=\"direct\""), "{text}");
    assert!(!text.contains("network=\"backup\""), "{text}");
    // A later scrape sees the new status, and a network without a measurement
    // any more loses its series.
    let text = m.encode(&Status::default());
    assert_eq!(sample(&text, "tandem_state{state=\"PRIM\"}"), Some("0"));
    assert_eq!(sample(&text, "tandem_peer_up"), Some("0"));
    assert!(!text.contains("network=\"lan\""), "{text}");
}

#[test]
fn counters_and_the_histogram_count_at_their_source() {
    let m = Metrics::new();
    m.replicated(Direction::Sent, 100);
    m.replicated(Direction::Sent, 50);
    m.replicated(Direction::Applied, 7);
    m.failover(FailoverReason::Swap);
    m.checker_known("db");
    m.checker_failed("web");
    m.checker_failed("web");
    let timer = m.barrier_timer();
    std::thread::sleep(Duration::from_millis(2));
    timer.finish();
    // Two engines in turn: each counts from 0, the metric goes on.
    let mut tally = m.capture_tally();
    let mut c = Counters {
        kernel_events: 10,
        fanotify_events: 3,
        lost_kernel_events: 1,
        ..Counters::default()
    };
    tally.publish(c);
    c.kernel_events = 15;
    c.overflows = 1;
    tally.publish(c);
    let mut tally = m.capture_tally();
    tally.publish(Counters {
        kernel_events: 5,
        ..Counters::default()
    });

    let text = m.encode(&Status::default());
    let expect = [
        ("tandem_replicated_bytes_total{direction=\"sent\"}", "150"),
        ("tandem_replicated_bytes_total{direction=\"applied\"}", "7"),
        ("tandem_failovers_total{reason=\"swap\"}", "1"),
        ("tandem_failovers_total{reason=\"admin\"}", "0"),
        ("tandem_checker_failures_total{checker=\"web\"}", "2"),
        ("tandem_checker_failures_total{checker=\"db\"}", "0"),
        ("tandem_capture_events_total{source=\"kernel\"}", "20"),
        ("tandem_capture_events_total{source=\"fanotify\"}", "3"),
        ("tandem_capture_lost_events_total{source=\"kernel\"}", "1"),
        ("tandem_capture_lost_events_total{source=\"fanotify\"}", "1"),
        ("tandem_barrier_wait_seconds_count", "1"),
        ("tandem_barrier_wait_seconds_bucket{le=\"+Inf\"}", "1"),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series}:\n{text}");
    }
    // The call waited at least the 2 ms slept, and the smallest bucket (100 µs)
    // does not hold it.
    let sum: f64 = sample(&text, "tandem_barrier_wait_seconds_sum")
        .and_then(|v| v.parse().ok())
        .expect("a sum");
    assert!(sum >= 0.002, "{sum}");
    let first = text
        .lines()
        .find_map(|l| l.strip_prefix("tandem_barrier_wait_seconds_bucket{le=\"0.0001\"} "));
    assert_eq!(first, Some("0"), "{text}");
}

/// Every metric is updated somewhere in the agent: a gauge through the status
/// field the runtime sets (copied at scrape time, tested above), a counter or the
/// histogram through the call at its source. Each row names the source file and
/// the code that must be in it; deleting the update fails this test.
#[test]
fn every_metric_is_updated_somewhere() {
    let failover = include_str!("../runtime/failover.rs");
    let primary = include_str!("../runtime/primary.rs");
    let secondary = include_str!("../runtime/secondary.rs");
    let role = include_str!("../runtime/role.rs");
    let app = include_str!("../runtime/app.rs");
    let capture = include_str!("../runtime/capture.rs");
    let rows: &[(&str, &str, &str, &[&str])] = &[
        (
            "tandem_state",
            "runtime/failover.rs",
            failover,
            &["s.state = to;"],
        ),
        (
            "tandem_peer_up",
            "runtime/failover.rs",
            failover,
            &["s.peer.connected = connected;"],
        ),
        (
            "tandem_replication_lag_bytes",
            "runtime/primary.rs",
            primary,
            &["s.replication.lag_bytes = lag;"],
        ),
        (
            "tandem_replication_lag_seconds",
            "runtime/primary.rs",
            primary,
            &[
                "s.replication.lag_seconds = lag_seconds;",
                "lag_clock.sent(",
            ],
        ),
        (
            "tandem_replicated_bytes_total",
            "runtime/primary.rs",
            primary,
            &["ctx.metrics.replicated(Direction::Sent, data);"],
        ),
        (
            "tandem_replicated_bytes_total",
            "runtime/secondary.rs",
            secondary,
            &["ctx.metrics.replicated(Direction::Applied, bytes);"],
        ),
        (
            "tandem_barrier_wait_seconds",
            "runtime/role.rs",
            role,
            &["self.metrics.barrier_timer()", "timer.finish();"],
        ),
        (
            "tandem_barrier_released_unprotected_total",
            "runtime/primary.rs",
            primary,
            &["ctx.metrics.released_unprotected(fresh);"],
        ),
        (
            "tandem_barrier_unheld_sync_opens_total",
            "runtime/primary.rs",
            primary,
            &["ctx.metrics.unheld_sync_opens(fresh_unheld);"],
        ),
        (
            "tandem_resync_remaining_bytes",
            "runtime/primary.rs",
            primary,
            &["s.replication.resync_remaining_bytes ="],
        ),
        (
            "tandem_heartbeat_rtt_seconds",
            "runtime/failover.rs",
            failover,
            &["n.rtt_us = Some(us);"],
        ),
        (
            "tandem_failovers_total",
            "runtime/failover.rs",
            failover,
            &["self.ctx.metrics.failover(reason);"],
        ),
        (
            "tandem_checker_failures_total",
            "runtime/app.rs",
            app,
            &["metrics.checker_failed(&c.name);"],
        ),
        (
            "tandem_capture_events_total",
            "runtime/capture.rs",
            capture,
            &["tally.publish(engine.counters());"],
        ),
        (
            "tandem_capture_lost_events_total",
            "runtime/capture.rs",
            capture,
            &["tally.publish(engine.counters());"],
        ),
    ];
    for (name, file, text, needles) in rows {
        for needle in *needles {
            assert!(
                text.contains(needle),
                "{name}: {file} no longer has `{needle}`"
            );
        }
    }
    for name in NAMES {
        assert!(
            rows.iter().any(|(n, ..)| n == name),
            "{name} has no updating code listed"
        );
    }
}

#[test]
fn failover_reasons() {
    use FailoverReason as R;
    use State::{Alone, Prim, Second, Stop, Wait};
    let cases = [
        (Second, Alone, false, None, Some(R::PeerLost)),
        (Second, Prim, false, Some(Second), Some(R::Swap)),
        (Second, Alone, false, Some(Wait), Some(R::PeerStopped)),
        (Second, Alone, false, Some(Stop), Some(R::PeerStopped)),
        (Wait, Alone, false, None, Some(R::Start)),
        (Wait, Prim, false, Some(Second), Some(R::Start)),
        (Wait, Alone, true, None, Some(R::Admin)),
        (Second, Alone, true, None, Some(R::Admin)),
        // Not failovers: the node already ran the application, or stops.
        (Alone, Prim, false, Some(Second), None),
        (Prim, Alone, false, None, None),
        (Prim, Second, false, Some(Wait), None),
        (Wait, Second, false, Some(Prim), None),
        (Stop, Wait, true, None, None),
    ];
    for (from, to, admin, peer, want) in cases {
        assert_eq!(
            classify_failover(from, to, admin, peer),
            want,
            "{from:?} -> {to:?} admin={admin} peer={peer:?}"
        );
    }
    let labels: Vec<&str> = R::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        ["peer_lost", "peer_stopped", "swap", "admin", "start"]
    );
}

/// One HTTP/1.1 request over a plain TCP connection; the whole answer.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_endpoint_serves_metrics_until_stopped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let status = crate::status::Shared::new(Status {
        state: State::Second,
        ..Status::default()
    });
    let metrics = Metrics::new();
    metrics.failover(FailoverReason::PeerLost);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve(listener, metrics, status.clone(), stop_rx));

    let answer = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .expect("client");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-type: {CONTENT_TYPE}")),
        "{head}"
    );
    assert_eq!(sample(body, "tandem_state{state=\"SECOND\"}"), Some("1"));
    assert_eq!(
        sample(body, "tandem_failovers_total{reason=\"peer_lost\"}"),
        Some("1")
    );
    assert!(body.ends_with("# EOF\n"), "{body}");

    // The status is read at each scrape.
    status.update(|s| s.state = State::Alone);
    let answer = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .expect("client");
    assert!(
        answer.contains("tandem_state{state=\"ALONE\"} 1"),
        "{answer}"
    );

    let answer = tokio::task::spawn_blocking(move || http_get(addr, "/"))
        .await
        .expect("client");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    stop_tx.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stops in time")
        .expect("task")
        .expect("serve");
}

/// The Grafana dashboard is valid JSON, each of its queries names only metrics
/// that exist, and every metric is shown somewhere.
#[test]
fn grafana_dashboard_uses_existing_metrics() {
    let text = include_str!("../../../packaging/grafana/tandem.json");
    let dashboard: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= NAMES.len(), "{exprs:?}");
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "`{expr}` names no tandem metric");
        for n in names {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| {
                    n.strip_suffix(s)
                        .filter(|b| *b == "tandem_barrier_wait_seconds")
                })
                .unwrap_or(&n)
                .to_owned();
            assert!(NAMES.contains(&base.as_str()), "`{expr}`: no metric {n}");
            used.insert(base);
        }
    }
    for name in NAMES {
        assert!(used.contains(*name), "the dashboard does not show {name}");
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Every `tandem_…` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tandem_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

//! Test fixture: two private network namespaces joined by a veth pair, with code run
//! inside either of them on a thread of its own (namespaces are per thread).
//!
//! Names carry the test process's pid and a per-test tag; nothing is created in the
//! root namespace, and dropping the fixture deletes both namespaces (and with them
//! the veth pair), also when the test fails.

use std::{
    future::Future,
    net::{Ipv4Addr, Ipv6Addr},
    process::Command,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sched::CloneFlags;

/// Namespace A's end of the veth pair.
pub(crate) const IF_A: &str = "va";
/// Namespace B's end of the veth pair.
pub(crate) const IF_B: &str = "vb";

/// Two namespaces, A (10.231.0.1/24, fd00:231::1/64 on `va`) and B (.2 and ::2 on
/// `vb`), both interfaces and loopbacks up.
#[derive(Debug)]
pub(crate) struct NsPair {
    pub(crate) a: String,
    pub(crate) b: String,
}

// === impl NsPair ===

impl NsPair {
    /// Creates the pair; `tag` must be unique among the tests of this process.
    pub(crate) fn new(tag: &str) -> Self {
        let pid = std::process::id();
        // The guard exists before anything is created, so a failure halfway through
        // still removes what was made.
        let pair = Self {
            a: format!("tnet-{pid}-{tag}-a"),
            b: format!("tnet-{pid}-{tag}-b"),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&[
            "-n", &pair.a, "link", "add", IF_A, "type", "veth", "peer", "name", IF_B, "netns",
            &pair.b,
        ]);
        for (ns, dev, host) in [(&pair.a, IF_A, 1), (&pair.b, IF_B, 2)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", v4(host)),
                "dev",
                dev,
            ]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/64", v6(u16::from(host))),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // IPv6 installs its multicast route (and so receives ff02::1) only once link
        // watching has seen the carrier, up to a second later.
        for (ns, dev) in [(&pair.a, IF_A), (&pair.b, IF_B)] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !ip(&[
                "-n", ns, "-6", "route", "show", "table", "local", "dev", dev,
            ])
            .contains("ff00::/8")
            {
                assert!(
                    Instant::now() < deadline,
                    "{dev} in {ns} never got IPv6 multicast"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        pair
    }

    /// Runs `ip -j -n <ns> <args>` and parses its JSON output.
    pub(crate) fn json(&self, ns: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-j", "-n", ns];
        all.extend_from_slice(args);
        let out = ip(&all);
        serde_json::from_str(&out).unwrap_or(serde_json::Value::Array(Vec::new()))
    }

    /// Runs `ip -n <ns> <args>`.
    pub(crate) fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The MAC of `dev` in `ns`, as `ip` prints it.
    pub(crate) fn mac(&self, ns: &str, dev: &str) -> String {
        let link = self.json(ns, &["link", "show", "dev", dev]);
        link[0]["address"]
            .as_str()
            .expect("link has an address")
            .to_owned()
    }

    /// The addresses on `dev` in `ns`, as strings.
    pub(crate) fn addresses(&self, ns: &str, dev: &str) -> Vec<String> {
        let v = self.json(ns, &["addr", "show", "dev", dev]);
        v[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["local"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The link-layer address `ns`'s neighbour table holds for `ip` on `dev`.
    pub(crate) fn neighbour(&self, ns: &str, dev: &str, ip: &str) -> Option<String> {
        let v = self.json(ns, &["neigh", "show", "to", ip, "dev", dev]);
        v[0]["lladdr"].as_str().map(str::to_owned)
    }
}

impl Drop for NsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            // Best effort: a namespace that was never made cannot be deleted.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Host `host` of the IPv4 test subnet.
pub(crate) fn v4(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 231, 0, host)
}

/// Host `host` of the IPv6 test subnet.
pub(crate) fn v6(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x231, 0, 0, 0, 0, 0, host)
}

/// Runs `f`'s future on a current-thread runtime in a new thread that has entered
/// namespace `ns`.
pub(crate) fn run_in<T, F, Fut>(ns: &str, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace handle");
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(f())
    })
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

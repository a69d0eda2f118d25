//! Tests of `tandem config check`: the file's rules, then the host's.

use super::*;

/// A directory with certificate files, a fake `/sys/class/net` holding `eth0`,
/// and a configuration whose directories live inside it.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["node1.crt", "node1.key", "node2.crt"] {
            std::fs::write(dir.path().join(name), "-----BEGIN TEST-----\n").expect("write");
        }
        std::fs::create_dir_all(dir.path().join("net/eth0")).expect("net");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn host(&self) -> Host {
        Host {
            net: self.path("net"),
            root: false,
            mountinfo: self.path("mountinfo"),
        }
    }

    /// Writes the configuration, with `from` replaced by `to`, and checks it.
    fn check(&self, from: &str, to: &str) -> CheckOutcome {
        let d = self.dir.path().display();
        let text = format!(
            "\
node: node1
listen: 127.0.0.1:7400
identity: {{ certificate: node1.crt, key: node1.key }}
peer: {{ name: node2, address: 127.0.0.2:7400, certificate: node2.crt }}
state_dir: {d}/state
replicated:
  - {{ name: data, path: {d}/data }}
vip: {{ address: 10.213.7.50/24, interface: eth0 }}
metrics: {{ listen: 127.0.0.1:9400 }}
"
        );
        assert!(text.contains(from), "{from:?}");
        let file = self.path("tandem.yaml");
        std::fs::write(&file, text.replacen(from, to, 1)).expect("write");
        check_file(&file, &self.host())
    }

    fn file(&self) -> String {
        self.path("tandem.yaml").display().to_string()
    }
}

#[test]
fn a_good_file_on_a_fitting_host_is_ok() {
    let f = Fixture::new();
    let out = f.check("", "");
    assert_eq!(
        out,
        CheckOutcome {
            lines: vec![format!("{}: ok", f.file())],
            ok: true
        }
    );
}

#[test]
fn the_files_own_errors_are_all_printed() {
    let f = Fixture::new();
    let out = f.check("node: node1", "node: Node 1\nrole: boss");
    assert!(!out.ok);
    assert_eq!(out.lines.len(), 2, "{:#?}", out.lines);
    assert!(
        out.lines[0].starts_with(&format!("{}:1:", f.file())),
        "{:?}",
        out.lines
    );
    assert!(
        out.lines[0].contains("node: `Node 1` is not a node name"),
        "{:?}",
        out.lines
    );
    assert!(
        out.lines[1].contains("role: `boss` is not a role"),
        "{:?}",
        out.lines
    );
}

#[test]
fn a_missing_vip_interface_is_a_problem() {
    let f = Fixture::new();
    let out = f.check("interface: eth0", "interface: bond7");
    assert!(!out.ok);
    assert_eq!(
        out.lines,
        [format!(
            "{}:8:33: vip.interface: this host has no interface `bond7` (not in {})",
            f.file(),
            f.path("net").display()
        )]
    );
}

#[test]
fn directories_must_exist_or_be_creatable() {
    let f = Fixture::new();
    std::fs::write(f.path("plain"), "").expect("write");
    let d = f.dir.path().display().to_string();
    // An existing directory is fine; so is one that can be created (above).
    std::fs::create_dir(f.path("data")).expect("mkdir");
    assert!(f.check("", "").ok);
    let out = f.check(&format!("{d}/state"), &format!("{d}/plain"));
    assert!(!out.ok);
    assert_eq!(
        out.lines,
        [format!(
            "{}:5:1: state_dir: `{d}/plain` exists and is not a directory",
            f.file()
        )]
    );
    let out = f.check(&format!("{d}/data"), &format!("{d}/plain/data"));
    assert!(!out.ok);
    assert_eq!(out.lines.len(), 1, "{:#?}", out.lines);
    assert!(
        out.lines[0].contains(&format!(
            "replicated[0].path: `{d}/plain/data` cannot be created: `{d}/plain` is not a directory"
        )),
        "{:?}",
        out.lines
    );
}

#[test]
fn addresses_not_on_this_host_are_warnings() {
    let f = Fixture::new();
    // 192.0.2.0/24 is TEST-NET-1: never assigned here. Binding to check sends
    // nothing. The default heartbeat network shares `listen`'s address, which is
    // warned about once.
    let out = f.check("listen: 127.0.0.1:7400", "listen: 192.0.2.1:7400");
    assert!(out.ok, "{:#?}", out.lines);
    assert_eq!(
        out.lines,
        [
            format!(
                "warning: {}:2:1: listen: 192.0.2.1 is not an address of this host",
                f.file()
            ),
            format!("{}: ok", f.file()),
        ]
    );
    let out = f.check("listen: 127.0.0.1:9400", "listen: 192.0.2.9:9400");
    assert!(out.ok);
    assert!(
        out.lines[0].contains("metrics.listen: 192.0.2.9 is not an address of this host"),
        "{:?}",
        out.lines
    );
}

#[test]
fn a_filesystem_mounted_inside_a_replicated_directory_is_a_problem() {
    let f = Fixture::new();
    let data = f.path("data");
    std::fs::create_dir_all(data.join("pg")).expect("mkdir");
    let data = std::fs::canonicalize(&data).expect("canonical");
    let inside = data.join("my vol");
    let escaped = inside.display().to_string().replace(' ', "\\040");
    // The directory itself being a mount point is fine; a mount below it is not.
    std::fs::write(
        f.path("mountinfo"),
        format!(
            "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
             30 22 8:2 / {} rw - ext4 /dev/vdb rw\n\
             31 30 8:3 / {escaped} rw - ext4 /dev/vdc rw\n",
            data.display()
        ),
    )
    .expect("write mountinfo");
    let out = f.check("", "");
    assert!(!out.ok, "{:#?}", out.lines);
    assert_eq!(out.lines.len(), 1, "{:#?}", out.lines);
    assert!(
        out.lines[0].contains("replicated[0].path")
            && out.lines[0].contains(&format!("mounted inside it at `{}`", inside.display())),
        "{}",
        out.lines[0]
    );
    // Without such a mount the file passes.
    std::fs::write(
        f.path("mountinfo"),
        format!("30 22 8:2 / {} rw - ext4 /dev/vdb rw\n", data.display()),
    )
    .expect("write mountinfo");
    assert!(f.check("", "").ok);
}

#[test]
fn mountinfo_escapes_are_undone() {
    assert_eq!(unescape_octal("/srv/a\\040b\\011c"), "/srv/a b\tc");
    assert_eq!(unescape_octal("/srv/back\\134slash"), "/srv/back\\slash");
    assert_eq!(unescape_octal("/odd\\9"), "/odd\\9");
    assert_eq!(
        mount_points("22 1 8:1 / / rw - ext4 /dev/vda rw\n31 22 0:5 / /a\\040b rw - tmpfs t rw"),
        vec![PathBuf::from("/"), PathBuf::from("/a b")]
    );
}

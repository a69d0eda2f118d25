//! The records of the change stream and their JSON form (docs/capture-stream.md).

use std::io::Write;

use serde_json::{Map, Value, json};

use super::index::{Kind, RootId};

/// One change, as emitted by the capture engine, in stream order.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Change {
    pub seq: u64,
    pub root: RootId,
    /// The entry, relative to the root (raw bytes: names need not be UTF-8).
    pub path: Vec<u8>,
    pub op: Op,
    /// The inode a `write`, `truncate`, `verify`, `attr` or `create` is about: lets a
    /// consumer that replays late read it wherever the file is by then.
    pub ino: Option<u64>,
}

/// What changed.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Op {
    Attr,
    /// A new entry; `target` for symlinks and `rdev` for devices travel with it, so
    /// that a consumer needs no second look at a name that may have moved on.
    Create {
        kind: Kind,
        target: Option<Vec<u8>>,
        rdev: u64,
    },
    Exchange {
        new_path: Vec<u8>,
    },
    Link {
        new_path: Vec<u8>,
    },
    Remove {
        kind: Kind,
    },
    Rename {
        new_path: Vec<u8>,
    },
    Rescan,
    Sync {
        all: bool,
    },
    Truncate {
        size: u64,
    },
    Verify,
    Write {
        offset: u64,
        len: u64,
    },
}

impl Op {
    /// The `op` field of the JSON form.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Attr => "attr",
            Self::Create { .. } => "create",
            Self::Exchange { .. } => "exchange",
            Self::Link { .. } => "link",
            Self::Remove { .. } => "remove",
            Self::Rename { .. } => "rename",
            Self::Rescan => "rescan",
            Self::Sync { .. } => "sync",
            Self::Truncate { .. } => "truncate",
            Self::Verify => "verify",
            Self::Write { .. } => "write",
        }
    }
}

/// Where the engine sends its records.
pub trait Sink {
    /// Receives one record. An error stops the capture (e.g. a closed pipe).
    fn emit(&mut self, change: Change) -> std::io::Result<()>;
    /// Called when the engine has emitted everything it knows of, before it waits.
    fn flush(&mut self) -> std::io::Result<()>;
}

/// Writes JSON lines, naming roots as the operator gave them.
pub struct JsonSink<W: Write> {
    out: W,
    roots: Vec<String>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, roots: Vec<String>) -> Self {
        Self { out, roots }
    }

    /// Writes the `ready` record that tells readers every later change is reported.
    pub fn ready(&mut self) -> std::io::Result<()> {
        let line = json!({ "seq": 0, "op": "ready", "roots": self.roots });
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn emit(&mut self, change: Change) -> std::io::Result<()> {
        let root = self
            .roots
            .get(usize::from(change.root))
            .cloned()
            .unwrap_or_default();
        let value = to_json(&change, &root);
        writeln!(self.out, "{value}")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The JSON object of one record.
#[must_use]
pub fn to_json(change: &Change, root: &str) -> Value {
    let mut m = Map::new();
    m.insert("seq".into(), json!(change.seq));
    m.insert("op".into(), json!(change.op.name()));
    m.insert("root".into(), json!(root));
    put_path(&mut m, "path", &change.path);
    if let Some(ino) = change.ino {
        m.insert("ino".into(), json!(ino));
    }
    match &change.op {
        Op::Attr | Op::Rescan | Op::Verify => {}
        Op::Create { kind, target, rdev } => {
            m.insert("kind".into(), json!(kind.as_str()));
            if let Some(t) = target {
                put_path(&mut m, "target", t);
            }
            if matches!(kind, Kind::Char | Kind::Block) {
                m.insert("rdev".into(), json!(rdev));
            }
        }
        Op::Remove { kind } => {
            m.insert("kind".into(), json!(kind.as_str()));
        }
        Op::Exchange { new_path } | Op::Link { new_path } | Op::Rename { new_path } => {
            put_path(&mut m, "new_path", new_path);
        }
        Op::Sync { all } => {
            m.insert("scope".into(), json!(if *all { "all" } else { "file" }));
        }
        Op::Truncate { size } => {
            m.insert("size".into(), json!(size));
        }
        Op::Write { offset, len } => {
            m.insert("offset".into(), json!(offset));
            m.insert("len".into(), json!(len));
        }
    }
    Value::Object(m)
}

/// Puts a path as a string, plus its exact bytes in hex when it is not UTF-8.
fn put_path(m: &mut Map<String, Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            m.insert(field.into(), json!(s));
        }
        Err(_) => {
            m.insert(field.into(), json!(String::from_utf8_lossy(bytes)));
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            m.insert(format!("{field}_hex"), json!(hex));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_documented_fields() {
        let w = Change {
            seq: 7,
            root: 0,
            ino: None,
            path: b"a/b".to_vec(),
            op: Op::Write {
                offset: 5 << 32,
                len: 10,
            },
        };
        assert_eq!(
            to_json(&w, "/w").to_string(),
            r#"{"len":10,"offset":21474836480,"op":"write","path":"a/b","root":"/w","seq":7}"#
        );
        let r = Change {
            seq: 8,
            root: 0,
            ino: None,
            path: b"bad\xff".to_vec(),
            op: Op::Rename {
                new_path: b"ok".to_vec(),
            },
        };
        let v = to_json(&r, "/w");
        assert_eq!(v["path_hex"], "626164ff");
        assert_eq!(v["new_path"], "ok");
        assert!(v.get("new_path_hex").is_none());
    }

    #[test]
    fn json_sink_names_roots_as_given() {
        let mut out = Vec::new();
        let mut sink = JsonSink::new(&mut out, vec!["rel/dir".into()]);
        sink.ready().unwrap();
        sink.emit(Change {
            seq: 1,
            root: 0,
            ino: None,
            path: b"x".to_vec(),
            op: Op::Create {
                kind: Kind::Dir,
                target: None,
                rdev: 0,
            },
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"op":"ready","roots":["rel/dir"],"seq":0}"#);
        assert!(lines[1].contains(r#""root":"rel/dir""#) && lines[1].contains(r#""kind":"dir""#));
    }
}

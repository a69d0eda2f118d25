//! The conflict directory: when both nodes changed data on their own, the losing
//! side's files are copied here before the resync changes them, and reported.
//!
//! Layout: `<state_dir>/conflicts/<unix time>/<directory name>/<path>`, plus a
//! `REPORT` listing every kept path. Paths come from the peer, so each is checked
//! component by component (no `..`, no absolute path, no symlink on the way) before
//! anything is read through it.

use std::{
    collections::HashSet,
    ffi::OsStr,
    fs,
    io::Write,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use agent_common::wire::{Record, WireOp};

use crate::{apply::Applier, config::Replicated};

/// The files kept during one diverged resync.
#[derive(Debug)]
pub struct Conflicts {
    dir: PathBuf,
    roots: Vec<(String, PathBuf)>,
    kept: HashSet<(usize, Vec<u8>)>,
    report: Vec<String>,
}

impl Conflicts {
    pub fn new(state_dir: &Path, replicated: &[Replicated]) -> std::io::Result<Self> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let dir = state_dir.join("conflicts").join(stamp.to_string());
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            roots: replicated
                .iter()
                .map(|r| (r.name.clone(), r.path.clone()))
                .collect(),
            kept: HashSet::new(),
            report: Vec::new(),
        })
    }

    /// Where the files go.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps what `record` is about to change or replace, once per path.
    pub fn keep_before(&mut self, local: usize, _applier: &Applier, record: &Record) {
        let mut paths = vec![record.path.as_slice()];
        match &record.op {
            WireOp::Rename { new_path }
            | WireOp::Exchange { new_path }
            | WireOp::Link { new_path } => {
                paths.push(new_path);
            }
            WireOp::SetAttrs(_) | WireOp::Barrier => return,
            _ => {}
        }
        for p in paths {
            if !self.kept.insert((local, p.to_vec())) {
                continue;
            }
            if let Err(e) = self.keep(local, p) {
                tracing::warn!(path = %String::from_utf8_lossy(p), error = %e, "cannot keep a conflicting file");
            }
        }
    }

    fn keep(&mut self, local: usize, rel: &[u8]) -> std::io::Result<()> {
        let Some((name, root)) = self.roots.get(local) else {
            return Ok(());
        };
        let Some(src) = beneath(root, rel) else {
            return Ok(());
        };
        let Ok(meta) = fs::symlink_metadata(&src) else {
            // Nothing there: nothing of ours is lost.
            return Ok(());
        };
        let dst = self.dir.join(name).join(Path::new(OsStr::from_bytes(rel)));
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        copy_tree(&src, &dst, &meta)?;
        self.report
            .push(format!("{name}/{}", String::from_utf8_lossy(rel)));
        Ok(())
    }

    /// Writes the report and logs it; called once the resync is complete.
    pub fn report(self) {
        let path = self.dir.join("REPORT");
        let text = format!(
            "This node changed data while its peer ran the application (divergence).\n\
             Before resynchronising from the peer, the entries below were copied here:\n{}\n",
            self.report.join("\n")
        );
        let _ = fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes()));
        tracing::error!(
            kept = self.report.len(),
            dir = %self.dir.display(),
            "divergence resolved in the primary's favour; this node's changed entries are kept"
        );
    }
}

/// The path of `rel` under `root`, if every component is a plain name and no
/// directory on the way is a symlink.
fn beneath(root: &Path, rel: &[u8]) -> Option<PathBuf> {
    if rel.is_empty() || rel.first() == Some(&b'/') {
        return None;
    }
    let mut p = root.to_path_buf();
    let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    for (i, c) in parts.iter().enumerate() {
        if c.is_empty() || *c == b"." || *c == b".." || c.contains(&0) {
            return None;
        }
        p.push(OsStr::from_bytes(c));
        if i + 1 < parts.len() && !fs::symlink_metadata(&p).ok()?.is_dir() {
            return None;
        }
    }
    Some(p)
}

fn copy_tree(src: &Path, dst: &Path, meta: &fs::Metadata) -> std::io::Result<()> {
    let t = meta.file_type();
    if t.is_dir() {
        fs::create_dir_all(dst)?;
        for e in fs::read_dir(src)? {
            let e = e?;
            let m = fs::symlink_metadata(e.path())?;
            copy_tree(&e.path(), &dst.join(e.file_name()), &m)?;
        }
        Ok(())
    } else if t.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)
    } else if t.is_file() {
        fs::copy(src, dst).map(|_| ())
    } else {
        // Fifos, sockets and devices hold no data.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_not_followed() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("root");
        fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink("/etc", root.join("evil")).expect("symlink");
        assert!(beneath(&root, b"../x").is_none());
        assert!(beneath(&root, b"/etc/passwd").is_none());
        assert!(beneath(&root, b"evil/passwd").is_none());
        assert!(beneath(&root, b"a//b").is_none());
        assert_eq!(beneath(&root, b"f"), Some(root.join("f")));
    }
}

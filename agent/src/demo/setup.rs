//! Builds the demo's lab: the two-node lab with no agents yet, a data set on node1,
//! the sample service as both nodes' application (below the lab's marker for local
//! additions, which `lab up` keeps), then the agents.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;

use super::{DemoOptions, service::WRITES_FILE};
use crate::lab::{self, Keygen, LOCAL_ADDITIONS, LabOptions, Layout, NodeLayout};

/// The data set's file name in the replicated directory.
pub(crate) const DATASET_FILE: &str = "dataset.bin";

/// The lab options of the demo.
pub(crate) fn lab_options(opts: &DemoOptions) -> LabOptions {
    LabOptions::new(opts.prefix.clone(), opts.base_dir())
}

/// Brings up the lab with the service as the application and both agents running.
pub(crate) fn up(opts: &DemoOptions, keygen: &dyn Keygen) -> anyhow::Result<Layout> {
    let mut lab_opts = lab_options(opts);
    lab_opts.start_agents = false;
    let layout = lab::up(&lab_opts, keygen)?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    for node in &layout.nodes {
        let mut text = std::fs::read_to_string(&node.config)
            .with_context(|| format!("cannot read {}", node.config.display()))?;
        text.push_str(LOCAL_ADDITIONS);
        text.push_str(&application_yaml(&exe, node, opts.port));
        std::fs::write(&node.config, text)
            .with_context(|| format!("cannot write {}", node.config.display()))?;
    }
    if let Some(node1) = layout.nodes.first() {
        write_dataset(&node1.data_dir.join(DATASET_FILE), opts.dataset_bytes)?;
    }
    lab_opts.start_agents = true;
    // A second `up` keeps everything made and starts the agents on the new
    // configurations.
    lab::up(&lab_opts, keygen)
}

/// Where node `node` keeps its service's pid.
pub(crate) fn service_pidfile(node: &NodeLayout) -> PathBuf {
    node.state_dir.join("service.pid")
}

/// The service's command line on `node` (after the executable).
pub(crate) fn service_args(node: &NodeLayout, port: u16) -> Vec<String> {
    vec![
        "lab".into(),
        "service".into(),
        "--name".into(),
        node.name.clone(),
        "--port".into(),
        port.to_string(),
        "--data".into(),
        node.data_dir.display().to_string(),
    ]
}

/// The `application:` section: start runs the service in the background with a
/// pidfile (and does nothing when it already runs); stop kills it and waits until
/// it is gone, so the port and the files are free for the next primary.
fn application_yaml(exe: &Path, node: &NodeLayout, port: u16) -> String {
    let pid = sh_quote(&service_pidfile(node).display().to_string());
    let log = sh_quote(&node.state_dir.join("service.log").display().to_string());
    let argv: Vec<String> = std::iter::once(exe.display().to_string())
        .chain(service_args(node, port))
        .map(|a| sh_quote(&a))
        .collect();
    let argv = argv.join(" ");
    let start = format!(
        "if [ -f {pid} ] && kill -0 \"$(cat {pid})\" 2>/dev/null; then exit 0; fi; \
         setsid {argv} >>{log} 2>&1 </dev/null & echo $! > {pid}"
    );
    let stop = format!(
        "if [ -f {pid} ]; then p=\"$(cat {pid})\"; kill \"$p\" 2>/dev/null; i=0; \
         while kill -0 \"$p\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
         rm -f {pid}; fi; true"
    );
    // JSON strings are YAML double-quoted scalars, so no path can break the file.
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        "# The demo's sample service (`tandem demo`), writing {WRITES_FILE}.\n\
         application:\n  start: {}\n  stop: {}\n  timeout: 10s\n",
        q(&start),
        q(&stop)
    )
}

/// `s` as one shell word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes `len` bytes of incompressible data, so the first full copy and the later
/// range-only resync can be told apart by size.
fn write_dataset(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut xof = blake3::Hasher::new()
        .update(b"tandem demo data set")
        .finalize_xof();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        xof.fill(&mut buf[..n]);
        f.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", path.display()))?;
        left -= n as u64;
    }
    f.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_survive_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_data_set_has_the_size_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        write_dataset(&p, 3 * 1024 * 1024 + 5).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 3 * 1024 * 1024 + 5);
    }
}

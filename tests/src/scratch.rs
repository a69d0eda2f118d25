//! A scratch ext4 file system for the capture oracle: a sparse image in `/dev/shm`,
//! mounted through a loop device.
//!
//! The oracle's trees hold thousands of small entries. On a file system mounted with
//! `discard` (as this machine's root is), every unlink of a file with blocks waits for
//! a discard to reach the disk, and removing the trees after a run took 10 to 14 s,
//! longer than the rest of the run. A file system of its own, backed by memory, has no
//! discards, keeps the oracle's I/O off the shared disk and the rest of the machine's
//! changes off capture's fanotify marks (they cover whole file systems), and goes away
//! with one `umount`. It is ext4 still: the workload's fallocate modes need it.
//!
//! When it cannot be made (no loop device, no `mkfs.ext4`), [`Scratch::path`] is
//! `/tmp` and the oracle runs there, only slower.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Size of the image; sparse, so only what the run writes takes memory (tens of MB).
/// Files larger than this are fine: the workload's multi-GiB files are sparse too.
const IMAGE_BYTES: u64 = 8 << 30;

/// The mounted scratch file system, unmounted and deleted on drop.
pub struct Scratch {
    /// The mount point (a directory in /tmp), or /tmp itself when nothing is mounted.
    path: PathBuf,
    /// The image file, once made.
    image: Option<PathBuf>,
    mounted: bool,
}

impl Scratch {
    /// Makes and mounts the scratch file system, or falls back to /tmp (saying why on
    /// stderr).
    pub fn create() -> Scratch {
        let mut s = Scratch {
            path: PathBuf::from("/tmp"),
            image: None,
            mounted: false,
        };
        // TANDEM_ORACLE_IN_TMP=1 runs on the machine's own file system, as before
        // there was a scratch one (slower, with the rest of the machine's changes).
        if std::env::var_os("TANDEM_ORACLE_IN_TMP").is_some_and(|v| !v.is_empty()) {
            return s;
        }
        if let Err(why) = s.mount() {
            eprintln!("oracle: no scratch ext4 ({why}); running in /tmp");
            s.cleanup();
            s.path = PathBuf::from("/tmp");
        }
        s
    }

    /// Where to make the trees.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn mount(&mut self) -> Result<(), String> {
        let image = tempfile::Builder::new()
            .prefix("tandem-oracle-")
            .suffix(".img")
            .tempfile_in("/dev/shm")
            .map_err(|e| format!("image in /dev/shm: {e}"))?;
        image
            .as_file()
            .set_len(IMAGE_BYTES)
            .map_err(|e| format!("image size: {e}"))?;
        let (_, image) = image.keep().map_err(|e| format!("image: {e}"))?;
        self.image = Some(image.clone());
        let dir = tempfile::Builder::new()
            .prefix("tandem-oracle-mnt-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("mount point: {e}"))?
            .keep();
        self.path = dir;
        // No discards (the image is memory) and no inode tables zeroed, now or in the
        // background: a fresh image reads as zeros anyway.
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "nodiscard,lazy_itable_init=1"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,noinit_itable"])
            .arg(&image)
            .arg(&self.path))?;
        self.mounted = true;
        Ok(())
    }

    fn cleanup(&mut self) {
        if self.mounted {
            // A lazy unmount when something still holds it: the loop device and the
            // image's memory go once it is released.
            if run(Command::new("umount").arg(&self.path)).is_err() {
                let _ = run(Command::new("umount").arg("-l").arg(&self.path));
            }
            self.mounted = false;
        }
        if self.path != Path::new("/tmp") {
            let _ = std::fs::remove_dir(&self.path);
        }
        if let Some(image) = self.image.take() {
            let _ = std::fs::remove_file(image);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Runs a command quietly; its stderr is the error.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

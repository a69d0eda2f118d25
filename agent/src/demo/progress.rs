//! The demo's progress lines: one line per event, stamped with the time since the
//! demo started, so that a reader can follow the takeover as it happens and see
//! how long each step took.

use std::time::{Duration, Instant};

/// Prints progress lines relative to a start instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Progress {
    start: Instant,
}

impl Progress {
    /// Starts the clock now.
    pub(crate) fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Prints `msg` with the time since the start.
    pub(crate) fn say(&self, msg: impl std::fmt::Display) {
        // Standard output is line-buffered, so every line shows at once even when
        // piped into a log.
        println!("[{:>6.1}s] {msg}", self.start.elapsed().as_secs_f64());
    }

    /// Prints a step header: what the demo does next.
    pub(crate) fn step(&self, msg: impl std::fmt::Display) {
        self.say(format_args!("==> {msg}"));
    }
}

/// A duration as a reader wants it: milliseconds below ten seconds.
pub(crate) fn human(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A byte count with a binary unit.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // The value only feeds a display with one decimal, so the float's precision
    // is plenty.
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(human(Duration::from_millis(1234)), "1234 ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12 * 1024), "12.0 KiB");
        assert_eq!(bytes(8 * 1024 * 1024 + 1), "8.0 MiB");
    }
}

//! Progress on standard error: an `indicatif` bar on a terminal; otherwise (a log, CI, a pipe) a
//! plain line every few seconds, so the output stays readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the plain line is printed when standard error is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// One phase's progress (sending, or waiting for outcomes).
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: u64,
    last_line: Instant,
}

impl Progress {
    /// A bar (terminal) or plain lines for `total` items.
    pub fn new(label: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(label);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            label,
            total,
            last_line: Instant::now(),
        }
    }

    /// `done` of the total, with a short detail (`3 refused`).
    pub fn set(&mut self, done: u64, detail: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(detail.to_owned());
            }
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}: {done}/{} {detail}", self.label, self.total);
            }
            None => {}
        }
    }

    /// Removes the bar; the summary follows.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

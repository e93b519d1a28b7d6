//! Captures what the function logs on the test's thread, at every level up to TRACE.
//!
//! One process-wide subscriber writes each event to the buffer of the capture active on the
//! emitting thread (if any). A per-thread `set_default` is not used: tracing caches callsite
//! interest process-wide, so a callsite first hit by a concurrent test without a subscriber
//! could go unrecorded. Use a current-thread runtime (`#[tokio::test]`'s default).

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

thread_local! {
    static ACTIVE: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// The captured log text.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }

    /// The captured lines at `level` (`WARN`, `INFO`, ...).
    pub fn lines_at(&self, level: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.trim_start().starts_with(level))
            .map(str::to_owned)
            .collect()
    }
}

/// Writes to the active capture of the current thread, or nowhere.
struct ToActive(Option<Logs>);

impl Write for ToActive {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(logs) = &self.0 {
            logs.0.lock().expect("logs").extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct ActiveWriter;

impl<'a> MakeWriter<'a> for ActiveWriter {
    type Writer = ToActive;

    fn make_writer(&'a self) -> Self::Writer {
        ToActive(ACTIVE.with(|active| active.borrow().clone()))
    }
}

/// Ends the capture when dropped.
pub struct Capture(());

impl Drop for Capture {
    fn drop(&mut self) {
        ACTIVE.with(|active| *active.borrow_mut() = None);
    }
}

/// Captures this thread's logs until the guard is dropped.
pub fn capture() -> (Capture, Logs) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(ActiveWriter)
            .with_ansi(false)
            .without_time()
            // Decided per event (never cached per callsite): whether this thread captures.
            .with_filter(dynamic_filter_fn(|_, _| {
                ACTIVE.with(|active| active.borrow().is_some())
            }));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in the test binary");
    });
    let logs = Logs::default();
    ACTIVE.with(|active| *active.borrow_mut() = Some(logs.clone()));
    (Capture(()), logs)
}

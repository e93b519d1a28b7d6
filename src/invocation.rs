//! What one invocation collects while its records run: the outcome events to publish once they
//! are done, and its metrics (one EMF document, written at the end).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::event::OutcomeEvent;
use crate::metrics::Metrics;

/// The per-invocation collectors, shared by the invocation's records.
#[derive(Debug)]
pub struct Invocation {
    namespace: String,
    events: Mutex<Vec<OutcomeEvent>>,
    metrics: Mutex<Metrics>,
}

impl Invocation {
    /// Empty collectors; metrics in `namespace`.
    pub fn new(namespace: &str) -> Invocation {
        Invocation {
            namespace: namespace.to_owned(),
            events: Mutex::default(),
            metrics: Mutex::new(Metrics::new(namespace)),
        }
    }

    /// Queues an outcome event.
    pub fn event(&self, event: OutcomeEvent) {
        lock(&self.events).push(event);
    }

    /// The metrics recorder.
    pub fn metrics(&self) -> MutexGuard<'_, Metrics> {
        lock(&self.metrics)
    }

    /// Records a Cognito call's latency.
    pub fn cognito_latency(&self, operation: &'static str, elapsed: Duration) {
        self.metrics().cognito_latency(operation, elapsed);
    }

    /// Records a guard call's latency.
    pub fn guard_latency(&self, elapsed: Duration) {
        self.metrics().guard_latency(elapsed);
    }

    /// Takes the queued events and the metrics, once the records are done.
    pub fn finish(&self) -> (Vec<OutcomeEvent>, Metrics) {
        (
            std::mem::take(&mut *lock(&self.events)),
            std::mem::replace(&mut *lock(&self.metrics), Metrics::new(&self.namespace)),
        )
    }
}

/// A poisoned lock only means a record's task panicked (which fails the invocation anyway):
/// what it collected is still valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

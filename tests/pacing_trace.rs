//! A trace's `pacing.wait` span: made when a call waits for its turn (or writes the lease that
//! gives it), not when the turn is at hand.
//!
//! A test binary of its own, with one test: tracing's level and callsite caches are global, and
//! another test's subscriber (at INFO) built in parallel can leave them set to skip this DEBUG
//! span while the test's own subscriber would see it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cognito_reset::aws::bucket::MemoryBuckets;
use cognito_reset::limiter::{Category, Limiters, Priority, Quotas, Rates, SharedPacing};
use cognito_reset::pacing::BucketStore;
use tokio::time::Instant;
use tracing_subscriber::layer::SubscriberExt;

/// The names of the spans made while it is the thread's subscriber.
#[derive(Clone, Default)]
struct SpanNames(Arc<Mutex<Vec<&'static str>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanNames {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.lock().unwrap().push(attrs.metadata().name());
    }
}

impl SpanNames {
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn rates(rate: f64) -> Rates {
    Rates {
        read: Some(rate),
        resource_read: Some(rate),
        account_recovery: Some(rate),
        user_creation: Some(rate),
        user_update: Some(rate),
    }
}

#[tokio::test(start_paused = true)]
async fn a_turn_at_hand_makes_no_pacing_span_and_a_wait_or_a_lease_makes_one() {
    const REGION: &str = "us-west-2";
    const RESET: Category = Category::UserAccountRecovery;
    let names = SpanNames::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(names.clone()));
    let far = Instant::now() + Duration::from_secs(10);
    // Given an instance's own pacer at 10 a second: the first turn is now
    let limiters = Limiters::new(rates(10.0));
    limiters
        .acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    assert_eq!(names.take(), Vec::<&str>::new(), "nothing waited for");
    // When the next call waits 102 ms for its turn, it is a span
    limiters
        .acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    assert_eq!(names.take(), ["pacing.wait"]);
    // And so is a first call on the fleet's bucket, which writes its lease before its turn
    let table = Arc::new(MemoryBuckets::new());
    table.set_latency(Duration::from_millis(5));
    let quota = 20.0;
    let fleet = Limiters::shared(
        rates(4.0),
        SharedPacing {
            store: table as Arc<dyn BucketStore>,
            quotas: Quotas {
                read: quota,
                resource_read: quota,
                account_recovery: quota,
                user_creation: quota,
                user_update: quota,
            },
            lease: Duration::from_millis(200),
            timeout: Duration::from_millis(300),
        },
    );
    fleet
        .acquire(REGION, RESET, Priority::Batch, far)
        .await
        .unwrap();
    assert_eq!(names.take(), ["pacing.wait"]);
}

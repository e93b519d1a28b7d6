//! The fake pacing bucket store: the fleet's buckets (`PACING=shared`) in memory, written
//! exactly as `pacing::apply` says (the arithmetic `DynamoBucket` renders into conditional
//! `UpdateItem`s), with the schedule's faults: the `nth` bucket write of an invocation may fail
//! (throttled, a 5xx, a timeout), after which the pacer keeps to its static share for a while.
//!
//! Every write is journaled: a lease or a rate cut (AIMD), applied or refused, or failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cognito_reset::aws::BoxFuture;
use cognito_reset::failure::{GuardError, GuardErrorKind};
use cognito_reset::pacing::{self, BucketItem, BucketOp, BucketStore, Written};
use tokio::time::Instant;

use crate::faults::{BucketCall, Fault, Injector, Op, arrive};

#[derive(Debug)]
pub struct FakeBuckets {
    injector: Arc<Injector>,
    /// Shared by every instance's client.
    items: Arc<Mutex<HashMap<String, BucketItem>>>,
}

impl FakeBuckets {
    pub fn new(injector: Arc<Injector>) -> FakeBuckets {
        FakeBuckets {
            injector,
            items: Arc::default(),
        }
    }

    /// Another instance's client of the same buckets.
    pub fn sibling(&self, injector: Arc<Injector>) -> FakeBuckets {
        FakeBuckets {
            injector,
            items: Arc::clone(&self.items),
        }
    }
}

impl BucketStore for FakeBuckets {
    fn write<'a>(
        &'a self,
        pk: &'a str,
        op: &'a BucketOp,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Written, GuardError>> {
        Box::pin(async move {
            let ctx = self.injector.next(Op::Lease);
            let start = Instant::now();
            let (arrives, lands, failure) = match ctx.fault {
                None | Some(Fault::Echo | Fault::Outage) => (Some(ctx.arrival(start)), true, None),
                Some(Fault::Timeout { landed }) => (None, landed, None),
                Some(Fault::ServerError { .. } | Fault::Lost) => (
                    Some(ctx.arrival(start)),
                    landed_of(ctx.fault),
                    Some(GuardErrorKind::Upstream),
                ),
                Some(_) => (
                    Some(ctx.arrival(start)),
                    false,
                    Some(GuardErrorKind::Throttled),
                ),
            };
            let written = lands.then(|| {
                let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
                let written = pacing::apply(op, items.get(pk));
                if let Ok(after) = written {
                    items.insert(pk.to_owned(), after);
                }
                written
            });
            let cut = arrive(arrives, start + budget).await;
            let result = match (cut, failure, written) {
                (true, _, _) => Err(GuardError::new(
                    GuardErrorKind::Unavailable,
                    "UpdateItem",
                    "timed out",
                )),
                (false, Some(kind), _) => Err(GuardError::new(kind, "UpdateItem", "injected")),
                (false, None, Some(written)) => Ok(written),
                (false, None, None) => unreachable!("every fault without a failure lands"),
            };
            self.injector.bucket(BucketCall {
                inv: ctx.inv,
                pk: pk.to_owned(),
                at: start,
                cut: matches!(op, BucketOp::Cut { .. }),
                applied: matches!(written, Some(Ok(_))),
                failed: result.is_err(),
            });
            result
        })
    }
}

fn landed_of(fault: Option<Fault>) -> bool {
    matches!(
        fault,
        Some(Fault::ServerError { landed: true } | Fault::Lost)
    )
}

//! The fake event bus: records every event handed to it (what the invariants count), and
//! delivers them, late or not at all as the schedule says, never past the moment it is given
//! (as `Bus::publish_before` does).

use std::sync::Arc;

use cognito_reset::aws::BoxFuture;
use cognito_reset::aws::events::{Delivery, EventPublisher, OutcomeEvent};
use tokio::time::Instant;

use crate::faults::{Fault, Injector, Op, Published, arrive};

#[derive(Debug)]
pub struct FakeBus {
    injector: Arc<Injector>,
}

impl FakeBus {
    pub fn new(injector: Arc<Injector>) -> FakeBus {
        FakeBus { injector }
    }
}

impl EventPublisher for FakeBus {
    fn publish_before<'a>(
        &'a self,
        events: &'a [OutcomeEvent],
        until: Instant,
    ) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let ctx = self.injector.next(Op::Publish);
            let start = Instant::now();
            self.injector.published(Published {
                inv: ctx.inv,
                fault: ctx.fault,
                until,
                events: events.to_vec(),
            });
            let sent = events.len();
            let (arrives, fails) = match ctx.fault {
                None | Some(Fault::Echo | Fault::Outage) => (Some(ctx.arrival(start)), false),
                Some(Fault::Timeout { .. }) => (None, true),
                Some(_) => (Some(ctx.arrival(start)), true),
            };
            let cut = arrive(arrives, until.max(start)).await;
            if cut || fails {
                Delivery {
                    failed_calls: 1,
                    in_failed_calls: sent,
                    ..Delivery::default()
                }
            } else {
                Delivery {
                    delivered: sent,
                    ..Delivery::default()
                }
            }
        })
    }
}

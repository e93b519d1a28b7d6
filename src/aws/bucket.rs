//! The pacing bucket's port: one item per (account, region, quota category) in the guard's table
//! (the function's own account's table, whichever account the pool is in), changed
//! only by the conditional writes of [`crate::pacing`].
//!
//! [`BucketStore`] is the port (one conditional write, within a time budget); [`DynamoBucket`]
//! implements it with one `UpdateItem` per write; [`MemoryBuckets`] is the in-memory table the
//! tests use, which applies [`pacing::apply`] itself. The item:
//!
//! | item | `pk` | attributes |
//! |---|---|---|
//! | pacing bucket | `bucket#<account>#<region>#<category>` (`bucket#<region>#<category>` for the function's own account without `FUNCTION_ACCOUNT_ID`; category `UserRead`, `UserResourceRead`, `UserAccountRecovery`) | `nextUs` (µs since the epoch: the end of the last lease), `cutFactor` and `cutAtUs` (the fleet's last rate cut), `expiresAt` (a day after the last write) |
//! | borrow window | the bucket's `pk` and `#borrow` ([`pacing::borrow_pk`]) | `nextUs` (the end of the last interactive borrow's window), `expiresAt`; written only by `Restart`, beside an interactive caller's append |
//!
//! The conditions, in DynamoDB's words (the table in [`crate::pacing`] says why):
//!
//! | write | condition | update |
//! |---|---|---|
//! | restart | [`RESTART_CONDITION`] | `SET nextUs = :end` |
//! | append | [`APPEND_CONDITION`] | `SET nextUs = nextUs + :len` |
//! | repair | [`REPAIR_CONDITION`] | `SET nextUs = :end` |
//! | cut | [`CUT_CONDITION`] | `SET cutFactor = :factor, cutAtUs = :at` |
//!
//! A refused write comes back with the item as it stands (`ReturnValuesOnConditionCheckFailure`),
//! or, where the table does not return it, read with a consistent `GetItem`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::BoxFuture;
use super::guard::{consistent_get, from_sdk, n, s, within};
use crate::failure::{GuardError, GuardErrorKind};
use crate::pacing::{self, Aimd, BucketItem, BucketOp, Cut, Refused};

/// Restart: nothing booked, or only what is before the new lease's start.
pub const RESTART_CONDITION: &str = "attribute_not_exists(nextUs) OR nextUs < :start";
/// Append: booked from the earliest start on, and no further than the caller's horizon.
pub const APPEND_CONDITION: &str = "nextUs BETWEEN :earliest AND :latest";
/// Repair: the booking is still the one seen far in the future.
pub const REPAIR_CONDITION: &str = "nextUs = :seen";
/// Cut: no cut in the last second.
pub const CUT_CONDITION: &str = "attribute_not_exists(cutAtUs) OR cutAtUs <= :gapAgo";

pub use crate::pacing::{BucketStore, Written, bucket_pk};

/// The buckets in the guard's DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoBucket {
    client: Client,
    table: String,
    /// Each attempt's timeout (`GUARD_TIMEOUT_MS`), which the budget only shortens.
    attempt: Duration,
}

impl DynamoBucket {
    /// The buckets in `table`, through a client configured like the guard's.
    pub fn new(client: Client, table: &str, attempt: Duration) -> DynamoBucket {
        DynamoBucket {
            client,
            table: table.to_owned(),
            attempt,
        }
    }

    async fn update(
        &self,
        pk: &str,
        op: &BucketOp,
        budget: Duration,
    ) -> Result<Written, GuardError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let update = match *op {
            BucketOp::Restart {
                start_us,
                len_us,
                expires_at,
            } => update
                .update_expression("SET nextUs = :end, expiresAt = :expires")
                .condition_expression(RESTART_CONDITION)
                .expression_attribute_values(":start", n(start_us))
                .expression_attribute_values(":end", n(start_us + len_us))
                .expression_attribute_values(":expires", n(expires_at)),
            BucketOp::Append {
                earliest_us,
                latest_us,
                len_us,
                expires_at,
            } => update
                .update_expression("SET nextUs = nextUs + :len, expiresAt = :expires")
                .condition_expression(APPEND_CONDITION)
                .expression_attribute_values(":earliest", n(earliest_us))
                .expression_attribute_values(":latest", n(latest_us))
                .expression_attribute_values(":len", n(len_us))
                .expression_attribute_values(":expires", n(expires_at)),
            BucketOp::Repair {
                seen_us,
                start_us,
                len_us,
                expires_at,
            } => update
                .update_expression("SET nextUs = :end, expiresAt = :expires")
                .condition_expression(REPAIR_CONDITION)
                .expression_attribute_values(":seen", n(seen_us))
                .expression_attribute_values(":end", n(start_us + len_us))
                .expression_attribute_values(":expires", n(expires_at)),
            BucketOp::Cut { cut, expires_at } => update
                .update_expression("SET cutFactor = :factor, cutAtUs = :at, expiresAt = :expires")
                .condition_expression(CUT_CONDITION)
                .expression_attribute_values(
                    ":factor",
                    AttributeValue::N(format!("{:.4}", cut.factor)),
                )
                .expression_attribute_values(":at", n(cut.at_us))
                .expression_attribute_values(":gapAgo", n(cut.at_us.saturating_sub(Aimd::GAP_US)))
                .expression_attribute_values(":expires", n(expires_at)),
        };
        let result = update
            .customize()
            .config_override(within(self.attempt, budget))
            .send()
            .await;
        match result {
            Ok(output) => Ok(Ok(output.attributes.as_ref().map(item).unwrap_or_default())),
            Err(SdkError::ServiceError(context))
                if context.err().is_conditional_check_failed_exception() =>
            {
                let old = match context.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(e) if e.item.is_some() => {
                        e.item
                    }
                    _ => {
                        consistent_get(&self.client, &self.table, pk, within(self.attempt, budget))
                            .await?
                    }
                };
                Ok(Err(Refused {
                    item: old.as_ref().map(item),
                }))
            }
            Err(e) => Err(from_sdk("UpdateItem", e)),
        }
    }
}

impl BucketStore for DynamoBucket {
    fn write<'a>(
        &'a self,
        pk: &'a str,
        op: &'a BucketOp,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Written, GuardError>> {
        Box::pin(self.update(pk, op, budget))
    }
}

/// Reads a bucket item's attributes (anything unreadable counts as absent: the next write's
/// condition decides on the stored value anyway).
pub fn item(attributes: &HashMap<String, AttributeValue>) -> BucketItem {
    let number = |name: &str| attributes.get(name).and_then(|v| v.as_n().ok());
    let cut = match (
        number("cutFactor").and_then(|v| v.parse::<f64>().ok()),
        number("cutAtUs").and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(factor), Some(at_us)) if factor.is_finite() => Some(Cut {
            factor: factor.clamp(Aimd::MIN_FACTOR, 1.0),
            at_us,
        }),
        _ => None,
    };
    BucketItem {
        next_us: number("nextUs").and_then(|v| v.parse().ok()),
        cut,
    }
}

/// Buckets in memory, written exactly as [`pacing::apply`] says: the table of the tests.
#[derive(Debug, Default)]
pub struct MemoryBuckets {
    items: Mutex<HashMap<String, BucketItem>>,
    writes: AtomicUsize,
    unavailable: AtomicBool,
    latency: Mutex<Duration>,
}

impl MemoryBuckets {
    /// An empty table.
    pub fn new() -> MemoryBuckets {
        MemoryBuckets::default()
    }

    /// Every write from now on fails as a timeout would (`true`), or succeeds again.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Each write takes this long (tokio's clock).
    pub fn set_latency(&self, latency: Duration) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = latency;
    }

    /// The writes tried so far (refused and failed ones included).
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// The item `pk` as it stands.
    pub fn item(&self, pk: &str) -> Option<BucketItem> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(pk)
            .copied()
    }

    /// Stores an item as another instance would have left it.
    pub fn put(&self, pk: &str, item: BucketItem) {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pk.to_owned(), item);
    }
}

impl BucketStore for MemoryBuckets {
    fn write<'a>(
        &'a self,
        pk: &'a str,
        op: &'a BucketOp,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Written, GuardError>> {
        Box::pin(async move {
            self.writes.fetch_add(1, Ordering::SeqCst);
            let latency = *self.latency.lock().unwrap_or_else(|e| e.into_inner());
            if self.unavailable.load(Ordering::SeqCst) || latency > budget {
                tokio::time::sleep(budget).await;
                return Err(GuardError::new(
                    GuardErrorKind::Unavailable,
                    "UpdateItem",
                    "timed out",
                ));
            }
            tokio::time::sleep(latency).await;
            let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
            let written = pacing::apply(op, items.get(pk));
            if let Ok(after) = written {
                items.insert(pk.to_owned(), after);
            }
            Ok(written)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::{Category, Scope};

    #[test]
    fn an_item_reads_back_what_the_table_stores() {
        let attributes = HashMap::from([
            ("pk".to_owned(), s("bucket#us-west-2#UserAccountRecovery")),
            ("nextUs".to_owned(), n(1_700_000_000_123_456)),
            ("cutFactor".to_owned(), AttributeValue::N("0.7000".into())),
            ("cutAtUs".to_owned(), n(1_700_000_000_000_000)),
        ]);
        assert_eq!(
            item(&attributes),
            BucketItem {
                next_us: Some(1_700_000_000_123_456),
                cut: Some(Cut {
                    factor: 0.7,
                    at_us: 1_700_000_000_000_000
                }),
            }
        );
        // a factor out of range is clamped, never trusted to stop the fleet
        let attributes = HashMap::from([
            ("cutFactor".to_owned(), AttributeValue::N("0".into())),
            ("cutAtUs".to_owned(), n(1)),
        ]);
        assert_eq!(item(&attributes).cut.unwrap().factor, Aimd::MIN_FACTOR);
        assert_eq!(item(&HashMap::new()), BucketItem::default());
    }

    #[test]
    fn bucket_keys_name_the_account_the_region_and_cognitos_category() {
        let other = Scope {
            account: Some("222233334444"),
            region: "eu-west-1",
        };
        assert_eq!(
            bucket_pk(other, Category::UserAccountRecovery),
            "bucket#222233334444#eu-west-1#UserAccountRecovery"
        );
        assert_eq!(
            bucket_pk("eu-west-1", Category::UserAccountRecovery),
            "bucket#eu-west-1#UserAccountRecovery"
        );
        assert_eq!(
            bucket_pk("us-west-2", Category::UserRead),
            "bucket#us-west-2#UserRead"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_table_applies_the_arithmetic_and_can_fail() {
        let table = MemoryBuckets::new();
        let op = BucketOp::Restart {
            start_us: 10,
            len_us: 5,
            expires_at: 0,
        };
        let budget = Duration::from_millis(100);
        assert_eq!(
            table
                .write("b", &op, budget)
                .await
                .unwrap()
                .unwrap()
                .next_us,
            Some(15)
        );
        // the same restart again is refused, with the item as it stands
        let refused = table.write("b", &op, budget).await.unwrap().unwrap_err();
        assert_eq!(refused.item.unwrap().next_us, Some(15));
        table.set_unavailable(true);
        let started = tokio::time::Instant::now();
        assert!(table.write("b", &op, budget).await.is_err());
        assert_eq!(
            started.elapsed(),
            budget,
            "a timeout takes the whole budget"
        );
        assert_eq!(table.writes(), 3);
    }
}

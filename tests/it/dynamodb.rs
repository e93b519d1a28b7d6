//! An in-process DynamoDB table for the guard, behind aws-smithy-mocks: the four item calls the
//! guard makes, with its condition expressions evaluated against the stored items under one
//! lock (so a conditional write decides exactly one winner, as in DynamoDB), and the pacing
//! buckets' `UpdateItem`s (conditions on `nextUs` and `cutAtUs`, `SET nextUs = nextUs + :len`,
//! `ReturnValues` `ALL_NEW`), written independently of `pacing::apply`, so the two check each
//! other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::operation::delete_item::{DeleteItemError, DeleteItemOutput};
use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemOutput};
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, ProvisionedThroughputExceededException,
};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::bucket::{
    APPEND_CONDITION, CUT_CONDITION, REPAIR_CONDITION, RESTART_CONDITION,
};
use cognito_reset::aws::guard::{
    self, BUDGET_REFUND_CONDITION, BUDGET_ROLL_CONDITION, BUDGET_SPEND_CONDITION,
    BUDGET_START_CONDITION, CLAIM_CONDITION, GuardSettings, HOLDER_CONDITION, KEY_CLAIM_CONDITION,
    KEY_FINISH_CONDITION, KEY_RELEASE_CONDITION, KEY_RESUME_CONDITION, SIGN_OUT_PENDING_CONDITION,
};

pub type Item = HashMap<String, AttributeValue>;
type Values = HashMap<String, AttributeValue>;
type Store = Arc<Mutex<HashMap<String, Item>>>;

pub const TABLE: &str = "cognito-reset-guard";

/// How the fake table behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Like DynamoDB: a failed condition returns the old item (ReturnValuesOnConditionCheckFailure).
    Normal,
    /// A failed condition returns no item (as a local emulator may): the guard must read it.
    NoOldItemOnFailure,
    /// Every call is throttled.
    Throttled,
}

/// The table and the mock rules over it.
pub struct Table {
    pub store: Store,
    pub put: Rule,
    pub get: Rule,
    pub update: Rule,
    pub delete: Rule,
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn num(item: &Item, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Evaluates one of the guard's condition expressions; an unknown one fails the test.
fn holds(condition: Option<&str>, old: Option<&Item>, values: &Values) -> bool {
    let value_s = |name: &str| values.get(name).and_then(|v| v.as_s().ok()).cloned();
    let value_n = |name: &str| num(values, name);
    let expired =
        |old: &Item| num(old, "expiresAt").unwrap_or(0) <= value_n(":nowSecs").expect(":nowSecs");
    match condition {
        None => true,
        Some(c) if c == CLAIM_CONDITION => {
            old.is_none_or(expired)
                || old.is_some_and(|old| {
                    text(old, "claimId").map(str::to_owned) == value_s(":claimId")
                })
        }
        Some(c) if c == SIGN_OUT_PENDING_CONDITION => old.is_some_and(|old| {
            text(old, "signOutPending").map(str::to_owned) == value_s(":record")
        }),
        Some(c) if c == KEY_CLAIM_CONDITION => old.is_none_or(expired),
        Some(c) if c == KEY_RESUME_CONDITION => old.is_some_and(|old| {
            text(old, "holder").map(str::to_owned) == value_s(":oldHolder")
                && text(old, "state").map(str::to_owned) == value_s(":oldState")
        }),
        Some(c) if c == KEY_RELEASE_CONDITION => old.is_some_and(|old| {
            text(old, "state").map(str::to_owned) == value_s(":pending")
                && text(old, "holder").map(str::to_owned) == value_s(":holder")
                && !old.contains_key("abandonedSince")
                && !old.contains_key("undecided")
        }),
        Some(c) if c == HOLDER_CONDITION => {
            old.is_some_and(|old| text(old, "claimId").map(str::to_owned) == value_s(":claimId"))
        }
        Some(c) if c == KEY_FINISH_CONDITION => old.is_some_and(|old| {
            text(old, "state").map(str::to_owned) == value_s(":pending")
                && text(old, "holder").map(str::to_owned) == value_s(":holder")
        }),
        Some(c) if c == RESTART_CONDITION => {
            let start = value_n(":start").expect(":start");
            old.and_then(|old| num(old, "nextUs"))
                .is_none_or(|next| next < start)
        }
        Some(c) if c == APPEND_CONDITION => {
            let (earliest, latest) = (
                value_n(":earliest").expect(":earliest"),
                value_n(":latest").expect(":latest"),
            );
            old.and_then(|old| num(old, "nextUs"))
                .is_some_and(|next| earliest <= next && next <= latest)
        }
        Some(c) if c == REPAIR_CONDITION => {
            old.and_then(|old| num(old, "nextUs")) == Some(value_n(":seen").expect(":seen"))
        }
        Some(c) if c == CUT_CONDITION => {
            let gap_ago = value_n(":gapAgo").expect(":gapAgo");
            old.and_then(|old| num(old, "cutAtUs"))
                .is_none_or(|at| at <= gap_ago)
        }
        Some(c) if c == BUDGET_SPEND_CONDITION => old.is_some_and(|old| {
            num(old, "window") == value_n(":window")
                && num(old, "total").expect("total") < value_n(":limit").expect(":limit")
                && text(old, "spendId").map(str::to_owned) != value_s(":spend")
        }),
        Some(c) if c == BUDGET_START_CONDITION => old.is_none(),
        Some(c) if c == BUDGET_ROLL_CONDITION => old.is_some_and(|old| {
            num(old, "window") == value_n(":oldWindow") && num(old, "used") == value_n(":oldUsed")
        }),
        // `#count` is bound by name: the fake checks both counts, which the refund keeps >= 0.
        Some(c) if c == BUDGET_REFUND_CONDITION => old.is_some_and(|old| {
            num(old, "window") == value_n(":window")
                && text(old, "refundId").map(str::to_owned) != value_s(":refund")
        }),
        Some(other) => panic!("the fake table does not know the condition {other:?}"),
    }
}

/// Applies an update expression (`SET a = :v, b = b + :n, c = c - :n REMOVE d`; names may be
/// `#placeholders`) to `item`.
fn apply_update(
    item: &mut Item,
    expression: &str,
    names: &HashMap<String, String>,
    values: &Values,
) {
    let name_of = |n: &str| -> String {
        names
            .get(n.trim())
            .cloned()
            .unwrap_or_else(|| n.trim().to_owned())
    };
    let (set, remove) = match expression.split_once(" REMOVE ") {
        Some((set, remove)) => (set, Some(remove)),
        None => match expression.strip_prefix("REMOVE ") {
            Some(remove) => ("", Some(remove)),
            None => (expression, None),
        },
    };
    if let Some(set) = set.strip_prefix("SET ") {
        for assignment in set.split(',') {
            let (name, value) = assignment.split_once('=').expect("name = :value");
            let name = name_of(name);
            // `a = a + :n` (the buckets' append, a budget's spend), `a = a - :n` (a budget's
            // refund), or `a = :value`.
            let value = if let Some((base, addend)) = value.split_once('+') {
                let base = num(item, &name_of(base)).expect("a number to add to");
                let addend = num(values, addend.trim()).expect("a bound number");
                AttributeValue::N((base + addend).to_string())
            } else if let Some((base, subtrahend)) = value.split_once('-') {
                let base = num(item, &name_of(base)).expect("a number to subtract from");
                let subtrahend = num(values, subtrahend.trim()).expect("a bound number");
                AttributeValue::N(
                    base.checked_sub(subtrahend)
                        .expect("a count never below 0")
                        .to_string(),
                )
            } else {
                values.get(value.trim()).expect("a bound value").clone()
            };
            item.insert(name, value);
        }
    }
    for name in remove.into_iter().flat_map(|r| r.split(',')) {
        item.remove(&name_of(name));
    }
}

fn failed(old: Option<&Item>, mode: Mode) -> ConditionalCheckFailedException {
    ConditionalCheckFailedException::builder()
        .message("The conditional request failed")
        .set_item(if mode == Mode::Normal {
            old.cloned()
        } else {
            None
        })
        .build()
}

fn throttled() -> ProvisionedThroughputExceededException {
    ProvisionedThroughputExceededException::builder()
        .message("throughput exceeded")
        .build()
}

fn key_of(key: Option<&Item>) -> String {
    key.and_then(|k| text(k, "pk"))
        .expect("a pk key")
        .to_owned()
}

impl Table {
    pub fn new(mode: Mode) -> Table {
        let store: Store = Arc::default();
        let s = Arc::clone(&store);
        let put = mock!(Client::put_item).then_compute_response(move |input| {
            if mode == Mode::Throttled {
                return MockResponse::Error(PutItemError::ProvisionedThroughputExceededException(
                    throttled(),
                ));
            }
            let item = input.item().cloned().expect("an item");
            let pk = text(&item, "pk").expect("pk").to_owned();
            let values = input
                .expression_attribute_values()
                .cloned()
                .unwrap_or_default();
            let mut store = s.lock().expect("store");
            let old = store.get(&pk);
            if !holds(input.condition_expression(), old, &values) {
                return MockResponse::Error(PutItemError::ConditionalCheckFailedException(failed(
                    old, mode,
                )));
            }
            store.insert(pk, item);
            MockResponse::Output(PutItemOutput::builder().build())
        });
        let s = Arc::clone(&store);
        let get = mock!(Client::get_item).then_compute_response(move |input| {
            if mode == Mode::Throttled {
                return MockResponse::Error(GetItemError::ProvisionedThroughputExceededException(
                    throttled(),
                ));
            }
            let pk = key_of(input.key());
            let item = s.lock().expect("store").get(&pk).cloned();
            MockResponse::Output(GetItemOutput::builder().set_item(item).build())
        });
        let s = Arc::clone(&store);
        let update = mock!(Client::update_item).then_compute_response(move |input| {
            if mode == Mode::Throttled {
                return MockResponse::Error(
                    UpdateItemError::ProvisionedThroughputExceededException(throttled()),
                );
            }
            let pk = key_of(input.key());
            let values = input
                .expression_attribute_values()
                .cloned()
                .unwrap_or_default();
            let names = input
                .expression_attribute_names()
                .cloned()
                .unwrap_or_default();
            let mut store = s.lock().expect("store");
            let old = store.get(&pk);
            if !holds(input.condition_expression(), old, &values) {
                return MockResponse::Error(UpdateItemError::ConditionalCheckFailedException(
                    failed(old, mode),
                ));
            }
            let mut item = old.cloned().unwrap_or_else(|| {
                HashMap::from([("pk".to_owned(), AttributeValue::S(pk.clone()))])
            });
            apply_update(
                &mut item,
                input.update_expression().expect("an update expression"),
                &names,
                &values,
            );
            store.insert(pk, item.clone());
            let attributes = (input.return_values() == Some(&ReturnValue::AllNew)).then_some(item);
            MockResponse::Output(
                UpdateItemOutput::builder()
                    .set_attributes(attributes)
                    .build(),
            )
        });
        let s = Arc::clone(&store);
        let delete = mock!(Client::delete_item).then_compute_response(move |input| {
            if mode == Mode::Throttled {
                return MockResponse::Error(
                    DeleteItemError::ProvisionedThroughputExceededException(throttled()),
                );
            }
            let pk = key_of(input.key());
            let values = input
                .expression_attribute_values()
                .cloned()
                .unwrap_or_default();
            let mut store = s.lock().expect("store");
            let old = store.get(&pk);
            if !holds(input.condition_expression(), old, &values) {
                return MockResponse::Error(DeleteItemError::ConditionalCheckFailedException(
                    failed(old, mode),
                ));
            }
            store.remove(&pk);
            MockResponse::Output(DeleteItemOutput::builder().build())
        });
        Table {
            store,
            put,
            get,
            update,
            delete,
        }
    }

    /// A client over this table, configured like the real one, with fast retries.
    pub fn client(&self) -> Client {
        let settings = ClientSettings {
            timeout: Duration::from_secs(5),
            max_attempts: 2,
        };
        mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&self.put, &self.get, &self.update, &self.delete],
            |builder| guard::configure(builder, settings).retry_config(
                RetryConfig::standard()
                    .with_max_attempts(2)
                    .with_initial_backoff(Duration::from_millis(1))
                    .with_max_backoff(Duration::from_millis(2))
            )
        )
    }

    /// Calls that wrote (or tried to write) to the table.
    pub fn writes(&self) -> usize {
        self.put.num_calls() + self.update.num_calls() + self.delete.num_calls()
    }

    /// The items now stored, by key.
    pub fn items(&self) -> HashMap<String, Item> {
        self.store.lock().expect("store").clone()
    }

    /// The user item of `username` (canonical) in `pool`, if any.
    pub fn user_item(&self, pool: &str, username: &str) -> Option<Item> {
        self.items()
            .get(&format!("user#{pool}#{username}"))
            .cloned()
    }

    /// Stores an item as another invocation would have left it.
    pub fn put_raw(&self, item: Item) {
        let pk = text(&item, "pk").expect("pk").to_owned();
        self.store.lock().expect("store").insert(pk, item);
    }
}

/// The guard's settings over this table.
pub fn settings(cooldown_secs: u64) -> GuardSettings {
    GuardSettings {
        table: TABLE.to_owned(),
        cooldown: Duration::from_secs(cooldown_secs),
        idempotency_ttl: Duration::from_secs(86_400),
        client: ClientSettings {
            timeout: Duration::from_secs(5),
            max_attempts: 2,
        },
    }
}

pub fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Milliseconds since the epoch, `offset` from now (negative: in the past).
pub fn ms_from_now(offset_secs: i64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    (now + offset_secs * 1000) as u64
}

/// Seconds since the epoch, `offset` from now.
pub fn secs_from_now(offset_secs: i64) -> u64 {
    ms_from_now(offset_secs) / 1000
}

//! The guard's logic, pure: what an item of the guard's table *means* and which conditional
//! write each decision makes. No SDK type and no I/O: the DynamoDB store
//! ([`crate::aws::guard::DynamoTable`]) renders the [`Write`]s built here into requests, and the
//! fault-injection suite's in-memory table applies the same [`Write`]s with [`apply`] (DynamoDB's
//! conditional-write semantics for exactly these expressions). The two differ only in storage;
//! a differential test runs the same operations against both and compares every answer and item.
//!
//! Conditions and updates are small values ([`Cond`], [`Change`]) that render to the expression
//! text DynamoDB evaluates (the text is pinned by the `*_CONDITION` constants, so a change of
//! meaning is a change of text) and evaluate against an [`Item`] here.
//!
//! | item | `pk` | attributes |
//! |---|---|---|
//! | idempotency key | `key#<sha256(caller, key, batch index)>` | `state` (`pending` or `done`), `requestHash`, `holder` (the run that took it), `leaseUntil` (ms), `answer` (JSON, when done), `decideUntil` (ms: a done ambiguous answer is undecided until then), `undecided` (the undecided answer a pending run gives back on release), `expiresAt` |
//! | user claim | `user#<pool>#<canonical username>` | `state` (`claimed`, `reset`, or `unconfirmed`), `claimId`, `claimedAt` (ms), `leaseUntil` (ms: until then the reset may be in flight), `statusBefore` (the user's `UserStatus` when claimed), `keyPk` (the claiming request's idempotency key item), `resetAt` (ms), `signOutPending` (the record whose sign-out is retried on its redelivery), `expiresAt` |
//! | caller budget | `budget#<sha256(rule, caller)>` | `window`, `used`, `before`, `total`, `expiresAt`, `spendId`, `refundId` |
//! | approval | `approval#<approval id>` | `state` (`pending`, `approved` or `denied`), `requester` (JSON: the caller's identities), `requesterDesc`, `rule`, `request` (JSON: pool, canonical username, sign-out, ticket and **ClientMetadata**), `createdAt` (ms), `decideBy` (s), `approver`, `decidedAt` (ms), `reason`, `expiresAt` |
//! | kept answer | `answer#<sha256(caller, request id)>` | `answer` (JSON), `expiresAt` |
//!
//! The approval item is the one item that holds a request's `ClientMetadata` (the reset is
//! performed from it once approved); nothing of it is logged, put in an event or a metric.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::deadline::{
    epoch_ms as ms, epoch_secs_ceil as secs_ceil, epoch_secs_floor as secs_floor,
};
use crate::failure::{GuardError, GuardErrorKind};
use crate::request::ResetRequest;

// ---- items, conditions, updates ----------------------------------------------------------------

/// An attribute value: the guard stores only strings and non-negative numbers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    S(String),
    N(u64),
}

/// One item, by attribute name.
pub type Item = BTreeMap<String, Value>;

/// Items by partition key (`pk`): the in-memory table of [`apply`].
pub type Items = BTreeMap<String, Item>;

/// An attribute as an expression names it (`expiresAt`, or `#state` for a reserved word) and
/// its real name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub expr: &'static str,
    pub name: &'static str,
}

const fn attr(name: &'static str) -> Attr {
    Attr { expr: name, name }
}

const PK: Attr = attr("pk");
const STATE: Attr = Attr {
    expr: "#state",
    name: "state",
};
const EXPIRES_AT: Attr = attr("expiresAt");
const LEASE_UNTIL: Attr = attr("leaseUntil");
const HOLDER: Attr = attr("holder");
const CLAIM_ID: Attr = attr("claimId");
const RESET_AT: Attr = attr("resetAt");
const ANSWER: Attr = attr("answer");
const SIGN_OUT_PENDING: Attr = attr("signOutPending");
const STATUS_BEFORE: Attr = attr("statusBefore");
const KEY_PK: Attr = attr("keyPk");
/// Until when (ms) a key's ambiguous answer is undecided: a retry inside it runs and the user's
/// status decides; after it, the answer is final.
const DECIDE_UNTIL: Attr = attr("decideUntil");
/// The undecided answer a pending key was taken over from: given back on release.
const UNDECIDED: Attr = attr("undecided");
/// When (ms) the run holding a key took it.
const TAKEN_AT: Attr = attr("takenAt");
/// On a key taken over from a run that died holding it: when (ms) the first of the runs that
/// held it took it (see [`KeyState::Abandoned`]).
const ABANDONED_SINCE: Attr = attr("abandonedSince");

/// The `UserStatus` of a user who can sign in with a password: a reset turns it into
/// `RESET_REQUIRED`, so a user still `CONFIRMED` after a reset's call can no longer be in flight
/// was never reset by it.
pub const CONFIRMED: &str = "CONFIRMED";
/// The `UserStatus` a reset leaves.
pub const RESET_REQUIRED: &str = "RESET_REQUIRED";
const WINDOW: Attr = Attr {
    expr: "#window",
    name: "window",
};
const USED: Attr = Attr {
    expr: "#used",
    name: "used",
};
const TOTAL: Attr = Attr {
    expr: "#total",
    name: "total",
};
/// The last spend written to a budget item (its token): the SDK's retry of a spend that landed
/// but whose answer was lost meets its own token, and is not counted twice.
const SPEND_ID: Attr = attr("spendId");
/// The same for the last refund.
const REFUND_ID: Attr = attr("refundId");

/// A bound value: its placeholder (`:nowSecs`) and what it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub placeholder: &'static str,
    pub value: Value,
}

fn bound_n(placeholder: &'static str, value: u64) -> Bound {
    Bound {
        placeholder,
        value: Value::N(value),
    }
}

fn bound_s(placeholder: &'static str, value: &str) -> Bound {
    Bound {
        placeholder,
        value: Value::S(value.to_owned()),
    }
}

/// A comparison of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
}

/// A condition expression, as DynamoDB evaluates it against the item before the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `attribute_not_exists(a)`.
    NotExists(Attr),
    /// `a <op> :v`; false when the attribute is missing or of another type.
    Compare(Attr, Cmp, Bound),
    /// `x OR y OR ...`.
    Or(Vec<Cond>),
    /// `x AND y AND ...`.
    And(Vec<Cond>),
    /// No condition: the write always applies (rendered as no condition expression).
    Always,
}

/// A change of an update expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `SET a = :v`.
    Set(Attr, Bound),
    /// `SET a = a + :v`.
    Add(Attr, Bound),
    /// `SET a = a - :v`.
    Subtract(Attr, Bound),
    /// `REMOVE a`.
    Remove(Attr),
}

/// One conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `PutItem`: the whole item, if the condition holds.
    Put { item: Item, cond: Cond },
    /// `UpdateItem` of the item `pk` (created if absent), if the condition holds.
    Update {
        pk: String,
        changes: Vec<Change>,
        cond: Cond,
    },
    /// `DeleteItem` of the item `pk`, if the condition holds.
    Delete { pk: String, cond: Cond },
}

/// An expression's text with its attribute names and values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    /// `#name` → attribute name.
    pub names: BTreeMap<String, String>,
    /// `:placeholder` → value.
    pub values: BTreeMap<String, Value>,
}

impl Rendered {
    fn name(&mut self, attr: Attr) -> &'static str {
        if attr.expr.starts_with('#') {
            self.names
                .insert(attr.expr.to_owned(), attr.name.to_owned());
        }
        attr.expr
    }

    fn value(&mut self, bound: &Bound) -> &'static str {
        self.values
            .insert(bound.placeholder.to_owned(), bound.value.clone());
        bound.placeholder
    }
}

impl Cond {
    /// Whether the condition holds for `item` (`None`: no item).
    pub fn holds(&self, item: Option<&Item>) -> bool {
        match self {
            Cond::NotExists(attr) => item.is_none_or(|i| !i.contains_key(attr.name)),
            Cond::Compare(attr, cmp, bound) => {
                let Some(value) = item.and_then(|i| i.get(attr.name)) else {
                    return false;
                };
                let ordering = match (value, &bound.value) {
                    (Value::N(a), Value::N(b)) => a.cmp(b),
                    (Value::S(a), Value::S(b)) => a.as_bytes().cmp(b.as_bytes()),
                    _ => return false,
                };
                match cmp {
                    Cmp::Eq => ordering.is_eq(),
                    Cmp::Ne => ordering.is_ne(),
                    Cmp::Lt => ordering.is_lt(),
                    Cmp::Le => ordering.is_le(),
                    Cmp::Gt => ordering.is_gt(),
                }
            }
            Cond::Or(conds) => conds.iter().any(|c| c.holds(item)),
            Cond::And(conds) => conds.iter().all(|c| c.holds(item)),
            Cond::Always => true,
        }
    }

    /// The condition's expression text, its names and values.
    pub fn render(&self) -> Rendered {
        let mut rendered = Rendered::default();
        let text = self.render_into(&mut rendered, false);
        rendered.text = text;
        rendered
    }

    fn render_into(&self, r: &mut Rendered, nested: bool) -> String {
        match self {
            Cond::NotExists(attr) => format!("attribute_not_exists({})", r.name(*attr)),
            Cond::Compare(attr, cmp, bound) => {
                let op = match cmp {
                    Cmp::Eq => "=",
                    Cmp::Ne => "<>",
                    Cmp::Lt => "<",
                    Cmp::Le => "<=",
                    Cmp::Gt => ">",
                };
                format!("{} {op} {}", r.name(*attr), r.value(bound))
            }
            // Nested either way in parentheses: `AND` binds tighter than `OR` in DynamoDB's
            // grammar, and the text must mean what the tree does.
            Cond::Or(conds) => Cond::render_joined(conds, " OR ", r, nested),
            Cond::And(conds) => Cond::render_joined(conds, " AND ", r, nested),
            Cond::Always => String::new(),
        }
    }

    /// `conds` joined by `operator`, in parentheses when nested in another condition.
    fn render_joined(conds: &[Cond], operator: &str, r: &mut Rendered, nested: bool) -> String {
        let text = conds
            .iter()
            .map(|c| c.render_into(r, true))
            .collect::<Vec<_>>()
            .join(operator);
        if nested { format!("({text})") } else { text }
    }
}

/// Renders an update's changes (`SET ... REMOVE ...`) into `rendered` (which may hold the
/// condition's names and values already).
pub fn render_changes(changes: &[Change], rendered: &mut Rendered) -> String {
    let mut sets = Vec::new();
    let mut removes = Vec::new();
    for change in changes {
        match change {
            Change::Set(a, v) => {
                let (a, v) = (rendered.name(*a), rendered.value(v));
                sets.push(format!("{a} = {v}"));
            }
            Change::Add(a, v) => {
                let (a, v) = (rendered.name(*a), rendered.value(v));
                sets.push(format!("{a} = {a} + {v}"));
            }
            Change::Subtract(a, v) => {
                let (a, v) = (rendered.name(*a), rendered.value(v));
                sets.push(format!("{a} = {a} - {v}"));
            }
            Change::Remove(a) => removes.push(rendered.name(*a).to_owned()),
        }
    }
    let mut text = String::new();
    if !sets.is_empty() {
        text = format!("SET {}", sets.join(", "));
    }
    if !removes.is_empty() {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!("REMOVE {}", removes.join(", ")));
    }
    text
}

impl Write {
    /// The partition key the write is about.
    pub fn pk(&self) -> &str {
        match self {
            Write::Put { item, .. } => match item.get(PK.name) {
                Some(Value::S(pk)) => pk,
                _ => "",
            },
            Write::Update { pk, .. } | Write::Delete { pk, .. } => pk,
        }
    }

    /// The write's condition.
    pub fn cond(&self) -> &Cond {
        match self {
            Write::Put { cond, .. } | Write::Update { cond, .. } | Write::Delete { cond, .. } => {
                cond
            }
        }
    }

    /// The SDK operation's name.
    pub fn operation(&self) -> &'static str {
        match self {
            Write::Put { .. } => "PutItem",
            Write::Update { .. } => "UpdateItem",
            Write::Delete { .. } => "DeleteItem",
        }
    }
}

/// Why a write did not apply: its condition failed (with the item it met, as DynamoDB returns
/// it with `ALL_OLD`), or the update was invalid (an arithmetic on a missing attribute:
/// DynamoDB's `ValidationException`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Condition(Option<Item>),
    Invalid(&'static str),
}

/// Applies one conditional write to `items`, as DynamoDB does.
pub fn apply(items: &mut Items, write: &Write) -> Result<(), Refused> {
    let pk = write.pk().to_owned();
    let old = items.get(&pk);
    if !write.cond().holds(old) {
        return Err(Refused::Condition(old.cloned()));
    }
    match write {
        Write::Put { item, .. } => {
            items.insert(pk, item.clone());
        }
        Write::Delete { .. } => {
            items.remove(&pk);
        }
        Write::Update { changes, .. } => {
            let mut item = old
                .cloned()
                .unwrap_or_else(|| Item::from([(PK.name.to_owned(), Value::S(pk.clone()))]));
            for change in changes {
                match change {
                    Change::Set(a, v) => {
                        item.insert(a.name.to_owned(), v.value.clone());
                    }
                    Change::Add(a, v) | Change::Subtract(a, v) => {
                        let (Some(Value::N(base)), Value::N(by)) = (item.get(a.name), &v.value)
                        else {
                            return Err(Refused::Invalid(
                                "an arithmetic on a missing or non-number attribute",
                            ));
                        };
                        let result = if matches!(change, Change::Add(..)) {
                            base.checked_add(*by)
                        } else {
                            base.checked_sub(*by)
                        };
                        let Some(result) = result else {
                            return Err(Refused::Invalid("a number out of range"));
                        };
                        item.insert(a.name.to_owned(), Value::N(result));
                    }
                    Change::Remove(a) => {
                        item.remove(a.name);
                    }
                }
            }
            items.insert(pk, item);
        }
    }
    Ok(())
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(Value::S(s)) => Some(s),
        _ => None,
    }
}

fn number(item: &Item, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(Value::N(n)) => Some(*n),
        _ => None,
    }
}

fn s(value: &str) -> Value {
    Value::S(value.to_owned())
}

fn n(value: u64) -> Value {
    Value::N(value)
}

fn malformed(operation: &'static str, what: &str) -> GuardError {
    GuardError::new(GuardErrorKind::Misconfigured, operation, what.to_owned())
}

/// Whether an item is live at `now`: TTL deletes lazily, so an item past its `expiresAt` is
/// treated as gone by every decision.
pub fn live(item: &Item, now: SystemTime) -> bool {
    number(item, EXPIRES_AT.name).is_some_and(|expires| expires > secs_floor(now))
}

fn not_live(now: SystemTime) -> Cond {
    Cond::Compare(EXPIRES_AT, Cmp::Le, bound_n(":nowSecs", secs_floor(now)))
}

// ---- idempotency keys -------------------------------------------------------------------------

/// A key is taken where no live item is. A live one whose holder died is taken over as exactly
/// the item that was read ([`key_resume`], [`key_take_over`]), keeping what it knows.
pub const KEY_CLAIM_CONDITION: &str = "attribute_not_exists(pk) OR expiresAt <= :nowSecs";
/// A key whose holder died (or that keeps an undecided answer) is taken over only as the exact
/// item that was read: its holder's mark and state.
pub const KEY_RESUME_CONDITION: &str = "holder = :oldHolder AND #state = :oldState";
/// Only a pending key may be finished or released, and only by the run that took it: an SDK
/// retry of a release that landed must not delete the key another run has taken since.
pub const KEY_FINISH_CONDITION: &str = "#state = :pending AND holder = :holder";
/// A release deletes only a key this run took fresh: one taken over from a dead holder or from
/// an undecided answer keeps what it knows (a run that lost track of its take-over, its write's
/// answer lost, releases it as a fresh one).
pub const KEY_RELEASE_CONDITION: &str = "#state = :pending AND holder = :holder AND attribute_not_exists(abandonedSince) AND attribute_not_exists(undecided)";

/// An idempotency key as the guard stores it: scoped by caller and by batch position, bound to
/// one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The key as the caller gave it, with `#<index>` for a batch item (for the audit line).
    pub key: String,
    /// The item's partition key.
    pub pk: String,
    /// The SHA-256 of the compared fields of the request.
    pub request_hash: String,
    /// This record run's mark on the key item ([`new_holder`]): only the run that took the key
    /// finishes or releases it.
    pub holder: String,
    /// The undecided answer this run took the key over from ([`KeyState::Resume`]): a release
    /// gives the key back to it.
    pub undecided: Option<Undecided>,
    /// When (ms) the first run of a key taken over from a dead holder took it
    /// ([`KeyState::Abandoned`]): the claim on the user is judged by it, and a release leaves
    /// the key as a dead holder's again.
    pub abandoned: Option<u64>,
}

/// An earlier run's ambiguous answer (`reset-unconfirmed`) kept under a key, undecided until
/// `decide_until` (ms): until then the user item still holds that reset, so a retry runs and
/// the user's status decides; from then on the answer is final and replayed. A client's retry
/// after the cooldown never sends the reset again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    /// The answer (JSON) that stands unless a retry decides otherwise.
    pub answer: String,
    /// Until when (epoch ms) a retry may decide.
    pub decide_until: u64,
}

impl Undecided {
    /// Whether a retry at `now` may still decide.
    fn is_open(&self, now: SystemTime) -> bool {
        self.decide_until > ms(now)
    }
}

static HOLDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A mark no other record run (or budget spend or refund) has: the process's random keys and a
/// counter.
pub fn new_holder() -> String {
    use std::hash::BuildHasher;
    let count = HOLDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let random = std::collections::hash_map::RandomState::new().hash_one(count);
    format!("{random:016x}{count:x}")
}

impl KeyRef {
    /// The key `key` of `caller` (its stable description) for `request`, item `index` of a
    /// batch or (`None`) a single request: the two can never share an item.
    pub fn new(caller: &str, key: &str, index: Option<usize>, request: &ResetRequest) -> KeyRef {
        let position = match index {
            Some(index) => format!("item {index}"),
            None => "single".to_owned(),
        };
        let pk = format!(
            "key#{}",
            sha256_hex(&[caller.as_bytes(), key.as_bytes(), position.as_bytes()])
        );
        // JSON of the three compared fields: unambiguous, and ClientMetadata is a sorted map.
        let mut compared = serde_json::json!([
            request.user_pool_id.as_str(),
            request.username.as_str(),
            request.client_metadata.entries(),
        ]);
        // `SignOut` only when asked, so the keys of requests without it keep their hash.
        if request.sign_out
            && let Some(fields) = compared.as_array_mut()
        {
            fields.push(serde_json::Value::Bool(true));
        }
        // `Ticket` only when given, as an object so that it never equals a metadata entry.
        if let Some(ticket) = request.ticket()
            && let Some(fields) = compared.as_array_mut()
        {
            fields.push(serde_json::json!({ "ticket": ticket }));
        }
        KeyRef {
            key: match index {
                Some(index) => format!("{key}#{index}"),
                None => key.to_owned(),
            },
            pk,
            request_hash: sha256_hex(&[compared.to_string().as_bytes()]),
            holder: new_holder(),
            undecided: None,
            abandoned: None,
        }
    }
}

/// Hex SHA-256 of length-prefixed parts, so that ("ab", "c") and ("a", "bc") differ.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What an idempotency key says about a request; `A` is the answer kept for replay (the store
/// keeps it as JSON and knows nothing of it).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState<A> {
    /// First use (or a retry after a RETRY): the request runs, and this invocation holds the key.
    Fresh,
    /// An earlier run's ambiguous answer is still undecided ([`Undecided`]): the request runs
    /// (the user item decides by the user's status), this invocation holds the key, and a
    /// release gives the key back to that answer.
    Resume(Undecided),
    /// A run that held the key died before its end was written (a crash, a timeout, the table
    /// failing under its end after every retry): it may have sent a reset, and, if it did, only
    /// its user item still says so. The request runs and this invocation holds the key (taken
    /// over as exactly that item, keeping `since`, when the first run of the key took it, in ms):
    /// the user item decides as for any reset; a user found free once `since` + the cooldown is
    /// over is not reset ([`UserState::Abandoned`]), since that item may be gone by its window.
    Abandoned { since: u64 },
    /// A final answer was given before: give it again.
    Replay(A),
    /// The same key is being processed right now.
    InProgress,
    /// The key was used with a different request.
    Reused,
}

/// The write that takes `key` until `lease_until`.
pub fn key_take(key: &KeyRef, lease_until: SystemTime, now: SystemTime, ttl: Duration) -> Write {
    Write::Put {
        item: key_item(key, lease_until, now, ttl),
        cond: Cond::Or(vec![Cond::NotExists(PK), not_live(now)]),
    }
}

fn key_item(key: &KeyRef, lease_until: SystemTime, now: SystemTime, ttl: Duration) -> Item {
    Item::from([
        (PK.name.to_owned(), s(&key.pk)),
        (STATE.name.to_owned(), s("pending")),
        ("requestHash".to_owned(), s(&key.request_hash)),
        (HOLDER.name.to_owned(), s(&key.holder)),
        (LEASE_UNTIL.name.to_owned(), n(ms(lease_until))),
        (TAKEN_AT.name.to_owned(), n(ms(now))),
        (EXPIRES_AT.name.to_owned(), n(secs_ceil(now + ttl))),
    ])
}

/// The write that takes over the key item `met` (as read) with `item`: only that very item
/// (its holder's mark and state); `None` when `met` cannot be named exactly (no holder mark).
fn key_over(met: &Item, item: Item) -> Option<Write> {
    let (old_holder, old_state) = (text(met, HOLDER.name)?, text(met, STATE.name)?);
    Some(Write::Put {
        item,
        cond: Cond::And(vec![
            Cond::Compare(HOLDER, Cmp::Eq, bound_s(":oldHolder", old_holder)),
            Cond::Compare(STATE, Cmp::Eq, bound_s(":oldState", old_state)),
        ]),
    })
}

/// The write that takes over the key `met` (as read: pending, its holder's lease over, no
/// undecided answer) until `lease_until`, keeping `since` ([`KeyState::Abandoned`]). `None`
/// when `met` cannot be named exactly (no holder mark).
pub fn key_take_over(
    key: &KeyRef,
    since: u64,
    met: &Item,
    lease_until: SystemTime,
    now: SystemTime,
    ttl: Duration,
) -> Option<Write> {
    let mut item = key_item(key, lease_until, now, ttl);
    item.insert(ABANDONED_SINCE.name.to_owned(), n(since));
    key_over(met, item)
}

/// The write that takes over the undecided key `met` (as read: a done item, or a pending one
/// whose holder's lease ran out) until `lease_until`, keeping its undecided answer for a
/// release to give back. `None` when `met` cannot be named exactly (no holder mark).
pub fn key_resume(
    key: &KeyRef,
    undecided: &Undecided,
    met: &Item,
    lease_until: SystemTime,
    now: SystemTime,
    ttl: Duration,
) -> Option<Write> {
    let mut item = key_item(key, lease_until, now, ttl);
    item.insert(UNDECIDED.name.to_owned(), s(&undecided.answer));
    item.insert(DECIDE_UNTIL.name.to_owned(), n(undecided.decide_until));
    key_over(met, item)
}

/// The run that holds (or last held) a key item.
pub fn key_holder(item: &Item) -> Option<&str> {
    text(item, HOLDER.name)
}

/// What a live key item that stands in the way says. [`KeyState::Resume`] from an item another
/// run holds (or held) means "take it over with [`key_resume`]"; from this run's own, that it
/// already holds it.
pub fn key_state(
    item: &Item,
    key: &KeyRef,
    now: SystemTime,
) -> Result<KeyState<String>, GuardError> {
    if text(item, "requestHash") != Some(key.request_hash.as_str()) {
        return Ok(KeyState::Reused);
    }
    let undecided = |answer: &str| {
        number(item, DECIDE_UNTIL.name).map(|decide_until| Undecided {
            answer: answer.to_owned(),
            decide_until,
        })
    };
    match text(item, STATE.name) {
        Some("done") => {
            let answer = text(item, ANSWER.name)
                .ok_or_else(|| malformed("GetItem", "a done key item has no answer"))?;
            match undecided(answer) {
                Some(open) if open.is_open(now) => Ok(KeyState::Resume(open)),
                _ => Ok(KeyState::Replay(answer.to_owned())),
            }
        }
        _ => {
            let resumed = text(item, UNDECIDED.name).and_then(undecided);
            let mine = text(item, HOLDER.name) == Some(key.holder.as_str());
            let lease_over = number(item, LEASE_UNTIL.name).is_some_and(|lease| lease <= ms(now));
            let abandoned_since = number(item, ABANDONED_SINCE.name);
            match resumed {
                // Pending and taken by this very run: its take landed and the SDK's retry met
                // it.
                Some(open) if mine => Ok(KeyState::Resume(open)),
                None if mine => {
                    Ok(abandoned_since
                        .map_or(KeyState::Fresh, |since| KeyState::Abandoned { since }))
                }
                // A dead run's key taken over from an undecided answer: still undecided, or
                // final once its window is over.
                Some(open) if lease_over && open.is_open(now) => Ok(KeyState::Resume(open)),
                Some(open) if lease_over => Ok(KeyState::Replay(open.answer)),
                // Its holder died before writing its end: since when the key's runs have held
                // it (an item without the marks, written before them, since the epoch: its
                // user is then never reset without the user item's word).
                None if lease_over => Ok(KeyState::Abandoned {
                    since: abandoned_since
                        .or_else(|| number(item, TAKEN_AT.name))
                        .unwrap_or(0),
                }),
                // Pending: held by a live invocation.
                _ => Ok(KeyState::InProgress),
            }
        }
    }
}

/// How a run ends its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEnd<'a> {
    /// A final answer (JSON), replayed until the TTL ends.
    Answer(&'a str),
    /// An ambiguous answer (JSON) that a retry may still decide until `until` (ms), the end of
    /// the user item's window; final from then on.
    Undecided { answer: &'a str, until: u64 },
    /// Released: the key is free again, or given back to the undecided answer the run took it
    /// over from.
    Release,
}

/// How a record that held a claim ends its key: the owned, typed form of [`KeyEnd`] (the store
/// sets an undecided answer's window from the user item it writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAnswer<A> {
    /// A final answer.
    Final(A),
    /// An ambiguous reset's final answer (`reset-unconfirmed`), which the key's retries may
    /// still decide by the user's status while the user item holds the reset.
    Undecided(A),
    /// No answer kept: the key is released.
    Release,
}

impl<A> KeyAnswer<A> {
    /// The same ending, borrowing its answer.
    pub fn as_ref(&self) -> KeyAnswer<&A> {
        match self {
            KeyAnswer::Final(a) => KeyAnswer::Final(a),
            KeyAnswer::Undecided(a) => KeyAnswer::Undecided(a),
            KeyAnswer::Release => KeyAnswer::Release,
        }
    }

    /// The same ending with the answer mapped (`None`: released).
    pub fn map<B>(self, f: impl FnOnce(A) -> Option<B>) -> KeyAnswer<B> {
        match self {
            KeyAnswer::Final(a) => f(a).map_or(KeyAnswer::Release, KeyAnswer::Final),
            KeyAnswer::Undecided(a) => f(a).map_or(KeyAnswer::Release, KeyAnswer::Undecided),
            KeyAnswer::Release => KeyAnswer::Release,
        }
    }
}

/// The write that ends `key` as `end`.
pub fn key_finish(key: &KeyRef, end: KeyEnd<'_>, now: SystemTime, ttl: Duration) -> Write {
    // Pending and held by this run (KEY_FINISH_CONDITION); a plain release adds to it.
    let held = || {
        vec![
            Cond::Compare(STATE, Cmp::Eq, bound_s(":pending", "pending")),
            Cond::Compare(HOLDER, Cmp::Eq, bound_s(":holder", &key.holder)),
        ]
    };
    let cond = Cond::And(held());
    let done = |answer: &str, decide_until: Option<u64>| {
        let mut changes = vec![
            Change::Set(STATE, bound_s(":done", "done")),
            Change::Set(ANSWER, bound_s(":answer", answer)),
            Change::Set(EXPIRES_AT, bound_n(":expires", secs_ceil(now + ttl))),
        ];
        changes.push(match decide_until {
            Some(until) => Change::Set(DECIDE_UNTIL, bound_n(":decideUntil", until)),
            None => Change::Remove(DECIDE_UNTIL),
        });
        changes.push(Change::Remove(UNDECIDED));
        Write::Update {
            pk: key.pk.clone(),
            changes,
            cond: cond.clone(),
        }
    };
    match (end, &key.undecided, key.abandoned) {
        (KeyEnd::Answer(answer), _, _) => done(answer, None),
        (KeyEnd::Undecided { answer, until }, _, _) => done(answer, Some(until)),
        (KeyEnd::Release, Some(open), _) => done(&open.answer, Some(open.decide_until)),
        // A key taken over from a dead holder is left as a dead holder's: what the first run
        // may have sent is still judged by its `since`.
        (KeyEnd::Release, None, Some(_)) => Write::Update {
            pk: key.pk.clone(),
            changes: vec![Change::Set(LEASE_UNTIL, bound_n(":now", ms(now)))],
            cond,
        },
        (KeyEnd::Release, None, None) => Write::Delete {
            pk: key.pk.clone(),
            // KEY_RELEASE_CONDITION: one flat conjunction, as the constant reads.
            cond: Cond::And(
                held()
                    .into_iter()
                    .chain([Cond::NotExists(ABANDONED_SINCE), Cond::NotExists(UNDECIDED)])
                    .collect(),
            ),
        },
    }
}

// ---- user claims ------------------------------------------------------------------------------

/// A claim is taken where no live item is, or over the same claim (the SDK's retry of a claim
/// whose first attempt landed but whose answer was lost).
pub const CLAIM_CONDITION: &str =
    "attribute_not_exists(pk) OR expiresAt <= :nowSecs OR claimId = :claimId";
/// Only the holder of a claim may complete or release it.
pub const HOLDER_CONDITION: &str = "claimId = :claimId";
/// Only the record whose sign-out is pending ends it.
pub const SIGN_OUT_PENDING_CONDITION: &str = "signOutPending = :record";

/// A held user claim, to complete or release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The user item's partition key.
    pub pk: String,
    /// This claim's id: `<record id>/<ms>/<counter>`.
    pub id: String,
    /// The idempotency key the claiming request holds and the request it binds
    /// (`<key's pk>#<requestHash>`), if any: a retry under the same key of the same request is
    /// the same request, whatever its record id.
    pub key: Option<String>,
    /// The key's [`KeyState::Abandoned`] `since`, when this run took it over from a dead
    /// holder: a fresh claim at or after `since` + the cooldown is [`UserState::Abandoned`].
    pub abandoned: Option<u64>,
}

impl Claim {
    /// The record this claim was made for.
    pub fn record(&self) -> &str {
        claim_record(&self.id)
    }
}

/// The claim that holds (or last held) a user item.
pub fn claim_holder(item: &Item) -> Option<&str> {
    text(item, CLAIM_ID.name)
}

/// The record id a claim id was made for (`<record id>/<ms>/<counter>`).
pub fn claim_record(claim_id: &str) -> &str {
    claim_id.rsplitn(3, '/').nth(2).unwrap_or(claim_id)
}

/// The partition key of a user's claim.
pub fn user_pk(pool: &str, username: &str) -> String {
    format!("user#{pool}#{username}")
}

/// What the per-user claim says about a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserState {
    /// This invocation holds the user: it may reset.
    Claimed(Claim),
    /// This invocation holds the user, under a key taken over from a run that died holding it
    /// ([`KeyState::Abandoned`]), and the cooldown from when that key was first taken is over.
    /// A reset that run sent kept its user item for `since` + the cooldown at least (a release
    /// means nothing was sent), so inside that window a free user proves it sent nothing; after
    /// it, nothing remembers. So the reset is not sent: the claim is released and the request is
    /// answered `reset-unconfirmed`, final under the key.
    Abandoned(Claim),
    /// Dry run: nothing stands in the way, and nothing was written.
    Free,
    /// Reset at `reset_at` (`confirmed`), or a reset sent then whose answer was lost or whose
    /// sender died (not `confirmed`: the user may have a code); new resets wait until `until`.
    RecentlyReset {
        reset_at: SystemTime,
        until: SystemTime,
        confirmed: bool,
    },
    /// Another request is between its claim and its result.
    InProgress,
    /// Cognito refused a reset of this user for its attempt limit, until `until`: answered
    /// `attempt-limit` with no call.
    AttemptLimited { until: SystemTime },
    /// This record reset the user on an earlier delivery and its sign-out failed: sign out
    /// only, never reset again; then end it with [`Completion::SignedOut`] on `claim`.
    SignOutPending { reset_at: SystemTime, claim: Claim },
    /// A reset whose answer was lost (or whose sender died) on a user who was `CONFIRMED`
    /// before it, and that can no longer be in flight: the user's status now tells whether it
    /// happened (`RESET_REQUIRED`) or not (`CONFIRMED`). Settle it with [`resolve_happened`] or
    /// [`resolve_never_happened`] over the `holder`'s item. `own`: the same record's earlier
    /// delivery sent it.
    Unresolved {
        holder: String,
        reset_at: SystemTime,
        until: SystemTime,
        own: bool,
        claim: Claim,
    },
}

/// How a claimed reset ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The reset happened: the cooldown window starts now.
    Reset,
    /// Cognito refused, or failed in a way that proves nothing happened: others may try.
    Release,
    /// Unknown whether the reset happened (a timeout, a 5xx, an unreadable answer): the claim
    /// stays, marked unconfirmed, for a cooldown window from now, so nothing sends a second code
    /// inside it.
    Unconfirmed,
    /// The reset happened and the sign-out after it failed in a way that may pass: as `Reset`,
    /// and the item remembers the record (`signOutPending`), so that its redelivery only signs
    /// out. Kept at least `IDEMPOTENCY_TTL_SECONDS` (or until the redelivery ends it).
    ResetSignOutPending,
    /// The redelivery of a record whose sign-out was pending has ended it (signed out, or for
    /// good): the item is kept only until the reset's own cooldown ends.
    SignedOut { reset_at: SystemTime },
    /// Cognito refused the reset for the user's attempt limit (nothing was sent): the item
    /// answers `attempt-limit` without a call until `until`.
    AttemptLimited { until: SystemTime },
}

/// What a claim that was written (or met as this very claim) says: [`UserState::Claimed`], or
/// [`UserState::Abandoned`] for a key taken over from a dead holder once the cooldown from its
/// `since` is over.
pub fn claimed(claim: &Claim, now: SystemTime, cooldown: Duration) -> UserState {
    match claim.abandoned {
        Some(since) if window_over(since, now, cooldown) => UserState::Abandoned(claim.clone()),
        _ => UserState::Claimed(claim.clone()),
    }
}

/// Whether the cooldown from `since` (epoch ms, a dead key holder's first take) is over at
/// `now`: a reset that holder sent is then remembered by no user item.
pub fn window_over(since: u64, now: SystemTime, cooldown: Duration) -> bool {
    let window_ms = u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX);
    since.saturating_add(window_ms) <= ms(now)
}

/// The write that claims a user as `claim` until `lease_until`. Until it is completed, a claim
/// counts as a (possible) reset for the whole window: a crash between the claim and the result
/// never allows a second code inside it.
pub fn claim_take(
    claim: &Claim,
    lease_until: SystemTime,
    now: SystemTime,
    cooldown: Duration,
    status_before: Option<&str>,
) -> Write {
    Write::Put {
        item: claim_item(claim, lease_until, now, cooldown, status_before),
        cond: Cond::Or(vec![
            Cond::NotExists(PK),
            not_live(now),
            Cond::Compare(CLAIM_ID, Cmp::Eq, bound_s(":claimId", &claim.id)),
        ]),
    }
}

fn claim_item(
    claim: &Claim,
    lease_until: SystemTime,
    now: SystemTime,
    cooldown: Duration,
    status_before: Option<&str>,
) -> Item {
    let until = now + cooldown.max(lease_until.duration_since(now).unwrap_or_default());
    let mut item = Item::from([
        (PK.name.to_owned(), s(&claim.pk)),
        (STATE.name.to_owned(), s("claimed")),
        (CLAIM_ID.name.to_owned(), s(&claim.id)),
        ("claimedAt".to_owned(), n(ms(now))),
        (LEASE_UNTIL.name.to_owned(), n(ms(lease_until))),
        (EXPIRES_AT.name.to_owned(), n(secs_ceil(until))),
    ]);
    if let Some(status) = status_before {
        item.insert(STATUS_BEFORE.name.to_owned(), s(status));
    }
    if let Some(key) = &claim.key {
        item.insert(KEY_PK.name.to_owned(), s(key));
    }
    item
}

/// Takes over the item of `holder`, whose reset the user's status proved never happened: the
/// same claim as [`claim_take`], over exactly that item.
pub fn resolve_never_happened(
    claim: &Claim,
    holder: &str,
    lease_until: SystemTime,
    now: SystemTime,
    cooldown: Duration,
    status_before: Option<&str>,
) -> Write {
    Write::Put {
        item: claim_item(claim, lease_until, now, cooldown, status_before),
        cond: Cond::Compare(CLAIM_ID, Cmp::Eq, bound_s(":holder", holder)),
    }
}

/// What the user's status said about an unresolved reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// `RESET_REQUIRED`: the reset happened at (about) `reset_at`.
    Happened { reset_at: SystemTime },
    /// Still `CONFIRMED`: it never happened; the user is claimed again, as by [`claim_take`].
    /// Also how another request takes the user over a reset that did happen but whose cooldown
    /// is already over (`status_before` then `RESET_REQUIRED`).
    /// `own`: the holder was this request's own earlier run (then the status proves what that
    /// run did; another request's proves nothing of a dead run under this request's key, so a
    /// claim under a key taken over from one is judged by [`claimed`]).
    NeverHappened {
        lease_until: SystemTime,
        status_before: Option<String>,
        own: bool,
    },
}

/// What the user's `status`, read once an unresolved reset (sent at about `reset_at`) can no
/// longer be in flight, says about it; `None` when it cannot tell (the user was not `CONFIRMED`
/// before, or the read failed). `RESET_REQUIRED`: it happened, unless its cooldown is already
/// over and the reset was another request's: that request then takes the user over as for a
/// reset that never happened (the user is `RESET_REQUIRED` now). Still `CONFIRMED`: it never
/// happened. `own`: the reset was this request's own earlier run's.
pub fn resolution(
    status: Option<&str>,
    reset_at: SystemTime,
    own: bool,
    lease_until: SystemTime,
    now: SystemTime,
    cooldown: Duration,
) -> Option<Resolution> {
    let never_happened = |status: &str| Resolution::NeverHappened {
        lease_until,
        status_before: Some(status.to_owned()),
        own,
    };
    match status? {
        RESET_REQUIRED if !own && reset_at + cooldown <= now => {
            Some(never_happened(RESET_REQUIRED))
        }
        RESET_REQUIRED => Some(Resolution::Happened { reset_at }),
        CONFIRMED => Some(never_happened(CONFIRMED)),
        _ => None,
    }
}

/// Records that `holder`'s reset happened (the user's status says `RESET_REQUIRED`): a reset at
/// `reset_at`, whose cooldown runs from then.
pub fn resolve_happened(
    pk: &str,
    holder: &str,
    reset_at: SystemTime,
    now: SystemTime,
    cooldown: Duration,
) -> Write {
    Write::Update {
        pk: pk.to_owned(),
        changes: vec![
            Change::Set(STATE, bound_s(":state", "reset")),
            Change::Set(RESET_AT, bound_n(":resetAt", ms(reset_at))),
            Change::Set(LEASE_UNTIL, bound_n(":now", ms(now))),
            // A reset whose window is already over holds nobody: an expiry in the past reads
            // as no item at all.
            Change::Set(
                EXPIRES_AT,
                bound_n(":expires", secs_ceil(reset_at + cooldown)),
            ),
        ],
        cond: Cond::Compare(CLAIM_ID, Cmp::Eq, bound_s(":holder", holder)),
    }
}

/// What a live user item that stands in the way of `claim` says.
pub fn user_state(
    item: &Item,
    claim: &Claim,
    now: SystemTime,
    cooldown: Duration,
) -> Result<UserState, GuardError> {
    let at = |name| number(item, name).map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let state = text(item, STATE.name);
    let pending = text(item, SIGN_OUT_PENDING.name);
    if state == Some("reset") && pending == Some(claim.record()) {
        return Ok(UserState::SignOutPending {
            reset_at: at("resetAt").unwrap_or(now),
            claim: claim.clone(),
        });
    }
    if state == Some("claimed") && text(item, CLAIM_ID.name) == Some(claim.id.as_str()) {
        // This very claim, met by a retry of its own write.
        return Ok(claimed(claim, now, cooldown));
    }
    let until = number(item, EXPIRES_AT.name)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .ok_or_else(|| malformed("GetItem", "a user item has no expiresAt"))?;
    let lease_over = number(item, LEASE_UNTIL.name).is_none_or(|lease| lease <= ms(now));
    let possible = matches!(state, Some("unconfirmed")) || (state == Some("claimed") && lease_over);
    if possible
        && lease_over
        && text(item, STATUS_BEFORE.name) == Some(CONFIRMED)
        && let Some(holder) = text(item, CLAIM_ID.name)
    {
        return Ok(UserState::Unresolved {
            holder: holder.to_owned(),
            reset_at: at("claimedAt").unwrap_or(now),
            until,
            own: claim_record(holder) == claim.record()
                || claim
                    .key
                    .as_deref()
                    .is_some_and(|key| text(item, KEY_PK.name) == Some(key)),
            claim: claim.clone(),
        });
    }
    match state {
        Some("limited") => Ok(UserState::AttemptLimited { until }),
        Some("reset") => {
            let reset_at = at("resetAt").unwrap_or(now);
            // Another record's pending sign-out keeps the item, not the cooldown: the answer
            // points at the cooldown's end, in whole seconds as the item will expire once the
            // sign-out ends (or a second on, once it is over).
            let cooled = UNIX_EPOCH + Duration::from_secs(secs_ceil(reset_at + cooldown));
            let until = if pending.is_some() {
                until.min(cooled.max(now + Duration::from_secs(1)))
            } else {
                until
            };
            Ok(UserState::RecentlyReset {
                reset_at,
                until,
                confirmed: true,
            })
        }
        Some("unconfirmed") => Ok(UserState::RecentlyReset {
            reset_at: at("claimedAt").unwrap_or(now),
            until,
            confirmed: false,
        }),
        _ => {
            let lease_over = number(item, LEASE_UNTIL.name).is_none_or(|lease| lease <= ms(now));
            if lease_over {
                // Abandoned by a crash or a timeout: it may have reset, so it counts as a
                // possible reset.
                Ok(UserState::RecentlyReset {
                    reset_at: at("claimedAt").unwrap_or(now),
                    until,
                    confirmed: false,
                })
            } else {
                Ok(UserState::InProgress)
            }
        }
    }
}

/// The write that ends `claim` with `completion`.
pub fn claim_end(
    claim: &Claim,
    completion: Completion,
    now: SystemTime,
    cooldown: Duration,
    ttl: Duration,
) -> Write {
    let holder = Cond::Compare(CLAIM_ID, Cmp::Eq, bound_s(":claimId", &claim.id));
    let update = |state: &str, until: SystemTime, extra: Vec<Change>| {
        let mut changes = vec![Change::Set(STATE, bound_s(":state", state))];
        // An unconfirmed reset keeps its lease: until the invocation that sent it has ended, the
        // call may still be in flight, and the user's status proves nothing yet.
        if state != "unconfirmed" {
            changes.push(Change::Set(LEASE_UNTIL, bound_n(":now", ms(now))));
        }
        changes.push(Change::Set(
            EXPIRES_AT,
            bound_n(":expires", secs_ceil(until)),
        ));
        changes.extend(extra);
        Write::Update {
            pk: claim.pk.clone(),
            changes,
            cond: holder.clone(),
        }
    };
    let reset_at = || Change::Set(RESET_AT, bound_n(":now", ms(now)));
    match completion {
        Completion::Reset if !cooldown.is_zero() => {
            update("reset", now + cooldown, vec![reset_at()])
        }
        // A possible reset: the window starts now, as for a reset.
        Completion::Unconfirmed if !cooldown.is_zero() => {
            update("unconfirmed", now + cooldown, vec![])
        }
        // Remembered even with the cooldown off, so that the redelivery never resets again.
        Completion::ResetSignOutPending => update(
            "reset",
            now + cooldown.max(ttl),
            vec![
                reset_at(),
                Change::Set(SIGN_OUT_PENDING, bound_s(":record", claim.record())),
            ],
        ),
        // The pending sign-out is over: the item lives only as long as the reset's cooldown
        // (an expiry in the past reads as no item at all).
        Completion::SignedOut { reset_at } => Write::Update {
            pk: claim.pk.clone(),
            changes: vec![
                Change::Set(
                    EXPIRES_AT,
                    bound_n(":expires", secs_ceil(reset_at + cooldown)),
                ),
                Change::Remove(SIGN_OUT_PENDING),
            ],
            cond: Cond::Compare(
                SIGN_OUT_PENDING,
                Cmp::Eq,
                bound_s(":record", claim.record()),
            ),
        },
        // Remembered whatever the cooldown: it is Cognito's limit, not this function's.
        Completion::AttemptLimited { until } => update("limited", until.max(now), vec![]),
        // A release, or a (possible) reset with the cooldown off: nothing to remember (the
        // record is final either way, so nothing sends the reset again by itself).
        Completion::Reset | Completion::Unconfirmed | Completion::Release => Write::Delete {
            pk: claim.pk.clone(),
            cond: holder,
        },
    }
}

// ---- caller budgets ---------------------------------------------------------------------------

/// A budget's spend: in the current window, below the limit, and not this very spend again
/// (the SDK's retry of one that landed).
pub const BUDGET_SPEND_CONDITION: &str = "#window = :window AND #total < :limit AND (attribute_not_exists(spendId) OR spendId <> :spend)";
/// A budget's first item.
pub const BUDGET_START_CONDITION: &str = "attribute_not_exists(pk)";
/// A budget's new window, over exactly the item that was read.
pub const BUDGET_ROLL_CONDITION: &str = "#window = :oldWindow AND #used = :oldUsed";
/// A spend given back, in the window it was taken in (`#count` is `used`, or `before` once
/// the window has moved on).
pub const BUDGET_REFUND_CONDITION: &str = "#window = :window AND #count > :zero AND (attribute_not_exists(refundId) OR refundId <> :refund)";

/// One caller's budget under one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetScope {
    /// The item's partition key.
    pub pk: String,
    /// N: resets admitted...
    pub resets: u32,
    /// ...in any window of S seconds.
    pub per_seconds: u32,
}

impl BudgetScope {
    /// The budget of `caller` (its stable description) under `rule`.
    pub fn new(rule: &str, caller: &str, resets: u32, per_seconds: u32) -> BudgetScope {
        BudgetScope {
            pk: format!(
                "budget#{}",
                sha256_hex(&[rule.as_bytes(), caller.as_bytes()])
            ),
            resets: resets.max(1),
            per_seconds: per_seconds.max(1),
        }
    }

    /// The window `time` falls in.
    pub fn window_of(&self, time: SystemTime) -> u64 {
        secs_floor(time) / u64::from(self.per_seconds)
    }

    fn window_start(&self, window: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(window.saturating_mul(u64::from(self.per_seconds)))
    }

    /// When a budget with `used` resets counted in `window` (at the limit) admits one more: at
    /// the next window if `used` alone is below the limit, else the one after.
    fn admits_again(&self, window: u64, used: u64) -> SystemTime {
        if used < u64::from(self.resets) {
            self.window_start(window + 1)
        } else {
            self.window_start(window + 2)
        }
    }
}

/// What a budget said about one more reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetTurn {
    /// Admitted and counted in `window` (give it back with a refund if nothing was sent). In
    /// `DRY_RUN`, admitted and not counted.
    Spent { window: u64 },
    /// At the limit until `until`.
    Exhausted { until: SystemTime },
}

/// Not the write of `token` again: `attribute_not_exists(a) OR a <> :token`.
fn not_again(attr: Attr, placeholder: &'static str, token: &str) -> Cond {
    Cond::Or(vec![
        Cond::NotExists(attr),
        Cond::Compare(attr, Cmp::Ne, bound_s(placeholder, token)),
    ])
}

/// The spend of one reset in `window`, as the spend `token` (unique to one spend, the same for
/// every attempt at it).
pub fn budget_spend(scope: &BudgetScope, window: u64, token: &str) -> Write {
    Write::Update {
        pk: scope.pk.clone(),
        changes: vec![
            Change::Add(USED, bound_n(":one", 1)),
            Change::Add(TOTAL, bound_n(":one", 1)),
            Change::Set(SPEND_ID, bound_s(":spend", token)),
        ],
        cond: Cond::And(vec![
            Cond::Compare(WINDOW, Cmp::Eq, bound_n(":window", window)),
            Cond::Compare(TOTAL, Cmp::Lt, bound_n(":limit", u64::from(scope.resets))),
            not_again(SPEND_ID, ":spend", token),
        ]),
    }
}

/// What to do after a spend in `window` did not apply, given the item it met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterSpend {
    /// The budget is at its limit.
    Exhausted { until: SystemTime },
    /// Another instance's clock is a window ahead: spend in its window.
    SpendIn { window: u64 },
    /// Start the window with this write (a lost race means: spend again).
    Start(Write),
    /// The item is this very spend's (an earlier attempt at it landed): spent in `window`.
    Spent { window: u64 },
}

/// The next step of the spend `token` in `window` that met `old` (`None`: no item).
pub fn after_spend(
    scope: &BudgetScope,
    window: u64,
    old: Option<&Item>,
    token: &str,
) -> AfterSpend {
    let limit = u64::from(scope.resets);
    let expires = secs_ceil(scope.window_start(window + 2));
    let start = |before: u64, cond: Cond| {
        AfterSpend::Start(Write::Put {
            item: Item::from([
                (PK.name.to_owned(), s(&scope.pk)),
                (WINDOW.name.to_owned(), n(window)),
                (USED.name.to_owned(), n(1)),
                ("before".to_owned(), n(before)),
                (TOTAL.name.to_owned(), n(before + 1)),
                (EXPIRES_AT.name.to_owned(), n(expires)),
                (SPEND_ID.name.to_owned(), s(token)),
            ]),
            cond,
        })
    };
    let Some(item) = old else {
        return start(0, Cond::NotExists(PK));
    };
    if text(item, SPEND_ID.name) == Some(token) {
        return AfterSpend::Spent {
            window: number(item, WINDOW.name).unwrap_or(window),
        };
    }
    let old_window = number(item, WINDOW.name).unwrap_or(0);
    let old_used = number(item, USED.name).unwrap_or(0);
    if old_window > window {
        return AfterSpend::SpendIn { window: old_window };
    }
    if old_window == window {
        // The spend met no item, and another request started this window before the item was
        // read: spend in it again, unless it is full.
        if number(item, TOTAL.name).unwrap_or(0) < limit {
            return AfterSpend::SpendIn { window };
        }
        return AfterSpend::Exhausted {
            until: scope.admits_again(window, old_used),
        };
    }
    let before = if old_window + 1 == window {
        old_used
    } else {
        0
    };
    if before >= limit {
        return AfterSpend::Exhausted {
            until: scope.admits_again(window, 0),
        };
    }
    start(
        before,
        Cond::And(vec![
            Cond::Compare(WINDOW, Cmp::Eq, bound_n(":oldWindow", old_window)),
            Cond::Compare(USED, Cmp::Eq, bound_n(":oldUsed", old_used)),
        ]),
    )
}

/// The refunds of a spend of `window`, tried in turn: in its window (`used`), or once the next
/// has begun (`before`); later, it no longer counts.
pub fn budget_refunds(scope: &BudgetScope, window: u64, token: &str) -> [Write; 2] {
    let refund = |count: &'static str, in_window: u64| {
        let count = Attr {
            expr: "#count",
            name: count,
        };
        Write::Update {
            pk: scope.pk.clone(),
            changes: vec![
                Change::Subtract(count, bound_n(":one", 1)),
                Change::Subtract(TOTAL, bound_n(":one", 1)),
                Change::Set(REFUND_ID, bound_s(":refund", token)),
            ],
            cond: Cond::And(vec![
                Cond::Compare(WINDOW, Cmp::Eq, bound_n(":window", in_window)),
                Cond::Compare(count, Cmp::Gt, bound_n(":zero", 0)),
                not_again(REFUND_ID, ":refund", token),
            ]),
        }
    };
    [refund("used", window), refund("before", window + 1)]
}

/// Whether the item a refund met is that very refund's (an earlier attempt at it landed).
pub fn refunded(old: Option<&Item>, token: &str) -> bool {
    old.and_then(|item| text(item, REFUND_ID.name)) == Some(token)
}

/// What a dry run reads of a budget in `window` (`item`: the live item, if any).
pub fn budget_read(scope: &BudgetScope, window: u64, item: Option<&Item>) -> BudgetTurn {
    let (before, used) = match item {
        None => (0, 0),
        Some(item) => {
            let old_window = number(item, WINDOW.name).unwrap_or(0);
            let used = number(item, USED.name).unwrap_or(0);
            let before = number(item, "before").unwrap_or(0);
            if old_window >= window {
                // A clock a window ahead: as full as its window.
                (before, used)
            } else if old_window + 1 == window {
                (used, 0)
            } else {
                (0, 0)
            }
        }
    };
    if before + used < u64::from(scope.resets) {
        BudgetTurn::Spent { window }
    } else {
        BudgetTurn::Exhausted {
            until: scope.admits_again(window, used),
        }
    }
}

// ---- approvals and kept answers ---------------------------------------------------------------
//
// The approval item is the only item of the table that holds a request's ClientMetadata: the
// reset is performed from it once approved, so it must hold what the reset sends. It is never
// logged, put in an event or in a metric (see `crate::approvals`).

/// Only a pending approval whose time is not over is decided.
pub const DECIDE_CONDITION: &str = "#state = :pending AND decideBy > :nowSecs";
/// An approval id is used once.
pub const APPROVAL_CREATE_CONDITION: &str = "attribute_not_exists(pk)";

const DECIDE_BY: Attr = attr("decideBy");
const APPROVER: Attr = attr("approver");
const DECIDED_AT: Attr = attr("decidedAt");
const REASON: Attr = attr("reason");

/// The partition key of an approval.
pub fn approval_pk(approval_id: &str) -> String {
    format!("approval#{approval_id}")
}

/// A request waiting for a second person, as the approval item keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingApproval {
    pub approval_id: String,
    /// The requester's identities (JSON of `Option<Vec<String>>`: `null` for anonymous).
    pub requester: String,
    /// The requester as the audit line shows it.
    pub requester_desc: String,
    /// The rule that requires the approval.
    pub rule: String,
    /// The request as made (JSON, with its ClientMetadata).
    pub request: String,
    pub created_at: SystemTime,
    /// When the approval expires.
    pub decide_by: SystemTime,
}

/// The write that creates an approval, kept `ttl` after its time is over (as long as answers).
pub fn approval_create(pending: &PendingApproval, ttl: Duration) -> Write {
    Write::Put {
        item: Item::from([
            (PK.name.to_owned(), s(&approval_pk(&pending.approval_id))),
            (STATE.name.to_owned(), s("pending")),
            ("requester".to_owned(), s(&pending.requester)),
            ("requesterDesc".to_owned(), s(&pending.requester_desc)),
            ("rule".to_owned(), s(&pending.rule)),
            ("request".to_owned(), s(&pending.request)),
            ("createdAt".to_owned(), n(ms(pending.created_at))),
            (DECIDE_BY.name.to_owned(), n(secs_floor(pending.decide_by))),
            (
                EXPIRES_AT.name.to_owned(),
                n(secs_ceil(pending.decide_by + ttl)),
            ),
        ]),
        cond: Cond::NotExists(PK),
    }
}

/// A decision on an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    /// `approved` or `denied`, as the item's state.
    pub fn state(self) -> &'static str {
        match self {
            Verdict::Approve => "approved",
            Verdict::Deny => "denied",
        }
    }
}

/// The one conditional write of a decision: exactly one of two racing deciders wins, and none
/// after the approval's time is over.
pub fn approval_decide(
    approval_id: &str,
    verdict: Verdict,
    approver: &str,
    reason: Option<&str>,
    now: SystemTime,
) -> Write {
    let mut changes = vec![
        Change::Set(STATE, bound_s(":decision", verdict.state())),
        Change::Set(APPROVER, bound_s(":approver", approver)),
        Change::Set(DECIDED_AT, bound_n(":nowMs", ms(now))),
    ];
    if let Some(reason) = reason {
        changes.push(Change::Set(REASON, bound_s(":reason", reason)));
    }
    Write::Update {
        pk: approval_pk(approval_id),
        changes,
        cond: Cond::And(vec![
            Cond::Compare(STATE, Cmp::Eq, bound_s(":pending", "pending")),
            Cond::Compare(DECIDE_BY, Cmp::Gt, bound_n(":nowSecs", secs_floor(now))),
        ]),
    }
}

/// Who decided an approval, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub verdict: Verdict,
    pub approver: String,
    pub decided_at: SystemTime,
    pub reason: Option<String>,
}

/// What an approval item says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    pub pending: PendingApproval,
    /// `None`: not decided (pending, or expired once `decide_by` is past).
    pub decided: Option<Decided>,
}

/// An approval's state at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    Pending,
    Expired,
    Approved,
    Denied,
}

impl ApprovalRecord {
    /// Its state at `now`: a pending approval whose time is over is expired.
    pub fn status(&self, now: SystemTime) -> ApprovalStatus {
        match &self.decided {
            Some(d) if d.verdict == Verdict::Approve => ApprovalStatus::Approved,
            Some(_) => ApprovalStatus::Denied,
            None if secs_floor(now) >= secs_floor(self.pending.decide_by) => {
                ApprovalStatus::Expired
            }
            None => ApprovalStatus::Pending,
        }
    }
}

/// Reads an approval item (`approval_id`: the id it is stored under).
pub fn approval_record(item: &Item, approval_id: &str) -> Result<ApprovalRecord, GuardError> {
    let field = |name: &str| {
        text(item, name)
            .map(str::to_owned)
            .ok_or_else(|| malformed("GetItem", "an approval item lacks a field"))
    };
    let at_ms = |name: &str| number(item, name).map(|v| UNIX_EPOCH + Duration::from_millis(v));
    let pending = PendingApproval {
        approval_id: approval_id.to_owned(),
        requester: field("requester")?,
        requester_desc: field("requesterDesc")?,
        rule: field("rule")?,
        request: field("request")?,
        created_at: at_ms("createdAt").unwrap_or(UNIX_EPOCH),
        decide_by: number(item, DECIDE_BY.name)
            .map(|v| UNIX_EPOCH + Duration::from_secs(v))
            .ok_or_else(|| malformed("GetItem", "an approval item has no decideBy"))?,
    };
    let verdict = match text(item, STATE.name) {
        Some("approved") => Some(Verdict::Approve),
        Some("denied") => Some(Verdict::Deny),
        Some("pending") => None,
        _ => {
            return Err(malformed(
                "GetItem",
                "an approval item has an unknown state",
            ));
        }
    };
    let decided = verdict.map(|verdict| Decided {
        verdict,
        approver: text(item, APPROVER.name).unwrap_or_default().to_owned(),
        decided_at: at_ms(DECIDED_AT.name).unwrap_or(UNIX_EPOCH),
        reason: text(item, REASON.name).map(str::to_owned),
    });
    Ok(ApprovalRecord { pending, decided })
}

/// The partition key of the answer kept for request `request_id` of `caller` (its stable
/// description): another caller's lookup of the same id reads another item, which is none.
pub fn answer_pk(caller: &str, request_id: &str) -> String {
    format!(
        "answer#{}",
        sha256_hex(&[caller.as_bytes(), request_id.as_bytes()])
    )
}

/// The write that keeps a request's answer (JSON) for `ttl`; a later answer for the same id
/// (an SQS record's redelivery) replaces it.
pub fn answer_keep(pk: &str, answer: &str, now: SystemTime, ttl: Duration) -> Write {
    Write::Put {
        item: Item::from([
            (PK.name.to_owned(), s(pk)),
            (ANSWER.name.to_owned(), s(answer)),
            (EXPIRES_AT.name.to_owned(), n(secs_ceil(now + ttl))),
        ]),
        // The answer of the latest delivery stands.
        cond: Cond::Always,
    }
}

/// The answer a kept-answer item holds.
pub fn kept_answer(item: &Item) -> Option<&str> {
    text(item, ANSWER.name)
}

/// The idempotency key under which an approved request's reset runs: scoped by the requester and
/// the approval, in a namespace no `Idempotency-Key` header or message id can reach (the
/// position part is `approval`, never `single` nor `item N`).
pub fn approval_key(requester_desc: &str, approval_id: &str) -> KeyRef {
    KeyRef {
        key: format!("approval:{approval_id}"),
        pk: format!(
            "key#{}",
            sha256_hex(&[
                requester_desc.as_bytes(),
                approval_id.as_bytes(),
                b"approval"
            ])
        ),
        request_hash: sha256_hex(&[b"approval", approval_id.as_bytes()]),
        holder: new_holder(),
        undecided: None,
        abandoned: None,
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::S(s) => write!(f, "{s:?}"),
            Value::N(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
    }

    #[test]
    fn conditions_render_to_the_pinned_expressions() {
        let key = KeyRef {
            abandoned: None,
            key: "k".into(),
            pk: "key#1".into(),
            request_hash: "h".into(),
            holder: "run".into(),
            undecided: None,
        };
        let claim = Claim {
            abandoned: None,
            pk: "user#p#u".into(),
            id: "r/1/0".into(),
            key: None,
        };
        let scope = BudgetScope::new("rule", "caller", 2, 60);
        let text = |w: &Write| w.cond().render().text;
        let ttl = Duration::from_secs(60);
        assert_eq!(
            text(&key_take(&key, now(), now(), ttl)),
            KEY_CLAIM_CONDITION
        );
        assert_eq!(
            text(&key_finish(&key, KeyEnd::Release, now(), ttl)),
            KEY_RELEASE_CONDITION
        );
        assert_eq!(
            text(&key_finish(&key, KeyEnd::Answer("{}"), now(), ttl)),
            KEY_FINISH_CONDITION
        );
        let met = Item::from([
            (HOLDER.name.to_owned(), s("earlier")),
            (STATE.name.to_owned(), s("done")),
        ]);
        let open = Undecided {
            answer: "{}".into(),
            decide_until: 1,
        };
        assert_eq!(
            key_resume(&key, &open, &met, now(), now(), ttl).map(|w| text(&w)),
            Some(KEY_RESUME_CONDITION.to_owned())
        );
        assert_eq!(
            text(&claim_take(&claim, now(), now(), ttl, None)),
            CLAIM_CONDITION
        );
        assert_eq!(
            text(&claim_end(&claim, Completion::Release, now(), ttl, ttl)),
            HOLDER_CONDITION
        );
        let signed_out = Completion::SignedOut { reset_at: now() };
        assert_eq!(
            text(&claim_end(&claim, signed_out, now(), ttl, ttl)),
            SIGN_OUT_PENDING_CONDITION
        );
        assert_eq!(text(&budget_spend(&scope, 7, "t")), BUDGET_SPEND_CONDITION);
        assert_eq!(
            text(&budget_refunds(&scope, 7, "t")[0]),
            BUDGET_REFUND_CONDITION
        );
        let AfterSpend::Start(first) = after_spend(&scope, 7, None, "t") else {
            panic!("no item: start the window");
        };
        assert_eq!(text(&first), BUDGET_START_CONDITION);
        let old = Item::from([("window".to_owned(), n(5)), ("used".to_owned(), n(1))]);
        let AfterSpend::Start(roll) = after_spend(&scope, 7, Some(&old), "t") else {
            panic!("an older window: roll it");
        };
        assert_eq!(text(&roll), BUDGET_ROLL_CONDITION);
    }

    #[test]
    fn a_key_take_met_by_its_own_retry_is_taken_and_another_runs_is_in_progress() {
        let mine = KeyRef {
            abandoned: None,
            key: "k".into(),
            pk: "key#1".into(),
            request_hash: "h".into(),
            holder: "mine".into(),
            undecided: None,
        };
        let theirs = KeyRef {
            holder: "theirs".into(),
            ..mine.clone()
        };
        let ttl = Duration::from_secs(60);
        let lease = now() + Duration::from_secs(5);
        let mut items = Items::new();
        apply(&mut items, &key_take(&mine, lease, now(), ttl)).expect("taken");
        // The SDK's retry of the landed take is refused, and reads as this run's own take
        let Err(Refused::Condition(Some(met))) =
            apply(&mut items, &key_take(&mine, lease, now(), ttl))
        else {
            panic!("a live pending key refuses a second take");
        };
        assert!(matches!(key_state(&met, &mine, now()), Ok(KeyState::Fresh)));
        // Another run of the same request, while the lease runs, is in progress
        assert!(matches!(
            key_state(&met, &theirs, now()),
            Ok(KeyState::InProgress)
        ));
        // and once the lease is over (its holder died), abandoned since the take
        assert_eq!(
            key_state(&met, &theirs, lease).ok(),
            Some(KeyState::Abandoned { since: ms(now()) })
        );
    }

    /// Key `k` of request `h` as the run `holder` holds it.
    fn key_run(holder: &str) -> KeyRef {
        KeyRef {
            abandoned: None,
            key: "k".into(),
            pk: "key#1".into(),
            request_hash: "h".into(),
            holder: holder.into(),
            undecided: None,
        }
    }

    #[test]
    fn the_users_status_resolves_an_unresolved_reset_and_a_foreign_one_past_its_window_holds_nobody()
     {
        let cooldown = Duration::from_secs(30);
        let lease = now() + Duration::from_secs(5);
        let sent = now();
        let at = |secs: u64| sent + Duration::from_secs(secs);
        let never = |status: &str, own: bool| {
            Some(Resolution::NeverHappened {
                lease_until: lease,
                status_before: Some(status.to_owned()),
                own,
            })
        };
        let happened = Some(Resolution::Happened { reset_at: sent });
        let of = |status, own, when| resolution(status, sent, own, lease, when, cooldown);
        // RESET_REQUIRED: it happened, for its own request whenever, for another inside its window
        assert_eq!(of(Some(RESET_REQUIRED), true, at(31)), happened);
        assert_eq!(of(Some(RESET_REQUIRED), false, at(29)), happened);
        // and another request past the window takes the user over
        assert_eq!(
            of(Some(RESET_REQUIRED), false, at(30)),
            never(RESET_REQUIRED, false)
        );
        // CONFIRMED: it never happened
        assert_eq!(of(Some(CONFIRMED), true, at(1)), never(CONFIRMED, true));
        assert_eq!(of(Some(CONFIRMED), false, at(1)), never(CONFIRMED, false));
        // anything else, or no status: cannot tell
        assert_eq!(of(Some("FORCE_CHANGE_PASSWORD"), true, at(1)), None);
        assert_eq!(of(None, false, at(1)), None);
    }

    #[test]
    fn an_abandoned_key_keeps_its_first_take_through_take_overs_and_releases() {
        let run = |holder: &str, abandoned: Option<u64>| KeyRef {
            abandoned,
            ..key_run(holder)
        };
        let ttl = Duration::from_secs(600);
        let first = now();
        let since = ms(first);
        let mut items = Items::new();
        apply(&mut items, &key_take(&run("a", None), first, first, ttl)).expect("taken");
        // A plain take no longer takes a dead holder's key: it is read, and taken over as
        // exactly that item.
        let later = first + Duration::from_secs(100);
        let Err(Refused::Condition(Some(met))) =
            apply(&mut items, &key_take(&run("b", None), later, later, ttl))
        else {
            panic!("a live key item refuses a plain take");
        };
        assert_eq!(
            key_state(&met, &run("b", None), later).ok(),
            Some(KeyState::Abandoned { since })
        );
        let over = key_take_over(&run("b", None), since, &met, later, later, ttl).expect("named");
        apply(&mut items, &over).expect("taken over");
        // A second take-over of the same item as read loses: b holds it now.
        assert!(apply(&mut items, &over).is_err());
        let b = items["key#1"].clone();
        // b's own retry reads its take-over, still abandoned since a's take.
        assert_eq!(
            key_state(&b, &run("b", None), later).ok(),
            Some(KeyState::Abandoned { since })
        );
        // b releases (a RETRY): the key is left as a dead holder's, not deleted, so the next
        // run still judges by a's take; b dying instead reads the same.
        let released = later + Duration::from_secs(1);
        apply(
            &mut items,
            &key_finish(&run("b", Some(since)), KeyEnd::Release, released, ttl),
        )
        .expect("released");
        let left = items.get("key#1").expect("kept").clone();
        assert_eq!(
            key_state(&left, &run("c", None), released).ok(),
            Some(KeyState::Abandoned { since })
        );
        // A final answer ends it as any key.
        let c = later + Duration::from_secs(2);
        let over = key_take_over(&run("c", None), since, &left, c, c, ttl).expect("named");
        apply(&mut items, &over).expect("taken over again");
        apply(
            &mut items,
            &key_finish(&run("c", Some(since)), KeyEnd::Answer("{}"), c, ttl),
        )
        .expect("finished");
        assert_eq!(
            key_state(&items["key#1"], &run("d", None), c).ok(),
            Some(KeyState::Replay("{}".to_owned()))
        );
    }

    #[test]
    fn a_claim_under_an_abandoned_key_is_refused_once_the_first_takes_window_is_over() {
        let cooldown = Duration::from_secs(300);
        let since = ms(now());
        let claim = Claim {
            abandoned: Some(since),
            pk: "user#p#u".into(),
            id: "r/1/1".into(),
            key: None,
        };
        let just_inside = now() + cooldown - Duration::from_millis(1);
        assert_eq!(
            claimed(&claim, just_inside, cooldown),
            UserState::Claimed(claim.clone())
        );
        assert_eq!(
            claimed(&claim, now() + cooldown, cooldown),
            UserState::Abandoned(claim.clone())
        );
        // Without the cooldown, nothing remembers a reset at all: never after a dead holder.
        assert_eq!(
            claimed(&claim, now(), Duration::ZERO),
            UserState::Abandoned(claim.clone())
        );
        let plain = Claim {
            abandoned: None,
            ..claim.clone()
        };
        assert_eq!(
            claimed(&plain, now() + cooldown * 10, cooldown),
            UserState::Claimed(plain.clone())
        );
        // The same answer when the claim's write landed and its retry met it (the condition
        // lets the same claim through; read back, the item is this very claim).
        let mut items = Items::new();
        let at = now() + cooldown;
        apply(&mut items, &claim_take(&claim, at, at, cooldown, None)).expect("claimed");
        apply(&mut items, &claim_take(&claim, at, at, cooldown, None)).expect("its retry");
        assert_eq!(
            user_state(&items["user#p#u"], &claim, at, cooldown).ok(),
            Some(UserState::Abandoned(claim.clone()))
        );
    }

    #[test]
    fn an_undecided_answer_lets_a_retry_decide_inside_its_window_and_is_final_after_it() {
        let run = key_run;
        let ttl = Duration::from_secs(600);
        let later = |ms: u64| now() + Duration::from_millis(ms);
        // What the key item says to a new run of `holder`, `at` ms on.
        let state =
            |item: &Item, holder: &str, at: u64| key_state(item, &run(holder), later(at)).ok();
        let mut items = Items::new();
        let first = run("first");
        apply(&mut items, &key_take(&first, later(5_000), now(), ttl)).expect("taken");
        let until = ms(later(30_000));
        let answer = r#"{"code":"reset-unconfirmed"}"#;
        let undecided = KeyEnd::Undecided { answer, until };
        apply(
            &mut items,
            &key_finish(&first, undecided, later(3_000), ttl),
        )
        .expect("kept");
        let open = Undecided {
            answer: answer.into(),
            decide_until: until,
        };
        // Inside the window a retry takes the key over (a plain take is refused) and runs.
        let mut second = run("second");
        let Err(Refused::Condition(Some(met))) = apply(
            &mut items,
            &key_take(&second, later(15_000), later(10_000), ttl),
        ) else {
            panic!("an undecided key refuses a plain take");
        };
        assert_eq!(
            key_state(&met, &second, later(10_000)).ok(),
            Some(KeyState::Resume(open.clone()))
        );
        let resume = key_resume(&second, &open, &met, later(15_000), later(10_000), ttl)
            .expect("the item names its holder");
        apply(&mut items, &resume).expect("taken over");
        // Its own retry of that write reads as held; another run is in progress.
        let held = items.get("key#1").expect("item").clone();
        assert_eq!(
            key_state(&held, &second, later(10_000)).ok(),
            Some(KeyState::Resume(open.clone()))
        );
        assert_eq!(state(&held, "third", 10_000), Some(KeyState::InProgress));
        // A dead holder's take: a plain take is still refused (the answer would be lost).
        assert!(
            apply(
                &mut items,
                &key_take(&run("x"), later(20_000), later(16_000), ttl)
            )
            .is_err()
        );
        assert_eq!(
            state(&held, "third", 16_000),
            Some(KeyState::Resume(open.clone()))
        );
        // Once the window is over (to the millisecond), a dead holder's undecided key is final.
        assert_eq!(
            state(&held, "third", 30_000),
            Some(KeyState::Replay(answer.to_owned()))
        );
        assert_eq!(
            state(&held, "third", 29_999),
            Some(KeyState::Resume(open.clone()))
        );
        // Released (a RETRY), the key gives the undecided answer back.
        second.undecided = Some(open.clone());
        apply(
            &mut items,
            &key_finish(&second, KeyEnd::Release, later(12_000), ttl),
        )
        .expect("released");
        let back = items.get("key#1").expect("item").clone();
        assert_eq!(
            state(&back, "fourth", 29_999),
            Some(KeyState::Resume(open.clone()))
        );
        // From the window's end the answer is final.
        assert_eq!(
            state(&back, "fourth", 30_000),
            Some(KeyState::Replay(answer.to_owned()))
        );
        // A final answer recorded by a run that resumed ends the undecided state for good.
        let mut fifth = run("fifth");
        let resume = key_resume(&fifth, &open, &back, later(25_000), later(20_000), ttl)
            .expect("the item names its holder");
        apply(&mut items, &resume).expect("taken over");
        fifth.undecided = Some(open);
        let reset = r#"{"outcome":"RESET"}"#;
        apply(
            &mut items,
            &key_finish(&fifth, KeyEnd::Answer(reset), later(21_000), ttl),
        )
        .expect("kept");
        let done = items.get("key#1").expect("item").clone();
        assert!(!done.contains_key(DECIDE_UNTIL.name) && !done.contains_key(UNDECIDED.name));
        assert_eq!(
            state(&done, "sixth", 22_000),
            Some(KeyState::Replay(reset.to_owned()))
        );
    }

    #[test]
    fn a_spend_or_a_refund_that_landed_is_not_counted_again_by_its_retry() {
        let scope = BudgetScope::new("rule", "caller", 3, 60);
        let window = scope.window_of(now());
        let mut items = Items::new();
        // The window's first spend (a Put), then a second spend that lands...
        let AfterSpend::Start(first) = after_spend(&scope, window, None, "a") else {
            panic!("no item: start the window");
        };
        apply(&mut items, &first).expect("started");
        apply(&mut items, &budget_spend(&scope, window, "b")).expect("spent");
        let total = |items: &Items| number(&items[&scope.pk], TOTAL.name);
        assert_eq!(total(&items), Some(2));
        // ...and whose retry meets it: refused, and read as this very spend
        let Err(Refused::Condition(Some(met))) =
            apply(&mut items, &budget_spend(&scope, window, "b"))
        else {
            panic!("a retry of a landed spend is refused");
        };
        assert_eq!(
            after_spend(&scope, window, Some(&met), "b"),
            AfterSpend::Spent { window }
        );
        assert_eq!(total(&items), Some(2));
        // Only the last spend is recognised: the first one's retry, after another spend
        // landed, would spend again (counted twice: the budget errs on the side of refusing)
        assert_eq!(
            after_spend(&scope, window, Some(&met), "a"),
            AfterSpend::SpendIn { window }
        );
        // Another spend still counts
        apply(&mut items, &budget_spend(&scope, window, "c")).expect("spent");
        assert_eq!(total(&items), Some(3));
        // A refund, then its retry: given back once
        let [refund, _] = budget_refunds(&scope, window, "r");
        apply(&mut items, &refund).expect("refunded");
        let Err(Refused::Condition(met)) = apply(&mut items, &refund) else {
            panic!("a retry of a landed refund is refused");
        };
        assert!(refunded(met.as_ref(), "r"));
        assert!(!refunded(met.as_ref(), "s"));
        assert_eq!(total(&items), Some(2));
    }

    #[test]
    fn updates_render_set_and_remove() {
        let claim = Claim {
            abandoned: None,
            pk: "user#p#u".into(),
            id: "r/1/0".into(),
            key: None,
        };
        let Write::Update { changes, cond, .. } = claim_end(
            &claim,
            Completion::SignedOut { reset_at: now() },
            now(),
            Duration::from_secs(30),
            Duration::from_secs(60),
        ) else {
            panic!("an update");
        };
        let mut rendered = cond.render();
        let text = render_changes(&changes, &mut rendered);
        assert_eq!(text, "SET expiresAt = :expires REMOVE signOutPending");
        assert_eq!(rendered.values.len(), 2);
    }

    #[test]
    fn a_claims_own_retry_is_claimed_and_another_claim_is_in_progress() {
        let mut items = Items::new();
        let cooldown = Duration::from_secs(30);
        let lease = now() + Duration::from_secs(5);
        let mine = Claim {
            abandoned: None,
            pk: "user#p#u".into(),
            id: "r/1/0".into(),
            key: None,
        };
        let write = claim_take(&mine, lease, now(), cooldown, None);
        assert_eq!(apply(&mut items, &write), Ok(()));
        // The SDK's retry of the same request meets the landed write, and passes.
        assert_eq!(apply(&mut items, &write), Ok(()));
        let other = Claim {
            abandoned: None,
            pk: mine.pk.clone(),
            id: "s/1/1".into(),
            key: None,
        };
        let Err(Refused::Condition(Some(item))) = apply(
            &mut items,
            &claim_take(&other, lease, now(), cooldown, None),
        ) else {
            panic!("the other claim is refused");
        };
        assert_eq!(
            user_state(&item, &mine, now(), cooldown).ok(),
            Some(UserState::Claimed(mine.clone()))
        );
        assert_eq!(
            user_state(&item, &other, now(), cooldown).ok(),
            Some(UserState::InProgress)
        );
    }

    #[test]
    fn an_abandoned_claim_counts_as_a_possible_reset() {
        let cooldown = Duration::from_secs(30);
        let claim = Claim {
            abandoned: None,
            pk: "user#p#u".into(),
            id: "r/1/0".into(),
            key: None,
        };
        let mut items = Items::new();
        let lease = now() + Duration::from_secs(1);
        apply(
            &mut items,
            &claim_take(&claim, lease, now(), cooldown, None),
        )
        .expect("claimed");
        let item = items.get(&claim.pk).expect("the item").clone();
        let other = Claim {
            abandoned: None,
            pk: claim.pk.clone(),
            id: "s/2/1".into(),
            key: None,
        };
        let later = lease + Duration::from_millis(1);
        assert!(matches!(
            user_state(&item, &other, later, cooldown),
            Ok(UserState::RecentlyReset {
                confirmed: false,
                ..
            })
        ));
        assert_eq!(
            user_state(&item, &other, lease - Duration::from_millis(1), cooldown).ok(),
            Some(UserState::InProgress)
        );
    }

    #[test]
    fn a_healed_sign_out_keeps_the_user_item_only_for_the_cooldown() {
        let cooldown = Duration::from_secs(3);
        let ttl = Duration::from_secs(86_400);
        let claim = Claim {
            abandoned: None,
            pk: "user#p#u".into(),
            id: "m-1/1/0".into(),
            key: None,
        };
        let mut items = Items::new();
        apply(
            &mut items,
            &claim_take(&claim, now(), now(), cooldown, None),
        )
        .expect("claimed");
        apply(
            &mut items,
            &claim_end(
                &claim,
                Completion::ResetSignOutPending,
                now(),
                cooldown,
                ttl,
            ),
        )
        .expect("completed");
        // The redelivery (another claim id of the same record) is told to sign out only.
        let again = Claim {
            abandoned: None,
            pk: claim.pk.clone(),
            id: "m-1/2/5".into(),
            key: None,
        };
        let item = items.get(&claim.pk).expect("the item").clone();
        let UserState::SignOutPending { reset_at, .. } =
            user_state(&item, &again, now(), cooldown).expect("a state")
        else {
            panic!("sign-out pending");
        };
        // Another record meanwhile is pointed at the cooldown's end, not the day.
        let other = Claim {
            abandoned: None,
            pk: claim.pk.clone(),
            id: "m-2/2/6".into(),
            key: None,
        };
        let Ok(UserState::RecentlyReset { until, .. }) = user_state(&item, &other, now(), cooldown)
        else {
            panic!("recently reset");
        };
        assert!(until <= now() + cooldown + Duration::from_secs(1));
        apply(
            &mut items,
            &claim_end(
                &again,
                Completion::SignedOut { reset_at },
                now(),
                cooldown,
                ttl,
            ),
        )
        .expect("ended");
        let item = items.get(&claim.pk).expect("the item");
        assert!(!live(item, now() + cooldown + Duration::from_secs(1)));
        assert!(!item.contains_key("signOutPending"));
    }

    #[test]
    fn an_attempt_limit_is_remembered_and_answered_to_the_next_claim() {
        let cooldown = Duration::from_secs(0);
        let claim = Claim {
            abandoned: None,
            pk: "user#p#u".into(),
            id: "r/1/0".into(),
            key: None,
        };
        let mut items = Items::new();
        apply(
            &mut items,
            &claim_take(&claim, now(), now(), cooldown, None),
        )
        .expect("claimed");
        let until = now() + Duration::from_secs(900);
        let end = claim_end(
            &claim,
            Completion::AttemptLimited { until },
            now(),
            cooldown,
            Duration::from_secs(60),
        );
        apply(&mut items, &end).expect("limited");
        let other = Claim {
            abandoned: None,
            pk: claim.pk.clone(),
            id: "s/2/1".into(),
            key: None,
        };
        let refused = apply(
            &mut items,
            &claim_take(&other, now(), now(), cooldown, None),
        );
        let Err(Refused::Condition(Some(item))) = refused else {
            panic!("the item stands in the way");
        };
        assert!(matches!(
            user_state(&item, &other, now(), cooldown),
            Ok(UserState::AttemptLimited { .. })
        ));
        // and is gone once the limit's window ends
        assert!(!live(&item, until + Duration::from_secs(1)));
    }

    #[test]
    fn hashes_are_length_prefixed() {
        assert_ne!(sha256_hex(&[b"ab", b"c"]), sha256_hex(&[b"a", b"bc"]));
        assert_eq!(sha256_hex(&[b"x"]).len(), 64);
    }

    fn pending(decide_by: SystemTime) -> PendingApproval {
        PendingApproval {
            approval_id: "a1".into(),
            requester: r#"["arn:requester"]"#.into(),
            requester_desc: "arn:requester".into(),
            rule: "vip".into(),
            request: r#"{"UserPoolId":"p","Username":"u"}"#.into(),
            created_at: now(),
            decide_by,
        }
    }

    #[test]
    fn of_two_racing_decisions_exactly_one_applies() {
        let mut items = Items::new();
        let ttl = Duration::from_secs(60);
        let create = approval_create(&pending(now() + Duration::from_secs(30)), ttl);
        assert_eq!(create.cond().render().text, APPROVAL_CREATE_CONDITION);
        apply(&mut items, &create).expect("created");
        // An approval id is used once.
        assert!(apply(&mut items, &create).is_err());
        let approve = approval_decide("a1", Verdict::Approve, "lead-1", None, now());
        let deny = approval_decide("a1", Verdict::Deny, "lead-2", Some("no"), now());
        assert_eq!(approve.cond().render().text, DECIDE_CONDITION);
        assert_eq!(apply(&mut items, &approve), Ok(()));
        let Err(Refused::Condition(Some(met))) = apply(&mut items, &deny) else {
            panic!("the second decision is refused");
        };
        let record = approval_record(&met, "a1").expect("readable");
        assert_eq!(record.status(now()), ApprovalStatus::Approved);
        assert_eq!(record.decided.expect("decided").approver, "lead-1");
    }

    #[test]
    fn a_decision_at_or_after_the_expiry_is_refused_and_reads_expired() {
        let mut items = Items::new();
        // Whole seconds, as requests make them.
        let decide_by = UNIX_EPOCH + Duration::from_secs(1_700_000_030);
        apply(
            &mut items,
            &approval_create(&pending(decide_by), Duration::from_secs(60)),
        )
        .expect("created");
        let item = items.get("approval#a1").expect("item").clone();
        let record = approval_record(&item, "a1").expect("readable");
        assert_eq!(record.status(now()), ApprovalStatus::Pending);
        // The item outlives the decision time (kept for the status and the 410).
        assert!(live(&item, decide_by + Duration::from_secs(59)));
        for late in [decide_by, decide_by + Duration::from_millis(999)] {
            assert_eq!(record.status(late), ApprovalStatus::Expired);
            let write = approval_decide("a1", Verdict::Approve, "lead", None, late);
            assert!(apply(&mut items, &write).is_err(), "{late:?}");
        }
        let just_before = decide_by - Duration::from_millis(1);
        assert_eq!(record.status(just_before), ApprovalStatus::Pending);
        let write = approval_decide("a1", Verdict::Approve, "lead", None, just_before);
        assert_eq!(apply(&mut items, &write), Ok(()));
    }

    #[test]
    fn a_kept_answer_is_scoped_by_caller_and_replaced_by_a_later_one() {
        let mut items = Items::new();
        let ttl = Duration::from_secs(60);
        let mine = answer_pk("alice", "req-1");
        assert_ne!(mine, answer_pk("bob", "req-1"));
        apply(&mut items, &answer_keep(&mine, "{\"a\":1}", now(), ttl)).expect("kept");
        apply(&mut items, &answer_keep(&mine, "{\"a\":2}", now(), ttl)).expect("replaced");
        let item = items.get(&mine).expect("item");
        assert_eq!(kept_answer(item), Some("{\"a\":2}"));
        // The approval's key lives in a namespace no header reaches.
        let key = approval_key("alice", "a1");
        assert_ne!(key.pk, approval_key("bob", "a1").pk);
        assert!(key.pk.starts_with("key#"));
    }
}

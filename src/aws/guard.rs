//! The guard's port: idempotency keys, per-user reset claims and caller budgets, in one DynamoDB
//! table.
//!
//! What an item *means* and which conditional write each decision makes is decided in
//! [`crate::guard_logic`], pure. This module is the rest:
//!
//! - [`Table`]: the storage under the guard (a conditional write, a consistent read),
//!   implemented over DynamoDB by [`DynamoTable`], which renders the logic's [`Write`]s into
//!   `PutItem`/`UpdateItem`/`DeleteItem` requests;
//!   the fault-injection suite implements it in memory with [`crate::guard_logic::apply`];
//! - [`TableGuard`]: the guard's operations over any [`Table`] (the same code in production and
//!   under the suite's faults);
//! - [`Guard`]: what the pipeline calls: it gives each operation its stage's time (a key or a
//!   claim is taken by `deadline − margin`, a result is recorded by `deadline − margin/4`, so a
//!   reset that was answered is always recorded) and logs what it could not record.
//!
//! One table, one string partition key `pk`, TTL on the number attribute `expiresAt` (epoch
//! seconds); the items are listed in [`crate::guard_logic`].
//!
//! **Budgets** (a rule's `budget`: at most N resets per caller in any S seconds) count in fixed
//! windows `[w·S, (w+1)·S)` and admit a reset only while `before + used < N`: every S-second
//! interval ending now lies inside windows w−1 and w, so no S seconds ever hold more than N
//! resets. The price is a later restart after a burst: with `used < N` the budget admits again
//! when window w+1 begins (w's count becomes `before`), with `used = N` when w+2 begins, at most
//! 2·S after the burst (`Retry-After` is exactly that time). A spend is one conditional `UpdateItem`
//! (`total < :n` in the current window), so exactly N of many concurrent requests win; a new
//! window is started by one conditional `PutItem` over the item it replaces. A reset refused
//! before sending (by Cognito or the guard) gives its spend back.
//!
//! Every decision is one conditional write that succeeds only where no live item stands in the
//! way (absent, or past its `expiresAt`: DynamoDB's TTL deletes lazily, so the condition checks
//! it too), or where the item is this very request's (a claim met by the SDK's retry of its own
//! landed write). A failed condition is never an error: the item that won is read back (from the
//! failure itself, or with a consistent `GetItem`) and says why. DynamoDB's own failures are
//! [`GuardError`]s, which the pipeline reports as RETRY `guard-unavailable`.
//!
//! A reset's end is recorded key first: the idempotency key's answer, then the user item's
//! completion, written only once the key's write is known. So a performed reset's key is never
//! left without its answer while the user item says "reset" (a retry with the key would be told
//! `recently-reset`, then reset the user again after the cooldown): where the key's write
//! failed, the user item stays a claim, which counts as a possible reset until its window ends
//! and which the same request's retry settles by the user's status.
//!
//! Only final answers are kept under a key: RESET, WOULD_RESET and REJECTED, but not
//! `recently-reset` (it passes once the cooldown ends), `caller-budget-exhausted` (once the budget
//! admits one more), a RESET whose sign-out is retried on redelivery, nor any RETRY.
//!
//! Keys, claims and budgets never hold `ClientMetadata`: a request is compared through
//! `requestHash`, a SHA-256 of its pool, username, metadata and (when asked) `SignOut`. The one
//! exception is an **approval** item (a rule's `approval`, [`crate::approvals`]): it holds the
//! request as made, metadata included, because the reset is sent from it once approved; it is
//! never logged, put in an event or a metric.
//!
//! **Approvals and kept answers** (issue 27) follow the same pattern: their decisions are pure
//! ([`logic::approval_create`], [`logic::approval_decide`], [`logic::answer_keep`]), their
//! operations are [`GuardStore::request_approval`], [`GuardStore::decide`] (one conditional
//! write: of two racing deciders exactly one wins), [`GuardStore::approval`],
//! [`GuardStore::keep`], [`GuardStore::kept`] and the look-aheads [`GuardStore::peek_user`] and
//! [`GuardStore::peek_budget`] (a request waiting for approval is checked without writing).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::{Client, config};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::classify;
use super::{BoxFuture, ClientSettings, Stage, budget, timeouts_within};
use crate::deadline::{Deadline, epoch_ms as ms, wall_now};
use crate::failure::{GuardError, GuardErrorKind};
use crate::guard_logic::{
    self as logic, AfterSpend, Item, KeyEnd, Rendered, Value, Write, render_changes,
};
pub use crate::guard_logic::{
    APPROVAL_CREATE_CONDITION, ApprovalRecord, ApprovalStatus, DECIDE_CONDITION, Decided,
    PendingApproval, Verdict,
};
pub use crate::guard_logic::{
    BUDGET_REFUND_CONDITION, BUDGET_ROLL_CONDITION, BUDGET_SPEND_CONDITION, BUDGET_START_CONDITION,
    BudgetScope, BudgetTurn, CLAIM_CONDITION, Claim, Completion, HOLDER_CONDITION,
    KEY_CLAIM_CONDITION, KEY_FINISH_CONDITION, KEY_RELEASE_CONDITION, KEY_RESUME_CONDITION,
    KeyAnswer, KeyRef, KeyState, Resolution, SIGN_OUT_PENDING_CONDITION, Undecided, UserState,
    user_pk,
};

/// Rounds of a budget's spend lost to concurrent writers before it gives up (a new window
/// races at most once per window; each lost round means another request's spend won).
const BUDGET_ROUNDS: usize = 8;

/// Settings of the guard, from the function's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSettings {
    /// `GUARD_TABLE`: a table name or ARN.
    pub table: String,
    /// `RESET_COOLDOWN_SECONDS`: at most one reset per user in this window (zero: off).
    pub cooldown: Duration,
    /// `IDEMPOTENCY_TTL_SECONDS`: how long a final answer is replayed.
    pub idempotency_ttl: Duration,
    /// Timeout and attempts of each DynamoDB call.
    pub client: ClientSettings,
}

/// A failed call to the guard's table (the pacing buckets' too), classified.
pub(super) fn from_sdk<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> GuardError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
    E: std::error::Error + Send + Sync + 'static,
{
    let classified = classify(
        &error,
        &["ResourceNotFoundException", "ValidationException"],
    );
    GuardError::new(classified.fault.into(), operation, error)
}

fn malformed(operation: &'static str, what: &str) -> GuardError {
    GuardError::new(GuardErrorKind::Misconfigured, operation, what.to_owned())
}

/// A conditional write whose condition failed, where that is an error (a completion or a key's
/// answer that is no longer this invocation's to write).
pub fn condition_failed(operation: &'static str) -> GuardError {
    GuardError::new(
        GuardErrorKind::Upstream,
        operation,
        "ConditionalCheckFailedException",
    )
}

/// Which guard operation a table call serves (for the fault suite's schedule and for traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Taking an idempotency key.
    Begin,
    /// Recording a key's answer, or releasing it.
    Finish,
    /// Claiming a user.
    Claim,
    /// Ending a claim.
    Complete,
    /// Spending a caller's budget.
    Spend,
    /// Giving a spend back.
    Refund,
    /// Creating an approval (a request waiting for a second person).
    Request,
    /// Deciding an approval.
    Decide,
    /// Keeping a request's final answer under its id.
    Keep,
    /// Reading without writing: an approval, a kept answer, a look-ahead at a user or a budget.
    Read,
}

impl Step {
    /// The step's name in logs and traces (`guard.claim`).
    pub fn name(self) -> &'static str {
        match self {
            Step::Begin => "guard.begin",
            Step::Finish => "guard.finish",
            Step::Claim => "guard.claim",
            Step::Complete => "guard.complete",
            Step::Spend => "guard.spend",
            Step::Refund => "guard.refund",
            Step::Request => "guard.request",
            Step::Decide => "guard.decide",
            Step::Keep => "guard.keep",
            Step::Read => "guard.read",
        }
    }
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Applied.
    Done,
    /// Its condition failed; the item it met, when the store returned it (`None`: read it).
    Refused(Option<Item>),
}

/// The storage under the guard: DynamoDB, or the fault suite's in-memory table. Each call ends
/// within `budget`, retries included.
pub trait Table: Send + Sync + std::fmt::Debug {
    /// One conditional write.
    fn write<'a>(
        &'a self,
        step: Step,
        write: &'a Write,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Written, GuardError>>;

    /// A consistent read of the item `pk`.
    fn get<'a>(
        &'a self,
        step: Step,
        pk: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<Item>, GuardError>>;
}

impl<T: Table + ?Sized> Table for Arc<T> {
    fn write<'a>(
        &'a self,
        step: Step,
        write: &'a Write,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Written, GuardError>> {
        self.as_ref().write(step, write, budget)
    }

    fn get<'a>(
        &'a self,
        step: Step,
        pk: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<Item>, GuardError>> {
        self.as_ref().get(step, pk, budget)
    }
}

/// The guard's operations, each within `budget`.
pub trait GuardStore: Send + Sync + std::fmt::Debug {
    /// Takes an idempotency key until `lease_until`, or says why not (a replay's answer as JSON).
    fn begin<'a>(
        &'a self,
        key: &'a KeyRef,
        lease_until: SystemTime,
        budget: Duration,
    ) -> BoxFuture<'a, Result<KeyState<String>, GuardError>>;

    /// Records a key's final answer (JSON), or releases the key (`None`).
    fn finish<'a>(
        &'a self,
        key: &'a KeyRef,
        answer: Option<String>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>>;

    /// Claims a user (item `claim.pk`) as `claim.id` until `lease_until`, or says why not;
    /// `status_before` is the user's `UserStatus` now, kept with the claim.
    fn claim<'a>(
        &'a self,
        claim: &'a Claim,
        lease_until: SystemTime,
        status_before: Option<&'a str>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>>;

    /// Settles the unresolved reset of `holder` by what the user's status said: recorded as a
    /// reset (`RecentlyReset`, confirmed), or the user claimed as `claim` (`Claimed`).
    /// `InProgress` when another request settled it first.
    fn resolve<'a>(
        &'a self,
        claim: &'a Claim,
        holder: &'a str,
        resolution: &'a Resolution,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>>;

    /// Ends a held claim.
    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        completion: Completion,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>>;

    /// Ends a claim and records (or releases) a key: the key first, and the claim only once the
    /// key's write is known (a release ends the claim in any case); an undecided answer after
    /// the claim, for the window the claim's end gives the user item.
    fn settle<'a>(
        &'a self,
        claim: &'a Claim,
        completion: Completion,
        key: &'a KeyRef,
        answer: KeyAnswer<String>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>>;

    /// Spends one reset of a caller's budget, or says until when it is exhausted.
    fn spend<'a>(
        &'a self,
        scope: &'a BudgetScope,
        budget: Duration,
    ) -> BoxFuture<'a, Result<BudgetTurn, GuardError>>;

    /// Gives back a spend of `window` (nothing was sent).
    fn refund<'a>(
        &'a self,
        scope: &'a BudgetScope,
        window: u64,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>>;

    // Approvals, kept answers and look-aheads (issue 27). They have defaults so that a store
    // written before them still compiles; a default refuses (`Misconfigured`), so a store
    // that does not implement them never pretends to keep an approval.

    /// What the user item says about a reset, without writing (the approval's cooldown check).
    fn peek_user<'a>(
        &'a self,
        claim: &'a Claim,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>> {
        let _ = (claim, budget);
        Box::pin(async { Err(unsupported("peek_user")) })
    }

    /// What a caller's budget would say about one more reset, without spending.
    fn peek_budget<'a>(
        &'a self,
        scope: &'a BudgetScope,
        budget: Duration,
    ) -> BoxFuture<'a, Result<BudgetTurn, GuardError>> {
        let _ = (scope, budget);
        Box::pin(async { Err(unsupported("peek_budget")) })
    }

    /// Creates an approval (its id is new: the write fails if an item has it).
    fn request_approval<'a>(
        &'a self,
        pending: &'a PendingApproval,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        let _ = (pending, budget);
        Box::pin(async { Err(unsupported("request_approval")) })
    }

    /// Decides an approval: one conditional write; the approval as it is after it.
    fn decide<'a>(
        &'a self,
        decision: &'a Decision,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Decide, GuardError>> {
        let _ = (decision, budget);
        Box::pin(async { Err(unsupported("decide")) })
    }

    /// The approval `approval_id`, if it is kept (live).
    fn approval<'a>(
        &'a self,
        approval_id: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<ApprovalRecord>, GuardError>> {
        let _ = (approval_id, budget);
        Box::pin(async { Err(unsupported("approval")) })
    }

    /// Keeps a request's answer (JSON) under `pk` ([`logic::answer_pk`]).
    fn keep<'a>(
        &'a self,
        pk: &'a str,
        answer: String,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        let _ = (pk, answer, budget);
        Box::pin(async { Err(unsupported("keep")) })
    }

    /// The answer kept under `pk` (a kept-answer item, or an idempotency key's done item).
    fn kept<'a>(
        &'a self,
        pk: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, GuardError>> {
        let _ = (pk, budget);
        Box::pin(async { Err(unsupported("kept")) })
    }
}

fn unsupported(operation: &'static str) -> GuardError {
    GuardError::new(
        GuardErrorKind::Misconfigured,
        operation,
        "this guard store keeps no approvals nor answers",
    )
}

/// A decision on an approval, as the approval call makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub approval_id: String,
    pub verdict: Verdict,
    /// The approver's identities, as the audit line shows them.
    pub approver: String,
    /// The approver's reason (bounded by the caller's parser).
    pub reason: Option<String>,
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decide {
    /// This decision won: the approval as it is now.
    Won(ApprovalRecord),
    /// Another decision came first, or the approval's time is over: the approval as it is.
    Lost(ApprovalRecord),
    /// No such approval (never made, or gone with its TTL).
    Unknown,
}

/// The end of one guard operation's time: each table call it makes gets what is left, so an
/// operation of several calls (a write, then the read of the item that won) ends within its
/// budget.
#[derive(Debug, Clone, Copy)]
struct Until(tokio::time::Instant);

impl Until {
    fn after(budget: Duration) -> Until {
        Until(tokio::time::Instant::now() + budget)
    }

    /// The time left, or `Deadline` when none is.
    fn left(self, operation: &'static str) -> Result<Duration, GuardError> {
        let left = self
            .0
            .saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(GuardError::new(
                GuardErrorKind::Deadline,
                operation,
                "no time left in the operation's stage",
            ));
        }
        Ok(left)
    }
}

/// The guard's operations over a [`Table`]: the decisions of [`crate::guard_logic`], the reads
/// of the items that won, the budget's rounds. `read_only` is `DRY_RUN`: read, never write.
#[derive(Debug)]
pub struct TableGuard<T> {
    table: T,
    cooldown: Duration,
    ttl: Duration,
    read_only: bool,
    /// The wall clock every decision reads ([`wall_now`]; a test's own clock otherwise).
    clock: fn() -> SystemTime,
    /// Where each budget spend's or refund's token comes from ([`logic::new_holder`]).
    token: fn() -> String,
}

impl<T: Table> TableGuard<T> {
    /// The guard's operations over `table`.
    pub fn new(table: T, settings: &GuardSettings, read_only: bool) -> TableGuard<T> {
        TableGuard {
            table,
            cooldown: settings.cooldown,
            ttl: settings.idempotency_ttl,
            read_only,
            clock: wall_now,
            token: logic::new_holder,
        }
    }

    /// The same guard reading `clock` instead of the wall clock (the differential test runs the
    /// fake and DynamoDB on one virtual clock: the conditions carry the guard's `now`).
    pub fn with_clock(self, clock: fn() -> SystemTime) -> TableGuard<T> {
        TableGuard { clock, ..self }
    }

    /// The same guard taking its spends' and refunds' tokens from `token` (the differential
    /// test gives both tables the same ones).
    pub fn with_tokens(self, token: fn() -> String) -> TableGuard<T> {
        TableGuard { token, ..self }
    }

    /// The table underneath.
    pub fn table(&self) -> &T {
        &self.table
    }

    /// The live item `pk` (an expired one reads as none).
    async fn live(
        &self,
        step: Step,
        pk: &str,
        now: SystemTime,
        until: Until,
    ) -> Result<Option<Item>, GuardError> {
        Ok(self
            .table
            .get(step, pk, until.left("GetItem")?)
            .await?
            .filter(|item| logic::live(item, now)))
    }

    /// The item that made `write` fail: returned with the failure, or read.
    async fn winner(
        &self,
        step: Step,
        met: Option<Item>,
        pk: &str,
        until: Until,
    ) -> Result<Option<Item>, GuardError> {
        match met {
            Some(item) => Ok(Some(item)),
            None => self.table.get(step, pk, until.left("GetItem")?).await,
        }
    }

    async fn must_write(&self, step: Step, write: &Write, until: Until) -> Result<(), GuardError> {
        let left = until.left(write.operation())?;
        match self.table.write(step, write, left).await? {
            Written::Done => Ok(()),
            Written::Refused(_) => Err(condition_failed(write.operation())),
        }
    }

    async fn begin_key(
        &self,
        key: &KeyRef,
        lease_until: SystemTime,
        budget: Duration,
    ) -> Result<KeyState<String>, GuardError> {
        let until = Until::after(budget);
        let now = (self.clock)();
        if self.read_only {
            return match self.live(Step::Begin, &key.pk, now, until).await? {
                None => Ok(KeyState::Fresh),
                Some(item) => logic::key_state(&item, key, now),
            };
        }
        let write = logic::key_take(key, lease_until, now, self.ttl);
        let met = match self
            .table
            .write(Step::Begin, &write, until.left("PutItem")?)
            .await?
        {
            Written::Done => return Ok(KeyState::Fresh),
            Written::Refused(met) => match self.winner(Step::Begin, met, &key.pk, until).await? {
                Some(item) => item,
                // Gone between the write and the read: its holder just released it.
                None => return Ok(KeyState::InProgress),
            },
        };
        if logic::key_holder(&met) == Some(key.holder.as_str()) {
            return logic::key_state(&met, key, now);
        }
        // Another run's key, which it left undecided or died holding: taken over as exactly
        // that item.
        let (state, over) = match logic::key_state(&met, key, now)? {
            KeyState::Resume(open) => {
                let over = logic::key_resume(key, &open, &met, lease_until, now, self.ttl);
                match over {
                    Some(over) => (KeyState::Resume(open), over),
                    None => return Ok(KeyState::Replay(open.answer)),
                }
            }
            KeyState::Abandoned { since } => {
                let over = logic::key_take_over(key, since, &met, lease_until, now, self.ttl);
                match over {
                    Some(over) => (KeyState::Abandoned { since }, over),
                    None => return Ok(KeyState::InProgress),
                }
            }
            state => return Ok(state),
        };
        match self
            .table
            .write(Step::Begin, &over, until.left("PutItem")?)
            .await?
        {
            Written::Done => Ok(state),
            // Another run took it first, or this write landed and its answer was lost (the item
            // then carries this run's mark).
            Written::Refused(again) => match self.winner(Step::Begin, again, &key.pk, until).await?
            {
                Some(item) if logic::key_holder(&item) == Some(key.holder.as_str()) => {
                    logic::key_state(&item, key, now)
                }
                Some(item) => match logic::key_state(&item, key, now)? {
                    KeyState::Resume(_) | KeyState::Abandoned { .. } | KeyState::Fresh => {
                        Ok(KeyState::InProgress)
                    }
                    other => Ok(other),
                },
                None => Ok(KeyState::InProgress),
            },
        }
    }

    async fn finish_key(
        &self,
        key: &KeyRef,
        answer: Option<String>,
        budget: Duration,
    ) -> Result<(), GuardError> {
        let until = Until::after(budget);
        if self.read_only {
            return Ok(());
        }
        let end = answer.as_deref().map_or(KeyEnd::Release, KeyEnd::Answer);
        let write = logic::key_finish(key, end, (self.clock)(), self.ttl);
        self.must_write(Step::Finish, &write, until).await
    }

    async fn claim_user(
        &self,
        claim: &Claim,
        lease_until: SystemTime,
        status_before: Option<&str>,
        budget: Duration,
    ) -> Result<UserState, GuardError> {
        let until = Until::after(budget);
        let now = (self.clock)();
        if self.read_only {
            return match self.live(Step::Claim, &claim.pk, now, until).await? {
                None => Ok(UserState::Free),
                Some(item) => logic::user_state(&item, claim, now, self.cooldown),
            };
        }
        let write = logic::claim_take(claim, lease_until, now, self.cooldown, status_before);
        match self
            .table
            .write(Step::Claim, &write, until.left("PutItem")?)
            .await?
        {
            Written::Done => Ok(logic::claimed(claim, now, self.cooldown)),
            Written::Refused(met) => match self.winner(Step::Claim, met, &claim.pk, until).await? {
                Some(item) => logic::user_state(&item, claim, now, self.cooldown),
                None => Ok(UserState::InProgress),
            },
        }
    }

    async fn resolve_claim(
        &self,
        claim: &Claim,
        holder: &str,
        resolution: &Resolution,
        budget: Duration,
    ) -> Result<UserState, GuardError> {
        let until = Until::after(budget);
        let now = (self.clock)();
        if self.read_only {
            return Ok(UserState::Free);
        }
        let (write, settled) = match resolution {
            Resolution::Happened { reset_at } => (
                logic::resolve_happened(&claim.pk, holder, *reset_at, now, self.cooldown),
                UserState::RecentlyReset {
                    reset_at: *reset_at,
                    // The item's own expiry (whole seconds, rounded up), as for any reset.
                    until: std::time::UNIX_EPOCH
                        + Duration::from_secs(crate::deadline::epoch_secs_ceil(
                            *reset_at + self.cooldown,
                        )),
                    confirmed: true,
                },
            ),
            Resolution::NeverHappened {
                lease_until,
                status_before,
                own,
            } => (
                logic::resolve_never_happened(
                    claim,
                    holder,
                    *lease_until,
                    now,
                    self.cooldown,
                    status_before.as_deref(),
                ),
                if *own {
                    UserState::Claimed(claim.clone())
                } else {
                    logic::claimed(claim, now, self.cooldown)
                },
            ),
        };
        let left = until.left(write.operation())?;
        match self.table.write(Step::Claim, &write, left).await? {
            Written::Done => Ok(settled),
            // This very write, landed and its answer lost: the SDK's retry meets this claim
            // (a claim taken over the holder's item names this claim, not the holder).
            Written::Refused(met) => match self.winner(Step::Claim, met, &claim.pk, until).await? {
                Some(item) if logic::claim_holder(&item) == Some(claim.id.as_str()) => Ok(settled),
                _ => Ok(UserState::InProgress),
            },
        }
    }

    async fn complete_claim(
        &self,
        claim: &Claim,
        completion: Completion,
        budget: Duration,
    ) -> Result<(), GuardError> {
        let until = Until::after(budget);
        if self.read_only {
            return Ok(());
        }
        let write = logic::claim_end(claim, completion, (self.clock)(), self.cooldown, self.ttl);
        self.must_write(Step::Complete, &write, until).await
    }

    async fn settle_both(
        &self,
        claim: &Claim,
        completion: Completion,
        key: &KeyRef,
        answer: KeyAnswer<String>,
        budget: Duration,
    ) -> Result<(), GuardError> {
        let until = Until::after(budget);
        if self.read_only {
            return Ok(());
        }
        let now = (self.clock)();
        let ended = logic::claim_end(claim, completion, now, self.cooldown, self.ttl);
        if let KeyAnswer::Undecided(json) = &answer
            && completion == Completion::Unconfirmed
        {
            // An ambiguous reset: the user item first, marked unconfirmed for its window, then
            // the key, undecided for no longer than that window (a retry inside it is decided
            // by the user item and the user's status; after it, the answer is final). When the
            // user item's write is not known, the answer is final at once.
            let ended = self.must_write(Step::Complete, &ended, until).await;
            let end = match ended {
                Ok(()) if !self.cooldown.is_zero() => KeyEnd::Undecided {
                    answer: json,
                    until: ms(now + self.cooldown),
                },
                _ => KeyEnd::Answer(json),
            };
            let kept = logic::key_finish(key, end, now, self.ttl);
            let recorded = self.must_write(Step::Finish, &kept, until).await;
            return ended.and(recorded);
        }
        let kept = match &answer {
            KeyAnswer::Final(json) | KeyAnswer::Undecided(json) => KeyEnd::Answer(json),
            KeyAnswer::Release => KeyEnd::Release,
        };
        let kept = logic::key_finish(key, kept, now, self.ttl);
        if completion == Completion::ResetSignOutPending {
            // A reset whose sign-out the redelivery retries: the user item first, since it is
            // what keeps that redelivery from resetting again (it only signs out), and the key
            // (released, so that the redelivery runs) only once that is known. Left pending,
            // the key reads as a dead holder's after its lease: its retry is decided by the user
            // item, and is refused rather than sent once the window from its first take is over.
            self.must_write(Step::Complete, &ended, until).await?;
            return self.must_write(Step::Finish, &kept, until).await;
        }
        // The key first, then the user item, and the user item only once the key's write is
        // known: a performed reset whose user item says "reset" while its key still says
        // "pending" would answer a retry under the same key `recently-reset`, and reset the
        // user again once that window ended. Left as a claim instead, the user item counts as a
        // possible reset until its window ends and is settled by the user's status. (One
        // TransactWriteItems would do the same in one round trip, but DynamoDB Local and moto
        // copy the whole table per transaction item, which a drain on the local stack pays
        // for every reset.)
        let left = until.left(kept.operation())?;
        let recorded = match self.table.write(Step::Finish, &kept, left).await {
            Ok(Written::Done) => Ok(()),
            // Refused: the key was taken over after its lease, or an earlier attempt of this
            // write landed and its answer was lost. Either way the user item is next.
            Ok(Written::Refused(_)) => Err(condition_failed(kept.operation())),
            // Unknown whether the key was written: a release ends the claim anyway (nothing
            // was sent); any other completion leaves the claim to its window.
            Err(error) if completion == Completion::Release => Err(error),
            Err(error) => return Err(error),
        };
        let ended = self.must_write(Step::Complete, &ended, until).await;
        ended.and(recorded)
    }

    async fn spend_budget(
        &self,
        scope: &BudgetScope,
        budget: Duration,
    ) -> Result<BudgetTurn, GuardError> {
        let until = Until::after(budget);
        let now = (self.clock)();
        let mut window = scope.window_of(now);
        if self.read_only {
            let item = self
                .table
                .get(Step::Spend, &scope.pk, until.left("GetItem")?)
                .await?;
            return Ok(logic::budget_read(scope, window, item.as_ref()));
        }
        let token = (self.token)();
        for _ in 0..BUDGET_ROUNDS {
            let spend = logic::budget_spend(scope, window, &token);
            let met = match self
                .table
                .write(Step::Spend, &spend, until.left("UpdateItem")?)
                .await?
            {
                Written::Done => return Ok(BudgetTurn::Spent { window }),
                Written::Refused(met) => met,
            };
            let old = self.winner(Step::Spend, met, &scope.pk, until).await?;
            match logic::after_spend(scope, window, old.as_ref(), &token) {
                AfterSpend::Exhausted { until } => return Ok(BudgetTurn::Exhausted { until }),
                // An earlier attempt at this spend landed, its answer lost.
                AfterSpend::Spent { window } => return Ok(BudgetTurn::Spent { window }),
                AfterSpend::SpendIn { window: ahead } => window = ahead,
                AfterSpend::Start(start) => {
                    match self
                        .table
                        .write(Step::Spend, &start, until.left("PutItem")?)
                        .await?
                    {
                        Written::Done => return Ok(BudgetTurn::Spent { window }),
                        // Another request started the window first (or this Put's earlier
                        // attempt landed, which the next round's spend meets as its own).
                        Written::Refused(_) => {}
                    }
                }
            }
        }
        Err(GuardError::new(
            GuardErrorKind::Throttled,
            "UpdateItem",
            "the caller's budget item changed under every attempt to spend it",
        ))
    }

    async fn refund_budget(
        &self,
        scope: &BudgetScope,
        window: u64,
        budget: Duration,
    ) -> Result<(), GuardError> {
        let until = Until::after(budget);
        if self.read_only {
            return Ok(());
        }
        let token = (self.token)();
        for refund in logic::budget_refunds(scope, window, &token) {
            match self
                .table
                .write(Step::Refund, &refund, until.left("UpdateItem")?)
                .await?
            {
                Written::Done => return Ok(()),
                Written::Refused(met) => {
                    let old = self.winner(Step::Refund, met, &scope.pk, until).await?;
                    // An earlier attempt at this refund landed, its answer lost.
                    if logic::refunded(old.as_ref(), &token) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

impl<T: Table> TableGuard<T> {
    async fn peek_user_state(
        &self,
        claim: &Claim,
        budget: Duration,
    ) -> Result<UserState, GuardError> {
        let until = Until::after(budget);
        let now = wall_now();
        match self.live(Step::Read, &claim.pk, now, until).await? {
            None => Ok(UserState::Free),
            Some(item) => logic::user_state(&item, claim, now, self.cooldown),
        }
    }

    async fn peek_budget_turn(
        &self,
        scope: &BudgetScope,
        budget: Duration,
    ) -> Result<BudgetTurn, GuardError> {
        let until = Until::after(budget);
        let now = wall_now();
        let item = self.live(Step::Read, &scope.pk, now, until).await?;
        Ok(logic::budget_read(
            scope,
            scope.window_of(now),
            item.as_ref(),
        ))
    }

    async fn create_approval(
        &self,
        pending: &PendingApproval,
        budget: Duration,
    ) -> Result<(), GuardError> {
        let until = Until::after(budget);
        let write = logic::approval_create(pending, self.ttl);
        match self
            .table
            .write(Step::Request, &write, until.left("PutItem")?)
            .await?
        {
            Written::Done => Ok(()),
            // The SDK's retry of a landed create meets its own item.
            Written::Refused(met) => {
                let pk = logic::approval_pk(&pending.approval_id);
                match self.winner(Step::Request, met, &pk, until).await? {
                    Some(item)
                        if logic::approval_record(&item, &pending.approval_id).is_ok_and(|r| {
                            r.decided.is_none()
                                && r.pending.requester == pending.requester
                                && r.pending.rule == pending.rule
                                && r.pending.request == pending.request
                                && r.pending.decide_by == pending.decide_by
                        }) =>
                    {
                        Ok(())
                    }
                    _ => Err(condition_failed("PutItem")),
                }
            }
        }
    }

    async fn decide_approval(
        &self,
        decision: &Decision,
        budget: Duration,
    ) -> Result<Decide, GuardError> {
        let until = Until::after(budget);
        let now = wall_now();
        let pk = logic::approval_pk(&decision.approval_id);
        let write = logic::approval_decide(
            &decision.approval_id,
            decision.verdict,
            &decision.approver,
            decision.reason.as_deref(),
            now,
        );
        let written = self
            .table
            .write(Step::Decide, &write, until.left("UpdateItem")?)
            .await?;
        let item = match &written {
            // Read back what this decision wrote (with the request it approves).
            Written::Done => {
                self.table
                    .get(Step::Decide, &pk, until.left("GetItem")?)
                    .await?
            }
            Written::Refused(met) => self.winner(Step::Decide, met.clone(), &pk, until).await?,
        };
        let Some(item) = item.filter(|i| logic::live(i, now)) else {
            return Ok(Decide::Unknown);
        };
        let record = logic::approval_record(&item, &decision.approval_id)?;
        // A retry of this very decision that met its own landed write has won too.
        let mine = record
            .decided
            .as_ref()
            .is_some_and(|d| d.verdict == decision.verdict && d.approver == decision.approver);
        Ok(match written {
            Written::Done => Decide::Won(record),
            Written::Refused(_) if mine => Decide::Won(record),
            Written::Refused(_) => Decide::Lost(record),
        })
    }

    async fn read_approval(
        &self,
        approval_id: &str,
        budget: Duration,
    ) -> Result<Option<ApprovalRecord>, GuardError> {
        let until = Until::after(budget);
        let pk = logic::approval_pk(approval_id);
        match self.live(Step::Read, &pk, wall_now(), until).await? {
            None => Ok(None),
            Some(item) => logic::approval_record(&item, approval_id).map(Some),
        }
    }

    async fn keep_answer(
        &self,
        pk: &str,
        answer: String,
        budget: Duration,
    ) -> Result<(), GuardError> {
        let until = Until::after(budget);
        if self.read_only {
            return Ok(());
        }
        let write = logic::answer_keep(pk, &answer, wall_now(), self.ttl);
        self.must_write(Step::Keep, &write, until).await
    }

    async fn read_kept(&self, pk: &str, budget: Duration) -> Result<Option<String>, GuardError> {
        let until = Until::after(budget);
        Ok(self
            .live(Step::Read, pk, wall_now(), until)
            .await?
            .and_then(|item| logic::kept_answer(&item).map(str::to_owned)))
    }
}

impl<T: Table> GuardStore for TableGuard<T> {
    fn peek_user<'a>(
        &'a self,
        claim: &'a Claim,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>> {
        Box::pin(self.peek_user_state(claim, budget))
    }

    fn peek_budget<'a>(
        &'a self,
        scope: &'a BudgetScope,
        budget: Duration,
    ) -> BoxFuture<'a, Result<BudgetTurn, GuardError>> {
        Box::pin(self.peek_budget_turn(scope, budget))
    }

    fn request_approval<'a>(
        &'a self,
        pending: &'a PendingApproval,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.create_approval(pending, budget))
    }

    fn decide<'a>(
        &'a self,
        decision: &'a Decision,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Decide, GuardError>> {
        Box::pin(self.decide_approval(decision, budget))
    }

    fn approval<'a>(
        &'a self,
        approval_id: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<ApprovalRecord>, GuardError>> {
        Box::pin(self.read_approval(approval_id, budget))
    }

    fn keep<'a>(
        &'a self,
        pk: &'a str,
        answer: String,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.keep_answer(pk, answer, budget))
    }

    fn kept<'a>(
        &'a self,
        pk: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, GuardError>> {
        Box::pin(self.read_kept(pk, budget))
    }

    fn begin<'a>(
        &'a self,
        key: &'a KeyRef,
        lease_until: SystemTime,
        budget: Duration,
    ) -> BoxFuture<'a, Result<KeyState<String>, GuardError>> {
        Box::pin(self.begin_key(key, lease_until, budget))
    }

    fn finish<'a>(
        &'a self,
        key: &'a KeyRef,
        answer: Option<String>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.finish_key(key, answer, budget))
    }

    fn claim<'a>(
        &'a self,
        claim: &'a Claim,
        lease_until: SystemTime,
        status_before: Option<&'a str>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>> {
        Box::pin(self.claim_user(claim, lease_until, status_before, budget))
    }

    fn resolve<'a>(
        &'a self,
        claim: &'a Claim,
        holder: &'a str,
        resolution: &'a Resolution,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>> {
        Box::pin(self.resolve_claim(claim, holder, resolution, budget))
    }

    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        completion: Completion,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.complete_claim(claim, completion, budget))
    }

    fn settle<'a>(
        &'a self,
        claim: &'a Claim,
        completion: Completion,
        key: &'a KeyRef,
        answer: KeyAnswer<String>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.settle_both(claim, completion, key, answer, budget))
    }

    fn spend<'a>(
        &'a self,
        scope: &'a BudgetScope,
        budget: Duration,
    ) -> BoxFuture<'a, Result<BudgetTurn, GuardError>> {
        Box::pin(self.spend_budget(scope, budget))
    }

    fn refund<'a>(
        &'a self,
        scope: &'a BudgetScope,
        window: u64,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.refund_budget(scope, window, budget))
    }
}

/// Makes claim ids unique within the process; with the time and the record's id, unique.
static CLAIMS: AtomicU64 = AtomicU64::new(0);

/// The guard as the pipeline uses it: each operation within its stage of the deadline.
#[derive(Debug, Clone)]
pub struct Guard {
    store: Arc<dyn GuardStore>,
    cooldown: Duration,
    /// `DEADLINE_MARGIN_MS`.
    margin: Duration,
}

impl Guard {
    /// The guard over `store`.
    pub fn new(store: Arc<dyn GuardStore>, settings: &GuardSettings, margin: Duration) -> Guard {
        Guard {
            store,
            cooldown: settings.cooldown,
            margin,
        }
    }

    /// The guard over DynamoDB (a client configured with [`configure`]); `read_only` is
    /// `DRY_RUN`.
    pub fn dynamodb(
        client: Client,
        settings: GuardSettings,
        read_only: bool,
        margin: Duration,
    ) -> Guard {
        let store = TableGuard::new(DynamoTable::new(client, &settings), &settings, read_only);
        Guard::new(Arc::new(store), &settings, margin)
    }

    /// The cooldown window.
    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }

    /// The time an operation of `stage` may take, or `Deadline` when none is left.
    fn budget(
        &self,
        deadline: Deadline,
        stage: Stage,
        operation: &'static str,
    ) -> Result<Duration, GuardError> {
        let left = budget(deadline, self.margin, stage);
        if left.is_zero() {
            return Err(GuardError::new(
                GuardErrorKind::Deadline,
                operation,
                "no time left before the invocation's deadline",
            ));
        }
        Ok(left)
    }

    /// Takes an idempotency key for this invocation, or says why not.
    #[tracing::instrument(level = "debug", name = "guard.begin", skip_all)]
    pub async fn begin<A: DeserializeOwned>(
        &self,
        key: &KeyRef,
        deadline: Deadline,
    ) -> Result<KeyState<A>, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "begin")?;
        let state = match self.store.begin(key, deadline.wall_clock(), budget).await {
            Ok(state) => state,
            Err(error) => {
                // The take may have landed before the failure (a timeout): given back, so that
                // the key's retry is not judged as a dead holder's (a take-over is not: its
                // release condition refuses, and what the dead holder may have sent, or the
                // undecided answer, stays). Refused when nothing landed. It gets the time a
                // reset would (until half the margin is left), so that a hanging table still
                // leaves the record's answer its own stage.
                if let Ok(budget) = self.budget(deadline, Stage::Reset, "finish") {
                    let released = self.store.finish(key, None, budget).await;
                    tracing::debug!(
                        idempotency_key = %key.key,
                        released = released.is_ok(),
                        "gave back a key whose take failed"
                    );
                }
                return Err(error);
            }
        };
        Ok(match state {
            KeyState::Fresh => KeyState::Fresh,
            KeyState::Resume(open) => KeyState::Resume(open),
            KeyState::Abandoned { since } => KeyState::Abandoned { since },
            KeyState::InProgress => KeyState::InProgress,
            KeyState::Reused => KeyState::Reused,
            KeyState::Replay(json) => KeyState::Replay(
                serde_json::from_str(&json)
                    .map_err(|_| malformed("GetItem", "a done key item has no readable answer"))?,
            ),
        })
    }

    /// Records a key's final answer (replayed until the TTL ends), or releases the key
    /// (`None`). Never refused for the margin: it has its own stage. A failure is logged: the
    /// answer already stands.
    #[tracing::instrument(level = "debug", name = "guard.finish", skip_all)]
    pub async fn finish(&self, key: &KeyRef, answer: Option<&impl Serialize>, deadline: Deadline) {
        let result = match self.budget(deadline, Stage::Record, "finish") {
            Ok(budget) => {
                let json = answer.and_then(|a| serde_json::to_string(a).ok());
                self.store.finish(key, json, budget).await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(
                idempotency_key = %key.key,
                error.cause_chain = %crate::logging::cause_chain(&error),
                "could not record the idempotency key's result; a retry with this key is judged as a dead holder's: it runs while the user item holds what this run did, and is answered reset-unconfirmed after that"
            );
        }
    }

    /// Claims `username` of `pool` for a reset, or says why not.
    #[tracing::instrument(level = "debug", name = "guard.claim", skip_all)]
    pub async fn claim(
        &self,
        pool: &str,
        username: &str,
        record_id: &str,
        key: Option<&KeyRef>,
        status_before: Option<&str>,
        deadline: Deadline,
    ) -> Result<UserState, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "claim")?;
        let claim = Claim {
            // The key and the request it is bound to: another request under the same key is
            // not the same request.
            key: key.map(|k| format!("{}#{}", k.pk, k.request_hash)),
            abandoned: key.and_then(|k| k.abandoned),
            pk: user_pk(pool, username),
            id: format!(
                "{record_id}/{}/{}",
                ms(wall_now()),
                CLAIMS.fetch_add(1, Ordering::Relaxed)
            ),
        };
        match self
            .store
            .claim(&claim, deadline.wall_clock(), status_before, budget)
            .await
        {
            Ok(state) => Ok(state),
            Err(error) => {
                // The write may have landed before the failure (a timeout): take it back, so
                // that a claim nobody holds does not block the user.
                self.complete(&claim, Completion::Release, deadline).await;
                Err(error)
            }
        }
    }

    /// Settles an unresolved reset (see [`UserState::Unresolved`]) by the user's status read
    /// after it can no longer be in flight: `RESET_REQUIRED` records the reset, `CONFIRMED`
    /// claims the user for this record (`lease_until` the deadline, `status_before` the status).
    #[tracing::instrument(level = "debug", name = "guard.resolve", skip_all)]
    pub async fn resolve(
        &self,
        claim: &Claim,
        holder: &str,
        resolution: Resolution,
        deadline: Deadline,
    ) -> Result<UserState, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "resolve")?;
        self.store.resolve(claim, holder, &resolution, budget).await
    }

    /// Ends a held claim. Never refused for the margin: it has its own stage. A failure is
    /// logged: an unfinished claim still counts as a (possible) reset until its window ends, so
    /// it errs on the side of no second code.
    #[tracing::instrument(level = "debug", name = "guard.complete", skip_all)]
    pub async fn complete(&self, claim: &Claim, completion: Completion, deadline: Deadline) {
        let result = match self.budget(deadline, Stage::Record, "complete") {
            Ok(budget) => self.store.complete(claim, completion, budget).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(
                completion = ?completion,
                error.cause_chain = %crate::logging::cause_chain(&error),
                "could not complete the user claim; it counts as a possible reset until its window ends"
            );
        }
    }
}

impl Guard {
    /// Ends a claim and records (or releases) the key: the key's answer first, then the user
    /// item's completion, which is written only once the key's write is known, so a performed
    /// reset's user item never says "reset" while its key stays without its answer. Never
    /// refused for the margin (the record stage); a failure is logged.
    #[tracing::instrument(level = "debug", name = "guard.settle", skip_all)]
    pub async fn settle(
        &self,
        claim: &Claim,
        completion: Completion,
        key: &KeyRef,
        answer: KeyAnswer<&impl Serialize>,
        deadline: Deadline,
    ) {
        let result = match self.budget(deadline, Stage::Record, "settle") {
            Ok(budget) => {
                let json = answer.map(|a| serde_json::to_string(a).ok());
                self.store
                    .settle(claim, completion, key, json, budget)
                    .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(
                completion = ?completion,
                idempotency_key = %key.key,
                error.cause_chain = %crate::logging::cause_chain(&error),
                "could not record the reset's end; an unfinished claim counts as a possible reset until its window ends"
            );
        }
    }
}

impl Guard {
    /// Spends one reset of `scope`'s budget (in `DRY_RUN`, only reads it).
    #[tracing::instrument(level = "debug", name = "guard.spend", skip_all)]
    pub async fn spend(
        &self,
        scope: &BudgetScope,
        deadline: Deadline,
    ) -> Result<BudgetTurn, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "spend")?;
        self.store.spend(scope, budget).await
    }

    /// Gives a spend back: the reset it was for was refused before anything was sent. A
    /// failure is logged: the budget then counts one reset too many until its window ends
    /// (on the safe side).
    #[tracing::instrument(level = "debug", name = "guard.refund", skip_all)]
    pub async fn refund(&self, scope: &BudgetScope, window: u64, deadline: Deadline) {
        let result = match self.budget(deadline, Stage::Record, "refund") {
            Ok(budget) => self.store.refund(scope, window, budget).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(
                error.cause_chain = %crate::logging::cause_chain(&error),
                "could not give back a budget spend; the caller's budget counts one reset more until its window ends"
            );
        }
    }
}

impl Guard {
    /// What the user item says about a reset of `username`, without writing (the look-ahead
    /// of a request that waits for approval).
    #[tracing::instrument(level = "debug", name = "guard.read", skip_all)]
    pub async fn peek_user(
        &self,
        pool: &str,
        username: &str,
        record_id: &str,
        deadline: Deadline,
    ) -> Result<UserState, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "peek_user")?;
        let claim = Claim {
            pk: user_pk(pool, username),
            id: format!("{record_id}/{}/peek", ms(wall_now())),
            key: None,
            abandoned: None,
        };
        self.store.peek_user(&claim, budget).await
    }

    /// What `scope`'s budget would say about one more reset, without spending.
    #[tracing::instrument(level = "debug", name = "guard.read", skip_all)]
    pub async fn peek_budget(
        &self,
        scope: &BudgetScope,
        deadline: Deadline,
    ) -> Result<BudgetTurn, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "peek_budget")?;
        self.store.peek_budget(scope, budget).await
    }

    /// Creates an approval.
    #[tracing::instrument(level = "debug", name = "guard.request", skip_all)]
    pub async fn request_approval(
        &self,
        pending: &PendingApproval,
        deadline: Deadline,
    ) -> Result<(), GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "request_approval")?;
        self.store.request_approval(pending, budget).await
    }

    /// Decides an approval (one conditional write).
    #[tracing::instrument(level = "debug", name = "guard.decide", skip_all)]
    pub async fn decide(
        &self,
        decision: &Decision,
        deadline: Deadline,
    ) -> Result<Decide, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "decide")?;
        self.store.decide(decision, budget).await
    }

    /// The approval `approval_id`, if kept.
    #[tracing::instrument(level = "debug", name = "guard.read", skip_all)]
    pub async fn approval(
        &self,
        approval_id: &str,
        deadline: Deadline,
    ) -> Result<Option<ApprovalRecord>, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "approval")?;
        self.store.approval(approval_id, budget).await
    }

    /// Keeps a request's answer under its id for `GET /requests/{id}`. A failure is logged:
    /// the answer already stands; the lookup then answers 404.
    #[tracing::instrument(level = "debug", name = "guard.keep", skip_all)]
    pub async fn keep(&self, pk: &str, answer: &impl Serialize, deadline: Deadline) {
        let result = match (
            self.budget(deadline, Stage::Record, "keep"),
            serde_json::to_string(answer),
        ) {
            (Ok(budget), Ok(json)) => self.store.keep(pk, json, budget).await,
            (Err(error), _) => Err(error),
            (_, Err(_)) => Err(malformed("PutItem", "an answer that is not JSON")),
        };
        if let Err(error) = result {
            tracing::warn!(
                error.cause_chain = %crate::logging::cause_chain(&error),
                "could not keep the request's answer; GET /requests/{{id}} will not find it"
            );
        }
    }

    /// The answer kept under `pk`, read back.
    #[tracing::instrument(level = "debug", name = "guard.read", skip_all)]
    pub async fn kept<A: DeserializeOwned>(
        &self,
        pk: &str,
        deadline: Deadline,
    ) -> Result<Option<A>, GuardError> {
        let budget = self.budget(deadline, Stage::Lookup, "kept")?;
        match self.store.kept(pk, budget).await? {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|_| malformed("GetItem", "a kept answer is not readable")),
        }
    }
}

/// The guard's table in DynamoDB: the logic's writes rendered into requests.
#[derive(Debug, Clone)]
pub struct DynamoTable {
    client: Client,
    table: String,
    /// The timeout of each attempt.
    attempt: Duration,
}

impl DynamoTable {
    /// The table `settings.table` through a client configured with [`configure`].
    pub fn new(client: Client, settings: &GuardSettings) -> DynamoTable {
        DynamoTable {
            client,
            table: settings.table.clone(),
            attempt: settings.client.timeout,
        }
    }

    /// Timeouts that end a call (the SDK's retries included) within `budget`.
    fn timeouts(&self, budget: Duration) -> config::Builder {
        within(self.attempt, budget)
    }

    async fn write_one(&self, write: &Write, budget: Duration) -> Result<Written, GuardError> {
        let mut rendered = write.cond().render();
        let refused = |item: Option<HashMap<String, AttributeValue>>| {
            Ok(Written::Refused(item.map(|i| from_attributes(&i))))
        };
        match write {
            Write::Put { item, .. } => {
                let result = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(to_attributes(item)))
                    .set_condition_expression(condition_text(&mut rendered))
                    .set_expression_attribute_names(names(&rendered))
                    .set_expression_attribute_values(values(&rendered))
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .customize()
                    .config_override(self.timeouts(budget))
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(Written::Done),
                    Err(SdkError::ServiceError(context))
                        if context.err().is_conditional_check_failed_exception() =>
                    {
                        match context.into_err() {
                            PutItemError::ConditionalCheckFailedException(e) => refused(e.item),
                            _ => refused(None),
                        }
                    }
                    Err(e) => Err(from_sdk("PutItem", e)),
                }
            }
            Write::Update { pk, changes, .. } => {
                let condition = condition_text(&mut rendered);
                let update = render_changes(changes, &mut rendered);
                let result = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(pk))
                    .update_expression(update)
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(names(&rendered))
                    .set_expression_attribute_values(values(&rendered))
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .customize()
                    .config_override(self.timeouts(budget))
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(Written::Done),
                    Err(SdkError::ServiceError(context))
                        if context.err().is_conditional_check_failed_exception() =>
                    {
                        match context.into_err() {
                            UpdateItemError::ConditionalCheckFailedException(e) => refused(e.item),
                            _ => refused(None),
                        }
                    }
                    Err(e) => Err(from_sdk("UpdateItem", e)),
                }
            }
            Write::Delete { pk, .. } => {
                let result = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s(pk))
                    .set_condition_expression(condition_text(&mut rendered))
                    .set_expression_attribute_names(names(&rendered))
                    .set_expression_attribute_values(values(&rendered))
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .customize()
                    .config_override(self.timeouts(budget))
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(Written::Done),
                    Err(SdkError::ServiceError(context))
                        if context.err().is_conditional_check_failed_exception() =>
                    {
                        match context.into_err() {
                            DeleteItemError::ConditionalCheckFailedException(e) => refused(e.item),
                            _ => refused(None),
                        }
                    }
                    Err(e) => Err(from_sdk("DeleteItem", e)),
                }
            }
        }
    }
}

impl Table for DynamoTable {
    fn write<'a>(
        &'a self,
        _step: Step,
        write: &'a Write,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Written, GuardError>> {
        Box::pin(self.write_one(write, budget))
    }

    fn get<'a>(
        &'a self,
        _step: Step,
        pk: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<Item>, GuardError>> {
        Box::pin(async move {
            let item = consistent_get(&self.client, &self.table, pk, self.timeouts(budget)).await?;
            Ok(item.map(|i| from_attributes(&i)))
        })
    }
}

/// The guard over DynamoDB.
pub type DynamoGuard = TableGuard<DynamoTable>;

/// The condition's text, or none for a write without one ([`logic::Cond::Always`]).
fn condition_text(rendered: &mut Rendered) -> Option<String> {
    let text = std::mem::take(&mut rendered.text);
    (!text.is_empty()).then_some(text)
}

fn names(rendered: &Rendered) -> Option<HashMap<String, String>> {
    (!rendered.names.is_empty()).then(|| {
        rendered
            .names
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

fn values(rendered: &Rendered) -> Option<HashMap<String, AttributeValue>> {
    (!rendered.values.is_empty()).then(|| {
        rendered
            .values
            .iter()
            .map(|(k, v)| (k.clone(), attribute(v)))
            .collect()
    })
}

fn attribute(value: &Value) -> AttributeValue {
    match value {
        Value::S(text) => AttributeValue::S(text.clone()),
        Value::N(number) => AttributeValue::N(number.to_string()),
    }
}

/// An item in DynamoDB's shape.
pub fn to_attributes(item: &Item) -> HashMap<String, AttributeValue> {
    item.iter()
        .map(|(k, v)| (k.clone(), attribute(v)))
        .collect()
}

/// An item read from DynamoDB, in the logic's shape: strings and numbers (attributes of any
/// other type, which the guard never writes, are left out).
pub fn from_attributes(item: &HashMap<String, AttributeValue>) -> Item {
    item.iter()
        .filter_map(|(name, value)| {
            let value = match value {
                AttributeValue::S(text) => Value::S(text.clone()),
                AttributeValue::N(number) => Value::N(number.parse().ok()?),
                _ => return None,
            };
            Some((name.clone(), value))
        })
        .collect()
}

/// Timeouts that end a call to the table (the SDK's retries included) within `budget`, each
/// attempt within `attempt`.
pub(super) fn within(attempt: Duration, budget: Duration) -> config::Builder {
    config::Builder::new().timeout_config(timeouts_within(attempt, budget))
}

/// The item `pk` of `table`, read with a consistent `GetItem` (the item that won a race, where
/// the failed condition did not return it).
pub(super) async fn consistent_get(
    client: &Client,
    table: &str,
    pk: &str,
    timeouts: config::Builder,
) -> Result<Option<HashMap<String, AttributeValue>>, GuardError> {
    let output = client
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .consistent_read(true)
        .customize()
        .config_override(timeouts)
        .send()
        .await
        .map_err(|e| from_sdk("GetItem", e))?;
    Ok(output.item)
}

pub(super) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Applies retries and timeouts to a DynamoDB client configuration.
pub fn configure(builder: config::Builder, settings: ClientSettings) -> config::Builder {
    builder
        .retry_config(settings.retry_config())
        .timeout_config(settings.timeout_config())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_through_dynamodb_attributes() {
        let item = Item::from([
            ("pk".to_owned(), Value::S("user#p#u".into())),
            ("expiresAt".to_owned(), Value::N(1_700_000_000)),
        ]);
        assert_eq!(from_attributes(&to_attributes(&item)), item);
    }

    /// The guard's table in memory: the logic's own `apply`, as the fault suite's table.
    #[derive(Debug, Default)]
    struct MemTable(std::sync::Mutex<logic::Items>);

    impl Table for MemTable {
        fn write<'a>(
            &'a self,
            _step: Step,
            write: &'a Write,
            _budget: Duration,
        ) -> BoxFuture<'a, Result<Written, GuardError>> {
            let result = logic::apply(&mut self.0.lock().expect("items"), write);
            Box::pin(async move {
                match result {
                    Ok(()) => Ok(Written::Done),
                    Err(logic::Refused::Condition(met)) => Ok(Written::Refused(met)),
                    Err(logic::Refused::Invalid(what)) => Err(malformed("UpdateItem", what)),
                }
            })
        }

        fn get<'a>(
            &'a self,
            _step: Step,
            pk: &'a str,
            _budget: Duration,
        ) -> BoxFuture<'a, Result<Option<Item>, GuardError>> {
            let item = self.0.lock().expect("items").get(pk).cloned();
            Box::pin(async move { Ok(item) })
        }
    }

    fn guard() -> TableGuard<MemTable> {
        TableGuard::new(MemTable::default(), &settings(), false)
    }

    fn settings() -> GuardSettings {
        GuardSettings {
            table: "t".into(),
            cooldown: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(600),
            client: ClientSettings {
                timeout: Duration::from_secs(1),
                max_attempts: 1,
            },
        }
    }

    fn pending(id: &str, ttl: Duration) -> PendingApproval {
        let now = wall_now();
        PendingApproval {
            approval_id: id.into(),
            requester: r#"["alice"]"#.into(),
            requester_desc: "alice".into(),
            rule: "vip".into(),
            request: "{}".into(),
            created_at: now,
            decide_by: std::time::UNIX_EPOCH
                + Duration::from_secs(crate::deadline::epoch_secs_floor(now))
                + ttl,
        }
    }

    fn decision(id: &str, verdict: Verdict, approver: &str) -> Decision {
        Decision {
            approval_id: id.into(),
            verdict,
            approver: approver.into(),
            reason: None,
        }
    }

    const BUDGET: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn the_first_decision_wins_and_the_next_one_is_told_it() {
        let guard = guard();
        let asked = pending("a1", Duration::from_secs(60));
        guard.request_approval(&asked, BUDGET).await.expect("kept");
        // The SDK's retry of a landed create is a success, another create of the id is not.
        guard
            .request_approval(&asked, BUDGET)
            .await
            .expect("retried");
        let mut other = asked.clone();
        other.rule = "else".into();
        assert!(guard.request_approval(&other, BUDGET).await.is_err());
        let won = guard
            .decide(&decision("a1", Verdict::Approve, "lead-1"), BUDGET)
            .await
            .expect("decided");
        let Decide::Won(record) = won else {
            panic!("the first decision wins: {won:?}");
        };
        assert_eq!(record.status(wall_now()), ApprovalStatus::Approved);
        let lost = guard
            .decide(&decision("a1", Verdict::Deny, "lead-2"), BUDGET)
            .await
            .expect("answered");
        let Decide::Lost(record) = lost else {
            panic!("the second decision loses: {lost:?}");
        };
        assert_eq!(record.decided.expect("decided").approver, "lead-1");
        // The retry of the winning decision (its own write met) still wins.
        assert!(matches!(
            guard
                .decide(&decision("a1", Verdict::Approve, "lead-1"), BUDGET)
                .await,
            Ok(Decide::Won(_))
        ));
        assert_eq!(
            guard
                .decide(&decision("nope", Verdict::Approve, "lead-1"), BUDGET)
                .await
                .ok(),
            Some(Decide::Unknown)
        );
    }

    /// What a [`Hooked`] table's hook makes of a write before the table applies it: `Some`
    /// answers it in the table's place.
    type Hook =
        Box<dyn Fn(Step, &Write, &MemTable) -> Option<Result<Written, GuardError>> + Send + Sync>;

    /// The table in memory with a hook before every write: a race, a failure.
    struct Hooked {
        table: MemTable,
        hook: Hook,
    }

    impl std::fmt::Debug for Hooked {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Hooked")
                .field("table", &self.table)
                .finish_non_exhaustive()
        }
    }

    impl Table for Hooked {
        fn write<'a>(
            &'a self,
            step: Step,
            write: &'a Write,
            budget: Duration,
        ) -> BoxFuture<'a, Result<Written, GuardError>> {
            match (self.hook)(step, write, &self.table) {
                Some(answer) => Box::pin(async move { answer }),
                None => self.table.write(step, write, budget),
            }
        }

        fn get<'a>(
            &'a self,
            step: Step,
            pk: &'a str,
            budget: Duration,
        ) -> BoxFuture<'a, Result<Option<Item>, GuardError>> {
            self.table.get(step, pk, budget)
        }
    }

    fn hooked(hook: Hook) -> TableGuard<Hooked> {
        let table = Hooked {
            table: MemTable::default(),
            hook,
        };
        TableGuard::new(table, &settings(), false)
    }

    fn run_key(holder: &str) -> KeyRef {
        KeyRef {
            abandoned: None,
            key: "k".into(),
            pk: "key#k".into(),
            request_hash: "h".into(),
            holder: holder.into(),
            undecided: None,
        }
    }

    /// An ambiguous reset settled by `first` on `guard`: the user item unconfirmed, the key's
    /// answer undecided. The decideUntil it wrote, if any.
    async fn undecided<T: Table>(guard: &TableGuard<T>, first: &KeyRef) -> Option<u64> {
        let lease = wall_now() + Duration::from_secs(5);
        let begun = guard.begin_key(first, lease, BUDGET).await.ok();
        assert_eq!(begun, Some(KeyState::Fresh));
        let claim = Claim {
            abandoned: None,
            pk: user_pk("p", "u"),
            id: "r/1/0".into(),
            key: Some("key#k#h".into()),
        };
        let status = Some(logic::CONFIRMED);
        let claimed = guard.claim_user(&claim, lease, status, BUDGET).await.ok();
        assert_eq!(claimed, Some(UserState::Claimed(claim.clone())));
        let answer = KeyAnswer::Undecided(r#"{"code":"reset-unconfirmed"}"#.to_owned());
        guard
            .settle_both(&claim, Completion::Unconfirmed, first, answer, BUDGET)
            .await
            .expect("settled");
        let key = guard.table.get(Step::Finish, "key#k", BUDGET).await;
        match key.expect("read").expect("the key item").get("decideUntil") {
            Some(Value::N(until)) => Some(*until),
            _ => None,
        }
    }

    #[tokio::test]
    async fn an_ambiguous_resets_key_is_undecided_for_the_cooldown_and_taken_over_once() {
        let guard = guard();
        let before = ms(wall_now());
        let until = undecided(&guard, &run_key("first"))
            .await
            .expect("undecided");
        // For the user item's window (the cooldown from the settle), no longer.
        let after = ms(wall_now());
        assert!(
            (before + 30_000..=after + 30_000).contains(&until),
            "{until}"
        );
        // A second run takes it over; a third meets it in progress.
        let lease = wall_now() + Duration::from_secs(5);
        let second = guard.begin_key(&run_key("second"), lease, BUDGET).await;
        assert!(matches!(second, Ok(KeyState::Resume(_))), "{second:?}");
        let third = guard.begin_key(&run_key("third"), lease, BUDGET).await;
        assert_eq!(third.ok(), Some(KeyState::InProgress));
        // With the cooldown off nothing holds the reset: the answer is final at once.
        let mut settings = settings();
        settings.cooldown = Duration::ZERO;
        let off = TableGuard::new(MemTable::default(), &settings, false);
        assert_eq!(undecided(&off, &run_key("first")).await, None);
    }

    #[tokio::test]
    async fn a_key_take_over_met_by_its_own_landed_write_holds_it_and_one_met_by_another_does_not()
    {
        let lease = wall_now() + Duration::from_secs(5);
        // The first key take-over (a `PutItem` under `KEY_RESUME_CONDITION`) is met by `before`
        // first (another run's take-over), or (`None`) lands and is then retried by the SDK:
        // its answer was lost, the retry meets the landed write.
        let with = |before: Option<Write>| {
            let done = std::sync::atomic::AtomicBool::new(false);
            hooked(Box::new(move |_, write: &Write, table: &MemTable| {
                let resume = write.cond().render().text == KEY_RESUME_CONDITION;
                if resume && !done.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let first = before.as_ref().unwrap_or(write);
                    let items = &mut table.0.lock().expect("items");
                    logic::apply(items, first).expect("the first take-over lands");
                }
                None
            }))
        };
        // Its answer lost, the SDK's retry meets the landed take-over: this run holds the key.
        let lost = with(None);
        undecided(&lost, &run_key("first"))
            .await
            .expect("undecided");
        let second = lost.begin_key(&run_key("second"), lease, BUDGET).await;
        assert!(matches!(second, Ok(KeyState::Resume(_))), "{second:?}");
        // Another run's take-over lands first: this run does not hold the key.
        let item = lost.table.table.0.lock().expect("items")["key#k"].clone();
        let open = logic::Undecided {
            answer: r#"{"code":"reset-unconfirmed"}"#.into(),
            decide_until: match item.get("decideUntil") {
                Some(Value::N(until)) => *until,
                _ => 0,
            },
        };
        let template = Item::from([
            ("holder".to_owned(), Value::S("first".into())),
            ("state".to_owned(), Value::S("done".into())),
        ]);
        // (whose holder died at once: its item reads as one to take over, not as this run's)
        let theirs = logic::key_resume(
            &run_key("theirs"),
            &open,
            &template,
            wall_now() - Duration::from_secs(1),
            wall_now(),
            Duration::from_secs(600),
        );
        let raced = with(theirs);
        undecided(&raced, &run_key("first"))
            .await
            .expect("undecided");
        let second = raced.begin_key(&run_key("second"), lease, BUDGET).await;
        assert_eq!(second.ok(), Some(KeyState::InProgress));
    }

    #[tokio::test]
    async fn a_failed_key_write_still_releases_but_never_ends_a_reset_as_reset() {
        // Every key write (`Step::Finish`) fails as DynamoDB's would after every retry.
        let guard = hooked(Box::new(|step, _, _| {
            (step == Step::Finish).then(|| {
                let error = "down".to_owned();
                Err(GuardError::new(
                    GuardErrorKind::Upstream,
                    "UpdateItem",
                    error,
                ))
            })
        }));
        let lease = wall_now() + Duration::from_secs(5);
        let state = |guard: &TableGuard<Hooked>| {
            let items = guard.table.table.0.lock().expect("items");
            items.get("user#p#u").and_then(|i| i.get("state").cloned())
        };
        for (completion, answer, left) in [
            // Nothing was sent: the claim ends whatever the key.
            (Completion::Release, KeyAnswer::Release, None),
            // A reset whose key has no answer: the user item stays the request's claim, which
            // its retry settles by the user's status (never "reset": that would answer the
            // retry recently-reset, and reset again after the window).
            (
                Completion::Reset,
                KeyAnswer::Final("{}".to_owned()),
                Some(Value::S("claimed".into())),
            ),
        ] {
            let claim = Claim {
                abandoned: None,
                pk: user_pk("p", "u"),
                id: format!("r/1/{completion:?}"),
                key: Some("key#k#h".into()),
            };
            let claimed = guard.claim_user(&claim, lease, None, BUDGET).await.ok();
            assert_eq!(claimed, Some(UserState::Claimed(claim.clone())));
            let key = run_key("first");
            let settled = guard
                .settle_both(&claim, completion, &key, answer, BUDGET)
                .await;
            assert!(
                settled.is_err(),
                "{completion:?}: the key's failure is reported"
            );
            assert_eq!(state(&guard), left, "{completion:?}");
            guard.table.table.0.lock().expect("items").clear();
        }
    }

    /// Another request's claim on user `u` of pool `p`, its lease over and the user
    /// `CONFIRMED` before it, written into `table`: an unresolved reset for a claim to settle.
    fn unresolved_holder(table: &MemTable) -> Claim {
        let past = wall_now() - Duration::from_secs(1);
        let holder = Claim {
            abandoned: None,
            pk: user_pk("p", "u"),
            id: "old/1/1".into(),
            key: None,
        };
        let taken = logic::claim_take(
            &holder,
            past,
            past,
            Duration::from_secs(30),
            Some("CONFIRMED"),
        );
        logic::apply(&mut table.0.lock().expect("items"), &taken).expect("held");
        holder
    }

    #[tokio::test]
    async fn a_take_over_of_an_unresolved_claim_met_by_its_own_landed_write_is_this_claim() {
        // The take-over lands, its answer is lost, and the SDK's retry is refused by the item it
        // wrote (`lost`), or by another request's claim that won in between (not `lost`).
        for lost in [true, false] {
            let guard = hooked(Box::new(move |step, write, table| {
                (step == Step::Claim).then(|| {
                    let mut items = table.0.lock().expect("items");
                    if lost {
                        logic::apply(&mut items, write).expect("the take-over holds");
                    } else if let Some(item) = items.get_mut("user#p#u") {
                        item.insert("claimId".into(), Value::S("other/1/1".into()));
                    }
                    Ok(Written::Refused(items.get("user#p#u").cloned()))
                })
            }));
            let holder = unresolved_holder(&guard.table.table);
            let claim = Claim {
                id: "new/2/2".into(),
                ..holder.clone()
            };
            let resolution = Resolution::NeverHappened {
                lease_until: wall_now() + Duration::from_secs(5),
                status_before: Some("CONFIRMED".into()),
                own: false,
            };
            let settled = guard
                .resolve_claim(&claim, &holder.id, &resolution, BUDGET)
                .await
                .ok();
            let expected = if lost {
                UserState::Claimed(claim.clone())
            } else {
                UserState::InProgress
            };
            assert_eq!(settled, Some(expected), "lost: {lost}");
        }
    }

    #[tokio::test]
    async fn another_requests_unresolved_claim_proves_nothing_of_an_abandoned_keys_dead_run() {
        // Under a key taken over from a dead holder whose window (30 s) is over, the user's
        // status proving another request's reset never happened is no proof for that dead
        // run: Abandoned. The request's own earlier run's claim is proof: Claimed.
        for (own, expected_abandoned) in [(false, true), (true, false)] {
            let guard = guard();
            let holder = unresolved_holder(guard.table());
            let since = ms(wall_now() - Duration::from_secs(31));
            let claim = Claim {
                id: "new/2/2".into(),
                abandoned: Some(since),
                ..holder.clone()
            };
            let resolution = Resolution::NeverHappened {
                lease_until: wall_now() + Duration::from_secs(5),
                status_before: Some("CONFIRMED".into()),
                own,
            };
            let settled = guard
                .resolve_claim(&claim, &holder.id, &resolution, BUDGET)
                .await
                .ok();
            let expected = if expected_abandoned {
                UserState::Abandoned(claim.clone())
            } else {
                UserState::Claimed(claim.clone())
            };
            assert_eq!(settled, Some(expected), "own: {own}");
        }
    }

    #[tokio::test]
    async fn an_expired_approval_is_not_decided() {
        let guard = guard();
        // Its time is over at once (a ttl of zero seconds from the current second).
        guard
            .request_approval(&pending("a2", Duration::ZERO), BUDGET)
            .await
            .expect("kept");
        let lost = guard
            .decide(&decision("a2", Verdict::Approve, "lead"), BUDGET)
            .await
            .expect("answered");
        let Decide::Lost(record) = lost else {
            panic!("an expired approval is not decided: {lost:?}");
        };
        assert_eq!(record.status(wall_now()), ApprovalStatus::Expired);
        assert!(record.decided.is_none());
    }

    #[tokio::test]
    async fn an_answer_is_kept_and_read_back_and_a_look_ahead_writes_nothing() {
        let guard = guard();
        let pk = logic::answer_pk("alice", "req-1");
        guard
            .keep_answer(&pk, "{\"x\":1}".into(), BUDGET)
            .await
            .expect("kept");
        assert_eq!(
            guard.read_kept(&pk, BUDGET).await.expect("read"),
            Some("{\"x\":1}".to_owned())
        );
        let claim = Claim {
            abandoned: None,
            pk: user_pk("p", "u"),
            id: "r/1/peek".into(),
            key: None,
        };
        let scope = BudgetScope::new("vip", "alice", 1, 60);
        assert_eq!(
            guard.peek_user_state(&claim, BUDGET).await.ok(),
            Some(UserState::Free)
        );
        assert!(matches!(
            guard.peek_budget_turn(&scope, BUDGET).await,
            Ok(BudgetTurn::Spent { .. })
        ));
        let items = guard.table().0.lock().expect("items").clone();
        assert_eq!(items.keys().collect::<Vec<_>>(), vec![&pk]);
    }

    #[test]
    fn empty_names_and_values_are_left_out_of_a_request() {
        assert_eq!(names(&Rendered::default()), None);
        assert_eq!(values(&Rendered::default()), None);
    }
}

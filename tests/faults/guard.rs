//! The fake guard table: the production guard ([`TableGuard`], with the decisions of
//! `cognito_reset::guard_logic`) over an in-memory [`Table`] that applies the same conditional
//! writes with `guard_logic::apply`. It differs from DynamoDB only in storage (the
//! differential test holds the two to each other), and in the faults it injects.
//!
//! Faults are the schedule's, one per guard operation (its first table call), and a failed
//! attempt is retried as the production client retries it: the SDK's standard mode, at most
//! `GUARD_MAX_ATTEMPTS` attempts, each within the attempt timeout, all within the operation's
//! budget. A write that landed before its failure (`5xx (performed)`, `performed, answer lost`,
//! a landed timeout) is met by its own retry; `Outage` fails every attempt.
//!
//! Each operation leaves one [`GuardCall`] in the journal: what it was told, whether the table
//! changed, and the fault it met.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cognito_reset::aws::BoxFuture;
use cognito_reset::aws::guard::{
    ApprovalRecord, BudgetScope, BudgetTurn, Claim, Completion, Decide, Decision, GuardSettings,
    GuardStore, KeyAnswer, KeyRef, KeyState, PendingApproval, Resolution, Step, Table, TableGuard,
    UserState, Verdict, Written,
};
use cognito_reset::config::GUARD_MAX_ATTEMPTS;
use cognito_reset::failure::{GuardError, GuardErrorKind};
use cognito_reset::guard_logic::{self, Item, Items, Refused, Write};
use tokio::time::Instant;

use crate::faults::{Ctx, Fault, GuardCall, Injector, Op, arrive};

/// The SDK's standard retry mode waits about a second (jittered) before its first retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What the operation in progress met at the table (task-local: operations run concurrently).
#[derive(Debug, Default)]
struct OpTrace {
    ctx: Option<Ctx>,
    /// The fault is injected into the operation's first table call only.
    used: bool,
    wrote: bool,
}

tokio::task_local! {
    static CURRENT: Arc<Mutex<OpTrace>>;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The in-memory table with the schedule's faults.
#[derive(Debug)]
pub struct FakeTable {
    items: Mutex<Items>,
    /// The timeout of each attempt (the guard client's).
    attempt: Duration,
}

impl FakeTable {
    /// An empty table whose attempts time out after `attempt`. It injects nothing by itself:
    /// faults come only from the operation a [`FakeGuard`] runs, so outside one (the
    /// differential test) every call is answered at once, as DynamoDB answers it.
    pub fn new(attempt: Duration) -> FakeTable {
        FakeTable {
            items: Mutex::default(),
            attempt,
        }
    }

    /// Every item, by partition key.
    pub fn items(&self) -> Items {
        lock(&self.items).clone()
    }

    /// One table call: the operation's fault on its first attempt (every attempt for an
    /// outage), the SDK's retries, each attempt cut at its timeout and all at `budget`.
    async fn call<T>(
        &self,
        operation: &'static str,
        budget: Duration,
        apply: impl Fn(&mut Items) -> Result<T, GuardError>,
    ) -> Result<T, GuardError> {
        let (ctx, fault) = match CURRENT.try_with(Arc::clone) {
            Ok(trace) => {
                let mut trace = lock(&trace);
                let fault = if trace.used {
                    None
                } else {
                    trace.ctx.and_then(|c| c.fault)
                };
                trace.used = true;
                (trace.ctx, fault)
            }
            Err(_) => (None, None),
        };
        let start = Instant::now();
        let cut = start + budget;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let first = attempt == 1;
            let fault = match fault {
                Some(Fault::Outage) => fault,
                _ if first => fault,
                _ => None,
            };
            let began = Instant::now();
            let arrives = match (first, ctx) {
                (true, Some(ctx)) => Some(ctx.arrival(began)),
                (_, Some(ctx)) => Some(began + ctx.latency),
                (_, None) => Some(began),
            };
            let failure = |kind, what: &'static str| Some(GuardError::new(kind, operation, what));
            // Whether the write lands, the failure answered instead (a hang answers nothing),
            // and whether the SDK retries it.
            let (arrives, lands, failure, retried) = match fault {
                None => (arrives, true, None, false),
                Some(Fault::Throttle | Fault::LimitExceeded) => (
                    arrives,
                    false,
                    failure(
                        GuardErrorKind::Throttled,
                        "ProvisionedThroughputExceededException",
                    ),
                    true,
                ),
                Some(Fault::Refuse) => (
                    arrives,
                    false,
                    failure(GuardErrorKind::Misconfigured, "AccessDeniedException"),
                    false,
                ),
                Some(Fault::ServerError { landed }) => (
                    arrives,
                    landed,
                    failure(GuardErrorKind::Upstream, "InternalServerError"),
                    true,
                ),
                Some(Fault::Timeout { landed }) => (None, landed, None, true),
                Some(Fault::ConnectionReset | Fault::ConnectionRefused | Fault::Outage) => (
                    arrives,
                    false,
                    failure(GuardErrorKind::Unavailable, "connection failed"),
                    true,
                ),
                Some(Fault::Lost | Fault::Echo) => (
                    arrives,
                    true,
                    failure(
                        GuardErrorKind::Unavailable,
                        "connection reset after sending",
                    ),
                    true,
                ),
            };
            let applied = lands.then(|| apply(&mut lock(&self.items)));
            let attempt_cut = (began + self.attempt).min(cut);
            let cut_short = arrive(arrives, attempt_cut).await;
            let result = if cut_short {
                Err(GuardError::new(
                    GuardErrorKind::Unavailable,
                    operation,
                    "timed out",
                ))
            } else {
                match (failure, applied) {
                    (Some(failure), _) => Err(failure),
                    (None, Some(result)) => result,
                    (None, None) => unreachable!("every fault without a failure lands"),
                }
            };
            let retry = (retried || cut_short)
                && result.is_err()
                && attempt < GUARD_MAX_ATTEMPTS
                && Instant::now() + FIRST_BACKOFF * attempt < cut;
            if !retry {
                return result;
            }
            tokio::time::sleep(FIRST_BACKOFF * attempt).await;
        }
    }
}

fn note_write(written: &Result<(), Refused>) -> Result<Written, GuardError> {
    match written {
        Ok(()) => {
            let _ = CURRENT.try_with(|t| lock(t).wrote = true);
            Ok(Written::Done)
        }
        Err(Refused::Condition(item)) => Ok(Written::Refused(item.clone())),
        Err(Refused::Invalid(what)) => Err(GuardError::new(
            GuardErrorKind::Misconfigured,
            "UpdateItem",
            *what,
        )),
    }
}

impl Table for FakeTable {
    fn write<'a>(
        &'a self,
        _step: Step,
        write: &'a Write,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Written, GuardError>> {
        Box::pin(self.call(write.operation(), budget, move |items| {
            note_write(&guard_logic::apply(items, write))
        }))
    }

    fn get<'a>(
        &'a self,
        _step: Step,
        pk: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<Item>, GuardError>> {
        Box::pin(self.call("GetItem", budget, move |items| Ok(items.get(pk).cloned())))
    }
}

/// The production guard over the fake table, journaling each operation.
#[derive(Debug)]
pub struct FakeGuard {
    injector: Arc<Injector>,
    guard: TableGuard<Arc<FakeTable>>,
    /// The table, for another instance's guard over it ([`FakeGuard::sibling`]).
    table: Arc<FakeTable>,
}

/// What a guard call is about, for the journal.
struct Subject<'a> {
    op: Op,
    label: &'a str,
    pk: &'a str,
    claim_id: Option<&'a str>,
    completion: Option<Completion>,
    /// What an approval operation was asked (see [`GuardCall::detail`]).
    detail: Option<serde_json::Value>,
}

impl FakeGuard {
    /// The production guard (`settings`, `DRY_RUN` = `read_only`) over a fresh fake table.
    pub fn new(injector: Arc<Injector>, settings: &GuardSettings, read_only: bool) -> FakeGuard {
        let table = Arc::new(FakeTable::new(settings.client.timeout));
        FakeGuard {
            injector,
            guard: TableGuard::new(Arc::clone(&table), settings, read_only),
            table,
        }
    }

    /// Another instance's production guard over the same fake table.
    pub fn sibling(
        &self,
        injector: Arc<Injector>,
        settings: &GuardSettings,
        read_only: bool,
    ) -> FakeGuard {
        FakeGuard {
            injector,
            guard: TableGuard::new(Arc::clone(&self.table), settings, read_only),
            table: Arc::clone(&self.table),
        }
    }

    async fn call<'a, T>(
        &'a self,
        subject: Subject<'a>,
        describe: impl Fn(&T) -> (String, bool),
        run: BoxFuture<'a, Result<T, GuardError>>,
    ) -> Result<T, GuardError> {
        let op = subject.op;
        let ctx = self.injector.next(op);
        let start = Instant::now();
        let trace = Arc::new(Mutex::new(OpTrace {
            ctx: Some(ctx),
            used: false,
            wrote: false,
        }));
        let result = CURRENT.scope(Arc::clone(&trace), run).await;
        let wrote = lock(&trace).wrote;
        let (text, flag) = match &result {
            Ok(value) => describe(value),
            Err(e) => (format!("error {:?}", e.kind), false),
        };
        self.injector.guard(GuardCall {
            inv: ctx.inv,
            op,
            label: subject.label.to_owned(),
            pk: subject.pk.to_owned(),
            claim_id: subject.claim_id.map(str::to_owned),
            completion: subject.completion,
            start,
            end: Instant::now(),
            fault: ctx.fault,
            at: ctx.at,
            wrote,
            result: text,
            replay: op == Op::Begin && flag,
            detail: subject.detail,
        });
        result
    }
}

fn describe_user_state(state: &UserState) -> (String, bool) {
    let text = match state {
        UserState::Claimed(_) => "claimed",
        UserState::Abandoned(_) => "abandoned",
        UserState::Free => "free",
        UserState::InProgress => "in progress",
        UserState::RecentlyReset {
            confirmed: true, ..
        } => "recently reset",
        UserState::RecentlyReset { .. } => "reset unconfirmed",
        UserState::SignOutPending { .. } => "sign-out pending",
        UserState::Unresolved { .. } => "unresolved",
        UserState::AttemptLimited { .. } => "attempt-limited",
    };
    (text.to_owned(), matches!(state, UserState::Claimed(_)))
}

fn describe_turn(turn: &BudgetTurn) -> (String, bool) {
    match turn {
        BudgetTurn::Spent { .. } => ("spent".to_owned(), false),
        BudgetTurn::Exhausted { .. } => ("exhausted".to_owned(), false),
    }
}

fn unit(_: &()) -> (String, bool) {
    ("done".to_owned(), false)
}

impl GuardStore for FakeGuard {
    fn begin<'a>(
        &'a self,
        key: &'a KeyRef,
        lease_until: std::time::SystemTime,
        budget: Duration,
    ) -> BoxFuture<'a, Result<KeyState<String>, GuardError>> {
        let subject = Subject {
            op: Op::Begin,
            label: &key.key,
            pk: &key.pk,
            claim_id: None,
            completion: None,
            detail: None,
        };
        Box::pin(self.call(
            subject,
            |state: &KeyState<String>| match state {
                KeyState::Fresh => ("fresh".to_owned(), false),
                KeyState::Resume(_) => ("resumed undecided".to_owned(), false),
                KeyState::Abandoned { .. } => ("taken over abandoned".to_owned(), false),
                KeyState::Replay(_) => ("replay".to_owned(), true),
                KeyState::InProgress => ("in progress".to_owned(), false),
                KeyState::Reused => ("reused".to_owned(), false),
            },
            self.guard.begin(key, lease_until, budget),
        ))
    }

    fn finish<'a>(
        &'a self,
        key: &'a KeyRef,
        answer: Option<String>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        let subject = Subject {
            op: Op::Finish,
            label: &key.key,
            pk: &key.pk,
            claim_id: None,
            completion: None,
            detail: None,
        };
        let kept = answer.is_some();
        Box::pin(self.call(
            subject,
            move |_: &()| (if kept { "kept" } else { "released" }.to_owned(), false),
            self.guard.finish(key, answer, budget),
        ))
    }

    fn claim<'a>(
        &'a self,
        claim: &'a Claim,
        lease_until: std::time::SystemTime,
        status_before: Option<&'a str>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>> {
        let subject = Subject {
            op: Op::Claim,
            label: &claim.pk,
            pk: &claim.pk,
            claim_id: Some(&claim.id),
            completion: None,
            detail: None,
        };
        Box::pin(self.call(
            subject,
            describe_user_state,
            self.guard.claim(claim, lease_until, status_before, budget),
        ))
    }

    fn resolve<'a>(
        &'a self,
        claim: &'a Claim,
        holder: &'a str,
        resolution: &'a Resolution,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>> {
        // Journaled as a claim: it is one, over the item it settles.
        let subject = Subject {
            op: Op::Claim,
            label: &claim.pk,
            pk: &claim.pk,
            claim_id: Some(&claim.id),
            completion: None,
            detail: None,
        };
        Box::pin(self.call(
            subject,
            describe_user_state,
            self.guard.resolve(claim, holder, resolution, budget),
        ))
    }

    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        completion: Completion,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        let subject = Subject {
            op: Op::Complete,
            label: &claim.pk,
            pk: &claim.pk,
            claim_id: Some(&claim.id),
            completion: Some(completion),
            detail: None,
        };
        Box::pin(self.call(
            subject,
            move |_: &()| (format!("{completion:?}").to_lowercase(), false),
            self.guard.complete(claim, completion, budget),
        ))
    }

    fn settle<'a>(
        &'a self,
        claim: &'a Claim,
        completion: Completion,
        key: &'a KeyRef,
        answer: KeyAnswer<String>,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        // Journaled as the claim's completion (the key's answer lands with it).
        let subject = Subject {
            op: Op::Complete,
            label: &claim.pk,
            pk: &claim.pk,
            claim_id: Some(&claim.id),
            completion: Some(completion),
            detail: None,
        };
        Box::pin(self.call(
            subject,
            move |_: &()| (format!("{completion:?} with the key").to_lowercase(), false),
            self.guard.settle(claim, completion, key, answer, budget),
        ))
    }

    fn spend<'a>(
        &'a self,
        scope: &'a BudgetScope,
        budget: Duration,
    ) -> BoxFuture<'a, Result<BudgetTurn, GuardError>> {
        let subject = Subject {
            op: Op::Spend,
            label: &scope.pk,
            pk: &scope.pk,
            claim_id: None,
            completion: None,
            detail: None,
        };
        Box::pin(self.call(subject, describe_turn, self.guard.spend(scope, budget)))
    }

    fn refund<'a>(
        &'a self,
        scope: &'a BudgetScope,
        window: u64,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        let subject = Subject {
            op: Op::Refund,
            label: &scope.pk,
            pk: &scope.pk,
            claim_id: None,
            completion: None,
            detail: None,
        };
        Box::pin(self.call(subject, unit, self.guard.refund(scope, window, budget)))
    }

    fn peek_user<'a>(
        &'a self,
        claim: &'a Claim,
        budget: Duration,
    ) -> BoxFuture<'a, Result<UserState, GuardError>> {
        let subject = Subject {
            op: Op::PeekUser,
            label: &claim.pk,
            pk: &claim.pk,
            claim_id: Some(&claim.id),
            completion: None,
            detail: None,
        };
        Box::pin(self.call(
            subject,
            describe_user_state,
            self.guard.peek_user(claim, budget),
        ))
    }

    fn peek_budget<'a>(
        &'a self,
        scope: &'a BudgetScope,
        budget: Duration,
    ) -> BoxFuture<'a, Result<BudgetTurn, GuardError>> {
        let subject = Subject {
            op: Op::PeekBudget,
            label: &scope.pk,
            pk: &scope.pk,
            claim_id: None,
            completion: None,
            detail: None,
        };
        Box::pin(self.call(
            subject,
            describe_turn,
            self.guard.peek_budget(scope, budget),
        ))
    }

    fn request_approval<'a>(
        &'a self,
        pending: &'a PendingApproval,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        // The request as the approval keeps it: what an approved reset is sent from.
        let request: serde_json::Value =
            serde_json::from_str(&pending.request).unwrap_or(serde_json::Value::Null);
        let decide_by = pending
            .decide_by
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let detail = serde_json::json!({
            "approvalId": pending.approval_id,
            "requester": pending.requester_desc,
            "rule": pending.rule,
            "pool": request["UserPoolId"],
            "user": request["Username"],
            "ticket": request["ClientMetadata"]["ticket"],
            "signOut": request["SignOut"].as_bool().unwrap_or(false),
            "decideBy": decide_by,
        });
        let subject = Subject {
            op: Op::Request,
            label: &pending.approval_id,
            pk: &pending.approval_id,
            claim_id: None,
            completion: None,
            detail: Some(detail),
        };
        Box::pin(self.call(subject, unit, self.guard.request_approval(pending, budget)))
    }

    fn decide<'a>(
        &'a self,
        decision: &'a Decision,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Decide, GuardError>> {
        let detail = serde_json::json!({
            "approvalId": decision.approval_id,
            "verdict": match decision.verdict {
                Verdict::Approve => "approve",
                Verdict::Deny => "deny",
            },
            "approver": decision.approver,
        });
        let subject = Subject {
            op: Op::Decide,
            label: &decision.approval_id,
            pk: &decision.approval_id,
            claim_id: None,
            completion: None,
            detail: Some(detail),
        };
        Box::pin(self.call(
            subject,
            |decided: &Decide| {
                let text = match decided {
                    Decide::Won(_) => "won",
                    Decide::Lost(_) => "lost",
                    Decide::Unknown => "unknown",
                };
                (text.to_owned(), false)
            },
            self.guard.decide(decision, budget),
        ))
    }

    fn approval<'a>(
        &'a self,
        approval_id: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<ApprovalRecord>, GuardError>> {
        let subject = Subject {
            op: Op::Approval,
            label: approval_id,
            pk: approval_id,
            claim_id: None,
            completion: None,
            detail: None,
        };
        Box::pin(self.call(
            subject,
            |record: &Option<ApprovalRecord>| {
                let text = match record {
                    None => "none".to_owned(),
                    Some(r) => match &r.decided {
                        None => "pending".to_owned(),
                        Some(d) => format!("decided {:?}", d.verdict).to_lowercase(),
                    },
                };
                (text, false)
            },
            self.guard.approval(approval_id, budget),
        ))
    }

    fn keep<'a>(
        &'a self,
        pk: &'a str,
        answer: String,
        budget: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        let subject = Subject {
            op: Op::Keep,
            label: pk,
            pk,
            claim_id: None,
            completion: None,
            detail: None,
        };
        Box::pin(self.call(subject, unit, self.guard.keep(pk, answer, budget)))
    }

    fn kept<'a>(
        &'a self,
        pk: &'a str,
        budget: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, GuardError>> {
        let subject = Subject {
            op: Op::Kept,
            label: pk,
            pk,
            claim_id: None,
            completion: None,
            detail: None,
        };
        Box::pin(self.call(
            subject,
            |kept: &Option<String>| {
                (
                    if kept.is_some() { "kept" } else { "none" }.to_owned(),
                    false,
                )
            },
            self.guard.kept(pk, budget),
        ))
    }
}

//! Runs a schedule through the real function (`sources::dispatch`: the pipeline, the scheduler,
//! the guard and the directory with their stages and retry policies) over the fakes, on a
//! current-thread runtime with tokio's clock paused, and records what was answered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cognito_reset::aws::cognito::Directory;
use cognito_reset::aws::events::{EventPublisher, OutcomeEvent};
use cognito_reset::aws::guard::Guard;
use cognito_reset::deadline::{Deadline, wall_now};
use cognito_reset::limiter::{Category, Rates, Scope};
use cognito_reset::pacing::BucketStore;
use cognito_reset::pipeline::App;
use cognito_reset::request::UserPoolId;
use cognito_reset::sources::dispatch;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::buckets::FakeBuckets;
use crate::cognito::FakeCognito;
use crate::events::FakeBus;
use crate::faults::{Answered, Injector, Journal, Op, injected_text};
use crate::guard::FakeGuard;
use crate::schedule::{Again, Batch, Rec, Run, Schedule, Source, Step, Verdict, again_of};
use crate::world::{self, FOREIGN_POOL, MAX_RECEIVE_COUNT, Options, POOL, Pacing, Req, Sender};

/// RETRY codes: handed back, never final.
pub const RETRY_CODES: &[&str] = &[
    "policy-stale",
    "deadline",
    "fifo-group-halted",
    "in-progress",
    "guard-unavailable",
    "throttled",
    "upstream-error",
    "misconfigured",
    "unavailable",
];

/// An idempotency key as the caller means it: whose, which, and which item of a batch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogicalKey {
    pub sender: Sender,
    pub key: String,
    pub position: Option<usize>,
}

/// What one record was told.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    /// RESET or REJECTED (not RETRY, not GAVE_UP).
    pub is_final: bool,
    /// SQS: not in `batchItemFailures`; HTTP: a final answer.
    pub acked: bool,
    /// RESET, REJECTED, RETRY or GAVE_UP.
    pub outcome: String,
    pub code: Option<String>,
    pub replayed: bool,
    /// HTTP.
    pub status: Option<u64>,
    pub retry_after: Option<u64>,
    /// HTTP: the body (a batch item's without its `index` and `status`).
    pub body: Option<Map<String, Value>>,
    /// The outcome event this record produced (HTTP: by its id; SQS: its message's events,
    /// one per copy).
    pub event: Option<OutcomeEvent>,
}

/// One record in one invocation.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub inv: usize,
    pub source: Source,
    pub sender: Sender,
    /// Index into the schedule's requests (its ticket).
    pub request: usize,
    pub req: Req,
    /// The key as the guard sees it (`k`, `k#0`, a message id).
    pub label: Option<String>,
    pub key: Option<LogicalKey>,
    /// The outcome event's `id`.
    pub audit_id: String,
    pub message_id: Option<String>,
    pub receive: u32,
    pub answer: Answer,
    /// A decision on an approval (`POST /approvals/{id}`), not a reset request: `request` and
    /// `req` are then the approved request's (its ticket), `audit_id` the approval id.
    pub decision: Option<DecisionOf>,
}

/// What a decision attempt decided.
#[derive(Clone, Debug)]
pub struct DecisionOf {
    pub approval_id: String,
    pub verdict: Verdict,
    /// The attempt whose PENDING answer gave the id (`None`: an id nobody was given).
    pub pending: Option<usize>,
}

/// A well-formed approval id that no answer ever gives.
pub const UNKNOWN_APPROVAL: &str = "0123456789abcdef0123456789abcdef";

impl Attempt {
    pub fn ticket(&self) -> String {
        format!("T{}", self.request)
    }
}

/// One invocation.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub step: usize,
    pub source: Source,
    pub start: Instant,
    pub end: Instant,
    pub deadline: Instant,
    pub attempts: Range<usize>,
    pub response: Value,
    /// Why the response could not be read, if it could not.
    pub problem: Option<String>,
    pub failed_ids: Vec<String>,
    /// Every outcome event handed to the bus in this invocation.
    pub events: Vec<OutcomeEvent>,
}

/// Everything a schedule produced.
pub struct History {
    pub t0: Instant,
    /// The wall clock at `t0` (budgets count whole seconds of it).
    pub wall0: SystemTime,
    /// The world's options.
    pub options: Options,
    /// Invocations after which the reset rate was cut (AIMD) in some scope.
    pub cut_after: Vec<usize>,
    /// The fakes' journal while the schedule runs.
    live: Option<Arc<Injector>>,
    pub invocations: Vec<Invocation>,
    pub attempts: Vec<Attempt>,
    pub journal: Journal,
    pub notes: Vec<String>,
    /// The approval ids PENDING answers gave, in order, with the attempt that was given each.
    pub approvals: Vec<(String, usize)>,
}

impl History {
    pub fn inv(&self, attempt: &Attempt) -> &Invocation {
        &self.invocations[attempt.inv]
    }

    /// Milliseconds since the schedule started.
    pub fn at(&self, t: Instant) -> u128 {
        t.saturating_duration_since(self.t0).as_millis()
    }

    /// What was handed to the bus in invocation `inv`, so far.
    fn journal_published(&self, inv: usize) -> Vec<crate::faults::Published> {
        self.live
            .as_ref()
            .map(|injector| injector.journal().published)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.inv == inv)
            .collect()
    }

    /// The wall clock at `t`.
    pub fn wall(&self, t: Instant) -> SystemTime {
        self.wall0 + t.saturating_duration_since(self.t0)
    }
}

/// Runs `schedule` on its own paused runtime.
pub fn run(schedule: &Schedule) -> History {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(drive(schedule))
}

/// One instance of the function over the fakes: `main`'s wiring, with the schedule's pacing.
fn instance(
    config: &cognito_reset::config::Config,
    pacing: Pacing,
    injector: &Arc<Injector>,
    cognito: FakeCognito,
    buckets: FakeBuckets,
    guard: FakeGuard,
) -> Arc<App> {
    let config = config.clone();
    let limiters = match pacing {
        Pacing::Off => cognito_reset::limiter::Limiters::new(Rates::OFF),
        // DRY_RUN paces per instance whatever PACING says (`config.limiters` decides).
        Pacing::Instance => config.limiters(None),
        Pacing::Shared => config.limiters(Some(Arc::new(buckets) as Arc<dyn BucketStore>)),
    };
    let directory = Directory::new(
        Arc::new(cognito),
        config.cognito,
        config.deadline_margin,
        Rates::OFF,
    )
    .with_limiters(limiters)
    .with_accounts(config.accounts.clone());
    let settings = config.guard.clone().expect("GUARD_TABLE is set");
    let guard = Guard::new(Arc::new(guard), &settings, config.deadline_margin);
    let policy = config.fixed_policy().expect("a fixed policy");
    let bus: Arc<dyn EventPublisher> = Arc::new(FakeBus::new(Arc::clone(injector)));
    Arc::new(App::new(config, directory, Some(guard), policy, Some(bus)))
}

/// Moves the paused clock (by whole milliseconds) so that the wall clock reads `phase_ms`
/// within its second: whole-second expiries then fall at the same place in every run.
async fn align(phase_ms: u64) {
    let within = wall_now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_millis()))
        .unwrap_or(0);
    let wait = (1000 + phase_ms - within) % 1000 + 1000;
    tokio::time::advance(Duration::from_millis(wait)).await;
}

/// A send and what its last delivery handed back.
struct Sent {
    batch: Batch,
    /// SQS: message ids in the last `batchItemFailures`; HTTP: whether any answer was RETRY.
    failed: BTreeSet<String>,
    any_retry: bool,
    /// HTTP: the `Retry-After` of the last answer.
    retry_after: Option<u64>,
}

async fn drive(schedule: &Schedule) -> History {
    align(schedule.phase_ms).await;
    let t0 = Instant::now();
    let wall0 = wall_now();
    let injector = Arc::new(Injector::default());
    let options = schedule.options;
    let config = world::config(schedule.concurrency, &options);
    // Two instances over the same Cognito, table, buckets and bus, each with its own
    // pipeline, pacers, clients and faults; the second serves `Step::Together` only.
    let cognito = FakeCognito::new(Arc::clone(&injector));
    let buckets = FakeBuckets::new(Arc::clone(&injector));
    let settings = config.guard.clone().expect("GUARD_TABLE is set");
    let fake_guard = FakeGuard::new(Arc::clone(&injector), &settings, config.dry_run);
    let injector_b = Arc::new(injector.sibling());
    let app_b = instance(
        &config,
        options.pacing,
        &injector_b,
        cognito.sibling(Arc::clone(&injector_b)),
        buckets.sibling(Arc::clone(&injector_b)),
        fake_guard.sibling(Arc::clone(&injector_b), &settings, config.dry_run),
    );
    let app = instance(
        &config,
        options.pacing,
        &injector,
        cognito,
        buckets,
        fake_guard,
    );

    let mut history = History {
        t0,
        wall0,
        options,
        cut_after: Vec::new(),
        live: Some(Arc::clone(&injector)),
        invocations: Vec::new(),
        attempts: Vec::new(),
        journal: Journal::default(),
        notes: Vec::new(),
        approvals: Vec::new(),
    };
    let mut sent: Vec<Sent> = Vec::new();
    let mut receives: BTreeMap<(Sender, String), u32> = BTreeMap::new();
    for (n, step) in schedule.steps.iter().enumerate() {
        let (index, records, run) = match step {
            Step::Wait(d) => {
                tokio::time::advance(*d).await;
                continue;
            }
            Step::Decide {
                of,
                by,
                verdict,
                run,
            } => {
                let prepared = prepare_decision(&mut history, schedule, *of, *by, *verdict);
                let ran = execute(&app, &injector, &prepared, run).await;
                finish(
                    &mut history,
                    n,
                    &decision_batch(&prepared, *by),
                    prepared,
                    ran,
                );
                continue;
            }
            Step::DecideTogether {
                of,
                by,
                verdicts,
                runs,
            } => {
                let a = prepare_decision(&mut history, schedule, *of, by[0], verdicts[0]);
                let mut b = prepare_decision(&mut history, schedule, *of, by[1], verdicts[1]);
                // Two invocations at once: the second's index and attempts follow the first's.
                b.inv += 1;
                b.first += 1;
                b.request_id = format!("r{}", b.inv);
                for attempt in &mut b.attempts {
                    attempt.inv = b.inv;
                }
                b.payload =
                    decision_event(by[1], &b.attempts[0].audit_id, verdicts[1], &b.request_id);
                let (ran_a, ran_b) = tokio::join!(
                    execute(&app, &injector, &a, &runs[0]),
                    execute(&app_b, &injector_b, &b, &runs[1])
                );
                let (batch_a, batch_b) = (decision_batch(&a, by[0]), decision_batch(&b, by[1]));
                finish(&mut history, n, &batch_a, a, ran_a);
                finish(&mut history, n, &batch_b, b, ran_b);
                continue;
            }
            Step::Together { batches, runs } => {
                for batch in batches {
                    sent.push(Sent {
                        batch: batch.clone(),
                        failed: BTreeSet::new(),
                        any_retry: false,
                        retry_after: None,
                    });
                }
                let done = deliver_together(
                    [&app, &app_b],
                    [&injector, &injector_b],
                    schedule,
                    &mut history,
                    &mut receives,
                    n,
                    [&batches[0], &batches[1]],
                    [&runs[0], &runs[1]],
                )
                .await;
                let count = sent.len();
                let invs = history.invocations.len();
                for (k, (failed, any_retry)) in done.into_iter().enumerate() {
                    let inv = &history.invocations[invs - 2 + k];
                    let last = inv
                        .attempts
                        .end
                        .checked_sub(1)
                        .filter(|_| !inv.attempts.is_empty());
                    let entry = &mut sent[count - 2 + k];
                    entry.failed = failed;
                    entry.any_retry = any_retry;
                    entry.retry_after = last.and_then(|i| history.attempts[i].answer.retry_after);
                }
                if rate_cut(&app) || rate_cut(&app_b) {
                    history.cut_after.push(invs - 1);
                }
                continue;
            }
            Step::Send { batch, run } => {
                sent.push(Sent {
                    batch: batch.clone(),
                    failed: BTreeSet::new(),
                    any_retry: false,
                    retry_after: None,
                });
                (sent.len() - 1, batch.records.clone(), run)
            }
            Step::Again { of, what, run } => {
                let index = again_of(*of, sent.len());
                let last = &sent[index];
                let what = match (what, last.retry_after) {
                    (Again::AfterRetryAfter, Some(secs)) => {
                        tokio::time::advance(Duration::from_secs(secs)).await;
                        Again::Everything
                    }
                    (Again::AfterRetryAfter, None) => Again::HandedBack,
                    (what, _) => *what,
                };
                let records: Vec<Rec> = match (what, last.batch.source.is_http()) {
                    (Again::Everything | Again::AfterRetryAfter, _) => last.batch.records.clone(),
                    (Again::HandedBack, true) if last.any_retry => last.batch.records.clone(),
                    (Again::HandedBack, true) => Vec::new(),
                    (Again::HandedBack, false) => {
                        // One record per message handed back.
                        let mut seen = BTreeSet::new();
                        last.batch
                            .records
                            .iter()
                            .filter(|r| {
                                let id = message_id(schedule, last.batch.sender, r);
                                last.failed.contains(&id) && seen.insert(id)
                            })
                            .copied()
                            .collect()
                    }
                };
                if records.is_empty() {
                    history
                        .notes
                        .push(format!("step {n}: nothing was handed back"));
                    continue;
                }
                (index, records, run)
            }
        };
        let batch = Batch {
            records,
            ..sent[index].batch.clone()
        };
        let (failed, any_retry) = deliver(
            &app,
            &injector,
            schedule,
            &mut history,
            &mut receives,
            n,
            &batch,
            run,
        )
        .await;
        if rate_cut(&app) {
            history.cut_after.push(history.invocations.len() - 1);
        }
        sent[index].failed = failed;
        sent[index].any_retry = any_retry;
        sent[index].retry_after = history.attempts.last().and_then(|a| a.answer.retry_after);
    }
    history.journal = injector.journal();
    history
}

/// Whether a throttle cut an instance's rate (AIMD) in either pool's account and region.
fn rate_cut(app: &App) -> bool {
    [POOL, FOREIGN_POOL].iter().any(|pool| {
        let Ok(pool) = UserPoolId::parse(pool) else {
            return false;
        };
        let scope = Scope {
            account: app.directory.account_of(&pool),
            region: pool.region(),
        };
        [Category::UserAccountRecovery, Category::UserRead]
            .into_iter()
            .any(|category| app.directory.limiters().factor(scope, category) < 1.0)
    })
}

/// A message's id: `m<request>` in the standard queue, `f<request>` in the FIFO queue and
/// `s<request>` in the stranger's (SQS message ids are UUIDs: two queues never share one).
pub fn message_id(schedule: &Schedule, sender: Sender, rec: &Rec) -> String {
    let prefix = match sender {
        Sender::FifoQueue => "f",
        Sender::StrangerQueue => "s",
        _ => "m",
    };
    format!("{prefix}{}", schedule.request(rec.request).0)
}

/// One invocation: builds the event, runs it, reads every record's answer.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    app: &Arc<App>,
    injector: &Injector,
    schedule: &Schedule,
    history: &mut History,
    receives: &mut BTreeMap<(Sender, String), u32>,
    step: usize,
    batch: &Batch,
    run: &Run,
) -> (BTreeSet<String>, bool) {
    let inv = history.invocations.len();
    let first = history.attempts.len();
    let prepared = prepare(schedule, receives, inv, first, batch);
    let ran = execute(app, injector, &prepared, run).await;
    finish(history, step, batch, prepared, ran)
}

/// Two invocations at once, on two instances (their own pipelines, pacers and port clients,
/// over the same Cognito, table, bus and buckets): each with its own faults.
#[allow(clippy::too_many_arguments)]
async fn deliver_together(
    apps: [&Arc<App>; 2],
    injectors: [&Injector; 2],
    schedule: &Schedule,
    history: &mut History,
    receives: &mut BTreeMap<(Sender, String), u32>,
    step: usize,
    batches: [&Batch; 2],
    runs: [&Run; 2],
) -> [(BTreeSet<String>, bool); 2] {
    let inv = history.invocations.len();
    let first = history.attempts.len();
    let a = prepare(schedule, receives, inv, first, batches[0]);
    let b = prepare(
        schedule,
        receives,
        inv + 1,
        first + a.attempts.len(),
        batches[1],
    );
    let (ran_a, ran_b) = tokio::join!(
        execute(apps[0], injectors[0], &a, runs[0]),
        execute(apps[1], injectors[1], &b, runs[1])
    );
    let done_a = finish(history, step, batches[0], a, ran_a);
    let done_b = finish(history, step, batches[1], b, ran_b);
    [done_a, done_b]
}

/// An invocation's event and its records, before it runs.
struct Prepared {
    inv: usize,
    first: usize,
    request_id: String,
    attempts: Vec<Attempt>,
    payload: Value,
}

/// How an invocation ran.
struct Ran {
    start: Instant,
    end: Instant,
    deadline: Instant,
    result: Result<Value, String>,
}

fn prepare(
    schedule: &Schedule,
    receives: &mut BTreeMap<(Sender, String), u32>,
    inv: usize,
    first: usize,
    batch: &Batch,
) -> Prepared {
    let request_id = format!("r{inv}");
    let key = batch.key.map(|k| k.header().to_owned());
    let mut attempts = Vec::new();
    let mut counted: BTreeMap<String, u32> = BTreeMap::new();
    for (position, rec) in batch.records.iter().enumerate() {
        let (request, req) = schedule.request(rec.request);
        let position = (batch.source == Source::HttpBatch).then_some(position);
        let (label, audit_id, message_id, receive) = if batch.source.is_http() {
            let label = key.as_ref().map(|k| match position {
                Some(i) => format!("{k}#{i}"),
                None => k.clone(),
            });
            let audit_id = match position {
                Some(i) => format!("{request_id}#{i}"),
                None => request_id.clone(),
            };
            (label, audit_id, None, 0)
        } else {
            // One receive per message per delivery: its copies in a batch share the count.
            let id = message_id(schedule, batch.sender, rec);
            let count = *counted.entry(id.clone()).or_insert_with(|| {
                let count = receives.entry((batch.sender, id.clone())).or_insert(0);
                *count += 1;
                *count
            });
            (Some(id.clone()), id.clone(), Some(id), count)
        };
        let logical = if batch.source.is_http() {
            key.as_ref().map(|k| LogicalKey {
                sender: batch.sender,
                key: k.clone(),
                position,
            })
        } else {
            message_id.as_ref().map(|id| LogicalKey {
                sender: batch.sender,
                key: id.clone(),
                position: None,
            })
        };
        attempts.push(Attempt {
            inv,
            source: batch.source,
            sender: batch.sender,
            request,
            req: *req,
            label,
            key: logical,
            audit_id,
            message_id,
            receive,
            answer: Answer::default(),
            decision: None,
        });
    }
    let payload = if batch.source.is_http() {
        http_event(schedule, batch, key.as_deref(), &request_id)
    } else {
        sqs_event(schedule, batch, &attempts)
    };
    Prepared {
        inv,
        first,
        request_id,
        attempts,
        payload,
    }
}

async fn execute(app: &Arc<App>, injector: &Injector, prepared: &Prepared, run: &Run) -> Ran {
    let start = Instant::now();
    let deadline = start + run.deadline;
    injector.start(prepared.inv, deadline, run.latency, &run.faults);
    let result = dispatch(
        app,
        prepared.payload.clone(),
        &prepared.request_id,
        Deadline(deadline),
    )
    .await
    .map_err(|error| error.to_string());
    Ran {
        start,
        end: Instant::now(),
        deadline,
        result,
    }
}

fn finish(
    history: &mut History,
    step: usize,
    batch: &Batch,
    prepared: Prepared,
    ran: Ran,
) -> (BTreeSet<String>, bool) {
    let Prepared {
        inv,
        first,
        mut attempts,
        ..
    } = prepared;
    let Ran {
        start,
        end,
        deadline,
        result,
    } = ran;
    let events: Vec<OutcomeEvent> = history
        .journal_published(inv)
        .into_iter()
        .flat_map(|p| p.events)
        .collect();
    let mut invocation = Invocation {
        step,
        source: batch.source,
        start,
        end,
        deadline,
        attempts: first..first + attempts.len(),
        response: Value::Null,
        problem: None,
        failed_ids: Vec::new(),
        events,
    };
    match result {
        Ok(response) => invocation.response = response,
        Err(error) => invocation.problem = Some(format!("the invocation failed: {error}")),
    }
    if invocation.problem.is_none() {
        let read = if batch.source.is_http() {
            read_http(&invocation, &mut attempts)
        } else {
            read_sqs(&mut invocation, &mut attempts)
        };
        if let Err(problem) = read {
            invocation.problem = Some(problem);
        }
    }
    let failed = invocation.failed_ids.iter().cloned().collect();
    let any_retry = attempts.iter().any(|a| !a.answer.is_final);
    for (i, attempt) in attempts.iter().enumerate() {
        if attempt.decision.is_some() || attempt.answer.outcome != "PENDING" {
            continue;
        }
        let id = attempt
            .answer
            .body
            .as_ref()
            .and_then(|b| b.get("approvalId"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| attempt.answer.event.as_ref()?.approval_id.clone());
        if let Some(id) = id
            && !history.approvals.iter().any(|(known, _)| *known == id)
        {
            history.approvals.push((id, first + i));
        }
    }
    history.attempts.extend(attempts);
    history.invocations.push(invocation);
    (failed, any_retry)
}

/// A decision's invocation: `POST /approvals/{id}` by `by`, on the approval `of` counts back to
/// (an id nobody was given, before any).
fn prepare_decision(
    history: &mut History,
    schedule: &Schedule,
    of: usize,
    by: Sender,
    verdict: Verdict,
) -> Prepared {
    let inv = history.invocations.len();
    let first = history.attempts.len();
    let request_id = format!("r{inv}");
    let (approval_id, pending) = match history.approvals.len() {
        0 => (UNKNOWN_APPROVAL.to_owned(), None),
        n => {
            let (id, attempt) = &history.approvals[n - 1 - of % n];
            (id.clone(), Some(*attempt))
        }
    };
    let (request, req) = match pending {
        Some(i) => (history.attempts[i].request, history.attempts[i].req),
        None => {
            let (index, req) = schedule.request(0);
            (index, *req)
        }
    };
    let payload = decision_event(by, &approval_id, verdict, &request_id);
    Prepared {
        inv,
        first,
        request_id,
        attempts: vec![Attempt {
            inv,
            source: Source::HttpSingle,
            sender: by,
            request,
            req,
            label: None,
            key: None,
            audit_id: approval_id.clone(),
            message_id: None,
            receive: 0,
            answer: Answer::default(),
            decision: Some(DecisionOf {
                approval_id,
                verdict,
                pending,
            }),
        }],
        payload,
    }
}

/// The batch a decision's answer is read as: one HTTP request.
fn decision_batch(prepared: &Prepared, by: Sender) -> Batch {
    Batch {
        source: Source::HttpSingle,
        sender: by,
        key: None,
        records: vec![Rec {
            request: prepared.attempts[0].request,
            group: 0,
        }],
    }
}

/// `POST /approvals/{approval_id}` from `by`, IAM-authorised.
fn decision_event(by: Sender, approval_id: &str, verdict: Verdict, request_id: &str) -> Value {
    let path = format!("/approvals/{approval_id}");
    let body = json!({"Decision": verdict.as_str(), "Reason": "checked by phone"});
    let mut event = http_event_at(
        by,
        "POST /approvals/{approvalId}",
        &path,
        None,
        request_id,
        body.to_string(),
    );
    event["pathParameters"] = json!({ "approvalId": approval_id });
    event
}

/// An HTTP API (payload 2.0) event from `sender`, IAM-authorised.
fn http_event(schedule: &Schedule, batch: &Batch, key: Option<&str>, request_id: &str) -> Value {
    let bodies: Vec<Value> = batch
        .records
        .iter()
        .map(|rec| {
            let (index, req) = schedule.request(rec.request);
            req.body(index)
        })
        .collect();
    let body = match batch.source {
        Source::HttpSingle => bodies.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Array(bodies),
    };
    http_event_at(
        batch.sender,
        "POST /reset",
        "/reset",
        key,
        request_id,
        body.to_string(),
    )
}

/// An HTTP API (payload 2.0) `POST` to `path` from `sender`, IAM-authorised.
fn http_event_at(
    sender: Sender,
    route: &str,
    path: &str,
    key: Option<&str>,
    request_id: &str,
    body: String,
) -> Value {
    let mut headers = json!({"content-type": "application/json"});
    if let Some(key) = key {
        headers["idempotency-key"] = Value::from(key);
    }
    json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "faults",
            "domainName": "faults.execute-api.us-west-2.amazonaws.com",
            "domainPrefix": "faults",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "10.0.0.1",
                "userAgent": "faults"
            },
            "requestId": request_id,
            "routeKey": route,
            "stage": "$default",
            "time": "27/Nov/2026:09:00:00 +0000",
            "timeEpoch": 1795770000000u64,
            "authorizer": {
                "iam": {
                    "accessKey": "ASIAEXAMPLEKEY",
                    "accountId": "123456789012",
                    "callerId": "AROAEXAMPLEID:caller",
                    "cognitoIdentity": null,
                    "principalOrgId": null,
                    "userArn": sender.arn(),
                    "userId": "AROAEXAMPLEID:caller"
                }
            }
        },
        "isBase64Encoded": false,
        "body": body
    })
}

/// An SQS event from `batch.sender`'s queue.
fn sqs_event(schedule: &Schedule, batch: &Batch, attempts: &[Attempt]) -> Value {
    let records: Vec<Value> = batch
        .records
        .iter()
        .zip(attempts)
        .map(|(rec, attempt)| {
            let (index, req) = schedule.request(rec.request);
            let mut attributes = json!({
                "ApproximateReceiveCount": attempt.receive.to_string(),
                "SentTimestamp": "1795770000000",
            });
            if batch.source == Source::SqsFifo {
                attributes["MessageGroupId"] = Value::from(format!("g{}", rec.group));
            }
            let id = attempt.message_id.clone().unwrap_or_default();
            json!({
                "messageId": id,
                "receiptHandle": format!("{id}-{}", attempt.receive),
                "body": req.body(index).to_string(),
                "attributes": attributes,
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": batch.sender.arn(),
                "awsRegion": "us-west-2"
            })
        })
        .collect();
    json!({ "Records": records })
}

fn is_final_code(code: Option<&str>) -> bool {
    code.is_none_or(|c| !RETRY_CODES.contains(&c))
}

/// One HTTP answer from its status, body and headers.
fn http_answer(status: u64, body: Map<String, Value>, retry_after: Option<u64>) -> Answer {
    let code = body.get("error").and_then(Value::as_str).map(str::to_owned);
    let is_final = is_final_code(code.as_deref());
    let outcome = match (&code, body.get("outcome").and_then(Value::as_str)) {
        (None, Some(outcome)) => outcome.to_owned(),
        (None, None) => "?".to_owned(),
        (Some(_), _) if is_final => "REJECTED".to_owned(),
        (Some(_), _) => "RETRY".to_owned(),
    };
    Answer {
        is_final,
        acked: is_final,
        outcome,
        code,
        replayed: body.get("replayed") == Some(&Value::Bool(true)),
        status: Some(status),
        retry_after,
        body: Some(body),
        event: None,
    }
}

fn read_http(invocation: &Invocation, attempts: &mut [Attempt]) -> Result<(), String> {
    let response = &invocation.response;
    let status = response["statusCode"]
        .as_u64()
        .ok_or("an HTTP response without statusCode")?;
    let body: Map<String, Value> = response["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .ok_or("an HTTP response without a JSON object body")?;
    let retry_after = response["headers"]["retry-after"]
        .as_str()
        .and_then(|v| v.parse().ok());
    match invocation.source {
        Source::HttpSingle => {
            let attempt = attempts.first_mut().ok_or("no record")?;
            attempt.answer = http_answer(status, body, retry_after);
        }
        _ => {
            if status != 207 {
                return Err(format!("a batch answered {status}, not 207"));
            }
            let results = body
                .get("results")
                .and_then(Value::as_array)
                .ok_or("a 207 without results")?;
            if results.len() != attempts.len() {
                return Err(format!(
                    "{} results for {} items",
                    results.len(),
                    attempts.len()
                ));
            }
            for (i, (result, attempt)) in results.iter().zip(attempts.iter_mut()).enumerate() {
                let mut item = result.as_object().cloned().ok_or("a result is no object")?;
                if item.remove("index") != Some(Value::from(i)) {
                    return Err(format!("result {i} has another index"));
                }
                let status = item
                    .remove("status")
                    .and_then(|s| s.as_u64())
                    .ok_or("a result without status")?;
                attempt.answer = http_answer(status, item, None);
            }
        }
    }
    for attempt in attempts.iter_mut() {
        attempt.answer.event = invocation
            .events
            .iter()
            .find(|e| e.id == attempt.audit_id)
            .cloned();
    }
    Ok(())
}

fn read_sqs(invocation: &mut Invocation, attempts: &mut [Attempt]) -> Result<(), String> {
    let failures = invocation.response["batchItemFailures"]
        .as_array()
        .ok_or("an SQS response without batchItemFailures")?;
    for failure in failures {
        let id = failure["itemIdentifier"]
            .as_str()
            .ok_or("a batch item failure without itemIdentifier")?;
        invocation.failed_ids.push(id.to_owned());
    }
    // A message's copies take its events in turn: copies of one message are identical.
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in attempts.iter_mut() {
        let id = attempt.message_id.clone().unwrap_or_default();
        let nth = taken.entry(id.clone()).or_insert(0);
        let event = invocation
            .events
            .iter()
            .filter(|e| e.id == id)
            .nth(*nth)
            .cloned();
        *nth += 1;
        let acked = !invocation.failed_ids.contains(&id);
        attempt.answer = match event {
            Some(event) => {
                // A request kept for approval is acknowledged: PENDING, as over HTTP.
                let outcome = match event.outcome.as_str() {
                    "PENDING_APPROVAL" => "PENDING",
                    other => other,
                }
                .to_owned();
                Answer {
                    is_final: matches!(
                        outcome.as_str(),
                        "RESET" | "WOULD_RESET" | "REJECTED" | "PENDING"
                    ),
                    acked,
                    outcome,
                    code: event.code.clone(),
                    replayed: event.replayed,
                    status: None,
                    retry_after: None,
                    body: None,
                    event: Some(event),
                }
            }
            None => Answer {
                is_final: false,
                acked,
                outcome: "RETRY".to_owned(),
                ..Answer::default()
            },
        };
    }
    Ok(())
}

// ---- printing ------------------------------------------------------------------------------

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, inv) in self.invocations.iter().enumerate() {
            writeln!(
                f,
                "invocation {i} (step {}): t={}..{} ms, deadline t={} ms",
                inv.step,
                self.at(inv.start),
                self.at(inv.end),
                self.at(inv.deadline)
            )?;
            if let Some(problem) = &inv.problem {
                writeln!(f, "    PROBLEM: {problem}")?;
            }
            if !inv.source.is_http() {
                writeln!(f, "    batchItemFailures: {:?}", inv.failed_ids)?;
            }
            for attempt in &self.attempts[inv.attempts.clone()] {
                let a = &attempt.answer;
                let mut line = format!(
                    "    {} {} T{}",
                    attempt.audit_id, attempt.req, attempt.request
                );
                if let Some(label) = &attempt.label {
                    line += &format!(" key {label}");
                }
                if let Some(d) = &attempt.decision {
                    line += &format!(
                        " DECISION {} by {}",
                        d.verdict.as_str(),
                        attempt.sender.name()
                    );
                }
                if attempt.receive > 0 {
                    line += &format!(" receive {}", attempt.receive);
                }
                line += " -> ";
                if let Some(status) = a.status {
                    line += &format!("{status} ");
                }
                line += &a.outcome;
                if let Some(code) = &a.code {
                    line += &format!(" {code}");
                }
                if a.replayed {
                    line += " (replayed)";
                }
                if let Some(secs) = a.retry_after {
                    line += &format!(" Retry-After {secs}");
                }
                if !attempt.source.is_http() {
                    line += if a.acked { ", acked" } else { ", handed back" };
                }
                writeln!(f, "{line}")?;
            }
            for event in &inv.events {
                writeln!(
                    f,
                    "    event {} {}{}{}",
                    event.id,
                    event.outcome.as_str(),
                    event
                        .code
                        .as_deref()
                        .map(|c| format!(" {c}"))
                        .unwrap_or_default(),
                    if event.replayed { " replayed" } else { "" }
                )?;
            }
        }
        writeln!(f, "Cognito calls:")?;
        for call in &self.journal.cognito {
            let answered = match &call.answered {
                Answered::Ok => "ok".to_owned(),
                Answered::Err(kind, effect) => format!("{kind:?}/{effect:?}"),
            };
            writeln!(
                f,
                "    inv {} t={}..{} {} {}{}{} -> {answered}{}",
                call.inv,
                self.at(call.start),
                self.at(call.end),
                call.op.name(),
                call.name,
                call.ticket
                    .as_deref()
                    .map(|t| format!(" {t}"))
                    .unwrap_or_default(),
                injected_text(call.fault, call.at),
                match (call.performed, call.op) {
                    (false, _) => "",
                    (true, Op::Reset) => ", RESET PERFORMED",
                    (true, Op::Resend) => ", INVITATION SENT",
                    (true, _) => ", PERFORMED",
                }
            )?;
        }
        writeln!(f, "guard calls:")?;
        for call in &self.journal.guard {
            writeln!(
                f,
                "    inv {} t={}..{} {} {}{}{}{} -> {}{}",
                call.inv,
                self.at(call.start),
                self.at(call.end),
                call.op.name(),
                if call.op == Op::Begin || call.op == Op::Finish {
                    call.label.clone()
                } else {
                    call.pk.rsplit('#').next().unwrap_or_default().to_owned()
                },
                // `<record>/<ms>/<counter>`: the record is what reads.
                call.claim_id
                    .as_deref()
                    .and_then(|c| c.split('/').next())
                    .map(|c| format!(" claim by {c}"))
                    .unwrap_or_default(),
                call.completion
                    .map(|c| format!(" {c:?}"))
                    .unwrap_or_default(),
                injected_text(call.fault, call.at),
                call.result,
                if call.wrote { " (wrote)" } else { "" }
            )?;
            if let Some(detail) = &call.detail {
                writeln!(f, "        {detail}")?;
            }
        }
        if !self.journal.buckets.is_empty() {
            writeln!(f, "pacing bucket writes:")?;
        }
        for call in &self.journal.buckets {
            writeln!(
                f,
                "    inv {} t={} {} {} -> {}",
                call.inv,
                self.at(call.at),
                if call.cut { "rate cut" } else { "lease" },
                call.pk,
                if call.failed {
                    "failed"
                } else if call.applied {
                    "written"
                } else {
                    "refused"
                }
            )?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// `MAX_RECEIVE_COUNT` reached: a RETRY is GAVE_UP.
pub fn last_receive(attempt: &Attempt) -> bool {
    !attempt.source.is_http() && attempt.receive >= MAX_RECEIVE_COUNT
}

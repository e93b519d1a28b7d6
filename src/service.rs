//! One reset request, step by step, and the audit line every record ends with.
//!
//! 1. caller-and-pool check (no Cognito call when the caller has no rule for the pool);
//! 2. `AdminGetUser` resolves the canonical user (alias, case variant and `sub` alike);
//! 3. `AdminListGroupsForUser` only when the policy references groups;
//! 4. the full policy decision; 5. disabled users are refused; 6. `DRY_RUN` stops here;
//! 7. `AdminResetUserPassword` on the canonical username.
//!
//! [`run_all`] and [`run_fifo`] run many records at once, bounded by `MAX_CONCURRENCY`, never
//! starting one too close to the invocation's deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::caller;
use crate::config::Config;
use crate::directory::Directory;
use crate::outcome::{Class, Reset, ResetError, failure_outcome};
use crate::policy::{Caller, Decision, Subject};
use crate::request::ResetRequest;

/// The function's state, built once at start-up.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub directory: Directory,
}

/// The result of one record.
pub type RecordResult = Result<Reset, ResetError>;

/// Where a record came from and who asked.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `http-api`, `rest-api`, `function-url`, `alb`, `sqs` or `sqs-fifo`.
    pub source: &'static str,
    /// The request id (HTTP) or message id (SQS).
    pub id: String,
    pub caller: Arc<Caller>,
}

/// One record to process: its origin and the request (or why it has none).
#[derive(Debug)]
pub struct Job {
    pub origin: Origin,
    pub request: Result<ResetRequest, ResetError>,
}

/// The moment the invocation must have answered by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// True when less than `margin` is left.
    pub fn too_close(&self, margin: Duration) -> bool {
        self.0.saturating_duration_since(Instant::now()) < margin
    }
}

/// What the audit line reports beyond the result.
#[derive(Debug, Default)]
struct Trail {
    canonical_username: Option<String>,
    rule: Option<String>,
}

impl App {
    /// Runs one record, unless the deadline is too close, and writes its audit line.
    pub async fn run(&self, job: Job, deadline: Deadline) -> RecordResult {
        let started = Instant::now();
        let mut trail = Trail::default();
        let Job { origin, request } = job;
        let (request, result) = match request {
            Err(error) => (None, Err(error)),
            Ok(request) => {
                let result = if deadline.too_close(self.config.deadline_margin) {
                    Err(ResetError::Deadline)
                } else {
                    let span =
                        tracing::info_span!("record", source = origin.source, id = %origin.id);
                    self.execute(&origin.caller, &request, &mut trail)
                        .instrument(span)
                        .await
                };
                (Some(request), result)
            }
        };
        audit(
            &origin,
            request.as_ref(),
            &trail,
            &result,
            started.elapsed(),
        );
        result
    }

    /// Accounts for a record that is not started (e.g. a halted FIFO group).
    pub fn skip(&self, job: Job, error: ResetError) -> RecordResult {
        let result = Err(error);
        let request = job.request.as_ref().ok();
        audit(
            &job.origin,
            request,
            &Trail::default(),
            &result,
            Duration::ZERO,
        );
        result
    }

    async fn execute(
        &self,
        caller: &Caller,
        request: &ResetRequest,
        trail: &mut Trail,
    ) -> RecordResult {
        let policy = &self.config.policy;
        let pool = &request.user_pool_id;
        policy
            .check_caller_and_pool(caller, pool.as_str())
            .map_err(ResetError::Denied)?;

        let user = self.directory.get_user(pool, &request.username).await?;
        trail.canonical_username = Some(user.username.clone());

        let groups = if policy.needs_groups() {
            self.directory.list_groups(pool, &user.username).await?
        } else {
            Vec::new()
        };
        let subject = Subject {
            username: user.username.clone(),
            email: user.email,
            preferred_username: user.preferred_username,
            sub: user.sub,
            groups,
        };
        let rule = match policy.decide(caller, pool.as_str(), &subject) {
            Decision::Allow { rule } => rule,
            Decision::Deny(reason) => return Err(ResetError::Denied(reason)),
        };
        trail.rule = Some(rule.clone());

        if !user.enabled {
            return Err(ResetError::UserDisabled);
        }
        if self.config.dry_run {
            return Ok(Reset {
                username: user.username,
                rule,
                dry_run: true,
                cognito_request_id: None,
            });
        }
        let cognito_request_id = self
            .directory
            .reset_password(pool, &user.username, &request.client_metadata)
            .await?;
        Ok(Reset {
            username: user.username,
            rule,
            dry_run: false,
            cognito_request_id,
        })
    }
}

/// The one audit line of a record. Never includes `ClientMetadata` or the body.
fn audit(
    origin: &Origin,
    request: Option<&ResetRequest>,
    trail: &Trail,
    result: &RecordResult,
    elapsed: Duration,
) {
    let pool = request.map(|r| r.user_pool_id.as_str()).unwrap_or("");
    let requested = request.map(|r| r.username.as_str()).unwrap_or("");
    let reason = request.and_then(|r| r.reason.as_deref()).unwrap_or("");
    let callers = caller::describe(&origin.caller);
    let canonical = trail.canonical_username.as_deref().unwrap_or("");
    let rule = trail.rule.as_deref().unwrap_or("");
    // Cognito's request id of the reset, or of the call that failed.
    let cognito_request_id = match result {
        Ok(reset) => reset.cognito_request_id.as_deref(),
        Err(ResetError::Cognito(e)) => e.request_id.as_deref(),
        Err(_) => None,
    }
    .unwrap_or("");
    let duration_ms = elapsed.as_millis() as u64;
    let (outcome, code) = match result {
        Ok(reset) => (reset.outcome(), ""),
        Err(error) => (failure_outcome(error), error.code()),
    };
    tracing::info!(
        target: "audit",
        source = origin.source,
        id = %origin.id,
        caller = %callers,
        user_pool_id = pool,
        requested_username = requested,
        canonical_username = canonical,
        rule,
        outcome,
        code,
        cognito_request_id,
        reason,
        duration_ms,
        "record done"
    );
    if let Err(error) = result
        && error.class() == Class::Retry
    {
        let chain = cause_chain(error);
        tracing::warn!(id = %origin.id, code, error.cause_chain = %chain, "record will be retried");
    }
}

fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs every job, at most `MAX_CONCURRENCY` at once; results in job order.
pub async fn run_all(app: &Arc<App>, jobs: Vec<Job>, deadline: Deadline) -> Vec<RecordResult> {
    let chains = jobs.into_iter().map(|job| vec![job]).collect();
    run_chains(app, chains, deadline, false)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Runs FIFO jobs: in order within a message group, groups side by side. After a RETRY in a
/// group, the group's later jobs are not started and come back as `fifo-group-halted`.
pub async fn run_fifo(
    app: &Arc<App>,
    jobs: Vec<(String, Job)>,
    deadline: Deadline,
) -> Vec<RecordResult> {
    // Group while remembering each job's place in the batch.
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(jobs.len());
    let mut index_of_group: HashMap<String, usize> = HashMap::new();
    let mut chains: Vec<Vec<Job>> = Vec::new();
    for (group, job) in jobs {
        let g = *index_of_group.entry(group).or_insert_with(|| {
            chains.push(Vec::new());
            chains.len() - 1
        });
        order.push((g, chains[g].len()));
        chains[g].push(job);
    }
    let mut results: Vec<Vec<Option<RecordResult>>> = run_chains(app, chains, deadline, true)
        .await
        .into_iter()
        .map(|chain| chain.into_iter().map(Some).collect())
        .collect();
    order
        .into_iter()
        .map(|(g, i)| {
            results[g][i]
                .take()
                .unwrap_or(Err(ResetError::FifoGroupHalted))
        })
        .collect()
}

/// Runs chains side by side (each chain in order), one permit per running job.
async fn run_chains(
    app: &Arc<App>,
    chains: Vec<Vec<Job>>,
    deadline: Deadline,
    halt_after_retry: bool,
) -> Vec<Vec<RecordResult>> {
    let semaphore = Arc::new(Semaphore::new(app.config.max_concurrency));
    let mut tasks = JoinSet::new();
    let lengths: Vec<usize> = chains.iter().map(Vec::len).collect();
    for (index, chain) in chains.into_iter().enumerate() {
        let app = Arc::clone(app);
        let semaphore = Arc::clone(&semaphore);
        tasks.spawn(async move {
            let mut results = Vec::with_capacity(chain.len());
            let mut halted = false;
            for job in chain {
                if halted {
                    results.push(app.skip(job, ResetError::FifoGroupHalted));
                    continue;
                }
                let result = match semaphore.acquire().await {
                    Ok(_permit) => app.run(job, deadline).await,
                    // The semaphore is never closed; should it be, do not start the job.
                    Err(_) => app.skip(job, ResetError::Deadline),
                };
                if halt_after_retry && matches!(&result, Err(e) if e.class() == Class::Retry) {
                    halted = true;
                }
                results.push(result);
            }
            (index, results)
        });
    }
    let mut done: Vec<Option<Vec<RecordResult>>> = lengths.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, results)) => done[index] = Some(results),
            // A panicking record fails the whole invocation, so every record is retried:
            // nothing is acknowledged that was not processed.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    // A task can only be missing if it was cancelled, which nothing here does; its records
    // are still accounted for, as retries.
    done.into_iter()
        .zip(lengths)
        .map(|(results, len)| {
            results.unwrap_or_else(|| (0..len).map(|_| Err(ResetError::Deadline)).collect())
        })
        .collect()
}

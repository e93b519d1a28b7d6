//! `reset-enqueue`: mass password resets from a CSV file, onto the function's SQS queue.
//!
//! ```text
//! reset-enqueue --queue-url URL --user-pool-id POOL [--reason TEXT] [--ticket T] [--state PATH]
//!               [--dry-run [--policy FILE --caller ARN]] [--allow-default-email]
//!               [--retry-from REPORT]
//!               [--wait --results-queue URL [--timeout SECS] [--report PATH]] FILE|-
//! ```
//!
//! Every line is validated with the function's own request parser before anything is sent
//! ([`input`]); then the preflight describes every pool of the file and refuses a mass reset
//! that Cognito's default email sender cannot deliver ([`preflight`]); what was sent is recorded as it goes in a state file ([`state`]) so that the same
//! command, run again, sends only the rest and never a user twice; batches go ten at a time, a
//! few calls in flight ([`send`], [`sqs`]); `--wait` reads the outcome events back ([`wait`]).
//!
//! `--retry-from REPORT` sends again only the users of an earlier `--wait` report whose outcome
//! may pass now: REJECTED `delivery-limit` or `attempt-limit`, or `GAVE_UP`; it has its own
//! state file (beside the report), so it too never sends a user twice nor one in doubt.
//!
//! Exit status: 0 everything sent (with `--wait`: every user ended RESET); 1 some user refused,
//! in doubt, not sent or (with `--wait`) not RESET, or the queue cannot be used; 2 invalid input
//! or usage, or refused by the preflight (nothing sent); 130 interrupted (what was in flight is
//! recorded).
//!
//! SQS is used only here: the Lambda function's code never links it (the `enqueue` feature).

mod input;
mod preflight;
mod progress;
mod send;
mod sqs;
mod state;
mod wait;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use cognito_reset::policy::{Caller, Decision, DenyReason, Policy, Subject};
use cognito_reset::request::UserPoolId;

use crate::input::{Defaults, Entry, Input};
use crate::progress::Progress;
use crate::send::{Answer, Retry};
use crate::state::{Identity, State, StateError};

/// Enqueue password resets for every user in a CSV file, resumably; optionally wait for and
/// report every user's outcome.
///
/// FILE is CSV with a header row that has a `username` column; optional `reason`, `userPoolId`
/// and `ticket` columns override --reason, --user-pool-id and --ticket per row. `-` reads
/// standard input (then --state is required). Every line is checked first: if any is invalid,
/// nothing is sent and every bad line is listed (exit 2).
///
/// Before sending, every pool of the file is described (DescribeUserPool): a pool that sends
/// email with Cognito's default sender (about 50 emails a day) and has more than 50 users in the
/// file is refused (exit 2) unless --allow-default-email.
///
/// Exit status: 0 all sent (with --wait: every user RESET); 1 some user refused, in doubt or
/// not RESET, or the queue unusable; 2 invalid input or usage, or refused by the preflight;
/// 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "reset-enqueue", version)]
struct Cli {
    /// The function's request queue (standard or .fifo).
    #[arg(long, value_name = "URL", required_unless_present = "dry_run")]
    queue_url: Option<String>,
    /// The user pool of rows without a userPoolId.
    #[arg(long, value_name = "POOL")]
    user_pool_id: Option<String>,
    /// The Reason of rows without one (the function's audit log and outcome events).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// The Ticket of rows without one: the helpdesk ticket the resets are done for (checked
    /// against the policy rule's `ticket`, passed to Cognito as ClientMetadata.ticket).
    #[arg(long, value_name = "T")]
    ticket: Option<String>,
    /// Where to record what was sent [default: FILE.enqueue-state.jsonl, beside FILE].
    #[arg(long, value_name = "PATH")]
    state: Option<PathBuf>,
    /// Validate and print what would be sent; send nothing, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: also each user's decision under this policy, as far as the pool and the
    /// requested name decide it (the function decides again, with the user's attributes).
    #[arg(long, value_name = "FILE", requires_all = ["dry_run", "caller"])]
    policy: Option<PathBuf>,
    /// With --policy: the caller the function will see (for SQS: the queue's ARN).
    #[arg(long, value_name = "ARN", requires = "policy")]
    caller: Option<String>,
    /// After sending, wait for every user's outcome event on --results-queue.
    #[arg(long, requires = "results_queue", conflicts_with = "dry_run")]
    wait: bool,
    /// The queue the outcome events are routed to (events/outcome-events/).
    #[arg(long, value_name = "URL", requires = "wait")]
    results_queue: Option<String>,
    /// With --wait: give up waiting after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 900, requires = "wait")]
    timeout: u64,
    /// With --wait: the CSV report of every user's outcome [default: FILE.report.csv].
    #[arg(long, value_name = "PATH", requires = "wait")]
    report: Option<PathBuf>,
    /// Send even when a pool with more than 50 users in the file sends email with Cognito's
    /// default sender (about 50 emails a day; the rest end REJECTED delivery-limit).
    #[arg(long)]
    allow_default_email: bool,
    /// Send again only the users of this --wait report whose outcome was REJECTED
    /// delivery-limit or attempt-limit, or GAVE_UP (FILE is the run's input, as before). Its
    /// state file is REPORT.enqueue-state.jsonl unless --state.
    #[arg(long, value_name = "REPORT")]
    retry_from: Option<PathBuf>,
    /// SendMessageBatch calls in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    in_flight: u16,
    /// The CSV file, or - for standard input.
    file: PathBuf,
}

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            eprintln!("reset-enqueue: {message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn usage(message: impl Into<String>) -> Failure {
    (EXIT_USAGE, message.into())
}

fn run(cli: Cli) -> Result<u8, Failure> {
    let pool = cli
        .user_pool_id
        .as_deref()
        .map(|p| UserPoolId::parse(p).map_err(|m| usage(format!("--user-pool-id {p:?}: {m}"))))
        .transpose()?;
    let stdin = cli.file.as_os_str() == "-";
    let bytes = if stdin {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| usage(format!("cannot read standard input: {e}")))?;
        bytes
    } else {
        std::fs::read(&cli.file)
            .map_err(|e| usage(format!("cannot read {}: {e}", cli.file.display())))?
    };
    let defaults = Defaults {
        pool: pool.clone(),
        reason: cli.reason.clone(),
        ticket: cli.ticket.clone(),
    };
    let name = if stdin {
        "<stdin>".to_owned()
    } else {
        cli.file.display().to_string()
    };
    let mut input = match input::parse(&bytes, &defaults) {
        Ok(input) => input,
        Err(problems) => {
            for problem in &problems {
                eprintln!("{name}: {problem}");
            }
            return Err(usage(format!(
                "{} invalid line(s) in {name}: nothing was sent",
                problems.len()
            )));
        }
    };
    for note in &input.notes {
        eprintln!("{name}: note: {note}");
    }
    if let Some(report) = &cli.retry_from {
        retry_only(&mut input, report, &name)?;
        if input.entries.is_empty() {
            println!(
                "retry from {}: no user ended delivery-limit, attempt-limit or GAVE_UP: nothing to send",
                report.display()
            );
            return Ok(0);
        }
    }

    if cli.dry_run {
        return dry_run(&cli, &input);
    }
    let queue_url = cli
        .queue_url
        .clone()
        .ok_or_else(|| usage("--queue-url is required"))?;
    let state_path = match (&cli.state, stdin, &cli.retry_from) {
        (Some(path), _, _) => path.clone(),
        (None, _, Some(report)) => beside(report, ".enqueue-state.jsonl"),
        (None, true, None) => {
            return Err(usage(
                "reading standard input: give --state PATH (the record of what was sent)",
            ));
        }
        (None, false, None) => beside(&cli.file, ".enqueue-state.jsonl"),
    };
    let identity = Identity {
        input: input.digest.clone(),
        queue: queue_url.clone(),
        pool: pool.map(|p| p.as_str().to_owned()),
        reason: cli.reason.clone(),
        ticket: cli.ticket.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| (EXIT_FAILED, format!("cannot start: {e}")))?;
    runtime.block_on(enqueue(&cli, &input, &queue_url, &state_path, &identity))
}

/// `--retry-from`: keeps only the users the report says may pass when sent again, and makes the
/// run's identity (and so its state file and FIFO deduplication ids) the retry's own.
fn retry_only(input: &mut Input, report: &Path, name: &str) -> Result<(), Failure> {
    let bytes = std::fs::read(report)
        .map_err(|e| usage(format!("cannot read {}: {e}", report.display())))?;
    let keys = wait::retry_keys(&bytes)
        .map_err(|e| usage(format!("--retry-from {}: {e}", report.display())))?;
    let known: std::collections::BTreeSet<_> = input.entries.iter().map(|e| &e.key).collect();
    let strangers: Vec<String> = keys
        .keys()
        .filter(|k| !known.contains(k))
        .map(|k| k.to_string())
        .collect();
    if !strangers.is_empty() {
        return Err(usage(format!(
            "--retry-from {}: {} user(s) of the report are not in {name} (is it this file's \
             report?): {}; nothing was sent",
            report.display(),
            strangers.len(),
            strangers.join(", ")
        )));
    }
    input.entries.retain(|e| keys.contains_key(&e.key));
    input.digest = format!("{}+retry:{}", input.digest, input::digest(&bytes));
    let mut by_label: BTreeMap<&str, usize> = BTreeMap::new();
    for label in keys.values() {
        *by_label.entry(label.as_str()).or_default() += 1;
    }
    let labels: Vec<String> = by_label.iter().map(|(l, n)| format!("{l} {n}")).collect();
    println!(
        "retry from {}: {} user(s) to send again ({})",
        report.display(),
        input.entries.len(),
        labels.join(", ")
    );
    Ok(())
}

/// `users.csv` -> `users.csv<suffix>` in the same directory.
fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn unix_now() -> u64 {
    cognito_reset::deadline::epoch_secs_floor(SystemTime::now())
}

async fn enqueue(
    cli: &Cli,
    input: &Input,
    queue_url: &str,
    state_path: &Path,
    identity: &Identity,
) -> Result<u8, Failure> {
    // Before anything is sent, or even the state file written.
    let findings = preflight::describe(&input.entries).await;
    for finding in &findings {
        println!("{}", finding.line());
    }
    preflight::check(&findings, cli.allow_default_email).map_err(usage)?;
    let client = sqs::client(queue_url).await;
    let info = sqs::probe(&client, queue_url).await.map_err(|e| {
        (
            EXIT_FAILED,
            format!("cannot use the queue {queue_url}: {e}"),
        )
    })?;
    let mut state = State::open(state_path, identity).map_err(|e| match e {
        StateError::Io { .. } => (EXIT_FAILED, e.to_string()),
        _ => usage(e.to_string()),
    })?;
    let plan = state::plan(&input.entries, &state, info.fifo, unix_now());
    eprintln!(
        "{} user(s): {} to send, {} already sent{}, {} in doubt; state: {}",
        input.entries.len(),
        plan.send.len(),
        plan.already_sent.len(),
        if state.resumed { " (resumed)" } else { "" },
        plan.in_doubt.len(),
        state_path.display()
    );
    for key in &plan.in_doubt {
        eprintln!(
            "in doubt, not sent again: {key} (a run stopped between sending it and recording \
             the answer: it may be on the queue; see its outcome with --wait, or send it by hand \
             once you know it is not)"
        );
    }

    let total = plan.send.len() as u64;
    let mut progress = Progress::new("sending", total);
    let queue = Arc::new(sqs::SqsQueue {
        client: client.clone(),
        url: queue_url.to_owned(),
    });
    let started = Instant::now();
    let report = send::send_all(
        queue,
        &mut state,
        &plan.send,
        info.fifo,
        &input.digest,
        usize::from(cli.in_flight),
        Retry::default(),
        unix_now,
        |counts| {
            let done = (counts.sent + counts.refused + counts.in_doubt) as u64;
            let detail = match counts.refused + counts.in_doubt {
                0 => String::new(),
                n => format!("({n} failed)"),
            };
            progress.set(done, &detail);
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await
    .map_err(|e| (EXIT_FAILED, format!("cannot record what was sent: {e}")))?;
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    for (key, answer) in &report.problems {
        match answer {
            Answer::Refused(why) => eprintln!("refused: {key}: {why}"),
            Answer::InDoubt(why) => eprintln!(
                "in doubt: {key}: {why} (may be on the queue: not sent again; a second run will not send it either)"
            ),
            Answer::Sent(_) => {}
        }
    }
    let c = report.counts;
    println!(
        "sent {}, already sent {}, failed {} (refused {}, in doubt {}), not sent {}{} in {:.1} s ({:.0} messages/s)",
        c.sent,
        plan.already_sent.len(),
        c.refused + c.in_doubt + plan.in_doubt.len(),
        c.refused,
        c.in_doubt + plan.in_doubt.len(),
        c.not_started,
        if report.interrupted {
            " (interrupted)"
        } else {
            ""
        },
        elapsed,
        if elapsed > 0.0 {
            c.sent as f64 / elapsed
        } else {
            0.0
        }
    );
    if report.interrupted {
        println!("interrupted: run the same command again to send the rest");
        return Ok(EXIT_INTERRUPTED);
    }
    let send_failed = c.refused + c.in_doubt + c.not_started + plan.in_doubt.len() > 0;
    if c.not_started > 0 {
        println!("stopped after an ambiguous answer: run the same command again to send the rest");
    }

    let Some(results_queue) = cli.results_queue.as_deref().filter(|_| cli.wait) else {
        return Ok(if send_failed { EXIT_FAILED } else { 0 });
    };
    let report_path = cli.report.clone().unwrap_or_else(|| {
        if let Some(report) = &cli.retry_from {
            beside(report, ".report.csv")
        } else if cli.file.as_os_str() == "-" {
            beside(state_path, ".report.csv")
        } else {
            beside(&cli.file, ".report.csv")
        }
    });
    let all_reset = wait_for_outcomes(
        &client,
        results_queue,
        &input.entries,
        &mut state,
        Duration::from_secs(cli.timeout),
        &report_path,
    )
    .await?;
    Ok(if all_reset && !send_failed {
        0
    } else {
        EXIT_FAILED
    })
}

async fn wait_for_outcomes(
    client: &aws_sdk_sqs::Client,
    results_queue: &str,
    entries: &[Entry],
    state: &mut State,
    timeout: Duration,
    report_path: &Path,
) -> Result<bool, Failure> {
    let mut waiting = wait::Waiting::new(entries, state);
    let total = waiting.pending as u64;
    let mut progress = Progress::new("outcomes", total);
    let deadline = Instant::now() + timeout;
    let mut last_error: Option<String> = None;
    let mut interrupted = false;
    while waiting.pending > 0 && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let received = tokio::select! {
            received = sqs::receive(client, results_queue, left.min(Duration::from_secs(2))) => received,
            _ = tokio::signal::ctrl_c() => { interrupted = true; break; }
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(e) => {
                // Reading is always safe to repeat; say what went wrong if it never recovers.
                last_error = Some(e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for message in messages {
            let Some(event) = wait::parse_event(&message.body) else {
                continue;
            };
            if let Some(key) = waiting.claim(&event) {
                state
                    .outcome(&key, &event.outcome)
                    .map_err(|e| (EXIT_FAILED, format!("cannot record an outcome: {e}")))?;
                if let Err(e) = sqs::delete(client, results_queue, &message.receipt).await {
                    last_error = Some(e);
                }
            }
        }
        let done = total - waiting.pending as u64;
        progress.set(done, "");
    }
    progress.finish();
    if waiting.pending > 0 {
        eprintln!(
            "{} user(s) have no outcome yet{}{}",
            waiting.pending,
            if interrupted {
                " (interrupted)"
            } else {
                " after the timeout"
            },
            last_error
                .map(|e| format!("; last error reading {results_queue}: {e}"))
                .unwrap_or_default()
        );
    }
    let rows = wait::rows(entries, state);
    print!("{}", wait::table(&rows));
    let redrivable = wait::redrivable(&rows);
    if !redrivable.is_empty() {
        let counts: Vec<String> = redrivable.iter().map(|(l, n)| format!("{l} {n}")).collect();
        println!(
            "to send again later: {} user(s) ({}): {}re-run with --retry-from {}",
            redrivable.values().sum::<usize>(),
            counts.join(", "),
            if redrivable.contains_key("delivery-limit") {
                "configure Amazon SES for the pool first (delivery-limit: the default sender's \
                 daily limit), then "
            } else {
                ""
            },
            report_path.display()
        );
    }
    let file = std::fs::File::create(report_path).map_err(|e| {
        (
            EXIT_FAILED,
            format!("cannot write the report {}: {e}", report_path.display()),
        )
    })?;
    wait::write_report(&rows, file).map_err(|e| {
        (
            EXIT_FAILED,
            format!("cannot write the report {}: {e}", report_path.display()),
        )
    })?;
    println!("report: {}", report_path.display());
    Ok(wait::all_reset(&rows))
}

/// `--dry-run`: what would be sent and, with a policy, each user's decision as far as the pool
/// and the requested name decide it.
fn dry_run(cli: &Cli, input: &Input) -> Result<u8, Failure> {
    let policy = match &cli.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
            let policy = Policy::from_json(&text).map_err(|errors| {
                for error in errors.errors() {
                    eprintln!("{}: {error}", path.display());
                }
                usage(format!("{}: invalid policy", path.display()))
            })?;
            Some(policy)
        }
        None => None,
    };
    let caller = Caller::Identified(cli.caller.iter().cloned().collect());
    let mut summary: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &input.entries {
        let reason = entry.reason.as_deref().unwrap_or("");
        let decision = policy
            .as_ref()
            .map(|policy| decide_by_name(policy, &caller, entry))
            .map(|(decision, note)| {
                *summary.entry(decision.clone()).or_default() += 1;
                format!("  {decision}{note}")
            })
            .unwrap_or_default();
        let ticket = entry
            .ticket
            .as_deref()
            .map(|t| format!(" ticket={t:?}"))
            .unwrap_or_default();
        println!(
            "line {}: would send {} {} reason={reason:?}{ticket}{decision}",
            entry.line, entry.key.pool, entry.key.username
        );
    }
    println!(
        "dry run: {} user(s) would be sent; nothing was sent",
        input.entries.len()
    );
    if !summary.is_empty() {
        println!("policy decisions (pool and requested name only):");
        for (decision, n) in &summary {
            println!("  {n:>6}  {decision}");
        }
    }
    Ok(0)
}

/// The decision without AWS: the caller and pool stage is final, and so is a ticket no rule for
/// the caller and pool takes (`ticket-required`, `ticket-invalid`); by the requested name, a
/// `denied-user` is final (deny wins), an ALLOW or another denial may change once the function
/// resolves the user's other names and groups.
fn decide_by_name(policy: &Policy, caller: &Caller, entry: &Entry) -> (String, &'static str) {
    let pool = entry.key.pool.as_str();
    if let Err(reason) = policy.check_caller_and_pool(caller, pool) {
        return (format!("DENY {reason}"), "");
    }
    // As final as the caller-and-pool check: the function refuses the ticket before any lookup.
    if let Err(refusal) = policy.check_ticket_for_caller(caller, pool, entry.ticket.as_deref()) {
        return (format!("REJECTED {refusal}"), "");
    }
    let name = entry.key.username.clone();
    let subject = Subject {
        email: name.contains('@').then(|| name.clone()),
        username: name,
        ..Subject::default()
    };
    match policy.decide(caller, pool, &subject) {
        decision @ Decision::Deny(DenyReason::DeniedUser) => (decision.to_string(), ""),
        decision => (
            decision.to_string(),
            " (by name: the function decides again with the user's attributes and groups)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_tells_a_ticket_the_callers_rules_refuse_as_final() {
        let policy = Policy::from_json(
            r#"{"version":1,"rules":[{"name":"q","callers":["arn:aws:sqs:us-west-2:1:q"],
            "userPools":["us-west-2_aaaaaaaaa"],"users":["*"],
            "ticket":{"required":true,"pattern":"INC[0-9]+"}}]}"#,
        )
        .unwrap();
        let caller = Caller::Identified(vec!["arn:aws:sqs:us-west-2:1:q".to_owned()]);
        let defaults = input::Defaults {
            pool: Some(UserPoolId::parse("us-west-2_aaaaaaaaa").unwrap()),
            ..input::Defaults::default()
        };
        let text = "username,ticket\nalice,\nbob,CHG1\ncarol,INC7\n";
        let input = input::parse(text.as_bytes(), &defaults).unwrap();
        let decisions: Vec<String> = input
            .entries
            .iter()
            .map(|e| decide_by_name(&policy, &caller, e).0)
            .collect();
        assert_eq!(
            decisions,
            [
                "REJECTED ticket-required",
                "REJECTED ticket-invalid",
                "ALLOW q"
            ]
        );
    }
}

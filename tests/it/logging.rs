//! No secret in any log, at any level (issue 9, item 3).
//!
//! The handler runs with a canary in `ClientMetadata` (and in an unknown field, and in a body
//! that is not JSON) in a child process of this test binary, so that it can install a global
//! subscriber from the environment exactly as `src/main.rs` does, with `LOG_SIGNABLE_BODY=true`
//! and `LOG_SENSITIVE_BODIES=true` set (the SDK's switches that print request and response bodies
//! at TRACE). With the function's subscriber (`cognito_reset::logging::init`) no line may carry
//! the canary; the control run with `lambda_runtime`'s default subscriber (what `main.rs` used
//! before) shows that the same run does leak it, so the check cannot pass vacuously.

use std::process::Command;
use std::time::SystemTime;

use cognito_reset::deadline::Deadline;
use cognito_reset::sources::invoke;
use serde_json::{Value, json};

use crate::helpers::*;

const CANARY: &str = "canary-7Qx2-do-not-log";

/// The name of the child test below, as libtest knows it.
const CHILD: &str =
    "logging::child_runs_the_canary_events_under_the_subscriber_from_the_environment";

/// Events carrying the canary: an allowed HTTP reset (the SDK sends it to Cognito), an SQS
/// batch, and a rejected request whose unknown field holds it.
fn canary_events() -> Vec<Value> {
    let metadata = json!({"ticket": "INC-1234", "otp": CANARY});
    let http = http_event_with_body(&json!({
        "UserPoolId": POOL, "Username": "diego@example.com", "ClientMetadata": metadata,
        "Reason": "locked out"
    }));
    let sqs = sqs_event(
        QUEUE,
        &[
            (
                json!({"UserPoolId": POOL, "Username": "erin@example.com", "ClientMetadata": metadata})
                    .to_string(),
                None,
            ),
            (format!("not JSON {CANARY}"), None),
        ],
    );
    let rejected = http_event_with_body(&json!({
        "UserPoolId": POOL, "Username": "diego@example.com", "Password": CANARY
    }));
    vec![http, sqs, rejected]
}

/// Runs in a child process only (see [`run_child`]): installs the subscriber named by
/// `LOG_TEST_SUBSCRIBER` globally, from the environment, and handles the canary events.
#[tokio::test]
#[ignore = "a child process of the logging tests: it installs a global subscriber"]
async fn child_runs_the_canary_events_under_the_subscriber_from_the_environment() {
    match std::env::var("LOG_TEST_SUBSCRIBER").as_deref() {
        Ok("function") => cognito_reset::logging::init(),
        Ok("lambda-default") => lambda_runtime::tracing::init_default_subscriber(),
        // Run by hand (`-- --ignored`): nothing to do; the parent tests check what it writes.
        Err(_) => return,
        Ok(other) => panic!("unknown LOG_TEST_SUBSCRIBER={other:?}"),
    }
    let cognito = Cognito::with_users(demo_users());
    let app = demo_app(&cognito);
    for event in canary_events() {
        // What lambda_runtime does with every event before the handler sees it
        // (lambda_runtime 1.5, src/layers/api_response.rs), at its call site's target.
        tracing::trace!(
            target: "lambda_runtime::layers::api_response",
            body = %event,
            "raw JSON event received from Lambda"
        );
        // cargo-lambda's emulator deadline: the function logs "implausible invocation deadline"
        // at DEBUG, one of its own lines below INFO.
        let deadline = Deadline::from_epoch_ms(600_000, SystemTime::now());
        // What `sources::handle` does: the invocation, then its EMF document on stdout.
        let (response, mut metrics) = invoke(&app, event, "req-log", deadline).await;
        response.expect("handled");
        metrics
            .flush(&mut std::io::stdout().lock())
            .expect("metrics written");
    }
    assert_eq!(
        cognito.reset_users(),
        ["diego-0000-uuid", "erin-0000-uuid"],
        "the canary requests reached Cognito"
    );
}

/// Runs the child test with `subscriber` and the logging variables `env`; its stdout lines.
fn run_child(subscriber: &str, env: &[(&str, &str)]) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new(exe);
    command
        .args([
            CHILD,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("RUST_LOG")
        .env_remove("AWS_LAMBDA_LOG_LEVEL")
        .env_remove("AWS_LAMBDA_LOG_FORMAT")
        .env("LOG_TEST_SUBSCRIBER", subscriber)
        .env("LOG_SIGNABLE_BODY", "true")
        .env("LOG_SENSITIVE_BODIES", "true")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied());
    let output = command.output().expect("child test runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "child failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child test did not run: {stdout}"
    );
    stdout.lines().map(str::to_owned).collect()
}

/// Lines carrying the canary as text or as the SDK prints a body's bytes (`[99, 97, 110, …]`).
fn leaks(lines: &[String]) -> Vec<&String> {
    let as_bytes = CANARY
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    lines
        .iter()
        .filter(|l| l.contains(CANARY) || l.contains(&as_bytes))
        .collect()
}

#[test]
fn no_line_carries_client_metadata_at_trace_with_the_functions_subscriber() {
    for env in [
        &[("AWS_LAMBDA_LOG_LEVEL", "TRACE")][..],
        &[
            ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ],
        &[(
            "RUST_LOG",
            "trace,aws_smithy_runtime=trace,aws_sigv4::http_request=trace,lambda_runtime::layers=trace,[invoke]=trace",
        )],
    ] {
        let lines = run_child("function", env);
        let leaked = leaks(&lines);
        assert!(
            leaked.is_empty(),
            "{env:?}: {} line(s) carry the canary, e.g. {}",
            leaked.len(),
            leaked[0]
        );
        // The level asked for did reach the function's own targets: its DEBUG line is there,
        // and one audit line per record.
        assert!(
            lines
                .iter()
                .any(|l| l.contains("implausible invocation deadline")),
            "{env:?}: the function's DEBUG line is missing:\n{}",
            lines.join("\n")
        );
        let audit: Vec<&String> = lines.iter().filter(|l| l.contains("record done")).collect();
        assert_eq!(audit.len(), 4, "{env:?}: {audit:#?}");
        if env.contains(&("AWS_LAMBDA_LOG_FORMAT", "JSON")) {
            for line in audit {
                let line: Value = serde_json::from_str(line).expect("JSON log line");
                assert_eq!(line["level"], "INFO");
            }
        }
    }
}

#[test]
fn lambda_runtimes_default_subscriber_leaks_client_metadata_at_trace() {
    // The control: the subscriber main.rs installed before, same run, same variables.
    let lines = run_child("lambda-default", &[("AWS_LAMBDA_LOG_LEVEL", "TRACE")]);
    let leaked = leaks(&lines);
    assert!(
        leaked
            .iter()
            .any(|l| l.contains("raw JSON event received from Lambda")),
        "lambda_runtime logs the raw event at TRACE"
    );
    assert!(
        leaked.iter().any(|l| l.contains("signing request")),
        "aws_sigv4 logs the request body at TRACE (LOG_SIGNABLE_BODY=true): {leaked:#?}"
    );
}

/// The levels of Lambda's log filter, lowest first.
const LAMBDA_LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// What Lambda's log-level filter keeps of JSON log lines at `level` (AWS docs, "Log-level
/// filtering"): a line whose `level` is below it is dropped; a line that is not JSON, or has no
/// valid `level`, counts as INFO.
fn lambda_filter(lines: &[String], level: &str) -> Vec<String> {
    let rank = |l: &str| LAMBDA_LEVELS.iter().position(|x| x.eq_ignore_ascii_case(l));
    let floor = rank(level).expect("a Lambda level");
    let info = rank("INFO").expect("INFO");
    lines
        .iter()
        .filter(|line| {
            let level = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v["level"].as_str().and_then(rank))
                .unwrap_or(info);
            level >= floor
        })
        .cloned()
        .collect()
}

/// The log levels the template offers (`LogLevel`'s `AllowedValues`).
fn template_log_levels() -> Vec<String> {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml"))
        .expect("template.yaml");
    let after = template
        .split("\n  LogLevel:\n")
        .nth(1)
        .expect("a LogLevel parameter");
    let allowed = after
        .lines()
        .find_map(|l| l.trim().strip_prefix("AllowedValues:"))
        .expect("LogLevel's AllowedValues");
    allowed
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|v| v.trim().to_owned())
        .collect()
}

#[test]
fn the_audit_line_and_the_metrics_survive_lambdas_filter_at_every_level_the_template_offers() {
    let levels = template_log_levels();
    assert!(levels.contains(&"INFO".to_owned()), "{levels:?}");
    for level in &levels {
        let lines = run_child(
            "function",
            &[
                ("AWS_LAMBDA_LOG_LEVEL", level.as_str()),
                ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ],
        );
        let kept = lambda_filter(&lines, level);
        let audit = kept.iter().filter(|l| l.contains("record done")).count();
        assert_eq!(
            audit, 4,
            "{level}: one audit line per record after the filter"
        );
        let emf = kept.iter().filter(|l| l.contains("\"_aws\"")).count();
        assert_eq!(
            emf, 3,
            "{level}: one EMF document per invocation after the filter"
        );
    }
    // And the levels the template does not offer would drop both: the function refuses them
    // (config::a_lambda_log_level_above_info_is_refused_because_it_drops_the_audit_trail).
    for level in LAMBDA_LEVELS
        .iter()
        .filter(|l| !levels.iter().any(|x| x == *l))
    {
        assert!(cognito_reset::logging::drops_info(level), "{level}");
    }
}

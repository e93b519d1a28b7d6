//! Benchmark: the whole handler on an SQS batch of 10 records against an instant in-process
//! Cognito (aws-smithy-mocks: the SDK's request and response handling run, no network), with
//! and without the duplicate-reset guard over the in-process DynamoDB table of the tests.
//!
//! Reported per record (criterion's throughput in elements): parse, policy, the SDK calls'
//! serialization, guard calls (with the guard), audit line (to a sink) and the batch response.
//! The difference between the two is the guard's cost per record. A third case, a queue no rule
//! lists, never reaches Cognito: it is the function's own work per record (event parsing,
//! request validation, the policy's first stage, audit line, outcome metrics, batch response)
//! without any SDK call.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use cognito_reset::sources::dispatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

#[allow(dead_code)]
#[path = "../tests/it/dynamodb.rs"]
mod dynamodb;
#[allow(dead_code)]
#[path = "../tests/it/helpers.rs"]
mod helpers;

use helpers::*;

const RECORDS: usize = 10;

/// Ten allowed users and a batch naming each once.
fn world() -> (Vec<TestUser>, Value) {
    let users: Vec<TestUser> = (0..RECORDS)
        .map(|i| user(&format!("user{i}"), &["staff"]))
        .collect();
    let bodies: Vec<(String, Option<&str>)> = (0..RECORDS)
        .map(|i| (reset_body(&format!("user{i}@example.com")), None))
        .collect();
    (users, sqs_event(QUEUE, &bodies))
}

/// The batch with fresh message ids, so that the guard never replays.
fn fresh(event: &Value, counter: &AtomicU64) -> Value {
    let mut event = event.clone();
    let n = counter.fetch_add(1, Ordering::Relaxed);
    if let Some(records) = event["Records"].as_array_mut() {
        for (i, record) in records.iter_mut().enumerate() {
            record["messageId"] = Value::from(format!("m{n}-{i}"));
        }
    }
    event
}

fn handler(c: &mut Criterion) {
    // Audit lines are formatted and written, to a sink, as in the function.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (users, event) = world();
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("sqs-batch");
    group.throughput(Throughput::Elements(RECORDS as u64));

    let cognito = Cognito::with_users(users.clone());
    let app = demo_app(&cognito);
    group.bench_function("no-guard", |b| {
        b.iter(|| {
            let event = fresh(&event, &counter);
            let response = rt.block_on(dispatch(&app, event, "r", far_deadline()));
            black_box(response.expect("a response"))
        })
    });

    let cognito = Cognito::with_users(users);
    let table = dynamodb::Table::new(dynamodb::Mode::Normal);
    // No cooldown, so the same users can be reset on every iteration.
    let app = guarded_app(&cognito, &table, 0, false);
    group.bench_function("guard", |b| {
        b.iter(|| {
            let event = fresh(&event, &counter);
            let response = rt.block_on(dispatch(&app, event, "r", far_deadline()));
            black_box(response.expect("a response"))
        })
    });

    // The function's own work: every record refused before any SDK call.
    let cognito = Cognito::with_users(Vec::new());
    let app = demo_app(&cognito);
    let unknown_queue = event["Records"]
        .as_array()
        .map(|records| {
            let mut event = event.clone();
            for i in 0..records.len() {
                event["Records"][i]["eventSourceARN"] =
                    Value::from("arn:aws:sqs:us-west-2:123456789012:not-in-the-policy");
            }
            event
        })
        .unwrap_or_else(|| event.clone());
    group.bench_function("no-cognito-call", |b| {
        b.iter(|| {
            let event = fresh(&unknown_queue, &counter);
            let response = rt.block_on(dispatch(&app, event, "r", far_deadline()));
            black_box(response.expect("a response"))
        })
    });
    group.finish();
}

criterion_group!(benches, handler);
criterion_main!(benches);

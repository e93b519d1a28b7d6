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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cognito_reset::pipeline::App;
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
    // Audit lines are formatted and written, to a sink, by the function's subscriber (INFO, JSON
    // lines, as the template configures it).
    let _ = tracing::subscriber::set_global_default(cognito_reset::logging::subscriber(
        Some("INFO"),
        cognito_reset::logging::Format::Json,
        std::io::sink,
    ));
    // One thread, as the function runs (`src/main.rs`).
    let rt = tokio::runtime::Builder::new_current_thread()
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

/// Tracing's cost per record (issue 26): the batch on one thread (as the function runs it),
/// without and then with the guard, each under a subscriber without and with the X-Ray layer,
/// the invocation sampled and its spans flushed over UDP to a loopback socket (drained by a
/// thread) before the answer, as in the function. `no-guard-traced` less `no-guard` is tracing's
/// cost per record; `-traced-unsampled` and `-traced-unsent` split it (see `variants`). The
/// guarded pair's table grows with every iteration, so it is slower the later it runs.
fn traced(c: &mut Criterion) {
    use cognito_reset::logging;
    use cognito_reset::xray::Tracing;
    use tracing::Instrument;

    let daemon = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    daemon
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("a read timeout");
    let address = daemon.local_addr().expect("its address");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drained = std::sync::Arc::new(AtomicU64::new(0));
    let drain = {
        let (stop, drained) = (stop.clone(), drained.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                if daemon.recv(&mut buf).is_ok() {
                    drained.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let xray = Tracing::new(address, "bench").expect("tracing");
    // The function's own subscriber (`logging::init_with`), as the template configures it (INFO,
    // JSON lines), to a sink: without and with the X-Ray layer.
    let subscriber = |spans| {
        tracing::Dispatch::new(logging::subscriber_with(
            Some("INFO"),
            logging::Format::Json,
            std::io::sink,
            spans,
        ))
    };
    let plain = subscriber(None);
    let with_xray = subscriber(Some(xray.layer()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (users, event) = world();
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("sqs-batch-one-thread");
    group.throughput(Throughput::Elements(RECORDS as u64));
    // Without the guard, every iteration costs the same (the in-process table of the guarded
    // cases keeps every iteration's items): the pair whose difference is tracing's cost. The
    // traced cases' client has the function's interceptor, so each Cognito call is a span, as
    // in the function (without it, a traced record made one span, its own, where the function
    // makes four); the untraced case's has none, as the function's interceptor does nothing
    // when tracing is not configured.
    let cognito = Cognito::with_users(users.clone());
    let unguarded = demo_app(&cognito);
    let unguarded_traced = app(config(&[("POLICY", DEMO_POLICY)]), cognito.traced_client());
    let table = dynamodb::Table::new(dynamodb::Mode::Normal);
    let cognito = Cognito::with_users(users);
    let guarded = guarded_app(&cognito, &table, 0, false);
    // The trace header of one invocation, sampled or not.
    let header = |sampled: bool| {
        format!(
            "Root=1-{:08x}-{:024x};Parent={:016x};Sampled={}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            counter.fetch_add(1, Ordering::Relaxed),
            7u64,
            u8::from(sampled)
        )
    };
    // The traced variants: sampled and sent (as every case `-traced`), not sampled (the header's
    // `Sampled=0`: most invocations, under X-Ray's default sampling rule), and sampled but
    // dropped at the flush (the spans made, nothing translated or sent).
    let sent_any = std::sync::atomic::AtomicBool::new(false);
    let variants = [
        ("traced", true, true),
        ("traced-unsampled", false, true),
        ("traced-unsent", true, false),
    ];
    let cases = [
        ("no-guard", &unguarded, &unguarded_traced, &variants[..]),
        ("guard", &guarded, &guarded, &variants[..1]),
    ];
    // One traced invocation, as the function runs it: its span, the handler inside it, then the
    // flush (`sent`: by a minute from now; otherwise by now, which drops what it holds).
    let run_traced = |app: &Arc<App>, event: Value, trace_header: &str, sent: bool| {
        let span = xray.invocation("r", Some(trace_header));
        let response = rt.block_on(async {
            let response = dispatch(app, event, "r", far_deadline())
                .instrument(span)
                .await;
            let by = tokio::time::Instant::now()
                + std::time::Duration::from_secs(if sent { 60 } else { 0 });
            xray.flush(by).await;
            response
        });
        black_box(response.expect("a response"))
    };
    for (name, app, traced_app, variants) in cases {
        tracing::dispatcher::with_default(&plain, || {
            group.bench_function(name, |b| {
                b.iter(|| {
                    let event = fresh(&event, &counter);
                    let response = rt.block_on(dispatch(app, event, "r", far_deadline()));
                    black_box(response.expect("a response"))
                })
            });
        });
        for &(variant, sampled, sent) in variants {
            tracing::dispatcher::with_default(&with_xray, || {
                group.bench_function(format!("{name}-{variant}"), |b| {
                    b.iter(|| {
                        let event = fresh(&event, &counter);
                        sent_any.fetch_or(sent, Ordering::Relaxed);
                        run_traced(traced_app, event, &header(sampled), sent)
                    })
                });
            });
        }
    }
    // Tracing's cost measured in pairs: each iteration runs the batch untraced and traced
    // (sampled and sent, or not sampled), in turn (which goes first alternates). The cases above run one after
    // the other, so a slow minute of the machine falls on one of them and moves their
    // difference by more than the cost itself; here it falls on both runs of a pair. Criterion
    // times the traced runs; each pair's difference is kept and summarised after the group.
    let untraced = |event: Value| {
        tracing::dispatcher::with_default(&plain, || {
            let start = std::time::Instant::now();
            let response = rt.block_on(dispatch(&unguarded, event, "r", far_deadline()));
            black_box(response.expect("a response"));
            start.elapsed()
        })
    };
    let traced = |event: Value, sampled: bool| {
        let trace_header = header(sampled);
        tracing::dispatcher::with_default(&with_xray, || {
            let start = std::time::Instant::now();
            run_traced(&unguarded_traced, event, &trace_header, true);
            sent_any.fetch_or(sampled, Ordering::Relaxed);
            start.elapsed()
        })
    };
    // Per pair, µs a batch that the traced run took more (less, when negative).
    let pairs = [
        ("no-guard-traced-paired", true),
        ("no-guard-traced-unsampled-paired", false),
    ]
    .map(|(name, sampled)| (name, sampled, std::cell::RefCell::new(Vec::<f64>::new())));
    for (name, sampled, pairs) in &pairs {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let mut traced_took = std::time::Duration::ZERO;
                for i in 0..iters {
                    let (plain_event, traced_event) =
                        (fresh(&event, &counter), fresh(&event, &counter));
                    let (plain, with) = if i % 2 == 0 {
                        let plain = untraced(plain_event);
                        (plain, traced(traced_event, *sampled))
                    } else {
                        let with = traced(traced_event, *sampled);
                        (untraced(plain_event), with)
                    };
                    traced_took += with;
                    pairs
                        .borrow_mut()
                        .push((with.as_secs_f64() - plain.as_secs_f64()) * 1e6);
                }
                traced_took
            })
        });
    }
    group.finish();
    for (_, sampled, pairs) in &pairs {
        let what = if *sampled {
            "sampled, sent"
        } else {
            "not sampled"
        };
        report_pairs(what, &pairs.borrow());
    }
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    // Unless a filter left only the unsent case, spans were sent.
    assert!(
        drained.load(Ordering::Relaxed) > 0 || !sent_any.load(Ordering::Relaxed),
        "no span reached the socket"
    );
}

/// A paired case's summary: tracing's cost per record, the mean of the pairs' differences with
/// its 95% confidence interval (normal approximation; criterion's warm-up pairs included), and
/// the median.
fn report_pairs(what: &str, pairs: &[f64]) {
    if pairs.len() < 2 {
        return;
    }
    let per_record: Vec<f64> = pairs.iter().map(|d| d / RECORDS as f64).collect();
    let n = per_record.len() as f64;
    let mean = per_record.iter().sum::<f64>() / n;
    let variance = per_record.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let half_width = 1.96 * (variance / n).sqrt();
    let mut sorted = per_record;
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "tracing's cost per record ({what}), paired: mean {mean:+.1} us \
         (95% CI {:+.1} to {:+.1}), median {median:+.1} us, over {} pairs of batches of {RECORDS}",
        mean - half_width,
        mean + half_width,
        pairs.len()
    );
}

criterion_group!(benches, handler, traced);
criterion_main!(benches);

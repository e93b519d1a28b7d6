//! The Lambda function: configuration, the policy and the AWS clients are built once, then
//! every event goes to [`cognito_reset::sources::handle`].

// The SDK's credential and config loading futures nest deeper than the default limit.
#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cognito_reset::aws::ClientSettings;
use cognito_reset::aws::accounts::RoleSessions;
use cognito_reset::aws::bucket::{BucketStore, DynamoBucket};
use cognito_reset::aws::cognito::{self, CognitoSdk, Directory};
use cognito_reset::aws::events::{self, Bus, EventPublisher};
use cognito_reset::aws::guard::{self, Guard};
use cognito_reset::aws::parameters::{self, SsmParameter};
use cognito_reset::aws::roots;
use cognito_reset::aws::trace::AwsCalls;
use cognito_reset::config::{Config, Pacing, PolicySetting};
use cognito_reset::deadline::Deadline;
use cognito_reset::pipeline::App;
use cognito_reset::policy_source::{PolicyStore, RefreshSettings};
use cognito_reset::sources;
use cognito_reset::xray::Tracing;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use tracing::Instrument;

/// Timeout and attempts of the EventBridge and SSM calls (off the records' path).
const SIDE_CALLS: ClientSettings = ClientSettings {
    timeout: Duration::from_secs(2),
    max_attempts: 3,
};

/// Loads the system's TLS trust roots on a thread of its own while start-up goes on. The SDK
/// reads them (the bundle file [`roots::prefer_bundle`] chose) once per process, when the first
/// connector is built, which is at the first invocation's first AWS call (the connectors are
/// deferred: see `cognito_reset::aws::https_client`); reading them here, beside the
/// configuration and the clients, takes them out of that call. A connector built before the
/// thread is done waits for it (the roots are loaded once, behind a lock); nothing here can fail
/// start-up.
///
/// With tracing configured the same thread then compiles the X-Ray exporter's patterns
/// ([`cognito_reset::xray::warm_up`]), which the first flush would otherwise compile: after
/// the roots, because the first AWS call waits for those, and not on a thread of its own, which
/// on two cores took CPU from start-up (init about 2.5 ms longer).
fn warm_tls_roots(traced: bool) {
    use aws_smithy_http_client::{ConnectorBuilder, tls};
    let _ = std::thread::Builder::new()
        .name("tls-roots".to_owned())
        .spawn(move || {
            ConnectorBuilder::default()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .build();
            if traced {
                cognito_reset::xray::warm_up();
            }
        });
}

/// The roots chosen, then one runtime on the main thread.
///
/// A current-thread runtime: the records of a batch run concurrently as tasks of one thread,
/// which is all their work needs (waiting on AWS calls, microseconds of CPU between them), and
/// the function has a fraction of a core (Lambda gives 1,769 MB one vCPU; the template asks for
/// 128 MB). A multi-thread runtime's workers only took CPU from start-up and moved wake-ups
/// between threads: init and the first invocation took 2 to 3 ms longer with them (`make
/// bench-init`, `docs/development.md`).
fn main() -> Result<(), Error> {
    // SAFETY: first thing in `main`, before the runtime or any other thread exists.
    let roots = unsafe { roots::prefer_bundle() };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(roots))
}

async fn run(roots: roots::Roots) -> Result<(), Error> {
    warm_tls_roots(std::env::var_os("AWS_XRAY_DAEMON_ADDRESS").is_some());
    // Tracing only where the X-Ray daemon is (AWS_XRAY_DAEMON_ADDRESS): nothing is built
    // otherwise. Its layer sits beside the log lines', so it is made before the subscriber.
    let service =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "cognito-reset".to_owned());
    let (xray, xray_problem) = Tracing::from_env(&service);
    cognito_reset::logging::init_with(xray.as_ref().map(Tracing::layer));
    if let Some(problem) = xray_problem {
        tracing::warn!("{problem}");
    }
    let config = Config::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration: not starting");
    })?;
    if config.guard.is_none() {
        tracing::warn!(
            "GUARD_TABLE is not set: no idempotency or cooldown guard, so a redelivered or \
             retried request can reset a user twice"
        );
    }
    // One configuration load and one HTTP client for every client; its connectors (and the
    // system's TLS roots) are built at their first request, not here.
    let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(cognito_reset::aws::https_client())
        .load()
        .await;
    // How long the policy's first read took (zero for a fixed policy): start-up's one network call.
    let policy_read = Instant::now();
    let policy = match &config.policy {
        PolicySetting::Parameter { name, refresh } => {
            let client = aws_sdk_ssm::Client::from_conf(
                parameters::configure((&sdk_config).into(), SIDE_CALLS)
                    .interceptor(AwsCalls)
                    .build(),
            );
            let settings = RefreshSettings {
                interval: *refresh,
                guard_table: config.guard.is_some(),
                ..RefreshSettings::default()
            };
            let source = Box::new(SsmParameter::new(client, name));
            PolicyStore::load(source, settings, Instant::now())
                .await
                .inspect_err(|e| {
                    tracing::error!(error = %e, "the policy cannot be loaded: not starting");
                })?
        }
        PolicySetting::Fixed { policy, version } => {
            PolicyStore::fixed(Arc::clone(policy), version.clone())
        }
    };
    let policy_read = policy_read.elapsed();
    let snapshot = policy.current();
    tracing::info!(
        policy = %config.policy_source,
        policy_read_us = policy_read.as_micros() as u64,
        policy_version = %snapshot.version,
        rules = snapshot.policy.rule_count(),
        groups_needed = snapshot.policy.needs_groups(),
        dry_run = config.dry_run,
        max_concurrency = config.max_concurrency,
        guard_table = config.guard.as_ref().map(|g| g.table.as_str()).unwrap_or(""),
        reset_cooldown_secs = config.guard.as_ref().map(|g| g.cooldown.as_secs()),
        cognito_reset_rps = ?config.rates.account_recovery,
        cognito_read_rps = ?config.rates.read,
        cognito_resource_read_rps = ?config.rates.resource_read,
        pacing = match config.pacing {
            Pacing::Shared { .. } => "shared (the fleet's buckets in the guard table)",
            Pacing::Instance => "instance (quota / MAX_INSTANCES each)",
        },
        event_bus = config.events.as_ref().map(|e| e.bus.as_str()).unwrap_or(""),
        function_account = config.accounts.own.as_deref().unwrap_or(""),
        pool_roles = config.accounts.roles.iter().count(),
        tls_roots = %roots,
        "configuration loaded"
    );
    let cognito = aws_sdk_cognitoidentityprovider::Client::from_conf(
        cognito::configure((&sdk_config).into(), config.cognito)
            .interceptor(AwsCalls)
            .build(),
    );
    let table = config.guard.clone().map(|settings| {
        let client = aws_sdk_dynamodb::Client::from_conf(
            guard::configure((&sdk_config).into(), settings.client)
                .interceptor(AwsCalls)
                .build(),
        );
        (client, settings)
    });
    // The fleet's pacing buckets live in the guard's table, through the same client.
    let limiters = config.limiters(table.as_ref().map(|(client, settings)| {
        Arc::new(DynamoBucket::new(
            client.clone(),
            &settings.table,
            settings.client.timeout,
        )) as Arc<dyn BucketStore>
    }));
    let guard = table.map(|(client, settings)| {
        Guard::dynamodb(client, settings, config.dry_run, config.deadline_margin)
    });
    let events = config.events.as_ref().map(|events| {
        let client = aws_sdk_eventbridge::Client::from_conf(
            events::configure((&sdk_config).into(), SIDE_CALLS)
                .interceptor(AwsCalls)
                .build(),
        );
        Arc::new(Bus::new(client, &events.bus, &events.source)) as Arc<dyn EventPublisher>
    });
    // The pools of POOL_ROLES: their roles are assumed at their first call, not here.
    let sessions = Arc::new(RoleSessions::new(&sdk_config, SIDE_CALLS));
    let directory = Directory::over(
        CognitoSdk::new(cognito).with_roles(config.accounts.roles.clone(), sessions),
        config.cognito,
        config.deadline_margin,
        config.rates,
    )
    .with_limiters(limiters)
    .with_accounts(config.accounts.clone());
    let app = Arc::new(App::new(config, directory, guard, policy, events));
    let xray = xray.map(Arc::new);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = Arc::clone(&app);
        let xray = xray.clone();
        async move {
            let Some(xray) = xray else {
                return sources::handle(&app, event).await;
            };
            // The invocation's own trace header, never the process-wide _X_AMZN_TRACE_ID.
            let span = xray.invocation(
                &event.context.request_id,
                event.context.xray_trace_id.as_deref(),
            );
            let deadline = Deadline::from_epoch_ms(event.context.deadline, SystemTime::now());
            let answer = sources::handle(&app, event).instrument(span).await;
            // The invocation's span has ended: its spans go out before the answer does.
            xray.flush_within(deadline, app.config.deadline_margin)
                .await;
            answer
        }
    }))
    .await
}

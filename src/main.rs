//! The Lambda function: configuration and the AWS clients are built once, then every event
//! goes to [`cognito_reset::sources::handle`].

// The SDK's credential and config loading futures nest deeper than the default limit.
#![recursion_limit = "256"]

use std::sync::Arc;

use cognito_reset::config::Config;
use cognito_reset::directory::{self, Directory};
use cognito_reset::guard::{self, Guard};
use cognito_reset::pipeline::App;
use cognito_reset::sources;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration: not starting");
    })?;
    tracing::info!(
        policy = %config.policy_source,
        rules = config.policy.rule_count(),
        groups_needed = config.policy.needs_groups(),
        dry_run = config.dry_run,
        max_concurrency = config.max_concurrency,
        guard_table = config.guard.as_ref().map(|g| g.table.as_str()).unwrap_or(""),
        reset_cooldown_secs = config.guard.as_ref().map(|g| g.cooldown.as_secs()),
        cognito_reset_rps = ?config.rates.account_recovery,
        cognito_read_rps = ?config.rates.read,
        "configuration loaded"
    );
    if config.guard.is_none() {
        tracing::warn!(
            "GUARD_TABLE is not set: no idempotency or cooldown guard, so a redelivered or \
             retried request can reset a user twice"
        );
    }
    // One configuration load and one HTTP connector for every client.
    let sdk_config = aws_config::load_from_env().await;
    let cognito = aws_sdk_cognitoidentityprovider::Client::from_conf(
        directory::configure((&sdk_config).into(), config.cognito).build(),
    );
    let guard = config.guard.clone().map(|settings| {
        let client = aws_sdk_dynamodb::Client::from_conf(
            guard::configure((&sdk_config).into(), settings.client).build(),
        );
        Guard::new(client, settings, config.dry_run)
    });
    let app = Arc::new(App {
        directory: Directory::new(cognito, config.deadline_margin, config.rates),
        guard,
        config,
    });
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = Arc::clone(&app);
        async move { sources::handle(&app, event).await }
    }))
    .await
}

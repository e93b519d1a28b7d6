//! The Lambda function: configuration and the Cognito client are built once, then every event
//! goes to [`cognito_reset::sources::handle`].

// The SDK's credential and config loading futures nest deeper than the default limit.
#![recursion_limit = "256"]

use std::sync::Arc;

use aws_sdk_cognitoidentityprovider::{Client, config::Builder};
use cognito_reset::config::Config;
use cognito_reset::directory::{self, Directory};
use cognito_reset::service::App;
use cognito_reset::sources;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    cognito_reset::logging::init();
    let config = Config::from_env().inspect_err(|e| {
        tracing::error!(error = %e, "invalid configuration: not starting");
    })?;
    tracing::info!(
        policy = %config.policy_source,
        rules = config.policy.rule_count(),
        groups_needed = config.policy.needs_groups(),
        dry_run = config.dry_run,
        max_concurrency = config.max_concurrency,
        "configuration loaded"
    );
    let sdk_config = aws_config::load_from_env().await;
    let client =
        Client::from_conf(directory::configure(Builder::from(&sdk_config), config.cognito).build());
    let app = Arc::new(App {
        config,
        directory: Directory::new(client),
    });
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = Arc::clone(&app);
        async move { sources::handle(&app, event).await }
    }))
    .await
}

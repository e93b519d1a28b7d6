//! The AWS layer: what every AWS call shares, and one port per service.
//!
//! - **Client settings** ([`ClientSettings`]): the timeout of each attempt and the SDK's retries,
//!   applied alike to every client; Cognito's retries are this layer's own, per operation
//!   (see [`cognito`]), because the SDK cannot tell a reset that may have sent a code from one
//!   that did not.
//! - **Deadline arithmetic** ([`Stage`], [`ends_by`], [`timeouts_within`]): the one budget of an
//!   invocation's time. No call starts inside the margin; the stages then end at fixed points in
//!   it, so that a call allowed to start can always record its result.
//! - **One error classification** ([`error::classify`]) into the model's own
//!   [`Fault`](crate::failure::Fault) and [`Effect`](crate::failure::Effect).
//! - **Ports**: a trait and its SDK implementation for each service: Cognito ([`cognito`]; the
//!   pools in other accounts through [`accounts`]' assumed roles), the
//!   guard's table ([`guard`]), the event bus ([`events`]), the parameter store
//!   ([`parameters`]). The pipeline sees the traits, tests put fakes and fault injectors behind
//!   them, and the model ([`crate::outcome`], [`crate::record`], ...) sees none of this.

pub mod accounts;
pub mod bucket;
pub mod cognito;
pub mod error;
pub mod events;
pub mod guard;
pub mod parameters;
pub mod roots;
pub mod trace;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{ConnectorBuilder, tls};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use tokio::time::Instant;

use crate::deadline::Deadline;

/// The future of one port call.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Client settings taken from the function's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    /// Timeout of each attempt (connect included).
    pub timeout: Duration,
    /// Total attempts per call, first one included.
    pub max_attempts: u32,
}

impl ClientSettings {
    /// The standard retry mode with these attempts (the SDKs share the type).
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard().with_max_attempts(self.max_attempts)
    }

    /// A timeout for connecting and for each attempt (the SDKs share the type).
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.timeout)
            .operation_attempt_timeout(self.timeout)
            .build()
    }
}

/// Timeouts that end a whole call, retries included, within `budget`, each attempt within
/// `attempt` or the budget.
///
/// The connect timeout stays the client's own (`attempt`), whatever the budget: the SDK keeps
/// one connector (its TLS set-up and its pool of open connections) per connect timeout, so one
/// that followed each call's budget would cost a new connector, and a new connection, per call
/// (and grow the SDK's cache of connectors). The whole call still ends within the budget.
pub fn timeouts_within(attempt: Duration, budget: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(attempt)
        .operation_attempt_timeout(attempt.min(budget))
        .operation_timeout(budget)
        .build()
}

/// The SDK's HTTP client, whose connectors (and the TLS trust roots they load from the system)
/// are built when a client first sends a request, not when it is constructed: the SDK builds
/// one for every client it constructs (to load the roots early), which put the loading of the
/// system's root certificates, and a TLS set-up per client, into the function's start-up.
#[derive(Debug, Clone)]
pub struct DeferredHttpClient(SharedHttpClient);

impl HttpClient for DeferredHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// One HTTPS client for every AWS client: the SDK's default (hyper 1, rustls with aws-lc, a
/// proxy from the environment), sharing one connector per connect timeout, each built at its
/// first request ([`DeferredHttpClient`]). Give it to `aws_config` so that every client (and
/// the configuration's own providers) use it.
pub fn https_client() -> SharedHttpClient {
    let client =
        aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
            let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ));
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.build()
        });
    SharedHttpClient::new(DeferredHttpClient(client))
}

/// Where a call stands in a record's life, and so by when it must be done.
///
/// With `DEADLINE_MARGIN_MS` = m: no call of any stage *starts* with less than m left (a record
/// that would is RETRY `deadline`); then
///
/// | stage | ends by | what |
/// |---|---|---|
/// | `Lookup` | deadline − m | `AdminGetUser`, `AdminListGroupsForUser`, the guard's key and claim |
/// | `Reset` | deadline − m/2 | `AdminResetUserPassword` (cut short, it may have sent a code) |
/// | `Record` | deadline − m/4 | the guard's completion writes: a reset that was answered is always recorded |
/// | `Publish` | deadline − m/8 | the outcome events; the rest is the response's |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Lookup,
    Reset,
    Record,
    Publish,
}

impl Stage {
    /// How much of the margin is left when this stage must be done.
    pub fn reserve(self, margin: Duration) -> Duration {
        match self {
            Stage::Lookup => margin,
            Stage::Reset => margin / 2,
            Stage::Record => margin / 4,
            Stage::Publish => margin / 8,
        }
    }
}

/// The moment a call of `stage` must be done by.
pub fn ends_by(deadline: Deadline, margin: Duration, stage: Stage) -> Instant {
    deadline.less(stage.reserve(margin))
}

/// The time a call of `stage` may take from now (zero: none left).
pub fn budget(deadline: Deadline, margin: Duration, stage: Stage) -> Duration {
    ends_by(deadline, margin, stage).saturating_duration_since(Instant::now())
}

/// Whether a call of any stage may still start (at least the margin is left).
pub fn may_start(deadline: Deadline, margin: Duration) -> bool {
    !deadline.too_close(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_budget_shortens_the_call_but_keeps_the_clients_connect_timeout() {
        let attempt = Duration::from_secs(1);
        for budget in [
            Duration::from_millis(3),
            Duration::from_millis(700),
            Duration::from_secs(9),
        ] {
            let timeouts = timeouts_within(attempt, budget);
            assert_eq!(timeouts.connect_timeout(), Some(attempt), "{budget:?}");
            assert_eq!(
                timeouts.operation_attempt_timeout(),
                Some(attempt.min(budget))
            );
            assert_eq!(timeouts.operation_timeout(), Some(budget));
        }
    }
}

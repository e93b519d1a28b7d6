//! The accounts port: credentials for the pools `POOL_ROLES` maps to a role in another account.
//!
//! One [`AssumeRoleProvider`] per role (session name `cognito-reset`, the external id when
//! given), built at the first call that needs it, never at start-up: nothing here touches the
//! network until a mapped pool is asked for. The providers share the function's configuration
//! (its own credentials, region and HTTP client: one connector pool for every client) and one
//! identity cache ([`RoleSessions::identity_cache`]), so each role is assumed once per credential
//! lifetime per instance, and again before its credentials expire (from [`REFRESH_BEFORE_EXPIRY`]
//! to half of it before, the SDK's jitter): by the record that first finds them near expiry,
//! never by every record.
//!
//! A failed `AssumeRole` fails the Cognito call that needed it before anything was sent:
//! [`super::error::classify`] finds the credentials error and classifies STS's answer
//! (`misconfigured`, `throttled` or `unavailable`, never an ambiguous outcome).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::identity::IdentityCache;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, future as credentials_future,
};
use aws_smithy_runtime_api::client::identity::SharedIdentityCache;
use tokio::sync::OnceCell;

use super::ClientSettings;
use crate::pool_roles::PoolRole;

/// The role session's name, as the target account's CloudTrail shows it.
pub const SESSION_NAME: &str = "cognito-reset";
/// Assumed credentials are renewed up to this long before they expire (at least half of it;
/// they last an hour).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// The assumed-role credentials of every mapped role, created on first use.
pub struct RoleSessions {
    /// The function's configuration, with the STS client's timeout and retries.
    sts: SdkConfig,
    cache: SharedIdentityCache,
    providers: Mutex<HashMap<PoolRole, SharedCredentialsProvider>>,
}

impl fmt::Debug for RoleSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No external id in the logs.
        let roles = self.providers.lock().map(|p| p.len()).unwrap_or(0);
        f.debug_struct("RoleSessions")
            .field("roles_in_use", &roles)
            .finish_non_exhaustive()
    }
}

impl RoleSessions {
    /// Sessions over the function's configuration (its credentials assume the roles), each
    /// `AssumeRole` within `settings` (attempt timeout, attempts with the SDK's standard retry).
    pub fn new(config: &SdkConfig, settings: ClientSettings) -> RoleSessions {
        let sts = config
            .to_builder()
            .retry_config(settings.retry_config())
            .timeout_config(settings.timeout_config())
            .build();
        RoleSessions {
            sts,
            cache: IdentityCache::lazy()
                .buffer_time(REFRESH_BEFORE_EXPIRY)
                .build(),
            providers: Mutex::default(),
        }
    }

    /// The identity cache every mapped pool's client uses (one entry per role).
    pub fn identity_cache(&self) -> SharedIdentityCache {
        self.cache.clone()
    }

    /// The credentials of `role`: one provider per role (so one cache entry, shared by the
    /// role's clients in every region), created now but calling STS only when asked.
    pub fn credentials(&self, role: &PoolRole) -> SharedCredentialsProvider {
        let mut providers = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        providers
            .entry(role.clone())
            .or_insert_with(|| {
                SharedCredentialsProvider::new(LazyAssumeRole {
                    role: role.clone(),
                    sts: self.sts.clone(),
                    provider: OnceCell::new(),
                })
            })
            .clone()
    }
}

/// `AssumeRoleProvider` built at its first use (its builder is async, and sets up an STS client).
struct LazyAssumeRole {
    role: PoolRole,
    sts: SdkConfig,
    provider: OnceCell<AssumeRoleProvider>,
}

impl fmt::Debug for LazyAssumeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyAssumeRole")
            .field("role_arn", &self.role.role_arn.as_str())
            .field(
                "external_id",
                &self.role.external_id.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

impl LazyAssumeRole {
    async fn provider(&self) -> &AssumeRoleProvider {
        self.provider
            .get_or_init(|| async {
                let mut builder = AssumeRoleProvider::builder(self.role.role_arn.as_str())
                    .session_name(SESSION_NAME)
                    .configure(&self.sts);
                if let Some(id) = &self.role.external_id {
                    builder = builder.external_id(id);
                }
                builder.build().await
            })
            .await
    }
}

impl ProvideCredentials for LazyAssumeRole {
    fn provide_credentials<'a>(&'a self) -> credentials_future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        credentials_future::ProvideCredentials::new(async move {
            tracing::info!(
                role_arn = self.role.role_arn.as_str(),
                "assuming the role of a user pool in another account"
            );
            let assumed = self.provider().await.provide_credentials();
            match super::trace::assume_role_span() {
                None => assumed.await,
                Some(span) => tracing::Instrument::instrument(assumed, span).await,
            }
        })
    }
}

//! The Cognito port: the five calls the service makes, paced, retried and bounded by the
//! invocation's deadline.
//!
//! [`CognitoApi`] is one attempt of one call ([`CognitoSdk`] over the SDK, with the SDK's own
//! retries off); [`Directory`] is what the pipeline calls: it waits for the rate limiter's turn,
//! gives each attempt the time left in its [`Stage`], and retries by the operation's policy:
//!
//! - lookups (`AdminGetUser`, `AdminListGroupsForUser`) retry throttling, outages and 5xx;
//! - `AdminResetUserPassword` is sent again **only** after an answer that proves nothing
//!   happened (throttling, a connection refused before sending), never after a timeout, a 5xx or
//!   an unreadable answer (the user may have a code), and never after `LimitExceededException`
//!   (a retry only burns the user's attempts, or the pool's day of messages);
//! - `AdminCreateUser` with `MessageAction=RESEND` (an invited user's invitation sent again)
//!   mails a new temporary password, so it is retried exactly like a reset;
//! - `AdminUserGlobalSignOut` is idempotent (signing out twice ends the same sessions), so it is
//!   retried like a lookup.
//!
//! Cognito's limits are told apart by `LimitExceededException`'s message ([`limit_kind`]):
//! "Exceeded daily email limit ..." (or SMS) is `delivery-limit`, "Attempt limit exceeded ..."
//! `attempt-limit`, any other message stays `throttled`. None of them cuts the pacing rate
//! (they are not the account's request quota). The pool's Lambda triggers on a reset (or a
//! resent invitation): `UserLambdaValidationException` (the trigger raised an error) and
//! `InvalidLambdaResponseException` (its answer is unreadable) come from the synchronous
//! custom-message trigger, which runs before Cognito sends anything, so they prove nothing was
//! sent (`trigger-refused`, `trigger-invalid-response`); `UnexpectedLambdaException` (the
//! trigger could not be run to its end: a timeout, Lambda's throttling or outage) does not prove
//! it, since the function may have run, so it is ambiguous like a timeout (`reset-unconfirmed`).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_sdk_cognitoidentityprovider::config::retry::RetryConfig;
use aws_sdk_cognitoidentityprovider::error::SdkError;
use aws_sdk_cognitoidentityprovider::operation::RequestId;
use aws_sdk_cognitoidentityprovider::operation::admin_create_user::AdminCreateUserError;
use aws_sdk_cognitoidentityprovider::operation::admin_get_user::AdminGetUserError;
use aws_sdk_cognitoidentityprovider::operation::admin_list_groups_for_user::AdminListGroupsForUserError;
use aws_sdk_cognitoidentityprovider::operation::admin_reset_user_password::AdminResetUserPasswordError;
use aws_sdk_cognitoidentityprovider::operation::admin_user_global_sign_out::AdminUserGlobalSignOutError;
use aws_sdk_cognitoidentityprovider::types::MessageActionType;
use aws_sdk_cognitoidentityprovider::{Client, config};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::timeout::TimeoutConfig;
use tokio::time::Instant;

use super::accounts::RoleSessions;
use super::error::classify;
use super::{BoxFuture, ClientSettings, Stage, ends_by};
use crate::deadline::Deadline;
use crate::failure::{CognitoError, CognitoErrorKind, Effect, cognito_operation as op};
use crate::limiter::{Category, Intent, Limiters, Priority, Rates, Scope};
use crate::pool_roles::{Accounts, PoolRole, PoolRoles};
use crate::request::{ClientMetadata, UserPoolId, Username};

/// Upper bound on `AdminListGroupsForUser` pages (60 groups each), against a looping token.
const MAX_GROUP_PAGES: usize = 100;
/// The first retry's pause; each later one doubles it.
const RETRY_BASE: Duration = Duration::from_millis(50);
/// Cognito's limits (attempts per user, messages per day, ...): never retried.
const LIMIT_EXCEEDED: &str = "LimitExceededException";
/// Errors after which Cognito may have sent the code although it answered with an error: a
/// trigger that could not be run to its end may have been running.
const MAY_HAVE_SENT: &[&str] = &["UnexpectedLambdaException"];

/// Which of Cognito's limits a `LimitExceededException` names, by its message: the daily email
/// (or SMS) limit of the pool's sender, the per-user attempt limit, or (any other message, or
/// none) throttling as before.
pub fn limit_kind(message: Option<&str>) -> CognitoErrorKind {
    let message = message.unwrap_or_default().to_ascii_lowercase();
    if message.contains("daily")
        && message.contains("limit")
        && (message.contains("email") || message.contains("sms"))
    {
        CognitoErrorKind::DeliveryLimit
    } else if message.contains("attempt limit exceeded") {
        CognitoErrorKind::AttemptLimit
    } else {
        CognitoErrorKind::Throttled
    }
}

/// The user as Cognito knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The canonical username (may differ from what the caller sent: alias, case, `sub`).
    pub username: String,
    pub email: Option<String>,
    pub preferred_username: Option<String>,
    pub sub: Option<String>,
    pub enabled: bool,
    /// Cognito's `UserStatus`, e.g. `CONFIRMED`.
    pub status: Option<String>,
}

/// One page of a user's groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupsPage {
    pub groups: Vec<String>,
    pub next_token: Option<String>,
}

/// One attempt of one Cognito call, within `timeout`.
pub trait CognitoApi: Send + Sync + std::fmt::Debug {
    /// `AdminGetUser`.
    fn get_user<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<UserRecord, CognitoError>>;

    /// One page of `AdminListGroupsForUser`.
    fn list_groups<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        next_token: Option<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<GroupsPage, CognitoError>>;

    /// `AdminResetUserPassword`; Cognito's request id.
    fn reset_password<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        client_metadata: &'a ClientMetadata,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>>;

    /// `AdminCreateUser` with `MessageAction=RESEND`: an invited user's invitation (a new
    /// temporary password) sent again; Cognito's request id.
    fn resend_invitation<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        client_metadata: &'a ClientMetadata,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>>;

    /// `AdminUserGlobalSignOut`: the user's refresh tokens revoked; Cognito's request id.
    fn global_sign_out<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>>;
}

/// Why a directory call gave no answer from Cognito.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Cognito(#[from] CognitoError),
    /// The call could not start, or finish, within its stage's time (including the wait for
    /// the rate limiter's turn). `started`: it was sent and cut short.
    #[error("not done: too little time left before the invocation's deadline")]
    Deadline { started: bool },
}

impl DirectoryError {
    /// Whether the call may have taken effect although it failed.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            DirectoryError::Cognito(e) => e.outcome_unknown(),
            DirectoryError::Deadline { started } => *started,
        }
    }
}

impl From<DirectoryError> for crate::outcome::ResetError {
    fn from(error: DirectoryError) -> Self {
        match error {
            DirectoryError::Cognito(e) => crate::outcome::ResetError::Cognito(e),
            DirectoryError::Deadline { .. } => crate::outcome::ResetError::Deadline,
        }
    }
}

/// Which failures an operation sends again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryPolicy {
    /// Lookups: anything transient.
    Lookup,
    /// Resets (and resent invitations): only what proves nothing happened.
    Reset,
}

impl RetryPolicy {
    fn retries(self, error: &CognitoError) -> bool {
        use CognitoErrorKind as K;
        if error.service_code.as_deref() == Some(LIMIT_EXCEEDED) {
            return false;
        }
        match self {
            RetryPolicy::Lookup => {
                matches!(error.kind, K::Throttled | K::Unavailable | K::Upstream)
            }
            RetryPolicy::Reset => {
                error.effect == Effect::None && matches!(error.kind, K::Throttled | K::Unavailable)
            }
        }
    }
}

/// The Cognito operations as the pipeline uses them: paced per (account, region, category) with the
/// caller's [`Priority`], retried per operation, each bounded by its stage of the invocation's
/// deadline. A throttled answer (`TooManyRequestsException`) cuts the pacing rate.
#[derive(Debug)]
pub struct Directory {
    api: Arc<dyn CognitoApi>,
    /// `COGNITO_TIMEOUT_MS`: one attempt's bound, which the deadline only shortens.
    attempt_timeout: Duration,
    /// `COGNITO_MAX_ATTEMPTS`.
    max_attempts: u32,
    margin: Duration,
    limiters: Limiters,
    /// The account of each pool (`FUNCTION_ACCOUNT_ID`, `POOL_ROLES`): pacing is per account.
    accounts: Accounts,
}

impl Directory {
    /// The directory over `api`. `margin` is `DEADLINE_MARGIN_MS`.
    pub fn new(
        api: Arc<dyn CognitoApi>,
        settings: ClientSettings,
        margin: Duration,
        rates: Rates,
    ) -> Self {
        Directory {
            api,
            attempt_timeout: settings.timeout,
            max_attempts: settings.max_attempts.max(1),
            margin,
            limiters: Limiters::new(rates),
            accounts: Accounts::default(),
        }
    }

    /// The same directory, pacing each pool in its account (see [`Accounts::account_of`]).
    pub fn with_accounts(self, accounts: Accounts) -> Self {
        Directory { accounts, ..self }
    }

    /// The account `pool` is reached in (`None`: the function's own, not configured).
    pub fn account_of(&self, pool: &UserPoolId) -> Option<&str> {
        self.accounts.account_of(pool)
    }

    /// Where `pool`'s quotas apply: its account and region.
    fn scope<'p>(&'p self, pool: &'p UserPoolId) -> Scope<'p> {
        Scope {
            account: self.accounts.account_of(pool),
            region: pool.region(),
        }
    }

    /// The same directory, paced by `limiters` (e.g. the fleet's shared buckets).
    pub fn with_limiters(self, limiters: Limiters) -> Self {
        Directory { limiters, ..self }
    }

    /// The pacing in force.
    pub fn limiters(&self) -> &Limiters {
        &self.limiters
    }

    /// Promises a record its reset's turn in `pool`'s region before the record spends anything:
    /// `Deadline` (not started) when the turn could not come before `deadline − margin` even
    /// at the whole rate. Keep the intent until the reset asks for its turn.
    pub fn reset_intent(
        &self,
        pool: &UserPoolId,
        deadline: Deadline,
    ) -> Result<Intent, DirectoryError> {
        self.limiters
            .intend(
                self.scope(pool),
                Category::UserAccountRecovery,
                deadline.less(self.margin),
            )
            .map_err(|_| DirectoryError::Deadline { started: false })
    }

    /// The directory over the SDK client (see [`configure`]): each attempt within the client's
    /// attempt timeout, `settings.max_attempts` attempts.
    pub fn sdk(client: Client, settings: ClientSettings, margin: Duration, rates: Rates) -> Self {
        Directory::over(CognitoSdk::new(client), settings, margin, rates)
    }

    /// The directory over an SDK port (e.g. [`CognitoSdk::with_roles`]), as [`Directory::sdk`].
    pub fn over(sdk: CognitoSdk, settings: ClientSettings, margin: Duration, rates: Rates) -> Self {
        let settings = ClientSettings {
            timeout: sdk.attempt_timeout().unwrap_or(settings.timeout),
            ..settings
        };
        Directory::new(Arc::new(sdk), settings, margin, rates)
    }

    /// Runs `attempt` by `policy`: a turn of `category` before each attempt, each attempt within
    /// what is left of `stage`.
    #[allow(clippy::too_many_arguments)]
    async fn call<'a, T, F>(
        &'a self,
        pool: &'a UserPoolId,
        category: Category,
        priority: Priority,
        stage: Stage,
        policy: RetryPolicy,
        deadline: Deadline,
        attempt: F,
    ) -> Result<T, DirectoryError>
    where
        F: Fn(Duration) -> BoxFuture<'a, Result<T, CognitoError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            // No attempt starts inside the margin, nor after its turn would come too late.
            let latest = deadline.less(self.margin);
            // (a `pacing.wait` span when the turn is not at hand)
            self.limiters
                .acquire(self.scope(pool), category, priority, latest)
                .await
                .map_err(|_| DirectoryError::Deadline { started: false })?;
            let ends = ends_by(deadline, self.margin, stage);
            let budget = ends.saturating_duration_since(Instant::now());
            // Nothing is sent without time for an answer: at exactly the margin, a lookup's
            // stage has already ended.
            if deadline.too_close(self.margin) || budget.is_zero() {
                return Err(DirectoryError::Deadline { started: false });
            }
            let timeout = self.attempt_timeout.min(budget);
            let error = match attempt(timeout).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            // Cut at the stage's end: the deadline, not an outage.
            if error.kind == CognitoErrorKind::Unavailable
                && error.effect == Effect::Unknown
                && timeout == budget
                && Instant::now() + Duration::from_millis(1) >= ends
            {
                tracing::warn!(
                    operation = error.operation,
                    "Cognito call cut short by the invocation's deadline"
                );
                return Err(DirectoryError::Deadline { started: true });
            }
            // Someone else uses the same quota: slow down (the whole fleet, with the table). Not
            // for STS's throttling of the pool's role (`sts:` codes): another quota; nor for any
            // `LimitExceededException` (a delivery or attempt limit, kinds of their own, or one
            // with an unknown message): a limit of the pool or the user, not the request rate.
            if error.kind == CognitoErrorKind::Throttled
                && error.service_code.as_deref() != Some(LIMIT_EXCEEDED)
                && !error
                    .service_code
                    .as_deref()
                    .is_some_and(|c| c.starts_with(super::error::STS_PREFIX))
            {
                self.limiters.throttled(self.scope(pool), category);
            }
            if tries >= self.max_attempts || !policy.retries(&error) {
                return Err(error.into());
            }
            let pause = RETRY_BASE * 2u32.saturating_pow(tries - 1);
            if Instant::now() + pause >= latest {
                return Err(error.into());
            }
            tracing::debug!(
                operation = error.operation,
                code = error.code(),
                tries,
                "retrying a Cognito call"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// `AdminGetUser`: resolves a username, alias or `sub` to the canonical user.
    pub async fn get_user(
        &self,
        pool: &UserPoolId,
        username: &Username,
        priority: Priority,
        deadline: Deadline,
    ) -> Result<UserRecord, DirectoryError> {
        self.call(
            pool,
            Category::UserRead,
            priority,
            Stage::Lookup,
            RetryPolicy::Lookup,
            deadline,
            |timeout| self.api.get_user(pool, username.as_str(), timeout),
        )
        .await
    }

    /// `AdminListGroupsForUser`, all pages.
    pub async fn list_groups(
        &self,
        pool: &UserPoolId,
        canonical_username: &str,
        priority: Priority,
        deadline: Deadline,
    ) -> Result<Vec<String>, DirectoryError> {
        let mut groups = Vec::new();
        let mut next_token: Option<String> = None;
        for _ in 0..MAX_GROUP_PAGES {
            let token = next_token.take();
            let page = self
                .call(
                    pool,
                    Category::UserResourceRead,
                    priority,
                    Stage::Lookup,
                    RetryPolicy::Lookup,
                    deadline,
                    |timeout| {
                        self.api
                            .list_groups(pool, canonical_username, token.clone(), timeout)
                    },
                )
                .await?;
            groups.extend(page.groups);
            match page.next_token {
                Some(token) if !token.is_empty() => next_token = Some(token),
                _ => return Ok(groups),
            }
        }
        Err(DirectoryError::Cognito(CognitoError::new(
            CognitoErrorKind::Upstream,
            op::LIST_GROUPS,
            Effect::None,
            format!("more than {MAX_GROUP_PAGES} pages of groups"),
        )))
    }

    /// `AdminResetUserPassword` on the canonical username; returns Cognito's request id.
    pub async fn reset_password(
        &self,
        pool: &UserPoolId,
        canonical_username: &str,
        client_metadata: &ClientMetadata,
        priority: Priority,
        deadline: Deadline,
    ) -> Result<Option<String>, DirectoryError> {
        self.call(
            pool,
            Category::UserAccountRecovery,
            priority,
            Stage::Reset,
            RetryPolicy::Reset,
            deadline,
            |timeout| {
                self.api
                    .reset_password(pool, canonical_username, client_metadata, timeout)
            },
        )
        .await
    }
}

impl Directory {
    /// `AdminCreateUser` with `MessageAction=RESEND` on the canonical username (an invited user
    /// who never signed in); returns Cognito's request id. Retried like a reset: only after an
    /// answer that proves nothing was sent.
    pub async fn resend_invitation(
        &self,
        pool: &UserPoolId,
        canonical_username: &str,
        client_metadata: &ClientMetadata,
        priority: Priority,
        deadline: Deadline,
    ) -> Result<Option<String>, DirectoryError> {
        self.call(
            pool,
            Category::UserCreation,
            priority,
            Stage::Reset,
            RetryPolicy::Reset,
            deadline,
            |timeout| {
                self.api
                    .resend_invitation(pool, canonical_username, client_metadata, timeout)
            },
        )
        .await
    }

    /// `AdminUserGlobalSignOut` on the canonical username; returns Cognito's request id.
    /// Idempotent, so retried like a lookup.
    pub async fn global_sign_out(
        &self,
        pool: &UserPoolId,
        canonical_username: &str,
        priority: Priority,
        deadline: Deadline,
    ) -> Result<Option<String>, DirectoryError> {
        self.call(
            pool,
            Category::UserUpdate,
            priority,
            Stage::Reset,
            RetryPolicy::Lookup,
            deadline,
            |timeout| self.api.global_sign_out(pool, canonical_username, timeout),
        )
        .await
    }
}

/// The SDK implementation: one client per region (the pool id's prefix), and per (role, region)
/// for the pools of `POOL_ROLES`, created on first use from one configuration and sharing its
/// HTTP connector.
#[derive(Debug)]
pub struct CognitoSdk {
    base: config::Builder,
    /// The client's connect timeout, kept on every attempt (see [`super::timeouts_within`]).
    connect: Duration,
    default: Client,
    default_region: Option<String>,
    clients: RwLock<HashMap<String, Client>>,
    /// `POOL_ROLES` and the sessions of its roles.
    roles: Option<(PoolRoles, Arc<RoleSessions>)>,
    role_clients: RwLock<HashMap<(PoolRole, String), Client>>,
}

impl CognitoSdk {
    /// Wraps a client configured with [`configure`].
    pub fn new(client: Client) -> CognitoSdk {
        CognitoSdk {
            base: client.config().to_builder(),
            connect: client
                .config()
                .timeout_config()
                .and_then(|t| t.connect_timeout())
                .unwrap_or(Duration::from_millis(DEFAULT_TIMEOUT_MS)),
            default_region: client.config().region().map(|r| r.as_ref().to_owned()),
            default: client,
            clients: RwLock::default(),
            roles: None,
            role_clients: RwLock::default(),
        }
    }

    /// The same port, reaching the pools of `roles` through their role's credentials.
    pub fn with_roles(self, roles: PoolRoles, sessions: Arc<RoleSessions>) -> CognitoSdk {
        CognitoSdk {
            roles: (!roles.is_empty()).then_some((roles, sessions)),
            ..self
        }
    }

    /// The client's attempt timeout, when it has one.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.default
            .config()
            .timeout_config()
            .and_then(|t| t.operation_attempt_timeout())
    }

    /// The client of a pool `POOL_ROLES` maps: one per (role, region), with the role's
    /// credentials (assumed at the first call, see [`RoleSessions`]).
    fn role_client(&self, role: &PoolRole, sessions: &RoleSessions, region: &str) -> Client {
        cached(
            &self.role_clients,
            &(role.clone(), region.to_owned()),
            || {
                Client::from_conf(
                    self.base
                        .clone()
                        .region(config::Region::new(region.to_owned()))
                        .credentials_provider(sessions.credentials(role))
                        .identity_cache(sessions.identity_cache())
                        .build(),
                )
            },
        )
    }

    /// The client for a pool's region.
    pub fn client_for(&self, pool: &UserPoolId) -> Client {
        let region = pool.region();
        if let Some((roles, sessions)) = &self.roles
            && let Some(role) = roles.role_of(pool.as_str())
        {
            return self.role_client(role, sessions, region);
        }
        if self.default_region.as_deref() == Some(region) {
            return self.default.clone();
        }
        cached(&self.clients, region, || {
            Client::from_conf(
                self.base
                    .clone()
                    .region(config::Region::new(region.to_owned()))
                    .build(),
            )
        })
    }

    /// One attempt within `timeout`, over the client's connector.
    fn attempt(&self, timeout: Duration) -> config::Builder {
        // The connect timeout stays the client's: one connector per client (see
        // `timeouts_within`).
        config::Builder::new().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.connect)
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout)
                .build(),
        )
    }
}

/// The client under `key` in `clients`, built by `build` at its first use (a read lock for
/// every later call).
fn cached<K, Q>(
    clients: &RwLock<HashMap<K, Client>>,
    key: &Q,
    build: impl FnOnce() -> Client,
) -> Client
where
    K: Borrow<Q> + Eq + Hash,
    Q: ToOwned<Owned = K> + Eq + Hash + ?Sized,
{
    if let Some(client) = clients.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return client.clone();
    }
    let mut clients = clients.write().unwrap_or_else(|e| e.into_inner());
    clients.entry(key.to_owned()).or_insert_with(build).clone()
}

impl CognitoApi for CognitoSdk {
    fn get_user<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<UserRecord, CognitoError>> {
        Box::pin(async move {
            let output = self
                .client_for(pool)
                .admin_get_user()
                .user_pool_id(pool.as_str())
                .username(username)
                .customize()
                .config_override(self.attempt(timeout))
                .send()
                .await
                .map_err(|e| failed(op::GET_USER, e))?;
            let attribute = |name: &str| {
                output
                    .user_attributes()
                    .iter()
                    .find(|a| a.name() == name)
                    .and_then(|a| a.value())
                    .map(str::to_owned)
            };
            Ok(UserRecord {
                username: output.username().to_owned(),
                email: attribute("email"),
                preferred_username: attribute("preferred_username"),
                sub: attribute("sub"),
                enabled: output.enabled(),
                status: output.user_status().map(|s| s.as_str().to_owned()),
            })
        })
    }

    fn list_groups<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        next_token: Option<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<GroupsPage, CognitoError>> {
        Box::pin(async move {
            let output = self
                .client_for(pool)
                .admin_list_groups_for_user()
                .user_pool_id(pool.as_str())
                .username(username)
                .set_next_token(next_token)
                .customize()
                .config_override(self.attempt(timeout))
                .send()
                .await
                .map_err(|e| failed(op::LIST_GROUPS, e))?;
            Ok(GroupsPage {
                groups: output
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_name().map(str::to_owned))
                    .collect(),
                next_token: output.next_token().map(str::to_owned),
            })
        })
    }

    fn reset_password<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        client_metadata: &'a ClientMetadata,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>> {
        Box::pin(async move {
            let metadata = (!client_metadata.is_empty()).then(|| client_metadata.entries().clone());
            let output = self
                .client_for(pool)
                .admin_reset_user_password()
                .user_pool_id(pool.as_str())
                .username(username)
                .set_client_metadata(metadata.map(|m| m.into_iter().collect()))
                .customize()
                .config_override(self.attempt(timeout))
                .send()
                .await
                .map_err(|e| failed(op::RESET_PASSWORD, e))?;
            Ok(output.request_id().map(str::to_owned))
        })
    }

    fn resend_invitation<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        client_metadata: &'a ClientMetadata,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>> {
        Box::pin(async move {
            let metadata = (!client_metadata.is_empty()).then(|| client_metadata.entries().clone());
            let output = self
                .client_for(pool)
                .admin_create_user()
                .user_pool_id(pool.as_str())
                .username(username)
                .message_action(MessageActionType::Resend)
                .set_client_metadata(metadata.map(|m| m.into_iter().collect()))
                .customize()
                .config_override(self.attempt(timeout))
                .send()
                .await
                .map_err(|e| failed(op::CREATE_USER, e))?;
            Ok(output.request_id().map(str::to_owned))
        })
    }

    fn global_sign_out<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>> {
        Box::pin(async move {
            let output = self
                .client_for(pool)
                .admin_user_global_sign_out()
                .user_pool_id(pool.as_str())
                .username(username)
                .customize()
                .config_override(self.attempt(timeout))
                .send()
                .await
                .map_err(|e| failed(op::GLOBAL_SIGN_OUT, e))?;
            Ok(output.request_id().map(str::to_owned))
        })
    }
}

/// Classifies a failed call: the operation's modeled errors first, then, on purpose, the
/// shared table of codes.
fn failed<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> CognitoError
where
    E: Modeled + ProvideErrorMetadata,
    E: std::error::Error + Send + Sync + 'static,
{
    let classified = classify(&error, &[]);
    let request_id = error.request_id().map(str::to_owned);
    let code = classified.code.as_deref();
    let kind = match &error {
        SdkError::ServiceError(context) => context.err().modeled_kind().unwrap_or_else(|| {
            if code == Some(LIMIT_EXCEEDED) {
                // An operation that does not model it: the message still tells the limit.
                limit_kind(context.err().message())
            } else {
                classified.fault.into()
            }
        }),
        _ => classified.fault.into(),
    };
    let may_have_sent = match &error {
        SdkError::ServiceError(context) => context.err().may_have_sent(),
        _ => false,
    };
    let effect = if may_have_sent || code.is_some_and(|c| MAY_HAVE_SENT.contains(&c)) {
        Effect::Unknown
    } else {
        classified.effect
    };
    CognitoError::new(kind, operation, effect, error).with_ids(request_id, classified.code)
}

/// A modeled operation error that knows its kind.
trait Modeled {
    fn modeled_kind(&self) -> Option<CognitoErrorKind>;

    /// Whether the call may have been performed although this error says it failed (whatever
    /// the HTTP status): a trigger that could not be run to its end.
    fn may_have_sent(&self) -> bool {
        false
    }
}

/// The two lookups share one modeled error set, so they classify alike.
macro_rules! lookup_error_kinds {
    ($($error:ty),+) => {$(
        impl Modeled for $error {
            fn modeled_kind(&self) -> Option<CognitoErrorKind> {
                use CognitoErrorKind as K;
                Some(match self {
                    Self::UserNotFoundException(_) => K::UserNotFound,
                    Self::ResourceNotFoundException(_) => K::PoolNotFound,
                    Self::NotAuthorizedException(_) => K::NotResettable,
                    Self::InvalidParameterException(_) => K::CannotReset,
                    Self::TooManyRequestsException(_) => K::Throttled,
                    Self::InternalErrorException(_) => K::Upstream,
                    Self::OperationNotEnabledException(_) => K::Misconfigured,
                    _ => return None,
                })
            }
        }
    )+};
}

lookup_error_kinds!(AdminGetUserError, AdminListGroupsForUserError);

impl Modeled for AdminResetUserPasswordError {
    fn may_have_sent(&self) -> bool {
        matches!(self, Self::UnexpectedLambdaException(_))
    }

    fn modeled_kind(&self) -> Option<CognitoErrorKind> {
        use CognitoErrorKind as K;
        Some(match self {
            Self::UserNotFoundException(_) => K::UserNotFound,
            Self::ResourceNotFoundException(_) => K::PoolNotFound,
            Self::NotAuthorizedException(_) => K::NotResettable,
            Self::InvalidParameterException(_) => K::CannotReset,
            Self::TooManyRequestsException(_) => K::Throttled,
            Self::LimitExceededException(e) => {
                limit_kind(e.message().or_else(|| e.meta().message()))
            }
            Self::UserLambdaValidationException(_) => K::TriggerRefused,
            Self::InvalidLambdaResponseException(_) => K::TriggerInvalidResponse,
            // With Effect::Unknown (see `failed`): the trigger may have run.
            Self::InternalErrorException(_) | Self::UnexpectedLambdaException(_) => K::Upstream,
            Self::InvalidSmsRoleAccessPolicyException(_)
            | Self::InvalidSmsRoleTrustRelationshipException(_)
            | Self::InvalidEmailRoleAccessPolicyException(_)
            | Self::OperationNotEnabledException(_) => K::Misconfigured,
            _ => return None,
        })
    }
}

impl Modeled for AdminCreateUserError {
    fn may_have_sent(&self) -> bool {
        matches!(self, Self::UnexpectedLambdaException(_))
    }

    fn modeled_kind(&self) -> Option<CognitoErrorKind> {
        use CognitoErrorKind as K;
        Some(match self {
            Self::UserNotFoundException(_) => K::UserNotFound,
            Self::ResourceNotFoundException(_) => K::PoolNotFound,
            // e.g. the user is no longer in FORCE_CHANGE_PASSWORD: nothing to resend.
            Self::NotAuthorizedException(_) | Self::UnsupportedUserStateException(_) => {
                K::NotResettable
            }
            Self::InvalidParameterException(_) | Self::CodeDeliveryFailureException(_) => {
                K::CannotReset
            }
            Self::TooManyRequestsException(_) => K::Throttled,
            Self::UserLambdaValidationException(_) => K::TriggerRefused,
            Self::InvalidLambdaResponseException(_) => K::TriggerInvalidResponse,
            // With Effect::Unknown (see `failed`): the trigger may have run.
            Self::InternalErrorException(_) | Self::UnexpectedLambdaException(_) => K::Upstream,
            Self::InvalidSmsRoleAccessPolicyException(_)
            | Self::InvalidSmsRoleTrustRelationshipException(_)
            | Self::PreconditionNotMetException(_) => K::Misconfigured,
            _ => return None,
        })
    }
}

impl Modeled for AdminUserGlobalSignOutError {
    fn modeled_kind(&self) -> Option<CognitoErrorKind> {
        use CognitoErrorKind as K;
        Some(match self {
            Self::UserNotFoundException(_) => K::UserNotFound,
            Self::ResourceNotFoundException(_) => K::PoolNotFound,
            Self::NotAuthorizedException(_) => K::NotResettable,
            Self::InvalidParameterException(_) => K::CannotReset,
            Self::TooManyRequestsException(_) => K::Throttled,
            Self::InternalErrorException(_) => K::Upstream,
            _ => return None,
        })
    }
}

/// Each Cognito attempt's timeout unless `COGNITO_TIMEOUT_MS` says otherwise.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// Configures a Cognito client: the attempt timeout, and no SDK retries (the [`Directory`]
/// retries by operation).
pub fn configure(builder: config::Builder, settings: ClientSettings) -> config::Builder {
    builder
        .retry_config(RetryConfig::disabled())
        .timeout_config(settings.timeout_config())
}

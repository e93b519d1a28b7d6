//! The port to Amazon Cognito: the three calls the service makes, and what their failures mean.
//!
//! Every SDK error stays typed until [`CognitoError`] classifies it into a [`CognitoErrorKind`]
//! (matching the operation's modeled error enum, then, on purpose, the error code of anything
//! the model does not name). The client is configured here too: bounded retries that never
//! retry `LimitExceededException` (Cognito's per-user attempt limit) and a timeout per attempt.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::RwLock;
use std::time::Duration;

use aws_sdk_cognitoidentityprovider::config::interceptors::InterceptorContext;
use aws_sdk_cognitoidentityprovider::config::retry::{ClassifyRetry, RetryAction, RetryConfig};
use aws_sdk_cognitoidentityprovider::config::timeout::TimeoutConfig;
use aws_sdk_cognitoidentityprovider::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cognitoidentityprovider::operation::RequestId;
use aws_sdk_cognitoidentityprovider::operation::admin_get_user::AdminGetUserError;
use aws_sdk_cognitoidentityprovider::operation::admin_list_groups_for_user::AdminListGroupsForUserError;
use aws_sdk_cognitoidentityprovider::operation::admin_reset_user_password::AdminResetUserPasswordError;
use aws_sdk_cognitoidentityprovider::{Client, config};

use crate::deadline::Deadline;
use crate::limiter::{Category, Limiters, Rates};
use crate::request::{ClientMetadata, UserPoolId, Username};

/// Upper bound on `AdminListGroupsForUser` pages (60 groups each), against a looping token.
const MAX_GROUP_PAGES: usize = 100;

/// What a Cognito failure means for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CognitoErrorKind {
    /// `UserNotFoundException`.
    UserNotFound,
    /// `ResourceNotFoundException`: no such user pool.
    PoolNotFound,
    /// `NotAuthorizedException`: the user cannot be reset in its current state.
    NotResettable,
    /// `InvalidParameterException`: e.g. no verified email or phone to send the code to.
    CannotReset,
    /// `TooManyRequestsException`, `LimitExceededException`, throttling.
    Throttled,
    /// Cognito's internal errors, Lambda-trigger errors, unknown modeled errors, bad responses.
    Upstream,
    /// SMS/email role errors, access denied, bad or missing credentials.
    Misconfigured,
    /// Timeouts and connection failures.
    Unavailable,
}

/// A classified Cognito failure, keeping the original error as its source.
#[derive(Debug, thiserror::Error)]
#[error("cognito {operation} failed ({})", self.code())]
pub struct CognitoError {
    pub kind: CognitoErrorKind,
    /// The Cognito operation that failed.
    pub operation: &'static str,
    /// Cognito's request id, when a response came back.
    pub request_id: Option<String>,
    /// True when the request may have been performed although no answer was read (a timeout,
    /// an unreadable response): for a reset, whether the user got a code is unknown.
    outcome_unknown: bool,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl CognitoError {
    /// The outcome code (`user-not-found`, `throttled`, ...).
    pub fn code(&self) -> &'static str {
        match self.kind {
            CognitoErrorKind::UserNotFound => "user-not-found",
            CognitoErrorKind::PoolNotFound => "pool-not-found",
            CognitoErrorKind::NotResettable => "not-resettable",
            CognitoErrorKind::CannotReset => "cannot-reset",
            CognitoErrorKind::Throttled => "throttled",
            CognitoErrorKind::Upstream => "upstream-error",
            CognitoErrorKind::Misconfigured => "misconfigured",
            CognitoErrorKind::Unavailable => "unavailable",
        }
    }

    /// Whether the call may have taken effect although it failed (see the field).
    pub fn outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    fn from_sdk<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: Modeled + ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
        SdkError<E, R>: RequestId,
    {
        let request_id = error.request_id().map(str::to_owned);
        let outcome_unknown = match &error {
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
            SdkError::DispatchFailure(failure) => failure.is_timeout(),
            _ => false,
        };
        let kind = match &error {
            SdkError::ServiceError(context) => {
                let err = context.err();
                err.modeled_kind()
                    .unwrap_or_else(|| kind_from_code(err.code()))
            }
            SdkError::TimeoutError(_) => CognitoErrorKind::Unavailable,
            SdkError::DispatchFailure(failure) if failure.is_user() => {
                CognitoErrorKind::Misconfigured
            }
            SdkError::DispatchFailure(_) => CognitoErrorKind::Unavailable,
            SdkError::ResponseError(_) => CognitoErrorKind::Upstream,
            // Request construction failed: credentials, region or endpoint set-up.
            SdkError::ConstructionFailure(_) => CognitoErrorKind::Misconfigured,
            // SdkError is non-exhaustive: an unknown failure mode is treated as transient on
            // purpose, so the record is retried rather than lost.
            _ => CognitoErrorKind::Unavailable,
        };
        CognitoError {
            kind,
            operation,
            request_id,
            outcome_unknown,
            source: Box::new(error),
        }
    }
}

/// Classification of an error code the service model does not name for this operation.
fn kind_from_code(code: Option<&str>) -> CognitoErrorKind {
    match code {
        Some(
            "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException"
            | "ExpiredToken",
        ) => CognitoErrorKind::Misconfigured,
        Some("ThrottlingException" | "Throttling" | "RequestLimitExceeded") => {
            CognitoErrorKind::Throttled
        }
        Some("ServiceUnavailable" | "ServiceUnavailableException") => CognitoErrorKind::Unavailable,
        // Anything else, including codes added to Cognito after this build, is an upstream
        // failure: retried, never silently dropped.
        _ => CognitoErrorKind::Upstream,
    }
}

/// A modeled operation error that knows its kind.
trait Modeled {
    fn modeled_kind(&self) -> Option<CognitoErrorKind>;
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
    fn modeled_kind(&self) -> Option<CognitoErrorKind> {
        use CognitoErrorKind as K;
        Some(match self {
            Self::UserNotFoundException(_) => K::UserNotFound,
            Self::ResourceNotFoundException(_) => K::PoolNotFound,
            Self::NotAuthorizedException(_) => K::NotResettable,
            Self::InvalidParameterException(_) => K::CannotReset,
            Self::TooManyRequestsException(_) | Self::LimitExceededException(_) => K::Throttled,
            Self::InternalErrorException(_)
            | Self::InvalidLambdaResponseException(_)
            | Self::UnexpectedLambdaException(_)
            | Self::UserLambdaValidationException(_) => K::Upstream,
            Self::InvalidSmsRoleAccessPolicyException(_)
            | Self::InvalidSmsRoleTrustRelationshipException(_)
            | Self::InvalidEmailRoleAccessPolicyException(_)
            | Self::OperationNotEnabledException(_) => K::Misconfigured,
            _ => return None,
        })
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

/// Why a directory call gave no answer from Cognito.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Cognito(#[from] CognitoError),
    /// The call could not start, or finish, before `deadline − DEADLINE_MARGIN_MS` (including
    /// the wait for the rate limiter's turn). `started`: it was sent and cut short.
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

/// The Cognito operations the service uses: one SDK client per region (the pool id's prefix),
/// created on first use from one configuration and sharing its HTTP connector; each call paced by
/// the per-region, per-category [`Limiters`] and bounded by the invocation's deadline.
#[derive(Debug)]
pub struct Directory {
    base: config::Builder,
    default: Client,
    default_region: Option<String>,
    clients: RwLock<HashMap<String, Client>>,
    /// The client's own attempt timeout (`COGNITO_TIMEOUT_MS`), which the deadline only shortens.
    attempt_timeout: Duration,
    margin: Duration,
    limiters: Limiters,
}

impl Directory {
    /// Wraps a configured client (see [`configure`]); clients for other regions are built from
    /// its configuration. `margin` is `DEADLINE_MARGIN_MS`.
    pub fn new(client: Client, margin: Duration, rates: Rates) -> Self {
        let attempt_timeout = client
            .config()
            .timeout_config()
            .and_then(|t| t.operation_attempt_timeout())
            .unwrap_or(Duration::from_millis(
                crate::config::DEFAULT_COGNITO_TIMEOUT_MS,
            ));
        Directory {
            base: client.config().to_builder(),
            default_region: client.config().region().map(|r| r.as_ref().to_owned()),
            default: client,
            clients: RwLock::default(),
            attempt_timeout,
            margin,
            limiters: Limiters::new(rates),
        }
    }

    /// The client for a pool's region.
    pub fn client_for(&self, pool: &UserPoolId) -> Client {
        let region = pool.region();
        if self.default_region.as_deref() == Some(region) {
            return self.default.clone();
        }
        if let Some(client) = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(region)
        {
            return client.clone();
        }
        let mut clients = self.clients.write().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                Client::from_conf(
                    self.base
                        .clone()
                        .region(config::Region::new(region.to_owned()))
                        .build(),
                )
            })
            .clone()
    }

    /// Waits for a turn of `category` in the pool's region, then gives the client and the
    /// timeouts that end the call before the deadline's margin.
    async fn turn(
        &self,
        pool: &UserPoolId,
        category: Category,
        deadline: Deadline,
    ) -> Result<(Client, config::Builder), DirectoryError> {
        let latest = deadline
            .0
            .checked_sub(self.margin)
            .ok_or(DirectoryError::Deadline { started: false })?;
        self.limiters
            .acquire(
                pool.region(),
                category,
                tokio::time::Instant::from_std(latest),
            )
            .await
            .map_err(|_| DirectoryError::Deadline { started: false })?;
        let budget = deadline.remaining().saturating_sub(self.margin);
        if budget.is_zero() {
            return Err(DirectoryError::Deadline { started: false });
        }
        let timeouts =
            config::Builder::new().timeout_config(timeouts_within(self.attempt_timeout, budget));
        Ok((self.client_for(pool), timeouts))
    }

    /// A failed call: a timeout that ran into the deadline's margin is `deadline`, not an outage.
    fn failed<E, R>(
        &self,
        operation: &'static str,
        error: SdkError<E, R>,
        deadline: Deadline,
    ) -> DirectoryError
    where
        E: Modeled + ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
        SdkError<E, R>: RequestId,
    {
        let timed_out = matches!(error, SdkError::TimeoutError(_));
        let error = CognitoError::from_sdk(operation, error);
        if timed_out && deadline.too_close(self.margin) {
            tracing::warn!(
                operation,
                "Cognito call cut short by the invocation's deadline"
            );
            return DirectoryError::Deadline { started: true };
        }
        DirectoryError::Cognito(error)
    }

    /// `AdminGetUser`: resolves a username, alias or `sub` to the canonical user.
    pub async fn get_user(
        &self,
        pool: &UserPoolId,
        username: &Username,
        deadline: Deadline,
    ) -> Result<UserRecord, DirectoryError> {
        let (client, timeouts) = self.turn(pool, Category::Read, deadline).await?;
        let output = client
            .admin_get_user()
            .user_pool_id(pool.as_str())
            .username(username.as_str())
            .customize()
            .config_override(timeouts)
            .send()
            .await
            .map_err(|e| self.failed("AdminGetUser", e, deadline))?;
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
    }

    /// `AdminListGroupsForUser`, all pages.
    pub async fn list_groups(
        &self,
        pool: &UserPoolId,
        canonical_username: &str,
        deadline: Deadline,
    ) -> Result<Vec<String>, DirectoryError> {
        let mut groups = Vec::new();
        let mut next_token: Option<String> = None;
        for _ in 0..MAX_GROUP_PAGES {
            let (client, timeouts) = self.turn(pool, Category::Read, deadline).await?;
            let output = client
                .admin_list_groups_for_user()
                .user_pool_id(pool.as_str())
                .username(canonical_username)
                .set_next_token(next_token.take())
                .customize()
                .config_override(timeouts)
                .send()
                .await
                .map_err(|e| self.failed("AdminListGroupsForUser", e, deadline))?;
            groups.extend(
                output
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_name().map(str::to_owned)),
            );
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(groups),
            }
        }
        Err(DirectoryError::Cognito(CognitoError {
            kind: CognitoErrorKind::Upstream,
            operation: "AdminListGroupsForUser",
            request_id: None,
            outcome_unknown: false,
            source: format!("more than {MAX_GROUP_PAGES} pages of groups").into(),
        }))
    }

    /// `AdminResetUserPassword` on the canonical username; returns Cognito's request id.
    pub async fn reset_password(
        &self,
        pool: &UserPoolId,
        canonical_username: &str,
        client_metadata: &ClientMetadata,
        deadline: Deadline,
    ) -> Result<Option<String>, DirectoryError> {
        let (client, timeouts) = self.turn(pool, Category::AccountRecovery, deadline).await?;
        let metadata = (!client_metadata.is_empty()).then(|| client_metadata.entries().clone());
        let output = client
            .admin_reset_user_password()
            .user_pool_id(pool.as_str())
            .username(canonical_username)
            .set_client_metadata(metadata.map(|m| m.into_iter().collect()))
            .customize()
            .config_override(timeouts)
            .send()
            .await
            .map_err(|e| self.failed("AdminResetUserPassword", e, deadline))?;
        Ok(output.request_id().map(str::to_owned))
    }
}

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

/// Timeouts that end a whole call, retries included, within `budget` (the time left before the
/// invocation's deadline and its margin), each attempt within `attempt` or the budget.
pub fn timeouts_within(attempt: Duration, budget: Duration) -> TimeoutConfig {
    let attempt = attempt.min(budget);
    TimeoutConfig::builder()
        .connect_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(budget)
        .build()
}

/// Applies retries, the LimitExceeded rule and timeouts to a Cognito client configuration.
pub fn configure(builder: config::Builder, settings: ClientSettings) -> config::Builder {
    builder
        // Adaptive: on top of the per-category pacing, throttling answers slow this client down.
        .retry_config(RetryConfig::adaptive().with_max_attempts(settings.max_attempts))
        .timeout_config(settings.timeout_config())
        .retry_classifier(NeverRetryLimitExceeded)
}

/// Forbids SDK retries of `LimitExceededException`: in Cognito it is a per-user attempt limit,
/// so an immediate retry only burns the user's attempts. (The SDK's default classifiers treat it
/// as throttling and would retry it.)
#[derive(Debug, Clone, Copy)]
pub struct NeverRetryLimitExceeded;

const LIMIT_EXCEEDED: &str = "LimitExceededException";

impl ClassifyRetry for NeverRetryLimitExceeded {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let Some(error) = error.as_operation_error() else {
            return RetryAction::NoActionIndicated;
        };
        let limit_exceeded = match error.downcast_ref::<AdminResetUserPasswordError>() {
            Some(e) => e.is_limit_exceeded_exception() || e.code() == Some(LIMIT_EXCEEDED),
            None => {
                let code = error
                    .downcast_ref::<AdminGetUserError>()
                    .and_then(|e| e.code())
                    .or_else(|| {
                        error
                            .downcast_ref::<AdminListGroupsForUserError>()
                            .and_then(|e| e.code())
                    });
                code == Some(LIMIT_EXCEEDED)
            }
        };
        if limit_exceeded {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "NeverRetryLimitExceeded"
    }
}

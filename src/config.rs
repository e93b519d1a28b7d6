//! The function's configuration, read from the environment and validated once at start-up.
//!
//! A bad value stops start-up with a message naming the variable; nothing ever falls back to a
//! wider policy. Every setting has a row in the configuration table of docs/deploying.md (the
//! docs check holds [`VARIABLES`] to it).

use std::sync::Arc;
use std::time::Duration;

use crate::aws::ClientSettings;
use crate::aws::bucket::BucketStore;
use crate::aws::guard::GuardSettings;
use crate::limiter::{Limiters, Quotas, Rates, SharedPacing};
use crate::policy::Policy;
use crate::pool_roles::{Accounts, PoolRoles, valid_account_id};
use crate::request::UserPoolId;

/// Default for `MAX_CONCURRENCY`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 10;
/// Default for `DEADLINE_MARGIN_MS`.
pub const DEFAULT_DEADLINE_MARGIN_MS: u64 = 2000;
/// Default for `COGNITO_TIMEOUT_MS`.
pub const DEFAULT_COGNITO_TIMEOUT_MS: u64 = crate::aws::cognito::DEFAULT_TIMEOUT_MS;
/// Default for `COGNITO_MAX_ATTEMPTS`.
pub const DEFAULT_COGNITO_MAX_ATTEMPTS: u32 = 3;
/// Default for `RESET_COOLDOWN_SECONDS`.
pub const DEFAULT_RESET_COOLDOWN_SECONDS: u64 = 300;
/// Default for `IDEMPOTENCY_TTL_SECONDS`.
pub const DEFAULT_IDEMPOTENCY_TTL_SECONDS: u64 = 86_400;
/// Default for `GUARD_TIMEOUT_MS`.
pub const DEFAULT_GUARD_TIMEOUT_MS: u64 = 1000;
/// Default for `COGNITO_RESET_QUOTA`: Cognito's default quota of the account-recovery category
/// (`AdminResetUserPassword`), requests a second per account and region.
pub const DEFAULT_COGNITO_RESET_QUOTA: f64 = 30.0;
/// Default for `COGNITO_READ_QUOTA`: the default quota of the user-read category
/// (`AdminGetUser`, `AdminListGroupsForUser`).
pub const DEFAULT_COGNITO_READ_QUOTA: f64 = 120.0;
/// Default for `COGNITO_CREATION_QUOTA`: the default quota of the user-creation category
/// (`AdminCreateUser`, which resends an invitation), requests a second.
pub const DEFAULT_COGNITO_CREATION_QUOTA: f64 = 50.0;
/// Default for `COGNITO_UPDATE_QUOTA`: the default quota of the user-update category
/// (`AdminUserGlobalSignOut`), requests a second.
pub const DEFAULT_COGNITO_UPDATE_QUOTA: f64 = 25.0;
/// Default for `MAX_INSTANCES`: the template's reserved concurrency.
/// The smallest `DEADLINE_MARGIN_MS`. The margin m holds the end of a reset (until m/2 before the
/// deadline), the guard's completion writes (from m/2 to m/4: 125 ms at this floor, several
/// DynamoDB round trips), the outcome events (m/4 to m/8: 62 ms) and the response; below it a
/// reset that was answered might not be recorded in time.
pub const MIN_DEADLINE_MARGIN_MS: u64 = 500;
/// The largest `DEADLINE_MARGIN_MS` (the template's `DeadlineMarginMs` MaxValue): a minute is
/// far more than the end of a record needs; a margin near the function's timeout starts nothing.
pub const MAX_DEADLINE_MARGIN_MS: u64 = 60_000;
/// The smallest `IDEMPOTENCY_TTL_SECONDS` (the template's `IdempotencyTtlSeconds` MinValue): a
/// shorter window misses client retries and SQS redeliveries.
pub const MIN_IDEMPOTENCY_TTL_SECONDS: u64 = 60;
/// The smallest per-instance rate: a limiter's spacing stays under 20 minutes.
pub const MIN_RATE: f64 = 0.001;
/// The largest rate or quota.
pub const MAX_RATE: f64 = 10_000.0;
/// The smallest quota.
pub const MIN_QUOTA: f64 = 0.1;
/// Default for `COGNITO_RESOURCE_READ_QUOTA`: the default quota of the user-resource-read
/// category (`AdminListGroupsForUser`), requests per second.
pub const DEFAULT_COGNITO_RESOURCE_READ_QUOTA: f64 = 50.0;
pub const DEFAULT_MAX_INSTANCES: u64 = 5;
/// Attempts per guard call (DynamoDB answers in milliseconds; the SDK's standard mode).
pub const GUARD_MAX_ATTEMPTS: u32 = 3;
/// Default for `PACING_LEASE_MS`: one lease of the fleet's bucket is this much of the quota.
pub const DEFAULT_PACING_LEASE_MS: u64 = 200;
/// The most a lease write may take before the instance falls back to its static share.
pub const MAX_LEASE_TIMEOUT: Duration = Duration::from_millis(500);

/// Every environment variable [`Config::from_lookup`] reads: it reads no other (checked in debug
/// builds, so every test that loads a configuration checks it; `every_variable_listed_is_read`
/// checks the reverse). The docs check (`tools/docs_check.py`, `make docs-check`) requires a row
/// for each in the configuration table of docs/deploying.md. A new setting goes here, in that
/// table, and in `from_lookup`.
pub const VARIABLES: &[&str] = &[
    "AWS_LAMBDA_LOG_LEVEL",
    "POLICY",
    "POLICY_FILE",
    "POLICY_PARAMETER",
    "POLICY_REFRESH_SECONDS",
    "POLICY_MAX_AGE_SECONDS",
    "DEFAULT_USER_POOL_ID",
    "MAX_CONCURRENCY",
    "DEADLINE_MARGIN_MS",
    "COGNITO_TIMEOUT_MS",
    "COGNITO_MAX_ATTEMPTS",
    "DRY_RUN",
    "MAX_INSTANCES",
    "COGNITO_READ_QUOTA",
    "COGNITO_RESOURCE_READ_QUOTA",
    "COGNITO_RESET_QUOTA",
    "COGNITO_CREATION_QUOTA",
    "COGNITO_UPDATE_QUOTA",
    "COGNITO_READ_RPS",
    "COGNITO_RESOURCE_READ_RPS",
    "COGNITO_RESET_RPS",
    "COGNITO_CREATION_RPS",
    "COGNITO_UPDATE_RPS",
    "RESET_COOLDOWN_SECONDS",
    "IDEMPOTENCY_TTL_SECONDS",
    "GUARD_TIMEOUT_MS",
    "GUARD_TABLE",
    "EVENT_SOURCE",
    "EVENT_BUS",
    "PACING_LEASE_MS",
    "PACING",
    "METRICS_NAMESPACE",
    "MAX_RECEIVE_COUNT",
    "FUNCTION_ACCOUNT_ID",
    "POOL_ROLES",
];

/// A start-up failure, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "set exactly one of POLICY (inline JSON), POLICY_FILE (a path) or POLICY_PARAMETER (an SSM parameter name or ARN); {0}"
    )]
    PolicySource(&'static str),
    #[error("POLICY_FILE: cannot read {path}: {source}")]
    PolicyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{variable}: the policy is invalid:\n{errors}")]
    Policy {
        variable: &'static str,
        errors: crate::policy::PolicyErrors,
    },
    /// `POOL_ROLES` is not valid; the value is not echoed (it may hold external ids).
    #[error("{variable}: {error}")]
    PoolRoles {
        variable: &'static str,
        error: crate::pool_roles::PoolRolesError,
    },
    #[error("{variable}: {message} (got {value:?})")]
    Invalid {
        variable: &'static str,
        value: String,
        message: String,
    },
}

/// Where the policy comes from.
#[derive(Debug, Clone)]
pub enum PolicySetting {
    /// `POLICY` or `POLICY_FILE`: loaded and validated now, never changes; versioned by a hash
    /// of its text.
    Fixed {
        policy: Arc<Policy>,
        version: String,
    },
    /// `POLICY_PARAMETER`: read from SSM Parameter Store at start-up, then re-read at most every
    /// `refresh` (`POLICY_REFRESH_SECONDS`).
    Parameter { name: String, refresh: Duration },
}

/// Outcome events on EventBridge (`EVENT_BUS`, `EVENT_SOURCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSettings {
    /// The bus name or ARN.
    pub bus: String,
    /// The events' `Source`.
    pub source: String,
}

/// How Cognito calls are paced (`PACING`, `PACING_LEASE_MS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Every instance at its static share, `rates` (no table, `PACING=instance`, or `DRY_RUN`,
    /// which writes nothing).
    Instance,
    /// The fleet's buckets in the guard table, leased `lease` of the quota at a time; the
    /// static share while the table is unavailable.
    Shared { lease: Duration },
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: PolicySetting,
    /// Where the policy came from, for the start-up log line.
    pub policy_source: String,
    pub default_user_pool_id: Option<UserPoolId>,
    pub max_concurrency: usize,
    pub deadline_margin: Duration,
    pub cognito: ClientSettings,
    /// Per-instance pacing of Cognito calls (`COGNITO_RESET_RPS`, `COGNITO_READ_RPS`): the
    /// static share, and the fallback of shared pacing.
    pub rates: Rates,
    /// The account's quotas (`COGNITO_*_QUOTA`), which the fleet's buckets share out.
    pub quotas: Quotas,
    /// Shared (fleet-wide) or per-instance pacing.
    pub pacing: Pacing,
    pub dry_run: bool,
    /// The duplicate-reset guard; `None` without `GUARD_TABLE`.
    pub guard: Option<GuardSettings>,
    /// Outcome events; `None` without `EVENT_BUS`.
    pub events: Option<EventSettings>,
    /// `METRICS_NAMESPACE`.
    pub metrics_namespace: String,
    /// `MAX_RECEIVE_COUNT`: the queue's redrive `maxReceiveCount` (a RETRY on that receive is
    /// the record's last: outcome `GAVE_UP`).
    pub max_receive_count: Option<u32>,
    /// `POLICY_MAX_AGE_SECONDS` (with `POLICY_PARAMETER` only): when no read of the parameter
    /// has succeeded for this long, records are refused (RETRY `policy-stale`). `None`: off.
    pub policy_max_age: Option<Duration>,
    /// `FUNCTION_ACCOUNT_ID` (the function's own account) and `POOL_ROLES` (the pools reached
    /// through a role in another account).
    pub accounts: Accounts,
}

impl Config {
    /// The policy store of a fixed policy (`POLICY`, `POLICY_FILE`); `None` for
    /// `POLICY_PARAMETER`, which must be read first (see [`crate::policy_source::PolicyStore::load`]).
    pub fn fixed_policy(&self) -> Option<crate::policy_source::PolicyStore> {
        match &self.policy {
            PolicySetting::Fixed { policy, version } => Some(
                crate::policy_source::PolicyStore::fixed(Arc::clone(policy), version.clone()),
            ),
            PolicySetting::Parameter { .. } => None,
        }
    }
}

impl Config {
    /// The pacing of Cognito calls this configuration asks for: over the fleet's buckets in
    /// `table` (the guard table's, when `PACING` is shared), or each instance on its own.
    pub fn limiters(&self, table: Option<Arc<dyn BucketStore>>) -> Limiters {
        match (self.pacing, table, &self.guard) {
            (Pacing::Shared { lease }, Some(store), Some(guard)) => Limiters::shared(
                self.rates,
                SharedPacing {
                    store,
                    quotas: self.quotas,
                    lease,
                    timeout: guard.client.timeout.min(MAX_LEASE_TIMEOUT),
                },
            ),
            _ => Limiters::new(self.rates),
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let lookup = |name: &str| {
            debug_assert!(
                VARIABLES.contains(&name),
                "{name} is read but not listed in config::VARIABLES (nor documented)"
            );
            lookup(name)
        };
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        // No reset without an audit trail: Lambda's log filter drops every line below the
        // level it is given, and the audit line is INFO (the EMF document, without a level,
        // counts as INFO too).
        if let Some(level) = get("AWS_LAMBDA_LOG_LEVEL")
            && crate::logging::drops_info(&level)
        {
            return Err(ConfigError::Invalid {
                variable: "AWS_LAMBDA_LOG_LEVEL",
                value: level,
                message: "is above INFO: Lambda's log filter would drop the audit line and the metrics; set the function's log level (the template's LogLevel) to INFO, DEBUG or TRACE".into(),
            });
        }
        let (policy, policy_source, policy_variable) =
            match (get("POLICY"), get("POLICY_FILE"), get("POLICY_PARAMETER")) {
                (Some(inline), None, None) => (
                    fixed_policy("POLICY", &inline)?,
                    "POLICY (inline)".to_owned(),
                    "POLICY",
                ),
                (None, Some(path), None) => {
                    let text = std::fs::read_to_string(&path).map_err(|source| {
                        ConfigError::PolicyFile {
                            path: path.clone(),
                            source,
                        }
                    })?;
                    (
                        fixed_policy("POLICY_FILE", &text)?,
                        format!("POLICY_FILE={path}"),
                        "POLICY_FILE",
                    )
                }
                (None, None, Some(name)) => {
                    let refresh = number(
                        &get,
                        "POLICY_REFRESH_SECONDS",
                        crate::policy_source::DEFAULT_REFRESH_SECONDS,
                        1,
                        3600,
                    )?;
                    (
                        PolicySetting::Parameter {
                            name: name.clone(),
                            refresh: Duration::from_secs(refresh),
                        },
                        format!("POLICY_PARAMETER={name}"),
                        "POLICY_PARAMETER",
                    )
                }
                (None, None, None) => return Err(ConfigError::PolicySource("none is set")),
                _ => return Err(ConfigError::PolicySource("more than one is set")),
            };

        let policy_max_age = match (&policy, get("POLICY_MAX_AGE_SECONDS")) {
            (_, None) => None,
            (PolicySetting::Parameter { refresh, .. }, Some(_)) => {
                // Longer than the refresh interval, or every record between two reads would be
                // refused.
                let min = refresh.as_secs() + 1;
                Some(Duration::from_secs(number(
                    &get,
                    "POLICY_MAX_AGE_SECONDS",
                    0,
                    min,
                    604_800,
                )?))
            }
            (PolicySetting::Fixed { .. }, Some(value)) => {
                return Err(ConfigError::Invalid {
                    variable: "POLICY_MAX_AGE_SECONDS",
                    value,
                    message: "applies only with POLICY_PARAMETER (a fixed policy never goes stale)"
                        .into(),
                });
            }
        };

        let default_user_pool_id = get("DEFAULT_USER_POOL_ID")
            .map(|v| {
                UserPoolId::parse(&v).map_err(|message| ConfigError::Invalid {
                    variable: "DEFAULT_USER_POOL_ID",
                    value: v.clone(),
                    message,
                })
            })
            .transpose()?;

        let max_concurrency = number(
            &get,
            "MAX_CONCURRENCY",
            DEFAULT_MAX_CONCURRENCY as u64,
            1,
            100,
        )?;
        let deadline_margin_ms = number(
            &get,
            "DEADLINE_MARGIN_MS",
            DEFAULT_DEADLINE_MARGIN_MS,
            MIN_DEADLINE_MARGIN_MS,
            MAX_DEADLINE_MARGIN_MS,
        )?;
        let cognito_timeout_ms = number(
            &get,
            "COGNITO_TIMEOUT_MS",
            DEFAULT_COGNITO_TIMEOUT_MS,
            100,
            60_000,
        )?;
        let cognito_max_attempts = number(
            &get,
            "COGNITO_MAX_ATTEMPTS",
            u64::from(DEFAULT_COGNITO_MAX_ATTEMPTS),
            1,
            10,
        )?;
        let dry_run = match get("DRY_RUN")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("false") | Some("0") | Some("no") => false,
            Some("true") | Some("1") | Some("yes") => true,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    variable: "DRY_RUN",
                    value: lookup("DRY_RUN").unwrap_or_default(),
                    message: "must be true or false".into(),
                });
            }
        };

        // Per instance: the quota shared by at most MAX_INSTANCES instances, unless a rate is set
        // outright (`unlimited`: no limit).
        let instances = number(&get, "MAX_INSTANCES", DEFAULT_MAX_INSTANCES, 1, 1000)? as f64;
        let quotas = Quotas {
            read: quota(&get, "COGNITO_READ_QUOTA", DEFAULT_COGNITO_READ_QUOTA)?,
            resource_read: quota(
                &get,
                "COGNITO_RESOURCE_READ_QUOTA",
                DEFAULT_COGNITO_RESOURCE_READ_QUOTA,
            )?,
            account_recovery: quota(&get, "COGNITO_RESET_QUOTA", DEFAULT_COGNITO_RESET_QUOTA)?,
            user_creation: quota(
                &get,
                "COGNITO_CREATION_QUOTA",
                DEFAULT_COGNITO_CREATION_QUOTA,
            )?,
            user_update: quota(&get, "COGNITO_UPDATE_QUOTA", DEFAULT_COGNITO_UPDATE_QUOTA)?,
        };
        let per_instance = |rps: &'static str, quota_variable: &'static str, default: f64| {
            if get(rps).is_some() {
                rate(&get, rps)
            } else {
                Ok(Some(quota(&get, quota_variable, default)? / instances))
            }
        };
        let rates = Rates {
            read: per_instance(
                "COGNITO_READ_RPS",
                "COGNITO_READ_QUOTA",
                DEFAULT_COGNITO_READ_QUOTA,
            )?,
            resource_read: per_instance(
                "COGNITO_RESOURCE_READ_RPS",
                "COGNITO_RESOURCE_READ_QUOTA",
                DEFAULT_COGNITO_RESOURCE_READ_QUOTA,
            )?,
            account_recovery: per_instance(
                "COGNITO_RESET_RPS",
                "COGNITO_RESET_QUOTA",
                DEFAULT_COGNITO_RESET_QUOTA,
            )?,
            user_creation: per_instance(
                "COGNITO_CREATION_RPS",
                "COGNITO_CREATION_QUOTA",
                DEFAULT_COGNITO_CREATION_QUOTA,
            )?,
            user_update: per_instance(
                "COGNITO_UPDATE_RPS",
                "COGNITO_UPDATE_QUOTA",
                DEFAULT_COGNITO_UPDATE_QUOTA,
            )?,
        };
        let reset_cooldown = number(
            &get,
            "RESET_COOLDOWN_SECONDS",
            DEFAULT_RESET_COOLDOWN_SECONDS,
            0,
            86_400,
        )?;
        let idempotency_ttl = number(
            &get,
            "IDEMPOTENCY_TTL_SECONDS",
            DEFAULT_IDEMPOTENCY_TTL_SECONDS,
            MIN_IDEMPOTENCY_TTL_SECONDS,
            604_800,
        )?;
        let guard_timeout_ms = number(
            &get,
            "GUARD_TIMEOUT_MS",
            DEFAULT_GUARD_TIMEOUT_MS,
            100,
            60_000,
        )?;
        let guard = get("GUARD_TABLE")
            .map(|table| {
                if valid_table(&table) {
                    Ok(GuardSettings {
                        table,
                        cooldown: Duration::from_secs(reset_cooldown),
                        idempotency_ttl: Duration::from_secs(idempotency_ttl),
                        client: ClientSettings {
                            timeout: Duration::from_millis(guard_timeout_ms),
                            max_attempts: GUARD_MAX_ATTEMPTS,
                        },
                    })
                } else {
                    Err(ConfigError::Invalid {
                        variable: "GUARD_TABLE",
                        value: table,
                        message: "must be a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ . -) or a table ARN".into(),
                    })
                }
            })
            .transpose()?;

        let source = match get("EVENT_SOURCE") {
            None => crate::aws::events::DEFAULT_SOURCE.to_owned(),
            Some(source) if valid_event_source(&source) => source,
            Some(source) => {
                return Err(ConfigError::Invalid {
                    variable: "EVENT_SOURCE",
                    value: source,
                    message: "must be 1-256 letters, digits and . _ / -, not starting with `aws.` (the template's EventSource, which the role's events:PutEvents grant names)".into(),
                });
            }
        };
        if get("EVENT_BUS").is_none()
            && let Some(source) = get("EVENT_SOURCE")
        {
            return Err(ConfigError::Invalid {
                variable: "EVENT_SOURCE",
                value: source,
                message: "is set but EVENT_BUS is not: set both, or neither".into(),
            });
        }
        let events = get("EVENT_BUS").map(|bus| EventSettings { bus, source });
        let lease_ms = number(&get, "PACING_LEASE_MS", DEFAULT_PACING_LEASE_MS, 100, 250)?;
        let pacing = match get("PACING")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("shared") if guard.is_some() && !dry_run => Pacing::Shared {
                lease: Duration::from_millis(lease_ms),
            },
            None | Some("shared") | Some("instance") => Pacing::Instance,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    variable: "PACING",
                    value: lookup("PACING").unwrap_or_default(),
                    message: "must be `shared` (the fleet shares one bucket per region and quota in the guard table; needs GUARD_TABLE) or `instance` (each instance keeps to quota / MAX_INSTANCES)".into(),
                });
            }
        };
        let metrics_namespace = get("METRICS_NAMESPACE")
            .unwrap_or_else(|| crate::metrics::DEFAULT_NAMESPACE.to_owned());
        crate::metrics::check_namespace(&metrics_namespace).map_err(|e| ConfigError::Invalid {
            variable: "METRICS_NAMESPACE",
            value: metrics_namespace.clone(),
            message: e.to_string(),
        })?;
        let max_receive_count = get("MAX_RECEIVE_COUNT")
            .map(|_| number(&get, "MAX_RECEIVE_COUNT", 1, 1, 1000).map(|n| n as u32))
            .transpose()?;

        // A budget is counted in the guard's table: without one, the function does not start.
        if let PolicySetting::Fixed { policy: fixed, .. } = &policy {
            fixed
                .check_budgets_have_a_table(guard.is_some())
                .map_err(|errors| ConfigError::Policy {
                    variable: policy_variable,
                    errors,
                })?;
        }
        let own_account = get("FUNCTION_ACCOUNT_ID")
            .map(|value| {
                if valid_account_id(value.trim()) {
                    Ok(value.trim().to_owned())
                } else {
                    Err(ConfigError::Invalid {
                        variable: "FUNCTION_ACCOUNT_ID",
                        value,
                        message: "must be the function's own AWS account id, 12 digits (the template sets it to AWS::AccountId)".into(),
                    })
                }
            })
            .transpose()?;
        let roles = match get("POOL_ROLES") {
            Some(text) => PoolRoles::parse(&text).map_err(|e| ConfigError::PoolRoles {
                variable: "POOL_ROLES",
                error: e,
            })?,
            None => PoolRoles::default(),
        };

        Ok(Config {
            policy,
            policy_source,
            default_user_pool_id,
            max_concurrency: max_concurrency as usize,
            deadline_margin: Duration::from_millis(deadline_margin_ms),
            cognito: ClientSettings {
                timeout: Duration::from_millis(cognito_timeout_ms),
                // Bounded to 1..=10 above.
                max_attempts: cognito_max_attempts as u32,
            },
            rates,
            quotas,
            pacing,
            dry_run,
            guard,
            events,
            metrics_namespace,
            max_receive_count,
            policy_max_age,
            accounts: Accounts {
                own: own_account,
                roles,
            },
        })
    }
}

/// A policy document given as text, validated now.
fn fixed_policy(variable: &'static str, text: &str) -> Result<PolicySetting, ConfigError> {
    let policy =
        Policy::from_json(text).map_err(|errors| ConfigError::Policy { variable, errors })?;
    Ok(PolicySetting::Fixed {
        policy: Arc::new(policy),
        version: crate::policy_source::content_version(text),
    })
}

/// A rate in calls per second (decimals allowed, at most 10000); `0` turns the limit off.
fn rate(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
) -> Result<Option<f64>, ConfigError> {
    let Some(value) = get(variable) else {
        return Ok(None);
    };
    if value.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    match value.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && (MIN_RATE..=MAX_RATE).contains(&n) => Ok(Some(n)),
        _ => Err(ConfigError::Invalid {
            variable,
            value,
            message: format!(
                "must be a number of calls per second from {MIN_RATE} to {MAX_RATE}, or `unlimited` for no limit"
            ),
        }),
    }
}

/// A Cognito quota: a number of calls per second, never 0 (a quota of 0 would allow nothing,
/// and meaning "unlimited" by it would surprise; set the `_RPS` variable to `unlimited`).
fn quota(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: f64,
) -> Result<f64, ConfigError> {
    let Some(value) = get(variable) else {
        return Ok(default);
    };
    match value.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && (MIN_QUOTA..=MAX_RATE).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            variable,
            value,
            message: format!(
                "must be the account's quota in calls per second, from {MIN_QUOTA} to {MAX_RATE} (for no pacing at all, set the matching _RPS variable to `unlimited`)"
            ),
        }),
    }
}

/// An EventBridge source this function may use: what the template's `EventSource` admits.
fn valid_event_source(source: &str) -> bool {
    (1..=256).contains(&source.len())
        && !source.starts_with("aws.")
        && source
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
}

/// A DynamoDB table name, or an ARN `arn:<partition>:dynamodb:<region>:<account>:table/<name>`.
fn valid_table(value: &str) -> bool {
    let name = match value.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            match parts.as_slice() {
                [_, "dynamodb", region, account, resource]
                    if !region.is_empty() && !account.is_empty() =>
                {
                    match resource.strip_prefix("table/") {
                        Some(name) => name,
                        None => return false,
                    }
                }
                _ => return false,
            }
        }
        None => value,
    };
    (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(value) = get(variable) else {
        return Ok(default);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            variable,
            value,
            message: format!("must be a whole number from {min} to {max}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const POLICY: &str =
        r#"{"version":1,"rules":[{"name":"r","callers":["*"],"userPools":["*"],"users":["*"]}]}"#;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_policy_is_set() {
        let config = load(&[("POLICY", POLICY)]).unwrap();
        assert_eq!(config.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(config.deadline_margin, Duration::from_millis(2000));
        assert_eq!(config.cognito.timeout, Duration::from_millis(5000));
        assert_eq!(config.cognito.max_attempts, 3);
        assert!(!config.dry_run);
        assert!(config.default_user_pool_id.is_none());
        assert!(config.guard.is_none());
        assert_eq!(config.rates.account_recovery, Some(6.0));
        assert_eq!(config.rates.read, Some(24.0));
        assert_eq!(config.rates.resource_read, Some(10.0));
    }

    #[test]
    fn per_instance_rates_divide_the_quota_among_the_instances() {
        let config = load(&[
            ("POLICY", POLICY),
            ("COGNITO_RESET_QUOTA", "50"),
            ("COGNITO_READ_QUOTA", "200"),
            ("COGNITO_RESOURCE_READ_QUOTA", "40"),
            ("MAX_INSTANCES", "4"),
        ])
        .unwrap();
        assert_eq!(
            config.rates,
            Rates {
                read: Some(50.0),
                resource_read: Some(10.0),
                account_recovery: Some(12.5),
                user_creation: Some(12.5),
                user_update: Some(6.25),
            }
        );
    }

    #[test]
    fn pacing_is_shared_with_the_guard_table_and_per_instance_without_it() {
        let config = load(&[("POLICY", POLICY)]).unwrap();
        assert_eq!(config.pacing, Pacing::Instance);
        assert_eq!(
            config.quotas,
            Quotas {
                read: 120.0,
                resource_read: 50.0,
                account_recovery: 30.0,
                user_creation: 50.0,
                user_update: 25.0,
            }
        );
        let table = ("GUARD_TABLE", "cognito-reset-guard");
        let config = load(&[("POLICY", POLICY), table]).unwrap();
        assert_eq!(
            config.pacing,
            Pacing::Shared {
                lease: Duration::from_millis(200)
            }
        );
        // the static share stays: it is the fallback while the table is unavailable
        assert_eq!(config.rates.account_recovery, Some(6.0));
        let config = load(&[("POLICY", POLICY), table, ("PACING_LEASE_MS", "100")]).unwrap();
        assert_eq!(
            config.pacing,
            Pacing::Shared {
                lease: Duration::from_millis(100)
            }
        );
        for opt_out in [("PACING", "instance"), ("DRY_RUN", "true")] {
            let config = load(&[("POLICY", POLICY), table, opt_out]).unwrap();
            assert_eq!(config.pacing, Pacing::Instance, "{opt_out:?}");
        }
        // `shared` without a table has nowhere to keep the bucket: each instance on its own
        let config = load(&[("POLICY", POLICY), ("PACING", "shared")]).unwrap();
        assert_eq!(config.pacing, Pacing::Instance);
    }

    #[test]
    fn an_unlimited_rate_turns_the_limit_off() {
        let config = load(&[
            ("POLICY", POLICY),
            ("COGNITO_RESET_RPS", "unlimited"),
            ("COGNITO_READ_RPS", "7.5"),
        ])
        .unwrap();
        assert_eq!(
            config.rates,
            Rates {
                read: Some(7.5),
                resource_read: Some(10.0),
                account_recovery: None,
                user_creation: Some(10.0),
                user_update: Some(5.0),
            }
        );
    }

    #[test]
    fn the_guard_is_on_with_a_table_and_its_defaults() {
        let config = load(&[("POLICY", POLICY), ("GUARD_TABLE", "cognito-reset-guard")]).unwrap();
        let guard = config.guard.unwrap();
        assert_eq!(guard.table, "cognito-reset-guard");
        assert_eq!(guard.cooldown, Duration::from_secs(300));
        assert_eq!(guard.idempotency_ttl, Duration::from_secs(86_400));
        let arn = "arn:aws:dynamodb:us-west-2:123456789012:table/guard";
        let config = load(&[
            ("POLICY", POLICY),
            ("GUARD_TABLE", arn),
            ("RESET_COOLDOWN_SECONDS", "0"),
        ])
        .unwrap();
        let guard = config.guard.unwrap();
        assert_eq!(guard.table, arn);
        assert!(guard.cooldown.is_zero());
    }

    #[test]
    fn exactly_one_policy_source_is_required() {
        let err = load(&[]).unwrap_err().to_string();
        assert!(
            err.contains("POLICY_PARAMETER") && err.contains("none"),
            "{err}"
        );
        let err = load(&[("POLICY", POLICY), ("POLICY_FILE", "/x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than one"), "{err}");
        let err = load(&[("POLICY", POLICY), ("POLICY_PARAMETER", "/p")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than one"), "{err}");
        let config = load(&[("POLICY_PARAMETER", "/cognito-reset/policy")]).unwrap();
        assert!(matches!(
            config.policy,
            PolicySetting::Parameter { ref name, refresh }
                if name == "/cognito-reset/policy" && refresh == Duration::from_secs(60)
        ));
    }

    #[test]
    fn an_invalid_policy_stops_start_up_naming_the_variable() {
        let err = load(&[("POLICY", r#"{"version":2,"rules":[]}"#)])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("POLICY:"), "{err}");
        let err = load(&[("POLICY_FILE", "/nonexistent/policy.json")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("POLICY_FILE:"), "{err}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("MAX_CONCURRENCY", "0"),
            ("MAX_CONCURRENCY", "ten"),
            ("DEADLINE_MARGIN_MS", "-1"),
            ("DEADLINE_MARGIN_MS", "0"),
            ("DEADLINE_MARGIN_MS", "499"),
            ("DEADLINE_MARGIN_MS", "60001"),
            ("COGNITO_TIMEOUT_MS", "5s"),
            ("COGNITO_MAX_ATTEMPTS", "0"),
            ("DRY_RUN", "maybe"),
            ("DEFAULT_USER_POOL_ID", "not a pool"),
            ("RESET_COOLDOWN_SECONDS", "86401"),
            ("IDEMPOTENCY_TTL_SECONDS", "0"),
            ("IDEMPOTENCY_TTL_SECONDS", "59"),
            ("IDEMPOTENCY_TTL_SECONDS", "604801"),
            ("GUARD_TIMEOUT_MS", "10"),
            ("GUARD_TABLE", "a b"),
            ("GUARD_TABLE", "arn:aws:s3:::bucket"),
            ("COGNITO_RESET_RPS", "-1"),
            ("COGNITO_RESET_RPS", "0"),
            ("COGNITO_RESET_RPS", "1e-20"),
            ("COGNITO_RESET_RPS", "NaN"),
            ("COGNITO_RESET_RPS", "inf"),
            ("COGNITO_READ_RPS", "fast"),
            ("COGNITO_CREATION_RPS", "0"),
            ("COGNITO_UPDATE_QUOTA", "0"),
            ("COGNITO_UPDATE_RPS", "fast"),
            ("COGNITO_RESET_QUOTA", "x"),
            ("COGNITO_RESET_QUOTA", "0"),
            ("COGNITO_READ_QUOTA", "0"),
            ("COGNITO_RESOURCE_READ_QUOTA", "0"),
            ("COGNITO_READ_QUOTA", "1e300"),
            ("MAX_INSTANCES", "0"),
            ("PACING", "fleet"),
            ("PACING_LEASE_MS", "50"),
            ("PACING_LEASE_MS", "251"),
            ("METRICS_NAMESPACE", "bad namespace!"),
            ("MAX_RECEIVE_COUNT", "0"),
            ("EVENT_SOURCE", "aws.cognito"),
            ("EVENT_SOURCE", "has space"),
        ] {
            let err = load(&[("POLICY", POLICY), (var, value)])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(var), "{var}={value}: {err}");
            // and says what is accepted
            assert!(
                ["from ", "must ", "is "].iter().any(|w| err.contains(w)),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn a_lambda_log_level_above_info_is_refused_because_it_drops_the_audit_trail() {
        for level in ["WARN", "error", "FATAL"] {
            let err = load(&[("POLICY", POLICY), ("AWS_LAMBDA_LOG_LEVEL", level)])
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("AWS_LAMBDA_LOG_LEVEL"), "{err}");
            assert!(err.contains("audit"), "{err}");
        }
        for level in ["TRACE", "debug", "INFO"] {
            assert!(load(&[("POLICY", POLICY), ("AWS_LAMBDA_LOG_LEVEL", level)]).is_ok());
        }
    }

    #[test]
    fn a_policy_max_age_needs_the_parameter_and_must_outlast_the_refresh_interval() {
        let parameter = [
            ("POLICY_PARAMETER", "/cognito-reset/policy"),
            ("POLICY_REFRESH_SECONDS", "60"),
        ];
        let with = |age: &'static str| {
            let mut vars = parameter.to_vec();
            vars.push(("POLICY_MAX_AGE_SECONDS", age));
            load(&vars)
        };
        assert_eq!(load(&parameter).unwrap().policy_max_age, None);
        assert_eq!(
            with("600").unwrap().policy_max_age,
            Some(Duration::from_secs(600))
        );
        for age in ["60", "0", "soon"] {
            let err = with(age).unwrap_err().to_string();
            assert!(err.starts_with("POLICY_MAX_AGE_SECONDS"), "{err}");
            assert!(err.contains("from 61"), "{err}");
        }
        let err = load(&[("POLICY", POLICY), ("POLICY_MAX_AGE_SECONDS", "600")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("only with POLICY_PARAMETER"), "{err}");
    }

    #[test]
    fn a_zero_quota_is_refused_and_says_how_to_turn_pacing_off() {
        let err = load(&[("POLICY", POLICY), ("COGNITO_RESET_QUOTA", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unlimited"), "{err}");
    }

    #[test]
    fn every_variable_listed_is_read() {
        // Given every setting set to a valid value, once with an inline policy and once with the
        // parameter (whose refresh and maximum age are read only then)
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let full = |policy: &[(&'static str, &'static str)]| {
            let mut vars: HashMap<&str, &str> = HashMap::from([
                ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
                ("DEFAULT_USER_POOL_ID", "us-west-2_aaaaaaaaa"),
                ("MAX_CONCURRENCY", "4"),
                ("DEADLINE_MARGIN_MS", "1000"),
                ("COGNITO_TIMEOUT_MS", "1500"),
                ("COGNITO_MAX_ATTEMPTS", "2"),
                ("DRY_RUN", "false"),
                ("MAX_INSTANCES", "4"),
                ("COGNITO_READ_QUOTA", "100"),
                ("COGNITO_RESOURCE_READ_QUOTA", "40"),
                ("COGNITO_RESET_QUOTA", "20"),
                ("COGNITO_READ_RPS", "10"),
                ("COGNITO_RESOURCE_READ_RPS", "10"),
                ("COGNITO_RESET_RPS", "5"),
                ("RESET_COOLDOWN_SECONDS", "60"),
                ("IDEMPOTENCY_TTL_SECONDS", "3600"),
                ("GUARD_TIMEOUT_MS", "500"),
                ("GUARD_TABLE", "cognito-reset-guard"),
                ("EVENT_SOURCE", "cognito-reset"),
                ("EVENT_BUS", "cognito-reset-events"),
                ("PACING_LEASE_MS", "150"),
                ("PACING", "shared"),
                ("METRICS_NAMESPACE", "CognitoReset"),
                ("MAX_RECEIVE_COUNT", "5"),
            ]);
            vars.extend(policy.iter().copied());
            // When the configuration is loaded, recording every name it asks for
            Config::from_lookup(|name| {
                read.borrow_mut().insert(name.to_owned());
                vars.get(name).map(|v| v.to_string())
            })
            .unwrap();
        };
        full(&[("POLICY", POLICY)]);
        full(&[
            ("POLICY_PARAMETER", "/cognito-reset/policy"),
            ("POLICY_REFRESH_SECONDS", "30"),
            ("POLICY_MAX_AGE_SECONDS", "600"),
        ]);
        // Then every listed variable was read (and from_lookup's debug check saw no other)
        let listed: std::collections::BTreeSet<String> =
            VARIABLES.iter().map(|v| v.to_string()).collect();
        assert_eq!(read.into_inner(), listed);
    }

    #[test]
    fn settings_are_read() {
        let config = load(&[
            ("POLICY", POLICY),
            ("DEFAULT_USER_POOL_ID", "us-west-2_aaaaaaaaa"),
            ("MAX_CONCURRENCY", "4"),
            ("DEADLINE_MARGIN_MS", "500"),
            ("COGNITO_TIMEOUT_MS", "1500"),
            ("COGNITO_MAX_ATTEMPTS", "1"),
            ("DRY_RUN", "true"),
        ])
        .unwrap();
        assert_eq!(
            config.default_user_pool_id.unwrap().as_str(),
            "us-west-2_aaaaaaaaa"
        );
        assert_eq!(config.max_concurrency, 4);
        assert_eq!(config.deadline_margin, Duration::from_millis(500));
        assert_eq!(config.cognito.timeout, Duration::from_millis(1500));
        assert_eq!(config.cognito.max_attempts, 1);
        assert!(config.dry_run);
    }

    #[test]
    fn pool_roles_and_the_functions_account_are_read_and_a_bad_entry_stops_start_up() {
        let config = load(&[
            ("POLICY", POLICY),
            ("FUNCTION_ACCOUNT_ID", "111122223333"),
            (
                "POOL_ROLES",
                r#"{"eu-west-1_abc": {"roleArn": "arn:aws:iam::222233334444:role/r", "externalId": "ext-id-1"}}"#,
            ),
        ])
        .unwrap();
        let pool = |id| UserPoolId::parse(id).unwrap();
        assert_eq!(
            config.accounts.account_of(&pool("eu-west-1_abc")),
            Some("222233334444")
        );
        assert_eq!(
            config.accounts.account_of(&pool("eu-west-1_zzz")),
            Some("111122223333")
        );
        let unset = load(&[("POLICY", POLICY)]).unwrap();
        assert!(unset.accounts.roles.is_empty());
        assert_eq!(unset.accounts.own, None);

        let error = load(&[
            ("POLICY", POLICY),
            (
                "POOL_ROLES",
                r#"{"eu-west-1_abc": "arn:aws:iam::222233334444:role/r", "eu-west-1_def": "arn:aws:iam::2222:role/r"}"#,
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("POOL_ROLES: "), "{error}");
        assert!(error.contains("\"eu-west-1_def\""), "{error}");
        let error = load(&[
            ("POLICY", POLICY),
            ("POOL_ROLES", "arn:aws:iam::222233334444:role/r"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("POOL_ROLES: must be a JSON object"),
            "{error}"
        );
        let error = load(&[("POLICY", POLICY), ("FUNCTION_ACCOUNT_ID", "12345")])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("FUNCTION_ACCOUNT_ID: "), "{error}");
    }
}

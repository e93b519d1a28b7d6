//! The policy as live configuration: read from SSM Parameter Store at start-up, then re-read
//! between records at most every `POLICY_REFRESH_SECONDS`, and swapped in only when valid.
//!
//! A [`PolicyStore`] holds the policy in force and its version: the parameter's `Version`
//! number for `POLICY_PARAMETER`, or a content hash ([`content_version`]) for the fixed
//! `POLICY` and `POLICY_FILE` sources. Reading goes through a small port, [`ParameterSource`],
//! implemented for SSM by [`crate::aws::parameters::SsmParameter`] (`GetParameter` with decryption, so a `String` or a
//! `SecureString`, standard or advanced tier).
//!
//! - [`PolicyStore::load`], at start-up: an unreadable or invalid parameter is a
//!   [`PolicySourceError`] naming `POLICY_PARAMETER`, and the function does not start.
//! - [`PolicyStore::refresh_if_due`], between records: reads only when the interval has passed
//!   since the last read (successful or not) and no other refresh is running, within the read
//!   timeout; validates with [`Policy::from_json`], the loader of `reset-policy lint`; swaps in
//!   a valid new version, and refuses an invalid or unreadable one, keeping the last good
//!   policy, logging every error and returning [`Refresh::Refused`] for the caller to count.
//!   A refused version is refused again at every later read until a valid one replaces it, so
//!   a refusal alarm stays raised while the parameter is broken.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::policy::{Policy, PolicyErrors};

/// Default for `POLICY_REFRESH_SECONDS`.
pub const DEFAULT_REFRESH_SECONDS: u64 = 60;
/// Default bound on one read of the parameter (the SDK's attempts included).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The variable that names the parameter, for messages.
pub const VARIABLE: &str = "POLICY_PARAMETER";

/// One read of the policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyText {
    /// The JSON document.
    pub text: String,
    /// Its version (the parameter's version number).
    pub version: String,
}

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchErrorKind {
    /// No such parameter or version.
    NotFound,
    /// Access denied (SSM or KMS), a bad KMS key, bad credentials, a `StringList` parameter.
    Misconfigured,
    /// Throttling.
    Throttled,
    /// Timeouts (including [`RefreshSettings::timeout`]) and connection failures.
    Unavailable,
    /// SSM's internal errors and anything not named.
    Upstream,
}

impl FetchErrorKind {
    /// `not-found`, `misconfigured`, `throttled`, `unavailable` or `upstream-error`.
    pub fn code(self) -> &'static str {
        match self {
            FetchErrorKind::NotFound => "not-found",
            FetchErrorKind::Misconfigured => "misconfigured",
            FetchErrorKind::Throttled => "throttled",
            FetchErrorKind::Unavailable => "unavailable",
            FetchErrorKind::Upstream => "upstream-error",
        }
    }
}

/// A classified read failure, keeping the original error as its source.
#[derive(Debug, thiserror::Error)]
#[error("reading the policy failed ({})", self.kind.code())]
pub struct FetchError {
    pub kind: FetchErrorKind,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl FetchError {
    /// A failure of `kind` caused by `source` (for other [`ParameterSource`]s and fakes).
    pub fn new(kind: FetchErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        FetchError {
            kind,
            source: source.into(),
        }
    }
}

/// The future of one read.
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<PolicyText, FetchError>> + Send + 'a>>;

/// Where the live policy is read from.
pub trait ParameterSource: Send + Sync + fmt::Debug {
    /// What is read, for messages (e.g. `POLICY_PARAMETER=/cognito-reset/policy`).
    fn describe(&self) -> String;
    /// Reads the current document and its version.
    fn fetch(&self) -> FetchFuture<'_>;
}

/// A policy that could not be loaded: start-up stops on it, a refresh refuses it.
#[derive(Debug, thiserror::Error)]
pub enum PolicySourceError {
    #[error(
        "{what}: cannot read the policy; check the parameter's name and that the role may \
         ssm:GetParameter it (and kms:Decrypt its key, for a SecureString)"
    )]
    Unreadable {
        what: String,
        #[source]
        source: FetchError,
    },
    #[error(
        "{what}: version {version} is not a valid policy (check it with `reset-policy lint`):\n{errors}"
    )]
    Invalid {
        what: String,
        version: String,
        errors: PolicyErrors,
    },
}

/// How often and how long the live policy is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshSettings {
    /// `POLICY_REFRESH_SECONDS`: at most one read per interval.
    pub interval: Duration,
    /// Bound on one read; a slower read is abandoned and refused as unreadable.
    pub timeout: Duration,
    /// Whether `GUARD_TABLE` is set: without it, a policy with a `budget` is refused (at
    /// start-up and on every refresh).
    pub guard_table: bool,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            interval: Duration::from_secs(DEFAULT_REFRESH_SECONDS),
            timeout: DEFAULT_READ_TIMEOUT,
            guard_table: false,
        }
    }
}

/// The policy in force and its version.
#[derive(Debug, Clone)]
pub struct PolicySnapshot {
    pub policy: Arc<Policy>,
    /// The parameter's version number, or `sha256:<16 hex digits>` of a fixed document.
    pub version: String,
    /// `sha256:<16 hex digits>` of the document's text ([`content_version`]): what decides
    /// whether a read changed anything (a parameter deleted and created again is back at
    /// version 1 with other content).
    pub content: String,
}

/// What [`PolicyStore::refresh_if_due`] did.
#[derive(Debug)]
pub enum Refresh {
    /// Nothing read: the interval has not passed, another refresh is running, or the policy
    /// is fixed (`POLICY`, `POLICY_FILE`).
    NotDue,
    /// Read: the content in force is still current (its version may have changed).
    Unchanged { version: String },
    /// A new valid version is now in force (count it as a policy reload).
    Swapped { previous: String, version: String },
    /// The new version is invalid, or could not be read: `kept` stays in force (count it as a
    /// policy refusal).
    Refused {
        kept: String,
        error: PolicySourceError,
    },
}

/// The policy in force, shared by every record of every invocation.
#[derive(Debug)]
pub struct PolicyStore {
    current: RwLock<Arc<PolicySnapshot>>,
    source: Option<Box<dyn ParameterSource>>,
    settings: RefreshSettings,
    /// When the source was last read; held while a refresh runs.
    last_read: tokio::sync::Mutex<Instant>,
    /// When the source was last read successfully (the policy in force is at least that fresh).
    last_success: std::sync::Mutex<Instant>,
}

impl PolicyStore {
    /// Reads and validates the policy at start-up (`now` is when; the next read is due an
    /// interval later). An unreadable or invalid policy is an error naming the variable.
    pub async fn load(
        source: Box<dyn ParameterSource>,
        settings: RefreshSettings,
        now: Instant,
    ) -> Result<PolicyStore, PolicySourceError> {
        let fetched = read(source.as_ref(), settings.timeout).await?;
        let policy = validate(source.as_ref(), &fetched, settings.guard_table)?;
        Ok(PolicyStore {
            current: RwLock::new(Arc::new(PolicySnapshot {
                policy: Arc::new(policy),
                content: content_version(&fetched.text),
                version: fetched.version,
            })),
            source: Some(source),
            settings,
            last_read: tokio::sync::Mutex::new(now),
            last_success: std::sync::Mutex::new(now),
        })
    }

    /// A policy that never changes (`POLICY`, `POLICY_FILE`), versioned by
    /// [`content_version`] of its text.
    pub fn fixed(policy: Arc<Policy>, version: String) -> PolicyStore {
        PolicyStore {
            current: RwLock::new(Arc::new(PolicySnapshot {
                policy,
                content: version.clone(),
                version,
            })),
            source: None,
            settings: RefreshSettings::default(),
            last_read: tokio::sync::Mutex::new(Instant::now()),
            last_success: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// The policy in force and its version, for one record (a refresh never changes it
    /// under a running record).
    pub fn current(&self) -> Arc<PolicySnapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// How old the policy in force may be: the time since the source was last read
    /// successfully (zero for a fixed policy, which cannot go stale).
    pub fn age(&self, now: Instant) -> Duration {
        if self.source.is_none() {
            return Duration::ZERO;
        }
        let last = *self.last_success.lock().unwrap_or_else(|e| e.into_inner());
        now.saturating_duration_since(last)
    }

    /// Re-reads the policy if the interval has passed since the last read, within the read
    /// timeout, and swaps in a valid new version. Never blocks behind another refresh.
    pub async fn refresh_if_due(&self, now: Instant) -> Refresh {
        self.refresh_within(now, self.settings.timeout).await
    }

    /// Like [`PolicyStore::refresh_if_due`], with the read bounded by `limit` too (the time the
    /// invocation can spare before its records): with no time to spare, nothing is read.
    pub async fn refresh_within(&self, now: Instant, limit: Duration) -> Refresh {
        let Some(source) = self.source.as_deref() else {
            return Refresh::NotDue;
        };
        let timeout = self.settings.timeout.min(limit);
        if timeout.is_zero() {
            return Refresh::NotDue;
        }
        let Ok(mut last_read) = self.last_read.try_lock() else {
            return Refresh::NotDue;
        };
        if now.saturating_duration_since(*last_read) < self.settings.interval || now < *last_read {
            return Refresh::NotDue;
        }
        // A failed read waits a full interval too: a broken parameter is not hammered.
        *last_read = now;
        let current = self.current();
        let kept = current.version.clone();
        let loaded = match read(source, timeout).await {
            Ok(fetched) => {
                let content = content_version(&fetched.text);
                if content == current.content {
                    // Read and unchanged: as fresh as a new version.
                    *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = now;
                    if fetched.version != kept {
                        // The same document under another version number: keep the policy,
                        // report the number the parameter has now.
                        let snapshot = Arc::new(PolicySnapshot {
                            policy: Arc::clone(&current.policy),
                            version: fetched.version.clone(),
                            content,
                        });
                        *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
                    }
                    return Refresh::Unchanged {
                        version: fetched.version,
                    };
                }
                validate(source, &fetched, self.settings.guard_table)
                    .map(|policy| (Arc::new(policy), fetched.version, content))
            }
            Err(error) => Err(error),
        };
        match loaded {
            Ok((policy, version, content)) => {
                *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = now;
                tracing::info!(
                    policy = %source.describe(),
                    previous_version = %kept,
                    version = %version,
                    rules = policy.rule_count(),
                    "new policy version in force"
                );
                let snapshot = Arc::new(PolicySnapshot {
                    policy,
                    version: version.clone(),
                    content,
                });
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
                Refresh::Swapped {
                    previous: kept,
                    version,
                }
            }
            Err(error) => {
                let (version, errors) = match &error {
                    PolicySourceError::Invalid {
                        version, errors, ..
                    } => (version.as_str(), errors.len()),
                    PolicySourceError::Unreadable { .. } => ("", 0),
                };
                tracing::warn!(
                    policy = %source.describe(),
                    kept_version = %kept,
                    refused_version = version,
                    error_count = errors,
                    error.cause_chain = %crate::logging::cause_chain(&error),
                    "policy update refused; the last good policy stays in force"
                );
                Refresh::Refused { kept, error }
            }
        }
    }
}

async fn read(
    source: &dyn ParameterSource,
    timeout: Duration,
) -> Result<PolicyText, PolicySourceError> {
    let result = match tokio::time::timeout(timeout, source.fetch()).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::new(
            FetchErrorKind::Unavailable,
            format!("no answer within {} ms", timeout.as_millis()),
        )),
    };
    result.map_err(|source_error| PolicySourceError::Unreadable {
        what: source.describe(),
        source: source_error,
    })
}

fn validate(
    source: &dyn ParameterSource,
    fetched: &PolicyText,
    guard_table: bool,
) -> Result<Policy, PolicySourceError> {
    Policy::from_json(&fetched.text)
        .and_then(|policy| {
            policy.check_budgets_have_a_table(guard_table)?;
            Ok(policy)
        })
        .map_err(|errors| PolicySourceError::Invalid {
            what: source.describe(),
            version: fetched.version.clone(),
            errors,
        })
}

/// The version of a fixed policy document: `sha256:` and the first 16 hex digits of its
/// SHA-256.
pub fn content_version(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_versions_are_short_stable_hashes() {
        let v = content_version("{}");
        assert_eq!(v, content_version("{}"));
        assert_ne!(v, content_version("{ }"));
        assert_eq!(v.len(), "sha256:".len() + 16);
    }
}

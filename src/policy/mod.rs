//! The allowlist policy: which callers may reset which users in which user pools.
//! (Interface stub: the engine is being written under issue 2.)

use std::fmt;

/// Who is asking: the caller identities derived from the event, or nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The request carries no caller identity.
    Anonymous,
    /// One or more opaque identities (IAM ARN, `jwt:sub:..`, `jwt:client:..`, `principal:..`, queue ARN).
    Identified(Vec<String>),
}

/// The target user as resolved from Cognito.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub username: String,
    pub email: Option<String>,
    pub preferred_username: Option<String>,
    pub sub: Option<String>,
    /// Group names; empty when not fetched.
    pub groups: Vec<String>,
}

/// Why a request was denied; exactly one per denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    DeniedUser,
    DeniedGroup,
    NoRuleForCaller,
    PoolNotAllowed,
    UserNotAllowed,
}

impl DenyReason {
    /// The stable reason code (`denied-user`, ...).
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::DeniedUser => "denied-user",
            DenyReason::DeniedGroup => "denied-group",
            DenyReason::NoRuleForCaller => "no-rule-for-caller",
            DenyReason::PoolNotAllowed => "pool-not-allowed",
            DenyReason::UserNotAllowed => "user-not-allowed",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow { rule: String },
    Deny(DenyReason),
}

/// A loaded, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {}

/// All errors found while loading a policy.
#[derive(Debug, thiserror::Error)]
#[error("invalid policy")]
pub struct PolicyErrors {}

impl Policy {
    pub fn from_json(_text: &str) -> Result<Policy, PolicyErrors> {
        Ok(Policy {})
    }
    pub fn needs_groups(&self) -> bool {
        false
    }
    pub fn check_caller_and_pool(&self, _caller: &Caller, _pool: &str) -> Result<(), DenyReason> {
        Err(DenyReason::NoRuleForCaller)
    }
    pub fn decide(&self, _caller: &Caller, _pool: &str, _subject: &Subject) -> Decision {
        Decision::Deny(DenyReason::NoRuleForCaller)
    }
}

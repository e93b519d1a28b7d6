//! A rule's `approval` option: a second person decides before a reset under the rule is
//! performed (issue 27, part 2).
//!
//! ```text
//! "approval": { "approvers": ["<caller pattern>", ..], "ttlSeconds": N }
//! ```
//!
//! `approvers` are caller patterns, matched like a rule's `callers` (case-insensitive globs over
//! the caller's identities; `"anonymous"` is refused: an approval needs someone). `ttlSeconds`
//! (1 to 604800, a week) is how long a request waits for a decision; after it, the approval is
//! `approval-expired`. A policy with an approval needs `GUARD_TABLE` (the request waits there).

use std::fmt;

use super::Caller;
use super::pattern::Pattern;

/// Smallest and largest `approval.ttlSeconds`.
pub const APPROVAL_TTL_SECONDS: (u32, u32) = (1, 604_800);

/// A rule's `approval` option.
#[derive(Debug, Clone)]
pub struct ApprovalRule {
    /// Who may decide (caller patterns, case-insensitive).
    pub approvers: Vec<Pattern>,
    /// How long a request waits for a decision.
    pub ttl_seconds: u32,
}

impl ApprovalRule {
    /// Whether one of `caller`'s identities matches an approver pattern (never an anonymous
    /// caller).
    pub fn is_approver(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Anonymous => false,
            Caller::Identified(ids) => ids
                .iter()
                .any(|id| self.approvers.iter().any(|p| p.matches(id))),
        }
    }
}

impl fmt::Display for ApprovalRule {
    /// `by ["arn:..:role/lead"] within 3600 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let approvers: Vec<&str> = self.approvers.iter().map(Pattern::as_str).collect();
        write!(f, "by {approvers:?} within {} s", self.ttl_seconds)
    }
}

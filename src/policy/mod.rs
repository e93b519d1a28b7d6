//! The allowlist policy: which callers may reset which users in which user pools.
//!
//! A [`Policy`] is loaded once from a JSON document ([`Policy::from_json`]), validated with every
//! error located, and compiled. It is pure: no I/O, `Send + Sync + Clone`, cheap to query.
//!
//! Evaluation has two stages so that Cognito is only asked what the policy needs:
//! 1. [`Policy::check_caller_and_pool`] answers, before any user lookup, whether any rule lists
//!    the caller (`no-rule-for-caller`) and the pool (`pool-not-allowed`);
//! 2. [`Policy::decide`] gives the full decision once the user is resolved. Group membership
//!    is only consulted when [`Policy::needs_groups`] says so.
//!
//! The decision: the top-level `deny` beats everything (`denied-user`, then `denied-group`); then
//! the first rule in document order that matches allows; otherwise the most specific of
//! `no-rule-for-caller`, `pool-not-allowed`, `user-not-allowed` denies.
//!
//! Submodules: [`pattern`] (globs and case folding), `document` (schema and loading), `engine`
//! (decisions and explanations), `lint` (warnings).

pub mod approval;
mod document;
mod engine;
mod json;
mod lint;
pub mod pattern;
pub mod ticket;

#[cfg(test)]
mod tests;

use std::fmt;

pub use approval::ApprovalRule;
pub use document::ANONYMOUS_KEYWORD;
pub use engine::{CallerMatch, Explanation, GroupMatch, IdentityKind, IdentityMatch, Reason, Skip};
pub use lint::{LintWarning, PoolRolesLint};
use pattern::Pattern;
pub use ticket::{TicketRefusal, TicketRule};

/// Who is asking: the caller identities derived from the event, or nobody.
///
/// `Identified(vec![])` carries no identity at all: no `callers` pattern matches it and, not
/// being [`Caller::Anonymous`], neither does the `"anonymous"` keyword.
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
    /// The canonical Cognito `Username`.
    pub username: String,
    /// The `email` attribute, when present.
    pub email: Option<String>,
    /// The `preferred_username` attribute, when present.
    pub preferred_username: Option<String>,
    /// The `sub` attribute, when present.
    pub sub: Option<String>,
    /// Group names; empty when not fetched.
    pub groups: Vec<String>,
}

/// Why a request was denied; exactly one per denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// An identity of the user matches `deny.users`.
    DeniedUser,
    /// The user is in a group matching `deny.groups`.
    DeniedGroup,
    /// No rule lists any identity of the caller.
    NoRuleForCaller,
    /// Rules list the caller, but none of them lists the user pool.
    PoolNotAllowed,
    /// Rules cover the caller and the pool, but none admits the user.
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
    /// The named rule allows the reset.
    Allow {
        /// The name of the first matching rule.
        rule: String,
    },
    /// The reset is denied, for exactly one reason.
    Deny(DenyReason),
}

impl fmt::Display for Decision {
    /// `ALLOW <rule>` or `DENY <reason-code>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allow { rule } => write!(f, "ALLOW {rule}"),
            Decision::Deny(reason) => write!(f, "DENY {reason}"),
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    /// The `callers` patterns, without the `"anonymous"` keyword.
    callers: Vec<Pattern>,
    /// Whether `callers` lists `"anonymous"`.
    admits_anonymous: bool,
    /// Case-sensitive.
    pools: Vec<Pattern>,
    users: Option<Vec<Pattern>>,
    groups: Option<Vec<Pattern>>,
    except_users: Vec<Pattern>,
    except_groups: Vec<Pattern>,
    /// `invited`, `signOut` and `budget`.
    options: RuleOptions,
    /// `ticket`: whether a request must name a ticket, and the pattern it must match.
    ticket: Option<TicketRule>,
    /// `approval`: a second person decides before a reset under the rule is performed.
    approval: Option<ApprovalRule>,
}

/// What a rule does for an invited user (status `FORCE_CHANGE_PASSWORD`, never signed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Invited {
    /// REJECTED `invitation-pending` (the default).
    #[default]
    Refuse,
    /// `AdminCreateUser` with `MessageAction=RESEND`: the invitation is sent again.
    Resend,
}

impl Invited {
    /// `refuse` or `resend`, as the document spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Invited::Refuse => "refuse",
            Invited::Resend => "resend",
        }
    }
}

/// Whether a reset under a rule signs the user out everywhere (`AdminUserGlobalSignOut`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignOut {
    /// Never; a request asking for it is REJECTED `sign-out-not-allowed` (the default).
    #[default]
    Never,
    /// When the request asks for it (`SignOut: true`).
    Allowed,
    /// After every reset, whatever the request says.
    Always,
}

impl SignOut {
    /// `never`, `allowed` or `always`, as the document spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SignOut::Never => "never",
            SignOut::Allowed => "allowed",
            SignOut::Always => "always",
        }
    }
}

/// At most `resets` performed resets by one caller identity under a rule in any window of
/// `per_seconds` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// 1..=100000.
    pub resets: u32,
    /// 1..=86400.
    pub per_seconds: u32,
}

/// Smallest and largest `budget.resets`.
pub const BUDGET_RESETS: (u32, u32) = (1, 100_000);
/// Smallest and largest `budget.perSeconds`.
pub const BUDGET_SECONDS: (u32, u32) = (1, 86_400);

/// A rule's options beyond who may reset whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleOptions {
    pub invited: Invited,
    pub sign_out: SignOut,
    pub budget: Option<Budget>,
}

impl fmt::Display for RuleOptions {
    /// `invited=refuse signOut=never budget=none` (or `budget=5/3600s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invited={} signOut={} budget=",
            self.invited.as_str(),
            self.sign_out.as_str()
        )?;
        match self.budget {
            None => f.write_str("none"),
            Some(b) => write!(
                f,
                "{} resets per {} s (per caller identity)",
                b.resets, b.per_seconds
            ),
        }
    }
}

/// A loaded, validated policy with its patterns compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    deny_users: Vec<Pattern>,
    deny_groups: Vec<Pattern>,
    rules: Vec<Rule>,
    /// Warnings found while loading (edge whitespace in patterns).
    load_warnings: Vec<LintWarning>,
}

/// One problem in a policy document, with its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct PolicyError {
    /// Where: a path such as `rules[1].userPools[0]`, `(document)`, or `line L column C` for
    /// JSON syntax errors.
    pub location: String,
    /// What, in lower case.
    pub message: String,
}

/// All errors found while loading a policy; never empty. Displays one error per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.errors))]
pub struct PolicyErrors {
    errors: Vec<PolicyError>,
}

fn lines(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(PolicyError::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl PolicyErrors {
    /// The errors, in document order (as found).
    pub fn errors(&self) -> &[PolicyError] {
        &self.errors
    }

    /// How many errors there are.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Always false: a `PolicyErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl From<Vec<PolicyError>> for PolicyErrors {
    fn from(errors: Vec<PolicyError>) -> PolicyErrors {
        PolicyErrors { errors }
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Counts describing a loaded policy, for `reset-policy lint` and the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySummary {
    /// Number of rules.
    pub rules: usize,
    /// Number of `deny.users` patterns.
    pub deny_users: usize,
    /// Number of `deny.groups` patterns.
    pub deny_groups: usize,
    /// Whether decisions need the user's groups ([`Policy::needs_groups`]).
    pub needs_groups: bool,
}

impl fmt::Display for PolicySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{} rule{}, {} deny.users pattern{}, {} deny.groups pattern{}, group membership {}",
            self.rules,
            plural(self.rules),
            self.deny_users,
            plural(self.deny_users),
            self.deny_groups,
            plural(self.deny_groups),
            if self.needs_groups {
                "used"
            } else {
                "not used"
            }
        )
    }
}

impl Policy {
    /// Parses, validates and compiles a policy document. On failure every error is returned,
    /// each with its location.
    pub fn from_json(text: &str) -> Result<Policy, PolicyErrors> {
        document::load(text)
    }

    /// Whether any decision can depend on group membership (any `deny.groups`, rule `groups`
    /// or `except.groups` pattern). When false, groups need not be fetched.
    pub fn needs_groups(&self) -> bool {
        !self.deny_groups.is_empty()
            || self
                .rules
                .iter()
                .any(|r| r.groups.is_some() || !r.except_groups.is_empty())
    }

    /// Stage one, before the user is looked up: `Err(NoRuleForCaller)` when no rule lists the
    /// caller, `Err(PoolNotAllowed)` when rules list the caller but none lists `pool`, else
    /// `Ok(())`. `Ok` does not mean allowed: call [`Policy::decide`] with the resolved user.
    pub fn check_caller_and_pool(&self, caller: &Caller, pool: &str) -> Result<(), DenyReason> {
        self.stage_one(caller, pool)
    }

    /// The full decision: top-level deny first, then the first matching rule, else the most
    /// specific reason code.
    pub fn decide(&self, caller: &Caller, pool: &str, subject: &Subject) -> Decision {
        self.evaluate_silently(caller, pool, subject)
    }

    /// Whether some rule would admit `subject` for this caller and pool, leaving the top-level
    /// deny aside. The function answers with a user's state (missing, denied) only where this
    /// holds, so that a narrow caller cannot use it to probe the directory.
    pub fn rules_admit(&self, caller: &Caller, pool: &str, subject: &Subject) -> bool {
        self.rules_admit_inner(caller, pool, subject)
    }

    /// The same decision as [`Policy::decide`], with the steps that led to it.
    pub fn explain(&self, caller: &Caller, pool: &str, subject: &Subject) -> Explanation {
        self.evaluate_explained(caller, pool, subject)
    }

    /// The options of the rule named `rule` (the defaults for a name no rule has).
    pub fn options(&self, rule: &str) -> RuleOptions {
        self.rules
            .iter()
            .find(|r| r.name == rule)
            .map(|r| r.options)
            .unwrap_or_default()
    }

    /// The `ticket` option of the rule named `rule` (`None`: the rule asks nothing of tickets).
    pub fn ticket_rule(&self, rule: &str) -> Option<&TicketRule> {
        self.rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.ticket.as_ref())
    }

    /// Whether a request with `ticket` may go on under the rule named `rule`.
    pub fn check_ticket(&self, rule: &str, ticket: Option<&str>) -> Result<(), TicketRefusal> {
        self.ticket_rule(rule).map_or(Ok(()), |t| t.check(ticket))
    }

    /// Stage one for tickets, before the user is looked up: the ticket check that does not
    /// depend on the target. Among the rules that list the caller and `pool`, when none would let
    /// a request with `ticket` go on, `Err(Required)` (no ticket) or `Err(Invalid)`; else `Ok`.
    ///
    /// The answer depends only on the caller, the pool and the ticket, never on the user, so it
    /// tells a caller nothing about the target. `Ok` does not mean the ticket will do: the rule
    /// that admits the user is checked with [`Policy::check_ticket`] once it is known. Call it
    /// after [`Policy::check_caller_and_pool`] (with no such rule it answers `Ok`).
    pub fn check_ticket_for_caller(
        &self,
        caller: &Caller,
        pool: &str,
        ticket: Option<&str>,
    ) -> Result<(), TicketRefusal> {
        let mut refusal = None;
        for rule in self.rules_for_caller_and_pool(caller, pool) {
            match rule.ticket.as_ref().map_or(Ok(()), |t| t.check(ticket)) {
                Ok(()) => return Ok(()),
                Err(why) => refusal = Some(why),
            }
        }
        refusal.map_or(Ok(()), Err)
    }

    /// The `approval` option of the rule named `rule` (`None`: resets under it need none).
    pub fn approval(&self, rule: &str) -> Option<&ApprovalRule> {
        self.rules
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.approval.as_ref())
    }

    /// Whether any rule has an `approval` option.
    pub fn has_approval(&self) -> bool {
        self.rules.iter().any(|r| r.approval.is_some())
    }

    /// Whether `caller` is an approver of any rule (an approval's answers to a caller who
    /// approves nothing say nothing about the approval).
    pub fn approves_any(&self, caller: &Caller) -> bool {
        self.rules
            .iter()
            .filter_map(|r| r.approval.as_ref())
            .any(|a| a.is_approver(caller))
    }

    /// Whether any rule has a `ticket` option.
    pub fn has_tickets(&self) -> bool {
        self.rules.iter().any(|r| r.ticket.is_some())
    }

    /// Whether any rule has a `budget` (it needs the guard's table).
    pub fn has_budget(&self) -> bool {
        self.rules.iter().any(|r| r.options.budget.is_some())
    }

    /// Refuses a policy with budgets (or approvals) where there is no guard table to count them
    /// (or keep the waiting requests) in: one error per `budget` and per `approval`, located.
    pub fn check_budgets_have_a_table(&self, guard_table: bool) -> Result<(), PolicyErrors> {
        if guard_table {
            return Ok(());
        }
        let errors: Vec<PolicyError> = self
            .rules
            .iter()
            .enumerate()
            .flat_map(|(index, r)| {
                let budget = r.options.budget.is_some().then(|| PolicyError {
                    location: format!("rules[{index}].budget"),
                    message: "a budget is counted in the guard's table, and GUARD_TABLE is not set: set it, or remove the budget".to_owned(),
                });
                let approval = r.approval.is_some().then(|| PolicyError {
                    location: format!("rules[{index}].approval"),
                    message: "a request waiting for approval is kept in the guard's table, and GUARD_TABLE is not set: set it, or remove the approval".to_owned(),
                });
                budget.into_iter().chain(approval)
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PolicyErrors::from(errors))
        }
    }

    /// The number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The rule names, in document order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Counts for a one-line summary.
    pub fn summary(&self) -> PolicySummary {
        PolicySummary {
            rules: self.rules.len(),
            deny_users: self.deny_users.len(),
            deny_groups: self.deny_groups.len(),
            needs_groups: self.needs_groups(),
        }
    }
}

//! Warnings about a valid policy: rules that can never match (shadowed by an earlier rule, by the
//! top-level `deny`, or by their own `except`), patterns with edge whitespace, and an empty rule
//! list. Shadowing is decided with [`Pattern::subsumes`], which is sound but not complete: every
//! warning is real, but some shadowed rules may go unreported.

use std::fmt;

use super::pattern::Pattern;
use super::{Policy, Rule};

/// A problem that does not make the policy invalid, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintWarning {
    /// Where, e.g. `rules[2]` or `rules[0].users[1]`.
    pub location: String,
    /// What, in lower case.
    pub message: String,
}

impl fmt::Display for LintWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Whether every string some pattern of `inner` matches is matched by a pattern of `outer`.
fn all_covered(inner: &[Pattern], outer: &[Pattern]) -> bool {
    inner.iter().all(|p| outer.iter().any(|q| q.subsumes(p)))
}

/// Whether `earlier` matches every request that `later` matches (so `later` never gets a turn).
fn covers(earlier: &Rule, later: &Rule) -> bool {
    let no_except = earlier.except_users.is_empty() && earlier.except_groups.is_empty();
    let callers = (!later.admits_anonymous || earlier.admits_anonymous)
        && all_covered(&later.callers, &earlier.callers);
    let pools = all_covered(&later.pools, &earlier.pools);
    let users = match (&earlier.users, &later.users) {
        (None, _) => true,
        (Some(e), _) if e.iter().any(Pattern::is_match_all) => true,
        (Some(e), Some(l)) => all_covered(l, e),
        (Some(_), None) => false,
    };
    let groups = match (&earlier.groups, &later.groups) {
        (None, _) => true,
        (Some(e), Some(l)) => all_covered(l, e),
        (Some(_), None) => false,
    };
    no_except && callers && pools && users && groups
}

/// Whether `deny_users` / `deny_groups` (or a rule's own `except`) rule out everyone `rule` names.
fn names_only(rule: &Rule, users: &[Pattern], groups: &[Pattern]) -> Option<&'static str> {
    if rule.users.as_deref().is_some_and(|u| all_covered(u, users)) {
        Some("users")
    } else if rule
        .groups
        .as_deref()
        .is_some_and(|g| all_covered(g, groups))
    {
        Some("groups")
    } else {
        None
    }
}

impl Policy {
    /// Every warning for this policy: load-time ones first, then one per rule that can never
    /// match. An empty list means nothing to report.
    pub fn lint_warnings(&self) -> Vec<LintWarning> {
        let mut warnings = self.load_warnings.clone();
        if self.rules.is_empty() {
            warnings.push(LintWarning {
                location: "rules".into(),
                message: "no rules: every request is denied".into(),
            });
        }
        for (j, rule) in self.rules.iter().enumerate() {
            let location = format!("rules[{j}]");
            let name = &rule.name;
            if let Some(field) = names_only(rule, &self.deny_users, &self.deny_groups) {
                warnings.push(LintWarning {
                    location,
                    message: format!(
                        "rule {name:?} can never allow: every user its {field} names is in deny.{field}"
                    ),
                });
            } else if let Some(field) = names_only(rule, &rule.except_users, &rule.except_groups) {
                warnings.push(LintWarning {
                    location,
                    message: format!(
                        "rule {name:?} can never match: its except.{field} covers every user its {field} names"
                    ),
                });
            } else if let Some((i, earlier)) = self.rules[..j]
                .iter()
                .enumerate()
                .find(|(_, earlier)| covers(earlier, rule))
            {
                warnings.push(LintWarning {
                    location,
                    message: format!(
                        "rule {name:?} can never match: rules[{i}] {:?} comes first and matches every request it would",
                        earlier.name
                    ),
                });
            }
        }
        warnings
    }
}

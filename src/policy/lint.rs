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
            if let Some(approval) = &rule.approval
                && let Some(i) = approval.approvers.iter().position(Pattern::is_match_all)
            {
                warnings.push(LintWarning {
                    location: format!("rules[{j}].approval.approvers[{i}]"),
                    message: format!(
                        "rule {name:?}: every caller is an approver, so any second caller can approve (the requester only is refused); name the approvers"
                    ),
                });
            }
        }
        warnings
    }
}

/// Whether a pattern is one literal value (no `*` or `?`).
fn literal(pattern: &Pattern) -> Option<&str> {
    let source = pattern.as_str();
    (!source.contains(['*', '?'])).then_some(source)
}

/// What `lint --pool-roles` can tell about the pools of `POOL_ROLES`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolRolesLint {
    /// Real problems: a rule's pool that is a case variant of a mapped pool (so it looks like
    /// the other account's, but would be asked in the function's own), a mapped pool no rule
    /// allows.
    pub warnings: Vec<LintWarning>,
    /// The literal pools the rules name that `POOL_ROLES` does not map: reached in the function's
    /// own account. A pool id says its region, never its account, so these cannot be checked.
    pub unmapped: Vec<String>,
}

impl Policy {
    /// Checks the rules' pools against the pool ids `POOL_ROLES` maps (`mapped`). Warns only on
    /// what the ids prove; a pool id does not carry its account, so an unmapped pool is listed,
    /// not judged.
    pub fn lint_pool_roles(&self, mapped: &[&str]) -> PoolRolesLint {
        let mut lint = PoolRolesLint::default();
        for (j, rule) in self.rules.iter().enumerate() {
            for (k, pattern) in rule.pools.iter().enumerate() {
                let Some(pool) = literal(pattern) else {
                    continue;
                };
                if mapped.contains(&pool) {
                    continue;
                }
                match mapped.iter().find(|m| m.eq_ignore_ascii_case(pool)) {
                    Some(near) => lint.warnings.push(LintWarning {
                        location: format!("rules[{j}].userPools[{k}]"),
                        message: format!(
                            "pool {pool:?} is not in POOL_ROLES, which maps {near:?} (pool ids are case-sensitive): rule {:?} would ask for it in the function's own account",
                            rule.name
                        ),
                    }),
                    None if !lint.unmapped.iter().any(|u| u == pool) => {
                        lint.unmapped.push(pool.to_owned())
                    }
                    None => {}
                }
            }
        }
        for pool in mapped {
            let allowed = self
                .rules
                .iter()
                .any(|rule| rule.pools.iter().any(|p| p.matches(pool)));
            if !allowed {
                lint.warnings.push(LintWarning {
                    location: format!("POOL_ROLES[{pool:?}]"),
                    message: "no rule allows this pool: its role is never assumed".into(),
                });
            }
        }
        lint
    }
}

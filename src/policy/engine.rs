//! Evaluating a request against a loaded policy: the two-stage check, the full decision and its
//! explanation. Decisions and explanations run through one code path (the explanation only
//! records what the decision looked at), so they cannot disagree.

use std::fmt;

use std::ops::Range;

use super::pattern::{Pattern, fold_char};
use super::{Caller, Decision, DenyReason, Policy, Rule, Subject};

/// Which identity of the target user matched a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// The canonical Cognito `Username`.
    Username,
    /// The `email` attribute.
    Email,
    /// The `preferred_username` attribute.
    PreferredUsername,
    /// The `sub` attribute.
    Sub,
}

impl IdentityKind {
    /// The attribute name (`username`, `email`, `preferred_username`, `sub`).
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Username => "username",
            IdentityKind::Email => "email",
            IdentityKind::PreferredUsername => "preferred_username",
            IdentityKind::Sub => "sub",
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user identity that matched a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityMatch {
    /// Which identity.
    pub kind: IdentityKind,
    /// Its value, as given.
    pub value: String,
    /// The pattern it matched, as written in the policy.
    pub pattern: String,
}

impl fmt::Display for IdentityMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} matches {:?}",
            self.kind, self.value, self.pattern
        )
    }
}

/// A group of the user that matched a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMatch {
    /// The group name, as given.
    pub group: String,
    /// The pattern it matched, as written in the policy.
    pub pattern: String,
}

impl fmt::Display for GroupMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {:?} matches {:?}", self.group, self.pattern)
    }
}

/// How a rule admitted the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerMatch {
    /// The request has no caller identity and the rule lists `"anonymous"`.
    Anonymous,
    /// A caller identity matched a `callers` pattern.
    Identity {
        /// The caller identity.
        caller: String,
        /// The pattern it matched.
        pattern: String,
    },
}

impl fmt::Display for CallerMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerMatch::Anonymous => f.write_str("anonymous caller admitted by \"anonymous\""),
            CallerMatch::Identity { caller, pattern } => {
                write!(f, "caller {caller:?} matches {pattern:?}")
            }
        }
    }
}

/// Why a rule did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// None of the caller identities matches the rule's `callers`.
    CallerNotListed,
    /// The request is anonymous and the rule does not list `"anonymous"` (`"*"` never admits it).
    AnonymousNotAdmitted,
    /// The user pool matches none of the rule's `userPools`.
    PoolNotListed,
    /// No identity of the user matches the rule's `users`.
    UserNotListed,
    /// The user is in none of the rule's `groups`.
    NotInGroup,
    /// An identity matched the rule's `except.users`.
    ExceptUser(IdentityMatch),
    /// A group matched the rule's `except.groups`.
    ExceptGroup(GroupMatch),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::CallerNotListed => f.write_str("no caller identity matches its callers"),
            Skip::AnonymousNotAdmitted => {
                f.write_str("anonymous caller not admitted (only \"anonymous\" admits it)")
            }
            Skip::PoolNotListed => f.write_str("user pool matches none of its userPools"),
            Skip::UserNotListed => f.write_str("no identity of the user matches its users"),
            Skip::NotInGroup => f.write_str("the user is in none of its groups"),
            Skip::ExceptUser(m) => write!(f, "excepted: {m} in except.users"),
            Skip::ExceptGroup(m) => write!(f, "excepted: {m} in except.groups"),
        }
    }
}

/// One step of an explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An identity of the user matched `deny.users`.
    DeniedUser(IdentityMatch),
    /// A group of the user matched `deny.groups`.
    DeniedGroup(GroupMatch),
    /// Nothing in the top-level `deny` matched.
    NotDenied,
    /// A rule was considered and did not match.
    RuleSkipped {
        /// The rule's name.
        rule: String,
        /// Its index in `rules`.
        index: usize,
        /// Why it did not match.
        why: Skip,
    },
    /// The rule that allowed the request.
    RuleMatched {
        /// The rule's name.
        rule: String,
        /// Its index in `rules`.
        index: usize,
        /// How the caller was admitted.
        caller: CallerMatch,
        /// The user pool id.
        pool: String,
        /// The `userPools` pattern it matched.
        pool_pattern: String,
        /// The identity that matched `users`, when the rule has `users`.
        user: Option<IdentityMatch>,
        /// The group that matched `groups`, when the rule has `groups`.
        group: Option<GroupMatch>,
    },
    /// No rule matched: the summary behind the reason code.
    NoRuleMatched(DenyReason),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::DeniedUser(m) => write!(f, "deny.users: {m}"),
            Reason::DeniedGroup(m) => write!(f, "deny.groups: {m}"),
            Reason::NotDenied => f.write_str("deny: no identity or group of the user matches"),
            Reason::RuleSkipped { rule, index, why } => {
                write!(f, "rules[{index}] {rule:?}: skipped: {why}")
            }
            Reason::RuleMatched {
                rule,
                index,
                caller,
                pool,
                pool_pattern,
                user,
                group,
            } => {
                write!(
                    f,
                    "rules[{index}] {rule:?}: matches: {caller}; pool {pool:?} matches {pool_pattern:?}"
                )?;
                if let Some(user) = user {
                    write!(f, "; {user}")?;
                }
                if let Some(group) = group {
                    write!(f, "; {group}")?;
                }
                Ok(())
            }
            Reason::NoRuleMatched(reason) => f.write_str(match reason {
                DenyReason::NoRuleForCaller => "no rule lists any identity of the caller",
                DenyReason::PoolNotAllowed => "rules list the caller, but none of them this pool",
                DenyReason::UserNotAllowed => {
                    "rules cover the caller and the pool, but none admits this user"
                }
                DenyReason::DeniedUser | DenyReason::DeniedGroup => "denied by the top-level deny",
            }),
        }
    }
}

/// A decision with the steps that led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision, identical to [`Policy::decide`]'s.
    pub decision: Decision,
    /// The steps, in evaluation order.
    pub reasons: Vec<Reason>,
}

/// Receives explanation steps; the decision path uses a sink that ignores them for free.
trait Trace {
    fn note(&mut self, step: impl FnOnce() -> Reason);
}

/// Discards every step.
struct Silent;

impl Trace for Silent {
    #[inline(always)]
    fn note(&mut self, _step: impl FnOnce() -> Reason) {}
}

impl Trace for Vec<Reason> {
    fn note(&mut self, step: impl FnOnce() -> Reason) {
        self.push(step());
    }
}

/// The folded texts of one request, in one buffer (two allocations per request).
struct Folded {
    chars: Vec<char>,
    /// (start, end) of each text in `chars`.
    spans: Vec<(usize, usize)>,
}

impl Folded {
    fn with_capacity(chars: usize, texts: usize) -> Folded {
        Folded {
            chars: Vec::with_capacity(chars),
            spans: Vec::with_capacity(texts),
        }
    }

    /// Appends `text` (folded when `fold` is set) and returns its index.
    fn push(&mut self, text: &str, fold: bool) -> usize {
        let start = self.chars.len();
        if fold {
            self.chars.extend(text.chars().map(fold_char));
        } else {
            self.chars.extend(text.chars());
        }
        self.spans.push((start, self.chars.len()));
        self.spans.len() - 1
    }

    #[inline]
    fn text(&self, index: usize) -> &[char] {
        self.spans
            .get(index)
            .and_then(|&(start, end)| self.chars.get(start..end))
            .unwrap_or_default()
    }

    #[inline]
    fn texts(&self, indices: Range<usize>) -> impl Iterator<Item = &[char]> {
        indices.map(|i| self.text(i))
    }
}

/// A request prepared for matching: every text folded once (the pool id is kept as is).
struct Request {
    folded: Folded,
    /// The caller identities; `None` for an anonymous request.
    callers: Option<Range<usize>>,
    pool: usize,
    identities: Range<usize>,
    /// Which identity each of `identities` is.
    kinds: [IdentityKind; 4],
    /// The groups, in the subject's order.
    groups: Range<usize>,
}

/// The optional identities of a subject that are present, in a fixed order.
fn attributes(subject: &Subject) -> impl Iterator<Item = (IdentityKind, &str)> {
    [
        (IdentityKind::Email, subject.email.as_deref()),
        (
            IdentityKind::PreferredUsername,
            subject.preferred_username.as_deref(),
        ),
        (IdentityKind::Sub, subject.sub.as_deref()),
    ]
    .into_iter()
    .filter_map(|(kind, value)| Some((kind, value?)))
}

impl Request {
    fn new(caller: &Caller, pool: &str, subject: Option<&Subject>) -> Request {
        let ids: &[String] = match caller {
            Caller::Anonymous => &[],
            Caller::Identified(ids) => ids,
        };
        let groups: &[String] = subject.map_or(&[], |s| &s.groups);
        let bytes = ids.iter().map(String::len).sum::<usize>()
            + pool.len()
            + subject.map_or(0, |s| s.username.len())
            + subject
                .into_iter()
                .flat_map(attributes)
                .map(|(_, v)| v.len())
                .sum::<usize>()
            + groups.iter().map(String::len).sum::<usize>();
        let mut folded = Folded::with_capacity(bytes, ids.len() + groups.len() + 5);

        let first = folded.spans.len();
        for id in ids {
            folded.push(id, true);
        }
        let callers = match caller {
            Caller::Anonymous => None,
            Caller::Identified(_) => Some(first..folded.spans.len()),
        };
        let pool = folded.push(pool, false);

        let mut kinds = [IdentityKind::Username; 4];
        let first = folded.spans.len();
        if let Some(subject) = subject {
            folded.push(&subject.username, true);
            for (slot, (kind, value)) in kinds.iter_mut().skip(1).zip(attributes(subject)) {
                *slot = kind;
                folded.push(value, true);
            }
        }
        let identities = first..folded.spans.len();
        let first = folded.spans.len();
        for group in groups {
            folded.push(group, true);
        }
        let groups = first..folded.spans.len();
        Request {
            folded,
            callers,
            pool,
            identities,
            kinds,
            groups,
        }
    }
}

fn identity_value(subject: &Subject, kind: IdentityKind) -> &str {
    match kind {
        IdentityKind::Username => &subject.username,
        IdentityKind::Email => subject.email.as_deref().unwrap_or_default(),
        IdentityKind::PreferredUsername => {
            subject.preferred_username.as_deref().unwrap_or_default()
        }
        IdentityKind::Sub => subject.sub.as_deref().unwrap_or_default(),
    }
}

/// The first (text, pattern) pair that matches, as indices.
#[inline]
fn first_match<'t>(
    patterns: &[Pattern],
    texts: impl IntoIterator<Item = &'t [char]>,
) -> Option<(usize, usize)> {
    texts.into_iter().enumerate().find_map(|(t, text)| {
        patterns
            .iter()
            .position(|p| p.matches_chars(text))
            .map(|p| (t, p))
    })
}

/// The first identity of the subject matching one of `patterns`.
fn identity_match<'a>(
    patterns: &'a [Pattern],
    request: &'a Request,
    subject: &'a Subject,
) -> Option<impl FnOnce() -> IdentityMatch + 'a> {
    let texts = request.folded.texts(request.identities.clone());
    let (t, p) = first_match(patterns, texts)?;
    Some(move || {
        let kind = request
            .kinds
            .get(t)
            .copied()
            .unwrap_or(IdentityKind::Username);
        IdentityMatch {
            kind,
            value: identity_value(subject, kind).to_owned(),
            pattern: patterns[p].as_str().to_owned(),
        }
    })
}

/// The first group of the subject matching one of `patterns`.
fn group_match<'a>(
    patterns: &'a [Pattern],
    request: &'a Request,
    subject: &'a Subject,
) -> Option<impl FnOnce() -> GroupMatch + 'a> {
    let (t, p) = first_match(patterns, request.folded.texts(request.groups.clone()))?;
    Some(move || GroupMatch {
        group: subject.groups.get(t).cloned().unwrap_or_default(),
        pattern: patterns[p].as_str().to_owned(),
    })
}

impl Rule {
    /// Whether the rule admits the caller; `Ok` carries (caller index, pattern index) or `None`
    /// for anonymous.
    #[inline]
    fn admit_caller(&self, request: &Request) -> Result<Option<(usize, usize)>, Skip> {
        match &request.callers {
            None if self.admits_anonymous => Ok(None),
            None => Err(Skip::AnonymousNotAdmitted),
            Some(ids) => first_match(&self.callers, request.folded.texts(ids.clone()))
                .map(Some)
                .ok_or(Skip::CallerNotListed),
        }
    }

    /// The index of the first `userPools` pattern matching the pool.
    #[inline]
    fn admit_pool(&self, request: &Request) -> Option<usize> {
        let pool = request.folded.text(request.pool);
        self.pools.iter().position(|p| p.matches_chars(pool))
    }
}

impl Policy {
    /// Stage one, before any user lookup: is there a rule for this caller, and for this pool?
    pub(super) fn stage_one(&self, caller: &Caller, pool: &str) -> Result<(), DenyReason> {
        let request = Request::new(caller, pool, None);
        let mut caller_seen = false;
        for rule in &self.rules {
            if rule.admit_caller(&request).is_ok() {
                caller_seen = true;
                if rule.admit_pool(&request).is_some() {
                    return Ok(());
                }
            }
        }
        Err(if caller_seen {
            DenyReason::PoolNotAllowed
        } else {
            DenyReason::NoRuleForCaller
        })
    }

    /// The rules that list the caller and the pool (stage one's candidates), in document order.
    pub(super) fn rules_for_caller_and_pool(&self, caller: &Caller, pool: &str) -> Vec<&Rule> {
        let request = Request::new(caller, pool, None);
        self.rules
            .iter()
            .filter(|rule| {
                rule.admit_caller(&request).is_ok() && rule.admit_pool(&request).is_some()
            })
            .collect()
    }

    /// The decision without an explanation.
    pub(super) fn evaluate_silently(
        &self,
        caller: &Caller,
        pool: &str,
        subject: &Subject,
    ) -> Decision {
        self.evaluate(caller, pool, subject, &mut Silent)
    }

    /// The decision with an explanation.
    pub(super) fn evaluate_explained(
        &self,
        caller: &Caller,
        pool: &str,
        subject: &Subject,
    ) -> Explanation {
        let mut reasons = Vec::new();
        let decision = self.evaluate(caller, pool, subject, &mut reasons);
        Explanation { decision, reasons }
    }

    fn evaluate(
        &self,
        caller: &Caller,
        pool_id: &str,
        subject: &Subject,
        trace: &mut impl Trace,
    ) -> Decision {
        let request = Request::new(caller, pool_id, Some(subject));

        // The top-level deny beats every rule.
        if let Some(m) = identity_match(&self.deny_users, &request, subject) {
            trace.note(|| Reason::DeniedUser(m()));
            return Decision::Deny(DenyReason::DeniedUser);
        }
        if let Some(m) = group_match(&self.deny_groups, &request, subject) {
            trace.note(|| Reason::DeniedGroup(m()));
            return Decision::Deny(DenyReason::DeniedGroup);
        }
        trace.note(|| Reason::NotDenied);
        self.evaluate_rules(caller, pool_id, subject, &request, trace)
    }

    /// Whether some rule admits the subject for this caller and pool, the top-level deny aside.
    pub(super) fn rules_admit_inner(&self, caller: &Caller, pool: &str, subject: &Subject) -> bool {
        let request = Request::new(caller, pool, Some(subject));
        matches!(
            self.evaluate_rules(caller, pool, subject, &request, &mut Silent),
            Decision::Allow { .. }
        )
    }

    /// The rules, in order: the first that admits caller, pool and user allows.
    fn evaluate_rules(
        &self,
        caller: &Caller,
        pool_id: &str,
        subject: &Subject,
        request: &Request,
        trace: &mut impl Trace,
    ) -> Decision {
        let mut caller_seen = false;
        let mut pool_seen = false;
        for (index, rule) in self.rules.iter().enumerate() {
            let skip = |why: Skip| Reason::RuleSkipped {
                rule: rule.name.clone(),
                index,
                why,
            };
            let caller_hit = match rule.admit_caller(request) {
                Ok(hit) => hit,
                Err(why) => {
                    trace.note(|| skip(why));
                    continue;
                }
            };
            caller_seen = true;
            let Some(pool_hit) = rule.admit_pool(request) else {
                trace.note(|| skip(Skip::PoolNotListed));
                continue;
            };
            pool_seen = true;
            let user_hit = match &rule.users {
                None => None,
                Some(patterns) => match identity_match(patterns, request, subject) {
                    Some(m) => Some(m),
                    None => {
                        trace.note(|| skip(Skip::UserNotListed));
                        continue;
                    }
                },
            };
            let group_hit = match &rule.groups {
                None => None,
                Some(patterns) => match group_match(patterns, request, subject) {
                    Some(m) => Some(m),
                    None => {
                        trace.note(|| skip(Skip::NotInGroup));
                        continue;
                    }
                },
            };
            if let Some(m) = identity_match(&rule.except_users, request, subject) {
                trace.note(|| skip(Skip::ExceptUser(m())));
                continue;
            }
            if let Some(m) = group_match(&rule.except_groups, request, subject) {
                trace.note(|| skip(Skip::ExceptGroup(m())));
                continue;
            }
            trace.note(|| Reason::RuleMatched {
                rule: rule.name.clone(),
                index,
                caller: match (caller_hit, caller) {
                    (Some((c, p)), Caller::Identified(ids)) => CallerMatch::Identity {
                        caller: ids[c].clone(),
                        pattern: rule.callers[p].as_str().to_owned(),
                    },
                    _ => CallerMatch::Anonymous,
                },
                pool: pool_id.to_owned(),
                pool_pattern: rule.pools[pool_hit].as_str().to_owned(),
                user: user_hit.map(|m| m()),
                group: group_hit.map(|m| m()),
            });
            return Decision::Allow {
                rule: rule.name.clone(),
            };
        }
        let reason = if !caller_seen {
            DenyReason::NoRuleForCaller
        } else if !pool_seen {
            DenyReason::PoolNotAllowed
        } else {
            DenyReason::UserNotAllowed
        };
        trace.note(|| Reason::NoRuleMatched(reason));
        Decision::Deny(reason)
    }
}

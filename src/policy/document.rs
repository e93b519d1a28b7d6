//! Loading a policy document: the JSON schema, checked by hand so that every problem is reported
//! at once with its location (`rules[1].userPools[0]: pattern must not be empty`), and compiled
//! into a [`Policy`] whose patterns are ready to match.
//!
//! The schema (all keys are case-sensitive; unknown or repeated keys are errors):
//!
//! ```text
//! { "version": 1,                                   required, exactly 1
//!   "deny":  { "users": [..], "groups": [..] },     optional; both lists optional, may be empty
//!   "rules": [                                      required, may be empty (then all is denied)
//!     { "name": "..",                               required, unique, not blank
//!       "callers": [..],                            required, not empty; "anonymous" is a keyword
//!       "userPools": [..],                          required, not empty; case-sensitive
//!       "users": [..], "groups": [..],              at least one of them; not empty when present
//!       "except": { "users": [..], "groups": [..] } optional
//!       "invited": "refuse" | "resend",             optional, default "refuse"
//!       "signOut": "never" | "allowed" | "always",  optional, default "never"
//!       "budget": { "resets": N, "perSeconds": S }  optional; 1 <= N <= 100000, 1 <= S <= 86400
//!       "ticket": { "required": B, "pattern": ".." } optional; at least one of them; required
//!                                                   defaults to false; pattern: a regular
//!                                                   expression (see `ticket`), at most 256 bytes
//!       "approval": { "approvers": [..], "ttlSeconds": N } optional; approvers: caller patterns,
//!                                                   not empty, no "anonymous"; 1 <= N <= 604800
//!     } ] }
//! ```

use std::collections::HashMap;

use super::approval::{APPROVAL_TTL_SECONDS, ApprovalRule};
use super::json::{self, Node};
use super::lint::LintWarning;
use super::pattern::Pattern;
use super::ticket::{TicketPattern, TicketRule};
use super::{
    BUDGET_RESETS, BUDGET_SECONDS, Budget, Invited, Policy, PolicyError, PolicyErrors, Rule,
    RuleOptions, SignOut,
};

/// The keyword in `callers` that admits a request without caller identity (case-insensitive).
pub const ANONYMOUS_KEYWORD: &str = "anonymous";

const TOP_FIELDS: &[&str] = &["version", "deny", "rules"];
const DENY_FIELDS: &[&str] = &["users", "groups"];
const RULE_FIELDS: &[&str] = &[
    "name",
    "callers",
    "userPools",
    "users",
    "groups",
    "except",
    "invited",
    "signOut",
    "budget",
    "ticket",
    "approval",
];
const APPROVAL_FIELDS: &[&str] = &["approvers", "ttlSeconds"];
const TICKET_FIELDS: &[&str] = &["required", "pattern"];
const BUDGET_FIELDS: &[&str] = &["resets", "perSeconds"];
const EXCEPT_FIELDS: &[&str] = &["users", "groups"];

/// The location of the document itself, for errors about the whole document.
const ROOT: &str = "(document)";

/// Parses, validates and compiles a policy document.
pub(super) fn load(text: &str) -> Result<Policy, PolicyErrors> {
    let node = json::parse(text).map_err(|e| PolicyErrors::from(vec![syntax_error(&e)]))?;
    let mut checker = Checker::default();
    let policy = checker.policy(&node);
    if checker.errors.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyErrors::from(checker.errors))
    }
}

/// A JSON syntax error, located by line and column.
fn syntax_error(error: &serde_json::Error) -> PolicyError {
    let text = error.to_string();
    // serde_json appends " at line L column C"; the location says that already.
    let message = match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    };
    PolicyError {
        location: format!("line {} column {}", error.line(), error.column()),
        message: format!("invalid JSON: {message}"),
    }
}

fn field_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { ROOT } else { path }
}

/// How a pattern list may be shaped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// May be empty.
    MayBeEmpty,
    /// Must list at least one pattern.
    NotEmpty,
}

/// Collects errors and load-time warnings while walking the document.
#[derive(Default)]
struct Checker {
    errors: Vec<PolicyError>,
    warnings: Vec<LintWarning>,
}

/// The members of a checked object, by key (first occurrence).
struct Fields<'a> {
    members: Vec<(&'a str, &'a Node)>,
}

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.members
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

impl Checker {
    fn error(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PolicyError {
            location: location.into(),
            message: message.into(),
        });
    }

    fn policy(&mut self, node: &Node) -> Policy {
        let mut policy = Policy {
            deny_users: Vec::new(),
            deny_groups: Vec::new(),
            rules: Vec::new(),
            load_warnings: Vec::new(),
        };
        let Some(fields) = self.object(node, "", TOP_FIELDS) else {
            return policy;
        };
        match fields.get("version") {
            None => self.error("version", "missing required field (the only version is 1)"),
            Some(Node::Int(1)) => {}
            Some(Node::Int(n)) => {
                self.error("version", format!("unsupported version {n}: must be 1"))
            }
            Some(Node::Float(f)) => self.error(
                "version",
                format!("unsupported version {f}: must be the integer 1"),
            ),
            Some(other) => self.error(
                "version",
                format!("expected the number 1, found {}", other.kind()),
            ),
        }
        if let Some(deny) = fields.get("deny")
            && let Some(deny_fields) = self.object(deny, "deny", DENY_FIELDS)
        {
            policy.deny_users = self.patterns(
                deny_fields.get("users"),
                "deny.users",
                true,
                Shape::MayBeEmpty,
            );
            policy.deny_groups = self.patterns(
                deny_fields.get("groups"),
                "deny.groups",
                true,
                Shape::MayBeEmpty,
            );
        }
        match fields.get("rules") {
            None => self.error("rules", "missing required field (an array of rules)"),
            Some(Node::Array(items)) => {
                let mut names: HashMap<String, usize> = HashMap::new();
                for (index, item) in items.iter().enumerate() {
                    let path = format!("rules[{index}]");
                    if let Some(rule) = self.rule(item, &path) {
                        if !rule.name.trim().is_empty() {
                            if let Some(first) = names.get(rule.name.as_str()) {
                                self.error(
                                    format!("{path}.name"),
                                    format!(
                                        "duplicate rule name {:?} (first used by rules[{first}])",
                                        rule.name
                                    ),
                                );
                            } else {
                                names.insert(rule.name.clone(), index);
                            }
                        }
                        policy.rules.push(rule);
                    }
                }
            }
            Some(other) => self.error(
                "rules",
                format!("expected an array, found {}", other.kind()),
            ),
        }
        policy.load_warnings = std::mem::take(&mut self.warnings);
        policy
    }

    fn rule(&mut self, node: &Node, path: &str) -> Option<Rule> {
        let fields = self.object(node, path, RULE_FIELDS)?;
        let name_path = format!("{path}.name");
        let name = match fields.get("name") {
            None => {
                self.error(name_path, "missing required field (a unique rule name)");
                String::new()
            }
            Some(Node::String(name)) => {
                if name.is_empty() {
                    self.error(name_path, "rule name must not be empty");
                } else if name.trim().is_empty() {
                    self.error(name_path, "rule name must not be blank");
                }
                name.clone()
            }
            Some(other) => {
                self.error(
                    name_path,
                    format!("expected a string, found {}", other.kind()),
                );
                String::new()
            }
        };

        let callers_path = format!("{path}.callers");
        let callers_raw = self.strings(fields.get("callers"), &callers_path, Shape::NotEmpty);
        let admits_anonymous = callers_raw
            .iter()
            .any(|(_, s)| s.eq_ignore_ascii_case(ANONYMOUS_KEYWORD));
        let callers = callers_raw
            .iter()
            .filter(|(_, s)| !s.eq_ignore_ascii_case(ANONYMOUS_KEYWORD))
            .map(|(_, s)| Pattern::new(s, true))
            .collect();

        let pools = self.patterns(
            fields.get("userPools"),
            &format!("{path}.userPools"),
            false,
            Shape::NotEmpty,
        );
        let users = fields
            .get("users")
            .map(|n| self.patterns(Some(n), &format!("{path}.users"), true, Shape::NotEmpty));
        let groups = fields
            .get("groups")
            .map(|n| self.patterns(Some(n), &format!("{path}.groups"), true, Shape::NotEmpty));
        if fields.get("users").is_none() && fields.get("groups").is_none() {
            self.error(
                path,
                "a rule must name `users` or `groups` or both (use \"users\": [\"*\"] for anyone)",
            );
        }

        let mut except_users = Vec::new();
        let mut except_groups = Vec::new();
        if let Some(except) = fields.get("except") {
            let except_path = format!("{path}.except");
            if let Some(except_fields) = self.object(except, &except_path, EXCEPT_FIELDS) {
                except_users = self.patterns(
                    except_fields.get("users"),
                    &format!("{except_path}.users"),
                    true,
                    Shape::MayBeEmpty,
                );
                except_groups = self.patterns(
                    except_fields.get("groups"),
                    &format!("{except_path}.groups"),
                    true,
                    Shape::MayBeEmpty,
                );
            }
        }

        let invited = match self.keyword(
            fields.get("invited"),
            &format!("{path}.invited"),
            &["refuse", "resend"],
        ) {
            Some("resend") => Invited::Resend,
            _ => Invited::Refuse,
        };
        let sign_out = match self.keyword(
            fields.get("signOut"),
            &format!("{path}.signOut"),
            &["never", "allowed", "always"],
        ) {
            Some("allowed") => SignOut::Allowed,
            Some("always") => SignOut::Always,
            _ => SignOut::Never,
        };
        let budget = fields
            .get("budget")
            .and_then(|node| self.budget(node, &format!("{path}.budget")));
        let ticket = fields
            .get("ticket")
            .and_then(|node| self.ticket(node, &format!("{path}.ticket")));
        let approval = fields
            .get("approval")
            .and_then(|node| self.approval(node, &format!("{path}.approval")));

        Some(Rule {
            name,
            callers,
            admits_anonymous,
            pools,
            users,
            groups,
            except_users,
            except_groups,
            options: RuleOptions {
                invited,
                sign_out,
                budget,
            },
            ticket,
            approval,
        })
    }

    /// `{"approvers": [..], "ttlSeconds": N}`: both required; approvers are caller patterns,
    /// not empty, and never the `"anonymous"` keyword.
    fn approval(&mut self, node: &Node, path: &str) -> Option<ApprovalRule> {
        let fields = self.object(node, path, APPROVAL_FIELDS)?;
        let approvers_path = format!("{path}.approvers");
        let raw = self.strings(fields.get("approvers"), &approvers_path, Shape::NotEmpty);
        let mut anonymous = false;
        for (index, text) in &raw {
            if text.eq_ignore_ascii_case(ANONYMOUS_KEYWORD) {
                anonymous = true;
                self.error(
                    format!("{approvers_path}[{index}]"),
                    "an approver must be someone: \"anonymous\" cannot approve",
                );
            }
        }
        let ttl_seconds = self.integer(
            fields.get("ttlSeconds"),
            &format!("{path}.ttlSeconds"),
            APPROVAL_TTL_SECONDS,
        );
        if anonymous || raw.is_empty() {
            return None;
        }
        Some(ApprovalRule {
            approvers: raw.iter().map(|(_, s)| Pattern::new(s, true)).collect(),
            ttl_seconds: ttl_seconds?,
        })
    }

    /// `{"required": B, "pattern": ".."}`: at least one of them, the pattern compiled.
    fn ticket(&mut self, node: &Node, path: &str) -> Option<TicketRule> {
        let fields = self.object(node, path, TICKET_FIELDS)?;
        let required = match fields.get("required") {
            None => false,
            Some(Node::Bool(value)) => *value,
            Some(other) => {
                self.error(
                    format!("{path}.required"),
                    format!("expected true or false, found {}", other.kind()),
                );
                return None;
            }
        };
        let pattern = match fields.get("pattern") {
            None => None,
            Some(Node::String(source)) => match TicketPattern::new(source) {
                Ok(pattern) => Some(pattern),
                Err(message) => {
                    self.error(format!("{path}.pattern"), message);
                    return None;
                }
            },
            Some(other) => {
                self.error(
                    format!("{path}.pattern"),
                    format!(
                        "expected a regular expression (a string), found {}",
                        other.kind()
                    ),
                );
                return None;
            }
        };
        if !required && pattern.is_none() {
            self.error(
                path,
                "a ticket option that neither requires a ticket nor checks one does nothing: set \"required\": true, a \"pattern\", or both",
            );
            return None;
        }
        Some(TicketRule { required, pattern })
    }

    /// An optional string that must be one of `allowed` (case-sensitive).
    fn keyword(
        &mut self,
        node: Option<&Node>,
        path: &str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let quoted = || {
            allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match node? {
            Node::String(value) => match allowed.iter().find(|a| **a == value.as_str()) {
                Some(known) => Some(*known),
                None => {
                    self.error(
                        path,
                        format!("unknown value {value:?}: expected one of {}", quoted()),
                    );
                    None
                }
            },
            other => {
                self.error(
                    path,
                    format!("expected one of {}, found {}", quoted(), other.kind()),
                );
                None
            }
        }
    }

    /// `{"resets": N, "perSeconds": S}`, both required integers in range.
    fn budget(&mut self, node: &Node, path: &str) -> Option<Budget> {
        let fields = self.object(node, path, BUDGET_FIELDS)?;
        let resets = self.integer(
            fields.get("resets"),
            &format!("{path}.resets"),
            BUDGET_RESETS,
        );
        let per_seconds = self.integer(
            fields.get("perSeconds"),
            &format!("{path}.perSeconds"),
            BUDGET_SECONDS,
        );
        Some(Budget {
            resets: resets?,
            per_seconds: per_seconds?,
        })
    }

    /// A required integer within `(min, max)`.
    fn integer(&mut self, node: Option<&Node>, path: &str, (min, max): (u32, u32)) -> Option<u32> {
        match node {
            None => {
                self.error(
                    path,
                    format!("missing required field (an integer from {min} to {max})"),
                );
                None
            }
            Some(Node::Int(n)) if (i128::from(min)..=i128::from(max)).contains(n) => {
                u32::try_from(*n).ok()
            }
            Some(Node::Int(n)) => {
                self.error(
                    path,
                    format!("{n} is out of range: must be from {min} to {max}"),
                );
                None
            }
            Some(other) => {
                self.error(
                    path,
                    format!(
                        "expected an integer from {min} to {max}, found {}",
                        other.kind()
                    ),
                );
                None
            }
        }
    }

    /// Checks that `node` is an object with only `allowed` keys, each at most once.
    fn object<'a>(&mut self, node: &'a Node, path: &str, allowed: &[&str]) -> Option<Fields<'a>> {
        let Node::Object(members) = node else {
            self.error(
                display_path(path),
                format!("expected an object, found {}", node.kind()),
            );
            return None;
        };
        let mut seen: Vec<&str> = Vec::new();
        let mut fields = Fields {
            members: Vec::new(),
        };
        for (key, value) in members {
            let location = field_path(path, key);
            if !allowed.contains(&key.as_str()) {
                let hint = match suggestion(key, allowed) {
                    Some(known) => format!("unknown field (did you mean `{known}`?)"),
                    None => format!("unknown field; expected one of: {}", allowed.join(", ")),
                };
                self.error(location, hint);
            } else if seen.contains(&key.as_str()) {
                self.error(location, "field appears more than once");
            } else {
                seen.push(key);
                fields.members.push((key, value));
            }
        }
        Some(fields)
    }

    /// Checks a list of pattern strings; returns the valid ones with their index.
    fn strings(&mut self, node: Option<&Node>, path: &str, shape: Shape) -> Vec<(usize, String)> {
        let Some(node) = node else {
            if shape == Shape::NotEmpty {
                self.error(
                    path,
                    "missing required field (a non-empty array of patterns)",
                );
            }
            return Vec::new();
        };
        let Node::Array(items) = node else {
            self.error(
                path,
                format!("expected an array of strings, found {}", node.kind()),
            );
            return Vec::new();
        };
        if items.is_empty() && shape == Shape::NotEmpty {
            self.error(path, "must list at least one pattern");
        }
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let location = format!("{path}[{index}]");
            match item {
                Node::String(s) if s.is_empty() => {
                    self.error(location, "pattern must not be empty")
                }
                Node::String(s) if s.trim().is_empty() => {
                    self.error(location, "pattern must not be blank (whitespace only)")
                }
                Node::String(s) => {
                    if s.trim() != s {
                        self.warnings.push(LintWarning {
                            location,
                            message: format!(
                                "pattern {s:?} has leading or trailing whitespace, which is matched literally"
                            ),
                        });
                    }
                    out.push((index, s.clone()));
                }
                other => self.error(
                    location,
                    format!("expected a string, found {}", other.kind()),
                ),
            }
        }
        out
    }

    /// Checks and compiles a list of patterns.
    fn patterns(
        &mut self,
        node: Option<&Node>,
        path: &str,
        case_insensitive: bool,
        shape: Shape,
    ) -> Vec<Pattern> {
        self.strings(node, path, shape)
            .iter()
            .map(|(_, s)| Pattern::new(s, case_insensitive))
            .collect()
    }
}

/// A known field that `key` is probably a typo of (case or at most two edits).
fn suggestion<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(key))
        .or_else(|| known.iter().copied().find(|k| edit_distance(k, key) <= 2))
}

/// The Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

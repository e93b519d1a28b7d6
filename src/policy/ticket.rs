//! A rule's `ticket` option: whether a request under the rule must name a ticket (`Ticket`), and
//! the regular expression a ticket must match.
//!
//! A pattern is a regular expression in the syntax of the `regex` crate, matched against the
//! **whole** ticket (it is anchored at both ends whether or not it says `^`/`$`), in ASCII mode:
//! `\d` is `[0-9]`, `\w` is `[0-9A-Za-z_]`, `(?i)` folds ASCII letters only. A ticket is 1 to
//! [`MAX_TICKET_LEN`] printable ASCII characters (checked when the request is parsed), so a byte
//! is a character. A pattern is at most [`MAX_PATTERN_LEN`] bytes and is compiled, when the policy
//! is loaded, into a deterministic automaton of at most [`MAX_AUTOMATON_BYTES`]: matching takes
//! one step per character, with no backtracking, whatever the pattern. A pattern that does not
//! parse, or would need a larger automaton, is an error of the policy, located.
//!
//! The engine is `regex-automata`'s dense DFA, which the function already links: the log filter
//! (`tracing-subscriber`'s `EnvFilter`, through `matchers`) builds its field-value patterns with
//! it and walks them a byte at a time, as [`TicketPattern::matches`] does.

use std::fmt;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};

/// The longest ticket a request may carry, in characters (all printable ASCII).
pub const MAX_TICKET_LEN: usize = 64;
/// The longest ticket pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 256;
/// The largest automaton a ticket pattern may compile to (and the largest the compiler may use
/// on the way), in bytes.
pub const MAX_AUTOMATON_BYTES: usize = 256 * 1024;
/// The deepest nesting of groups and repetitions a pattern may have.
const NEST_LIMIT: u32 = 32;

/// Why a request's ticket does not do for a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketRefusal {
    /// The rule requires a ticket and the request names none.
    Required,
    /// The request's ticket does not match the rule's pattern.
    Invalid,
}

impl TicketRefusal {
    /// `ticket-required` or `ticket-invalid`.
    pub fn code(self) -> &'static str {
        match self {
            TicketRefusal::Required => "ticket-required",
            TicketRefusal::Invalid => "ticket-invalid",
        }
    }
}

impl fmt::Display for TicketRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A compiled ticket pattern.
#[derive(Clone)]
pub struct TicketPattern {
    source: String,
    dfa: dense::DFA<Vec<u32>>,
}

impl fmt::Debug for TicketPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TicketPattern").field(&self.source).finish()
    }
}

impl TicketPattern {
    /// Compiles a pattern, or says (in one lower-case line) why it cannot be.
    pub fn new(source: &str) -> Result<TicketPattern, String> {
        if source.is_empty() {
            return Err("pattern must not be empty".to_owned());
        }
        if source.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "pattern is {} bytes long: at most {MAX_PATTERN_LEN} are allowed",
                source.len()
            ));
        }
        let syntax = syntax::Config::new()
            .unicode(false)
            .utf8(false)
            .nest_limit(NEST_LIMIT);
        // Parsed on its own first, for a message that points at the mistake.
        if let Err(error) = syntax::parse_with(source, &syntax) {
            return Err(format!(
                "pattern is not a valid regular expression: {}",
                last_line(&error.to_string())
            ));
        }
        let dfa = dense::Builder::new()
            .syntax(syntax)
            .thompson(
                thompson::Config::new()
                    .utf8(false)
                    .nfa_size_limit(Some(MAX_AUTOMATON_BYTES)),
            )
            .configure(
                dense::Config::new()
                    .start_kind(StartKind::Anchored)
                    // Every match kept alive, so that a whole-ticket match is found when there is
                    // one (leftmost-first would drop `ab` once `a` matched, in `a|ab`).
                    .match_kind(MatchKind::All)
                    .dfa_size_limit(Some(MAX_AUTOMATON_BYTES))
                    .determinize_size_limit(Some(MAX_AUTOMATON_BYTES)),
            )
            .build(source)
            .map_err(|error| {
                if error.is_size_limit_exceeded() {
                    format!(
                        "pattern compiles to an automaton larger than {} KiB: simplify it (fewer \
                         or smaller counted repetitions)",
                        MAX_AUTOMATON_BYTES / 1024
                    )
                } else {
                    format!(
                        "pattern cannot be compiled: {}",
                        last_line(&deepest(&error))
                    )
                }
            })?;
        Ok(TicketPattern {
            source: source.to_owned(),
            dfa,
        })
    }

    /// The pattern as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches all of `ticket`: the automaton walked from its anchored start
    /// over every byte, then the end of input; one step per byte.
    pub fn matches(&self, ticket: &str) -> bool {
        let anchored = start::Config::new().anchored(Anchored::Yes);
        let Ok(mut state) = self.dfa.start_state(&anchored) else {
            return false;
        };
        for &byte in ticket.as_bytes() {
            state = self.dfa.next_state(state, byte);
            if self.dfa.is_dead_state(state) {
                return false;
            }
        }
        self.dfa.is_match_state(self.dfa.next_eoi_state(state))
    }
}

/// The message of the innermost error of a chain.
fn deepest(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// The last non-blank line of a (possibly multi-line) message, without an `error: ` prefix.
fn last_line(message: &str) -> String {
    let line = message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(message)
        .trim();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// A rule's `ticket` option.
#[derive(Debug, Clone)]
pub struct TicketRule {
    /// Whether a request under the rule must name a ticket.
    pub required: bool,
    /// The pattern a ticket must match, when there is one (any ticket otherwise).
    pub pattern: Option<TicketPattern>,
}

impl TicketRule {
    /// Whether a request with `ticket` may go on under this rule.
    pub fn check(&self, ticket: Option<&str>) -> Result<(), TicketRefusal> {
        match (ticket, &self.pattern) {
            (None, _) if self.required => Err(TicketRefusal::Required),
            (None, _) | (Some(_), None) => Ok(()),
            (Some(ticket), Some(pattern)) if pattern.matches(ticket) => Ok(()),
            (Some(_), Some(_)) => Err(TicketRefusal::Invalid),
        }
    }
}

impl fmt::Display for TicketRule {
    /// `required` / `optional`, and the pattern when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.required {
            "required"
        } else {
            "optional"
        })?;
        if let Some(pattern) = &self.pattern {
            write!(f, ", matching {:?}", pattern.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(source: &str) -> TicketPattern {
        TicketPattern::new(source).expect(source)
    }

    #[test]
    fn a_pattern_matches_the_whole_ticket_with_or_without_anchors() {
        for source in ["INC[0-9]{7}", "^INC[0-9]{7}$", r"INC\d{7}"] {
            let p = pattern(source);
            assert!(p.matches("INC0012345"), "{source}");
            for bad in [
                "INC001234",
                "INC00123456",
                "xINC0012345",
                "INC0012345x",
                "inc0012345",
            ] {
                assert!(!p.matches(bad), "{source} must not match {bad}");
            }
        }
    }

    #[test]
    fn the_longest_alternative_counts() {
        let p = pattern("a|ab");
        assert!(p.matches("ab"));
        assert!(p.matches("a"));
        assert!(!p.matches("abc"));
        let p = pattern("(INC|RITM)[0-9]+|CHG-[0-9]{4}");
        assert!(p.matches("RITM42"));
        assert!(p.matches("CHG-0001"));
        assert!(!p.matches("CHG-01"));
    }

    #[test]
    fn case_folding_is_asked_for_and_ascii_only() {
        let p = pattern("(?i)inc-[0-9]+");
        assert!(p.matches("INC-1") && p.matches("inc-1"));
        assert!(!pattern("inc-[0-9]+").matches("INC-1"));
    }

    #[test]
    fn invalid_patterns_say_why_in_one_line() {
        for (source, expected) in [
            ("INC(", "not a valid regular expression"),
            ("[z-a]", "not a valid regular expression"),
            ("", "must not be empty"),
        ] {
            let err = TicketPattern::new(source).unwrap_err();
            assert!(err.contains(expected), "{source:?}: {err}");
            assert!(!err.contains('\n'), "{source:?}: {err}");
        }
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        let err = TicketPattern::new(&long).unwrap_err();
        assert!(err.contains("at most 256"), "{err}");
        assert!(TicketPattern::new(&"a".repeat(MAX_PATTERN_LEN)).is_ok());
    }

    #[test]
    fn a_pattern_whose_automaton_would_explode_is_refused() {
        let err = TicketPattern::new("[ab]*a[ab]{20}").unwrap_err();
        assert!(err.contains("larger than 256 KiB"), "{err}");
    }

    #[test]
    fn a_rule_checks_presence_then_the_pattern() {
        let strict = TicketRule {
            required: true,
            pattern: Some(pattern("INC[0-9]+")),
        };
        assert_eq!(strict.check(None), Err(TicketRefusal::Required));
        assert_eq!(strict.check(Some("CHG1")), Err(TicketRefusal::Invalid));
        assert_eq!(strict.check(Some("INC1")), Ok(()));
        let optional = TicketRule {
            required: false,
            pattern: Some(pattern("INC[0-9]+")),
        };
        assert_eq!(optional.check(None), Ok(()));
        assert_eq!(optional.check(Some("CHG1")), Err(TicketRefusal::Invalid));
        let any = TicketRule {
            required: true,
            pattern: None,
        };
        assert_eq!(any.check(Some("whatever")), Ok(()));
        assert_eq!(any.check(None), Err(TicketRefusal::Required));
    }
}

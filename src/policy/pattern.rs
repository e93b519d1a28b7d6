//! Whole-string glob patterns and the case folding they use.
//!
//! A pattern matches a whole string: `*` matches any run of characters (also the empty one),
//! `?` exactly one character, and every other character is literal. There are no brackets,
//! braces or escapes, and nothing is trimmed or normalised: `"admin "` is not `"admin"`.
//!
//! Patterns are compiled once, when the policy is loaded, into literal segments split at `*`.
//! Matching anchors the first segment at the start, the last at the end and finds each middle
//! segment at its leftmost position, which is exact for this glob dialect and takes at most
//! O(pattern × text) steps: there is no backtracking and nothing exponential.
//!
//! # Case folding
//!
//! Case-insensitive patterns and the strings they are matched against are folded one character
//! at a time by [`fold_char`], so `?` always stands for exactly one character of the original
//! text. The mapping is Unicode *simple* case folding as far as the standard library exposes it:
//! ASCII letters are lowered; any other character is upper-cased and then lower-cased, each step
//! taken only when it yields exactly one character (so `ß`, whose upper case is `SS`, stays `ß`).
//! This puts `σ`, `ς` and `Σ` in one class, `ſ` with `s`, the Kelvin sign with `k`, and `É` with
//! `é`. The Turkish dotted capital `İ` and dotless small `ı` fold to themselves, as in Unicode's
//! `CaseFolding.txt` (their `T` mappings are not used): `ı` does not match `i`.

/// Folds one character (see the module documentation for the exact mapping).
pub fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    if matches!(c, '\u{130}' | '\u{131}') {
        return c;
    }
    let upper = single(c.to_uppercase()).unwrap_or(c);
    single(upper.to_lowercase()).unwrap_or(upper)
}

/// The only item of an iterator that yields exactly one.
fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
    let first = chars.next()?;
    chars.next().is_none().then_some(first)
}

/// Appends the characters of `text` to `out`, folded when `fold` is set.
pub fn chars_into(text: &str, fold: bool, out: &mut Vec<char>) {
    out.clear();
    if fold {
        out.extend(text.chars().map(fold_char));
    } else {
        out.extend(text.chars());
    }
}

/// The characters of `text`, folded when `fold` is set.
pub fn to_chars(text: &str, fold: bool) -> Vec<char> {
    let mut out = Vec::with_capacity(text.len());
    chars_into(text, fold, &mut out);
    out
}

/// A run of pattern characters between two `*`s.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    /// The characters; a `?` position holds `'?'` and is flagged in `any`.
    chars: Vec<char>,
    /// `Some(flags)` when the segment contains `?`: `flags[i]` is true for a `?` position.
    any: Option<Vec<bool>>,
}

impl Segment {
    fn new(tokens: &[Token]) -> Segment {
        let chars = tokens
            .iter()
            .map(|t| match t {
                Token::Lit(c) => *c,
                Token::One | Token::Star => '?',
            })
            .collect();
        let any = tokens
            .contains(&Token::One)
            .then(|| tokens.iter().map(|t| *t == Token::One).collect());
        Segment { chars, any }
    }

    fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the segment matches `text`, which has exactly the segment's length.
    #[inline]
    fn matches_exactly(&self, text: &[char]) -> bool {
        match &self.any {
            // Compared from the end: literal segments in one policy tend to share long prefixes
            // (`arn:aws:sts::123456789012:assumed-role/...`, `us-west-2_...`), so a mismatch is
            // usually found within a few characters that way.
            None => {
                self.chars.len() == text.len()
                    && self
                        .chars
                        .iter()
                        .rev()
                        .zip(text.iter().rev())
                        .all(|(c, t)| c == t)
            }
            Some(any) => self
                .chars
                .iter()
                .zip(any)
                .zip(text)
                .all(|((c, is_any), t)| *is_any || c == t),
        }
    }

    /// The leftmost position in `text` where the segment matches.
    fn find(&self, text: &[char]) -> Option<usize> {
        let n = self.len();
        if n > text.len() {
            return None;
        }
        match self.any {
            None => text.windows(n).position(|w| w == self.chars.as_slice()),
            Some(_) => (0..=text.len() - n).find(|&i| self.matches_exactly(&text[i..i + n])),
        }
    }
}

/// One element of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Lit(char),
    One,
    Star,
}

/// A compiled whole-string glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    case_insensitive: bool,
    /// The (folded) tokens, kept for subsumption checks.
    tokens: Vec<Token>,
    /// The segments between stars; exactly one when the pattern has no star.
    segments: Vec<Segment>,
    has_star: bool,
    /// The number of characters any match needs (everything but the stars).
    min_len: usize,
    /// Characters every match has at fixed positions, kept inline so that most non-matching
    /// texts are rejected without reading the segments.
    guards: [Guard; MAX_GUARDS],
    guard_count: u8,
}

const MAX_GUARDS: usize = 4;

/// A character that every match has at a fixed position from the start or the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Guard {
    from_end: bool,
    offset: usize,
    ch: char,
}

/// The guards for a pattern: the last, second-to-last and first characters of the segment
/// anchored at the start, and the last character of the one anchored at the end (when there is
/// a star), skipping `?` positions.
fn guards(segments: &[Segment]) -> ([Guard; MAX_GUARDS], u8) {
    let mut candidates = Vec::new();
    if let Some(first) = segments.first() {
        let n = first.len();
        for offset in [n.checked_sub(1), n.checked_sub(2), Some(0)]
            .into_iter()
            .flatten()
        {
            if offset < n {
                candidates.push((false, offset, first, offset));
            }
        }
    }
    if let [_, .., last] = segments
        && let Some(index) = last.len().checked_sub(1)
    {
        candidates.push((true, 0, last, index));
    }
    let mut out = [Guard::default(); MAX_GUARDS];
    let mut count = 0;
    for (from_end, offset, segment, index) in candidates {
        let is_any = segment.any.as_ref().is_some_and(|any| any[index]);
        let guard = Guard {
            from_end,
            offset,
            ch: segment.chars[index],
        };
        if !is_any && count < MAX_GUARDS && !out[..count].contains(&guard) {
            out[count] = guard;
            count += 1;
        }
    }
    (out, count as u8)
}

impl Pattern {
    /// Compiles `source`; `case_insensitive` folds it (and the text it is later matched against).
    pub fn new(source: &str, case_insensitive: bool) -> Pattern {
        let tokens: Vec<Token> = source
            .chars()
            .map(|c| match c {
                '*' => Token::Star,
                '?' => Token::One,
                c if case_insensitive => Token::Lit(fold_char(c)),
                c => Token::Lit(c),
            })
            .collect();
        let segments: Vec<Segment> = tokens
            .split(|t| *t == Token::Star)
            .map(Segment::new)
            .collect();
        let has_star = segments.len() > 1;
        let min_len = segments.iter().map(Segment::len).sum();
        let (guards, guard_count) = guards(&segments);
        Pattern {
            source: source.to_owned(),
            case_insensitive,
            tokens,
            segments,
            has_star,
            min_len,
            guards,
            guard_count,
        }
    }

    /// The pattern as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern folds case.
    pub fn is_case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    /// Whether the pattern matches `text`, which must already be folded (see [`to_chars`]) when
    /// the pattern is case-insensitive.
    #[inline]
    pub fn matches_chars(&self, text: &[char]) -> bool {
        let n = text.len();
        if n < self.min_len || (!self.has_star && n != self.min_len) {
            return false;
        }
        for guard in &self.guards[..usize::from(self.guard_count)] {
            let at = if guard.from_end {
                n.wrapping_sub(1 + guard.offset)
            } else {
                guard.offset
            };
            if text.get(at) != Some(&guard.ch) {
                return false;
            }
        }
        let [first, middle @ .., last] = self.segments.as_slice() else {
            // Exactly one segment: no star.
            return self
                .segments
                .first()
                .is_some_and(|s| text.len() == s.len() && s.matches_exactly(text));
        };
        debug_assert!(self.has_star);
        if text.len() < self.min_len {
            return false;
        }
        let end = text.len() - last.len();
        if !last.matches_exactly(&text[end..]) || !first.matches_exactly(&text[..first.len()]) {
            return false;
        }
        let mut rest = &text[first.len()..end];
        for segment in middle.iter().filter(|s| s.len() > 0) {
            match segment.find(rest) {
                Some(at) => rest = &rest[at + segment.len()..],
                None => return false,
            }
        }
        true
    }

    /// Whether the pattern matches `text` (folding it first when case-insensitive).
    /// Convenient for one-off checks; the engine folds each input once instead.
    pub fn matches(&self, text: &str) -> bool {
        self.matches_chars(&to_chars(text, self.case_insensitive))
    }

    /// Whether this pattern is exactly `*`, matching every string.
    pub fn is_match_all(&self) -> bool {
        self.tokens == [Token::Star]
    }

    /// Whether every string `other` matches is also matched by `self`.
    ///
    /// Sound but not complete: `true` is always right; `false` means "not shown". It treats
    /// `other` as a string of tokens and matches `self` against it, where a `*` of `self` takes
    /// any run of tokens, a `?` one literal or `?`, and a literal only the same literal.
    /// Patterns of different case sensitivity are only compared when `self` is `*`.
    pub fn subsumes(&self, other: &Pattern) -> bool {
        if self.is_match_all() {
            return true;
        }
        if self.case_insensitive != other.case_insensitive {
            return false;
        }
        let (q, p) = (&self.tokens, &other.tokens);
        // reach[j]: q[..i] can match p[..j].
        let mut reach = vec![false; p.len() + 1];
        reach[0] = true;
        for qt in q {
            let mut next = vec![false; p.len() + 1];
            match qt {
                Token::Star => {
                    let mut seen = false;
                    for j in 0..=p.len() {
                        seen |= reach[j];
                        next[j] = seen;
                    }
                }
                Token::One => {
                    for j in 0..p.len() {
                        next[j + 1] = reach[j] && p[j] != Token::Star;
                    }
                }
                Token::Lit(c) => {
                    for j in 0..p.len() {
                        next[j + 1] = reach[j] && p[j] == Token::Lit(*c);
                    }
                }
            }
            reach = next;
        }
        reach[p.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(p: &str, t: &str) -> bool {
        Pattern::new(p, true).matches(t)
    }

    fn cs(p: &str, t: &str) -> bool {
        Pattern::new(p, false).matches(t)
    }

    #[test]
    fn literal_pattern_matches_only_the_whole_string() {
        assert!(ci("admin", "admin"));
        assert!(!ci("admin", "admin2"));
        assert!(!ci("admin", "xadmin"));
        assert!(!ci("admin", ""));
    }

    #[test]
    fn star_matches_any_run_including_empty() {
        assert!(ci("*", ""));
        assert!(ci("*", "anything at all"));
        assert!(ci("admin-*", "admin-"));
        assert!(ci("admin-*", "admin-bob"));
        assert!(!ci("admin-*", "admin"));
        assert!(ci("*@example.com", "bob@example.com"));
        assert!(!ci("*@example.com", "bob@example.com.evil"));
        assert!(ci("a*b*c", "abc"));
        assert!(ci("a*b*c", "aXXbYYc"));
        assert!(!ci("a*b*c", "aXXcYYb"));
        assert!(ci("**", ""));
        assert!(ci("a**b", "ab"));
    }

    #[test]
    fn middle_segments_may_not_overlap_prefix_or_suffix() {
        assert!(!ci("ab*ba", "aba"));
        assert!(ci("ab*ba", "abba"));
        assert!(!ci("a*aa*a", "aaa"));
        assert!(ci("a*aa*a", "aaaa"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(ci("user-?", "user-1"));
        assert!(!ci("user-?", "user-"));
        assert!(!ci("user-?", "user-12"));
        assert!(ci("?*?", "ab"));
        assert!(!ci("?*?", "a"));
        assert!(ci("*x?z*", "aaxyzbb"));
        assert!(!ci("*x?z*", "aaxzbb"));
    }

    #[test]
    fn question_mark_matches_one_non_ascii_character() {
        assert!(ci("?mile@x", "Émile@x"));
        assert!(ci("stra?e", "Straße"));
        assert!(!ci("stra?e", "Strasse"));
        assert!(ci("?", "日"));
        assert!(!ci("?", "日本"));
    }

    #[test]
    fn matching_folds_unicode_case() {
        assert!(ci("ÉMILE@x", "émile@x"));
        assert!(ci("émile@x", "ÉMILE@X"));
        assert!(ci("ΣΟΦΙΑ", "σοφια"));
        assert!(ci("σ", "ς"));
        assert!(ci("s", "ſ"));
        assert!(ci("k", "\u{212A}"));
        assert!(ci("STRASSE", "strasse"));
        assert!(
            !ci("straße", "strasse"),
            "simple folding: ß is one character"
        );
    }

    #[test]
    fn turkish_dotless_and_dotted_i_fold_to_themselves() {
        assert!(!ci("admin", "admın"));
        assert!(!ci("admin", "admİn"));
        assert!(ci("admın", "ADMın"));
    }

    #[test]
    fn matching_never_trims_whitespace() {
        assert!(!ci("admin", "admin "));
        assert!(!ci("admin ", "admin"));
        assert!(!ci("admin", " admin"));
        assert!(ci("admin ", "ADMIN "));
    }

    #[test]
    fn case_sensitive_patterns_compare_exactly() {
        assert!(cs("us-west-2_aaaaaaaaa", "us-west-2_aaaaaaaaa"));
        assert!(!cs("us-west-2_aaaaaaaaa", "us-west-2_AAAAAAAAA"));
        assert!(cs("us-west-2_*", "us-west-2_Abc"));
        assert!(!cs("US-west-2_*", "us-west-2_Abc"));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let text = "a".repeat(10_000);
        let started = std::time::Instant::now();
        assert!(!ci("*a*a*a*a*a*a*a*a*b", &text));
        assert!(!ci("*a?a*a?a*a*a*a*a*b*", &text));
        assert!(ci("*a*a*a*a*a*a*a*a*", &text));
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
    }

    #[test]
    fn subsumption_is_sound_on_simple_cases() {
        let p = |s: &str| Pattern::new(s, true);
        assert!(p("*").subsumes(&p("anything*")));
        assert!(p("admin-*").subsumes(&p("admin-ops-*")));
        assert!(p("admin-*").subsumes(&p("ADMIN-x")));
        assert!(p("*@example.com").subsumes(&p("ceo@example.com")));
        assert!(p("a?c").subsumes(&p("abc")));
        assert!(p("a?c").subsumes(&p("a?c")));
        assert!(!p("abc").subsumes(&p("a?c")));
        assert!(!p("admin-*").subsumes(&p("admin*")));
        assert!(!p("a?").subsumes(&p("a*")));
        assert!(!Pattern::new("us-*", false).subsumes(&p("us-1")));
    }

    #[test]
    fn fold_char_is_idempotent_on_a_sample() {
        for c in [
            'A', 'é', 'É', 'Σ', 'ς', 'ß', 'ẞ', 'İ', 'ı', 'ſ', '\u{212A}', 'ǅ', '日',
        ] {
            assert_eq!(fold_char(fold_char(c)), fold_char(c), "{c:?}");
        }
    }
}

//! Unit and property tests for the policy engine: one test (or more) per semantic rule of the
//! policy format, every load error kind with its location, and proptest properties.

use proptest::prelude::*;

use super::*;

const EXAMPLE: &str = include_str!("../../policy/example.json");

const HELPDESK: &str = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/session-1";
const QUEUE: &str = "arn:aws:sqs:us-west-2:123456789012:password-resets";
const POOL_A: &str = "us-west-2_aaaaaaaaa";
const POOL_B: &str = "us-west-2_bbbbbbbbb";

fn policy(text: &str) -> Policy {
    match Policy::from_json(text) {
        Ok(p) => p,
        Err(e) => panic!("policy should load:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match Policy::from_json(text) {
        Ok(_) => panic!("policy should not load"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

fn caller(id: &str) -> Caller {
    Caller::Identified(vec![id.to_owned()])
}

fn user(name: &str) -> Subject {
    Subject {
        username: name.to_owned(),
        ..Subject::default()
    }
}

fn with_email(name: &str, email: &str, groups: &[&str]) -> Subject {
    Subject {
        username: name.to_owned(),
        email: Some(email.to_owned()),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        ..Subject::default()
    }
}

fn allow(rule: &str) -> Decision {
    Decision::Allow {
        rule: rule.to_owned(),
    }
}

fn deny(reason: DenyReason) -> Decision {
    Decision::Deny(reason)
}

/// A rule for [`simple`]: (name, callers, userPools, users).
type RuleSpec<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);

/// A policy with one rule per spec and a `deny.users` list.
fn simple(deny_users: &[&str], rules: &[RuleSpec]) -> Policy {
    let rules: Vec<serde_json::Value> = rules
        .iter()
        .map(|(name, callers, pools, users)| {
            serde_json::json!({"name": name, "callers": callers, "userPools": pools, "users": users})
        })
        .collect();
    let doc = serde_json::json!({"version": 1, "deny": {"users": deny_users}, "rules": rules});
    policy(&doc.to_string())
}

// ---- the example policy -------------------------------------------------------------------

#[test]
fn example_policy_loads_and_needs_groups() {
    let p = policy(EXAMPLE);
    assert_eq!(p.rule_count(), 2);
    assert_eq!(
        p.rule_names().collect::<Vec<_>>(),
        ["helpdesk-portal", "ticket-queue"]
    );
    assert!(p.needs_groups());
    assert!(p.lint_warnings().is_empty(), "{:?}", p.lint_warnings());
}

#[test]
fn helpdesk_may_reset_staff_with_company_email() {
    let p = policy(EXAMPLE);
    let bob = with_email("bob", "bob@example.com", &["staff"]);
    assert_eq!(
        p.decide(&caller(HELPDESK), POOL_A, &bob),
        allow("helpdesk-portal")
    );
}

#[test]
fn rule_with_users_and_groups_needs_both() {
    let p = policy(EXAMPLE);
    let not_staff = with_email("bob", "bob@example.com", &["sales"]);
    let wrong_domain = with_email("bob", "bob@other.com", &["staff"]);
    for subject in [not_staff, wrong_domain] {
        assert_eq!(
            p.decide(&caller(HELPDESK), POOL_A, &subject),
            deny(DenyReason::UserNotAllowed)
        );
    }
}

// ---- top-level deny -----------------------------------------------------------------------

#[test]
fn denied_user_beats_a_rule_that_allows_anyone() {
    let p = policy(EXAMPLE);
    for name in ["admin", "admin-ops", "ADMIN", "Admin-X"] {
        assert_eq!(
            p.decide(&caller(QUEUE), POOL_A, &user(name)),
            deny(DenyReason::DeniedUser),
            "{name}"
        );
    }
}

#[test]
fn denied_user_matches_any_identity_of_the_subject() {
    let p = policy(EXAMPLE);
    let by_email = with_email("u-123", "ROOT@example.com", &[]);
    assert_eq!(
        p.decide(&caller(QUEUE), POOL_A, &by_email),
        deny(DenyReason::DeniedUser)
    );
    let by_preferred = Subject {
        preferred_username: Some("admin".into()),
        ..user("u-124")
    };
    assert_eq!(
        p.decide(&caller(QUEUE), POOL_A, &by_preferred),
        deny(DenyReason::DeniedUser)
    );
    let by_sub = Subject {
        sub: Some("admin-sub".into()),
        ..user("u-125")
    };
    assert_eq!(
        p.decide(&caller(QUEUE), POOL_A, &by_sub),
        deny(DenyReason::DeniedUser)
    );
}

#[test]
fn denied_group_beats_every_rule_case_insensitively() {
    let p = policy(EXAMPLE);
    let subject = with_email("carol", "carol@example.com", &["staff", "Break-Glass"]);
    assert_eq!(
        p.decide(&caller(HELPDESK), POOL_A, &subject),
        deny(DenyReason::DeniedGroup)
    );
}

#[test]
fn denied_user_takes_precedence_over_denied_group() {
    let p = policy(EXAMPLE);
    let subject = with_email("admin", "admin@example.com", &["admins"]);
    assert_eq!(
        p.decide(&caller(QUEUE), POOL_A, &subject),
        deny(DenyReason::DeniedUser)
    );
}

#[test]
fn top_level_deny_takes_precedence_over_caller_and_pool_reasons() {
    let p = policy(EXAMPLE);
    let unknown = caller("arn:aws:iam::999999999999:user/mallory");
    assert_eq!(
        p.decide(&unknown, "eu-west-1_zzz", &user("admin")),
        deny(DenyReason::DeniedUser)
    );
    assert_eq!(
        p.decide(
            &Caller::Anonymous,
            "x",
            &with_email("u", "u@x", &["admins"])
        ),
        deny(DenyReason::DeniedGroup)
    );
}

// ---- callers ------------------------------------------------------------------------------

#[test]
fn star_caller_never_admits_an_anonymous_request() {
    let p = simple(&[], &[("any-caller", &["*"], &[POOL_A], &["*"])]);
    assert_eq!(
        p.decide(&caller("anything"), POOL_A, &user("bob")),
        allow("any-caller")
    );
    assert_eq!(
        p.decide(&Caller::Anonymous, POOL_A, &user("bob")),
        deny(DenyReason::NoRuleForCaller)
    );
}

#[test]
fn anonymous_keyword_is_the_only_way_to_admit_anonymous_requests() {
    let p = simple(
        &[],
        &[
            ("pattern", &["anon*", "?nonymous"], &[POOL_A], &["*"]),
            ("keyword", &["Anonymous"], &[POOL_A], &["*"]),
        ],
    );
    assert_eq!(
        p.decide(&Caller::Anonymous, POOL_A, &user("bob")),
        allow("keyword")
    );
}

#[test]
fn anonymous_keyword_does_not_admit_identified_callers() {
    let p = simple(&[], &[("anon", &["anonymous"], &[POOL_A], &["*"])]);
    assert_eq!(
        p.decide(&caller("anonymous"), POOL_A, &user("bob")),
        deny(DenyReason::NoRuleForCaller)
    );
    assert_eq!(
        p.decide(&caller("principal:x"), POOL_A, &user("bob")),
        deny(DenyReason::NoRuleForCaller)
    );
}

#[test]
fn identified_caller_without_identities_matches_nothing() {
    let p = simple(&[], &[("any", &["*", "anonymous"], &[POOL_A], &["*"])]);
    assert_eq!(
        p.decide(&Caller::Identified(vec![]), POOL_A, &user("bob")),
        deny(DenyReason::NoRuleForCaller)
    );
}

#[test]
fn one_matching_caller_identity_is_enough() {
    let p = simple(&[], &[("jwt", &["jwt:client:portal"], &[POOL_A], &["*"])]);
    let c = Caller::Identified(vec!["jwt:sub:abc".into(), "JWT:CLIENT:PORTAL".into()]);
    assert_eq!(p.decide(&c, POOL_A, &user("bob")), allow("jwt"));
}

// ---- pools --------------------------------------------------------------------------------

#[test]
fn pool_ids_are_compared_case_sensitively() {
    let p = simple(&[], &[("r", &["*"], &["us-west-2_Abc*"], &["*"])]);
    assert_eq!(
        p.decide(&caller("c"), "us-west-2_Abcdef", &user("u")),
        allow("r")
    );
    assert_eq!(
        p.decide(&caller("c"), "us-west-2_abcdef", &user("u")),
        deny(DenyReason::PoolNotAllowed)
    );
}

// ---- users: case folding, no trimming -----------------------------------------------------

#[test]
fn users_match_with_unicode_case_folding() {
    let p = simple(&[], &[("r", &["*"], &[POOL_A], &["ÉMILE@x"])]);
    assert_eq!(p.decide(&caller("c"), POOL_A, &user("émile@x")), allow("r"));
}

#[test]
fn question_mark_matches_one_non_ascii_character_of_a_user() {
    let p = simple(&[], &[("r", &["*"], &[POOL_A], &["?mile@x"])]);
    assert_eq!(p.decide(&caller("c"), POOL_A, &user("Émile@x")), allow("r"));
    assert_eq!(
        p.decide(&caller("c"), POOL_A, &user("Eemile@x")),
        deny(DenyReason::UserNotAllowed)
    );
}

#[test]
fn whitespace_is_never_trimmed() {
    let p = simple(&["admin"], &[("r", &["*"], &[POOL_A], &["*"])]);
    // "admin " is not "admin": the deny does not apply, the rule does.
    assert_eq!(p.decide(&caller("c"), POOL_A, &user("admin ")), allow("r"));
    assert_eq!(
        p.decide(&caller("c"), POOL_A, &user("admin")),
        deny(DenyReason::DeniedUser)
    );
    let exact = simple(&[], &[("r", &["*"], &[POOL_A], &["bob"])]);
    assert_eq!(
        exact.decide(&caller("c"), POOL_A, &user(" bob")),
        deny(DenyReason::UserNotAllowed)
    );
    assert_eq!(
        exact.decide(&caller(" c"), POOL_A, &user("bob")),
        allow("r"),
        "`*` takes the space"
    );
}

// ---- except -------------------------------------------------------------------------------

#[test]
fn except_users_stops_the_rule() {
    let p = policy(EXAMPLE);
    let ceo = with_email("ceo", "CEO@example.com", &["staff"]);
    assert_eq!(
        p.decide(&caller(HELPDESK), POOL_A, &ceo),
        deny(DenyReason::UserNotAllowed)
    );
}

#[test]
fn except_groups_stops_the_rule() {
    let p = policy(EXAMPLE);
    let contractor = with_email("dan", "dan@example.com", &["staff", "contractors"]);
    assert_eq!(
        p.decide(&caller(HELPDESK), POOL_A, &contractor),
        deny(DenyReason::UserNotAllowed)
    );
}

#[test]
fn except_only_stops_its_own_rule_a_later_rule_can_still_allow() {
    let doc = r#"{"version": 1, "rules": [
        {"name": "first", "callers": ["*"], "userPools": ["*"], "users": ["*"],
         "except": {"users": ["ceo@*"]}},
        {"name": "second", "callers": ["*"], "userPools": ["*"], "users": ["ceo@example.com"]}
    ]}"#;
    let p = policy(doc);
    assert_eq!(
        p.decide(&caller("c"), POOL_A, &user("ceo@example.com")),
        allow("second")
    );
    assert_eq!(
        p.decide(&caller("c"), POOL_A, &user("bob@example.com")),
        allow("first")
    );
}

// ---- rule order and reason codes ----------------------------------------------------------

#[test]
fn first_matching_rule_in_document_order_wins() {
    let p = simple(
        &[],
        &[
            ("narrow", &["c"], &[POOL_A], &["bob"]),
            ("broad", &["*"], &["*"], &["*"]),
            ("also-bob", &["c"], &[POOL_A], &["bob"]),
        ],
    );
    assert_eq!(
        p.decide(&caller("c"), POOL_A, &user("bob")),
        allow("narrow")
    );
    assert_eq!(p.decide(&caller("c"), POOL_A, &user("eve")), allow("broad"));
}

#[test]
fn unknown_caller_is_denied_with_no_rule_for_caller() {
    let p = policy(EXAMPLE);
    assert_eq!(
        p.decide(&caller("arn:aws:iam::1:user/x"), POOL_A, &user("bob")),
        deny(DenyReason::NoRuleForCaller)
    );
}

#[test]
fn known_caller_on_another_pool_is_denied_with_pool_not_allowed() {
    let p = policy(EXAMPLE);
    let bob = with_email("bob", "bob@example.com", &["staff"]);
    assert_eq!(
        p.decide(&caller(HELPDESK), POOL_B, &bob),
        deny(DenyReason::PoolNotAllowed)
    );
    assert_eq!(
        p.decide(&caller(QUEUE), POOL_B, &bob),
        allow("ticket-queue")
    );
}

#[test]
fn covered_caller_and_pool_but_unlisted_user_is_denied_with_user_not_allowed() {
    let p = policy(EXAMPLE);
    assert_eq!(
        p.decide(&caller(HELPDESK), POOL_A, &user("nobody")),
        deny(DenyReason::UserNotAllowed)
    );
}

#[test]
fn pool_not_allowed_needs_the_same_rule_to_list_caller_and_pool() {
    // Caller listed by one rule, pool by another: the caller still has no rule for this pool.
    let p = simple(
        &[],
        &[
            ("a", &["c1"], &[POOL_A], &["*"]),
            ("b", &["c2"], &[POOL_B], &["*"]),
        ],
    );
    assert_eq!(
        p.decide(&caller("c1"), POOL_B, &user("u")),
        deny(DenyReason::PoolNotAllowed)
    );
}

#[test]
fn reason_codes_are_stable() {
    let codes: Vec<_> = [
        DenyReason::DeniedUser,
        DenyReason::DeniedGroup,
        DenyReason::NoRuleForCaller,
        DenyReason::PoolNotAllowed,
        DenyReason::UserNotAllowed,
    ]
    .iter()
    .map(|r| r.to_string())
    .collect();
    assert_eq!(
        codes,
        [
            "denied-user",
            "denied-group",
            "no-rule-for-caller",
            "pool-not-allowed",
            "user-not-allowed"
        ]
    );
}

#[test]
fn policy_without_rules_denies_everything() {
    let p = policy(r#"{"version": 1, "rules": []}"#);
    assert_eq!(
        p.decide(&caller("c"), POOL_A, &user("u")),
        deny(DenyReason::NoRuleForCaller)
    );
    assert_eq!(
        p.lint_warnings()[0].to_string(),
        "rules: no rules: every request is denied"
    );
}

#[test]
fn groups_only_rule_admits_members() {
    let doc = r#"{"version": 1, "rules": [
        {"name": "g", "callers": ["*"], "userPools": ["*"], "groups": ["Support-*"]}]}"#;
    let p = policy(doc);
    let member = with_email("u", "u@x", &["support-tier1"]);
    assert_eq!(p.decide(&caller("c"), POOL_A, &member), allow("g"));
    assert_eq!(
        p.decide(&caller("c"), POOL_A, &user("u")),
        deny(DenyReason::UserNotAllowed)
    );
}

// ---- two-stage evaluation -----------------------------------------------------------------

#[test]
fn stage_one_answers_caller_and_pool_without_a_user() {
    let p = policy(EXAMPLE);
    assert_eq!(
        p.check_caller_and_pool(&caller("arn:x"), POOL_A),
        Err(DenyReason::NoRuleForCaller)
    );
    assert_eq!(
        p.check_caller_and_pool(&Caller::Anonymous, POOL_A),
        Err(DenyReason::NoRuleForCaller)
    );
    assert_eq!(
        p.check_caller_and_pool(&caller(HELPDESK), POOL_B),
        Err(DenyReason::PoolNotAllowed)
    );
    assert_eq!(p.check_caller_and_pool(&caller(HELPDESK), POOL_A), Ok(()));
    assert_eq!(p.check_caller_and_pool(&caller(QUEUE), POOL_B), Ok(()));
}

#[test]
fn stage_one_agrees_with_the_full_decision_for_unknown_callers_and_pools() {
    let p = policy(EXAMPLE);
    let bob = with_email("bob", "bob@example.com", &["staff"]);
    for (c, pool) in [
        (caller("arn:x"), POOL_A),
        (caller(HELPDESK), POOL_B),
        (caller(HELPDESK), "eu-west-1_x"),
    ] {
        let Err(stage_one) = p.check_caller_and_pool(&c, pool) else {
            panic!("stage one should deny")
        };
        assert_eq!(p.decide(&c, pool, &bob), Decision::Deny(stage_one));
    }
}

// ---- groups needed ------------------------------------------------------------------------

#[test]
fn needs_groups_only_when_the_policy_references_groups() {
    let rule = |extra: &str| {
        format!(
            r#"{{"version": 1, "rules": [{{"name": "r", "callers": ["*"], "userPools": ["*"], "users": ["*"]{extra}}}]}}"#
        )
    };
    assert!(!policy(&rule("")).needs_groups());
    assert!(!policy(&rule(r#", "except": {"users": ["x"], "groups": []}"#)).needs_groups());
    assert!(policy(&rule(r#", "groups": ["g"]"#)).needs_groups());
    assert!(policy(&rule(r#", "except": {"groups": ["g"]}"#)).needs_groups());
    let deny_groups = r#"{"version": 1, "deny": {"groups": ["g"]}, "rules": []}"#;
    assert!(policy(deny_groups).needs_groups());
    let empty_deny = r#"{"version": 1, "deny": {"users": ["x"], "groups": []}, "rules": []}"#;
    assert!(!policy(empty_deny).needs_groups());
}

// ---- explain ------------------------------------------------------------------------------

#[test]
fn explanation_names_the_patterns_that_matched() {
    let p = policy(EXAMPLE);
    let bob = with_email("bob", "bob@example.com", &["staff"]);
    let e = p.explain(&caller(HELPDESK), POOL_A, &bob);
    assert_eq!(e.decision, allow("helpdesk-portal"));
    let last = e
        .reasons
        .last()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        last.contains(r#"email "bob@example.com" matches "*@example.com""#),
        "{last}"
    );
    assert!(last.contains(r#"group "staff" matches "staff""#), "{last}");
}

#[test]
fn explanation_of_a_denied_user_names_the_deny_pattern() {
    let p = policy(EXAMPLE);
    let e = p.explain(&caller(QUEUE), POOL_A, &user("Admin-ops"));
    assert_eq!(e.decision, deny(DenyReason::DeniedUser));
    assert_eq!(
        e.reasons[0].to_string(),
        r#"deny.users: username "Admin-ops" matches "admin-*""#
    );
}

#[test]
fn explanation_lists_every_rule_considered() {
    let p = policy(EXAMPLE);
    let e = p.explain(&Caller::Anonymous, POOL_A, &user("bob"));
    assert_eq!(e.decision, deny(DenyReason::NoRuleForCaller));
    let text: Vec<String> = e.reasons.iter().map(ToString::to_string).collect();
    assert!(text[1].starts_with(r#"rules[0] "helpdesk-portal": skipped: anonymous"#));
    assert!(text[2].starts_with(r#"rules[1] "ticket-queue": skipped: anonymous"#));
}

// ---- loading errors -----------------------------------------------------------------------

#[test]
fn invalid_json_is_located_by_line_and_column() {
    let errs = errors("{\n  \"version\": 1,\n  \"rules\": [\n}");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("line 4 column 1: invalid JSON"),
        "{errs:?}"
    );
}

#[test]
fn document_must_be_an_object() {
    assert_eq!(
        errors("[]"),
        ["(document): expected an object, found an array"]
    );
}

#[test]
fn version_must_be_present_and_one() {
    assert_eq!(
        errors(r#"{"rules": []}"#),
        ["version: missing required field (the only version is 1)"]
    );
    assert_eq!(
        errors(r#"{"version": 2, "rules": []}"#),
        ["version: unsupported version 2: must be 1"]
    );
    assert_eq!(
        errors(r#"{"version": "1", "rules": []}"#),
        ["version: expected the number 1, found a string"]
    );
    assert_eq!(
        errors(r#"{"version": 1.0, "rules": []}"#),
        ["version: unsupported version 1: must be the integer 1"]
    );
}

#[test]
fn unknown_fields_are_errors_everywhere() {
    let doc = r#"{"version": 1, "extra": true,
        "deny": {"user": ["x"]},
        "rules": [{"name": "r", "callers": ["*"], "userpools": ["p"], "userPools": ["p"],
                   "users": ["*"], "except": {"emails": ["x"]}}]}"#;
    assert_eq!(
        errors(doc),
        [
            "extra: unknown field; expected one of: version, deny, rules",
            "deny.user: unknown field (did you mean `users`?)",
            "rules[0].userpools: unknown field (did you mean `userPools`?)",
            "rules[0].except.emails: unknown field; expected one of: users, groups",
        ]
    );
}

#[test]
fn repeated_keys_are_errors() {
    let doc = r#"{"version": 1, "rules": [
        {"name": "r", "callers": ["*"], "userPools": ["p"], "users": ["bob"], "users": ["*"]}]}"#;
    assert_eq!(
        errors(doc),
        ["rules[0].users: field appears more than once"]
    );
}

#[test]
fn wrong_types_are_located() {
    let doc = r#"{"version": 1, "deny": [], "rules": [
        {"name": 7, "callers": "*", "userPools": [1], "users": [null], "except": "x"}]}"#;
    assert_eq!(
        errors(doc),
        [
            "deny: expected an object, found an array",
            "rules[0].name: expected a string, found a number",
            "rules[0].callers: expected an array of strings, found a string",
            "rules[0].userPools[0]: expected a string, found a number",
            "rules[0].users[0]: expected a string, found null",
            "rules[0].except: expected an object, found a string",
        ]
    );
    assert_eq!(
        errors(r#"{"version": 1, "rules": {}}"#),
        ["rules: expected an array, found an object"]
    );
    assert_eq!(
        errors(r#"{"version": 1, "rules": [true]}"#),
        ["rules[0]: expected an object, found a boolean"]
    );
}

#[test]
fn missing_required_fields_are_located() {
    assert_eq!(
        errors(r#"{"version": 1}"#),
        ["rules: missing required field (an array of rules)"]
    );
    assert_eq!(
        errors(r#"{"version": 1, "rules": [{"users": ["*"]}]}"#),
        [
            "rules[0].name: missing required field (a unique rule name)",
            "rules[0].callers: missing required field (a non-empty array of patterns)",
            "rules[0].userPools: missing required field (a non-empty array of patterns)",
        ]
    );
}

#[test]
fn rule_must_name_users_or_groups() {
    let doc = r#"{"version": 1, "rules": [{"name": "r", "callers": ["*"], "userPools": ["p"]}]}"#;
    assert_eq!(
        errors(doc),
        [
            r#"rules[0]: a rule must name `users` or `groups` or both (use "users": ["*"] for anyone)"#
        ]
    );
}

#[test]
fn empty_lists_and_patterns_are_errors() {
    let doc = r#"{"version": 1, "deny": {"users": [""], "groups": [" "]}, "rules": [
        {"name": "r", "callers": [], "userPools": ["p", ""], "users": [], "groups": ["\t"]}]}"#;
    assert_eq!(
        errors(doc),
        [
            "deny.users[0]: pattern must not be empty",
            "deny.groups[0]: pattern must not be blank (whitespace only)",
            "rules[0].callers: must list at least one pattern",
            "rules[0].userPools[1]: pattern must not be empty",
            "rules[0].users: must list at least one pattern",
            "rules[0].groups[0]: pattern must not be blank (whitespace only)",
        ]
    );
}

#[test]
fn rule_names_must_be_unique_and_not_blank() {
    let doc = r#"{"version": 1, "rules": [
        {"name": "a", "callers": ["*"], "userPools": ["p"], "users": ["*"]},
        {"name": "", "callers": ["*"], "userPools": ["p"], "users": ["*"]},
        {"name": "  ", "callers": ["*"], "userPools": ["p"], "users": ["*"]},
        {"name": "a", "callers": ["*"], "userPools": ["p"], "users": ["*"]}]}"#;
    assert_eq!(
        errors(doc),
        [
            "rules[1].name: rule name must not be empty",
            "rules[2].name: rule name must not be blank",
            "rules[3].name: duplicate rule name \"a\" (first used by rules[0])",
        ]
    );
}

#[test]
fn all_errors_are_reported_at_once_one_per_line() {
    let doc = r#"{"version": 3, "bogus": 1, "rules": [
        {"name": "r", "callers": ["*"], "userPools": [""], "users": ["*"]},
        {"name": "r", "callers": [], "userPools": ["p"]}]}"#;
    let err = match Policy::from_json(doc) {
        Ok(_) => panic!("should fail"),
        Err(e) => e,
    };
    assert_eq!(err.len(), 6);
    assert_eq!(
        err.to_string(),
        [
            "bogus: unknown field; expected one of: version, deny, rules",
            "version: unsupported version 3: must be 1",
            "rules[0].userPools[0]: pattern must not be empty",
            "rules[1].callers: must list at least one pattern",
            r#"rules[1]: a rule must name `users` or `groups` or both (use "users": ["*"] for anyone)"#,
            "rules[1].name: duplicate rule name \"r\" (first used by rules[0])",
        ]
        .join("\n")
    );
}

// ---- lint warnings ------------------------------------------------------------------------

#[test]
fn rule_shadowed_by_an_earlier_rule_is_reported() {
    let p = simple(
        &[],
        &[
            (
                "broad",
                &["arn:aws:sts::1:assumed-role/*"],
                &["us-*"],
                &["*"],
            ),
            (
                "narrow",
                &["arn:aws:sts::1:assumed-role/x/*"],
                &[POOL_A],
                &["bob"],
            ),
            (
                "other-caller",
                &["arn:aws:iam::1:user/*"],
                &[POOL_A],
                &["bob"],
            ),
        ],
    );
    let warnings: Vec<String> = p.lint_warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            r#"rules[1]: rule "narrow" can never match: rules[0] "broad" comes first and matches every request it would"#
        ]
    );
}

#[test]
fn earlier_rule_with_except_does_not_shadow() {
    let doc = r#"{"version": 1, "rules": [
        {"name": "a", "callers": ["*"], "userPools": ["*"], "users": ["*"], "except": {"users": ["x"]}},
        {"name": "b", "callers": ["*"], "userPools": ["*"], "users": ["*"]}]}"#;
    assert!(policy(doc).lint_warnings().is_empty());
}

#[test]
fn rule_for_denied_users_only_is_reported() {
    let p = simple(
        &["admin-*"],
        &[("admins", &["*"], &["*"], &["Admin-Ops-*"])],
    );
    let warnings: Vec<String> = p.lint_warnings().iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [r#"rules[0]: rule "admins" can never allow: every user its users names is in deny.users"#]
    );
}

#[test]
fn rule_whose_except_covers_its_users_is_reported() {
    let doc = r#"{"version": 1, "rules": [
        {"name": "a", "callers": ["*"], "userPools": ["*"], "users": ["bob@*"], "except": {"users": ["*"]}}]}"#;
    let warnings = policy(doc).lint_warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("except.users"), "{warnings:?}");
}

#[test]
fn patterns_with_edge_whitespace_are_warned_about() {
    let p = simple(&["admin "], &[("r", &["*"], &["p"], &["*"])]);
    assert_eq!(
        p.lint_warnings()[0].to_string(),
        r#"deny.users[0]: pattern "admin " has leading or trailing whitespace, which is matched literally"#
    );
}

#[test]
fn policy_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Policy>();
    check::<PolicyErrors>();
}

#[test]
fn summary_counts_rules_and_deny_patterns() {
    assert_eq!(
        policy(EXAMPLE).summary().to_string(),
        "2 rules, 3 deny.users patterns, 2 deny.groups patterns, group membership used"
    );
}

// ---- properties ---------------------------------------------------------------------------

/// Short strings over a small alphabet (with case and non-ASCII variants) so that patterns and
/// identities collide often.
fn small_string() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[abAB É@.-]{0,6}").expect("valid regex")
}

/// A glob over the same alphabet.
fn small_pattern() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[abAé*?@]{1,5}")
        .expect("valid regex")
        .prop_filter("not blank", |s| !s.trim().is_empty())
}

fn arb_subject() -> impl Strategy<Value = Subject> {
    (
        small_string(),
        proptest::option::of(small_string()),
        proptest::option::of(small_string()),
        proptest::option::of(small_string()),
        proptest::collection::vec(small_string(), 0..3),
    )
        .prop_map(
            |(username, email, preferred_username, sub, groups)| Subject {
                username,
                email,
                preferred_username,
                sub,
                groups,
            },
        )
}

fn arb_caller() -> impl Strategy<Value = Caller> {
    prop_oneof![
        Just(Caller::Anonymous),
        proptest::collection::vec(small_string(), 0..3).prop_map(Caller::Identified),
    ]
}

/// A random rule as JSON, always valid.
fn arb_rule() -> impl Strategy<Value = serde_json::Value> {
    (
        proptest::collection::vec(
            prop_oneof![small_pattern(), Just("anonymous".to_owned())],
            1..3,
        ),
        proptest::collection::vec(small_pattern(), 1..3),
        proptest::option::of(proptest::collection::vec(small_pattern(), 1..3)),
        proptest::collection::vec(small_pattern(), 1..3),
        proptest::collection::vec(small_pattern(), 0..2),
    )
        .prop_map(|(callers, pools, users, groups, except_users)| {
            let mut rule = serde_json::json!({
                "callers": callers, "userPools": pools, "except": {"users": except_users}
            });
            match users {
                Some(users) => rule["users"] = users.into(),
                None => rule["groups"] = groups.into(),
            }
            rule
        })
}

fn arb_policy_doc() -> impl Strategy<Value = serde_json::Value> {
    (
        proptest::collection::vec(small_pattern(), 0..3),
        proptest::collection::vec(small_pattern(), 0..3),
        proptest::collection::vec(arb_rule(), 0..5),
    )
        .prop_map(|(deny_users, deny_groups, rules)| {
            let rules: Vec<_> = rules
                .into_iter()
                .enumerate()
                .map(|(i, mut r)| {
                    r["name"] = format!("rule-{i}").into();
                    r
                })
                .collect();
            serde_json::json!({"version": 1, "deny": {"users": deny_users, "groups": deny_groups}, "rules": rules})
        })
}

/// A deliberately naive recursive glob matcher, the reference for the real one.
fn reference_match(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|i| reference_match(rest, &text[i..])),
        Some(('?', rest)) => !text.is_empty() && reference_match(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && reference_match(rest, &text[1..]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn matcher_agrees_with_a_naive_reference(pattern in small_pattern(), text in small_string()) {
        let folded_pattern: Vec<char> = pattern.chars().map(pattern::fold_char).collect();
        let folded_text = pattern::to_chars(&text, true);
        prop_assert_eq!(
            pattern::Pattern::new(&pattern, true).matches(&text),
            reference_match(&folded_pattern, &folded_text)
        );
    }

    #[test]
    fn a_matching_top_level_deny_user_pattern_always_wins(
        doc in arb_policy_doc(),
        caller in arb_caller(),
        pool in small_string(),
        subject in arb_subject(),
        which in 0usize..4,
    ) {
        // Given a policy whose deny.users holds one identity of the subject, verbatim
        let identities: Vec<String> = [
            Some(subject.username.clone()),
            subject.email.clone(),
            subject.preferred_username.clone(),
            subject.sub.clone(),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.trim().is_empty() && !s.contains(['*', '?']))
        .collect();
        prop_assume!(!identities.is_empty());
        let mut doc = doc;
        let chosen = identities[which % identities.len()].clone();
        doc["deny"]["users"].as_array_mut().expect("array").push(chosen.into());
        let policy = policy(&doc.to_string());
        // Then the decision is always DENY denied-user, whatever the rules say
        prop_assert_eq!(
            policy.decide(&caller, &pool, &subject),
            Decision::Deny(DenyReason::DeniedUser)
        );
    }

    #[test]
    fn a_deny_group_pattern_matching_a_group_always_wins(
        doc in arb_policy_doc(),
        caller in arb_caller(),
        subject in arb_subject(),
    ) {
        prop_assume!(!subject.groups.is_empty());
        let mut doc = doc;
        doc["deny"]["users"] = serde_json::json!([]);
        doc["deny"]["groups"].as_array_mut().expect("array").push("*".into());
        let policy = policy(&doc.to_string());
        prop_assert_eq!(
            policy.decide(&caller, "p", &subject),
            Decision::Deny(DenyReason::DeniedGroup)
        );
    }

    #[test]
    fn without_a_matching_rule_the_answer_is_deny(
        doc in arb_policy_doc(),
        caller in arb_caller(),
        pool in small_string(),
        subject in arb_subject(),
    ) {
        let policy = policy(&doc.to_string());
        let explanation = policy.explain(&caller, &pool, &subject);
        let matched = explanation.reasons.iter().any(|r| matches!(r, Reason::RuleMatched { .. }));
        match policy.decide(&caller, &pool, &subject) {
            Decision::Allow { rule } => {
                prop_assert!(matched);
                prop_assert_eq!(explanation.decision, Decision::Allow { rule });
            }
            Decision::Deny(reason) => {
                prop_assert!(!matched);
                prop_assert_eq!(explanation.decision, Decision::Deny(reason));
            }
        }
        // And removing every rule always gives DENY.
        let mut empty = doc;
        empty["rules"] = serde_json::json!([]);
        prop_assert!(matches!(
            self::policy(&empty.to_string()).decide(&caller, &pool, &subject),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn stage_one_denial_is_never_followed_by_an_allow(
        doc in arb_policy_doc(),
        caller in arb_caller(),
        pool in small_string(),
        subject in arb_subject(),
    ) {
        let policy = policy(&doc.to_string());
        if policy.check_caller_and_pool(&caller, &pool).is_err() {
            prop_assert!(matches!(policy.decide(&caller, &pool, &subject), Decision::Deny(_)));
        }
    }

    #[test]
    fn subsumption_is_sound(outer in small_pattern(), inner in small_pattern(), text in small_string()) {
        let outer = pattern::Pattern::new(&outer, true);
        let inner = pattern::Pattern::new(&inner, true);
        if outer.subsumes(&inner) && inner.matches(&text) {
            prop_assert!(outer.matches(&text));
        }
    }
}

// ---- rule options: invited, signOut, budget ------------------------------------------------

fn with_options(options: &str) -> String {
    format!(
        r#"{{"version":1,"rules":[{{"name":"r","callers":["*"],"userPools":["*"],"users":["*"]{options}}}]}}"#
    )
}

#[test]
fn rule_options_default_to_refuse_never_and_no_budget() {
    let p = policy(&with_options(""));
    assert_eq!(p.options("r"), RuleOptions::default());
    assert_eq!(p.options("r").invited, Invited::Refuse);
    assert_eq!(p.options("r").sign_out, SignOut::Never);
    assert!(!p.has_budget());
}

#[test]
fn every_rule_option_value_loads() {
    for (text, invited, sign_out) in [
        (
            r#","invited":"refuse","signOut":"never""#,
            Invited::Refuse,
            SignOut::Never,
        ),
        (
            r#","invited":"resend","signOut":"allowed""#,
            Invited::Resend,
            SignOut::Allowed,
        ),
        (r#","signOut":"always""#, Invited::Refuse, SignOut::Always),
    ] {
        let p = policy(&with_options(text));
        assert_eq!(p.options("r").invited, invited, "{text}");
        assert_eq!(p.options("r").sign_out, sign_out, "{text}");
    }
    let p = policy(&with_options(r#","budget":{"resets":5,"perSeconds":3600}"#));
    assert_eq!(
        p.options("r").budget,
        Some(Budget {
            resets: 5,
            per_seconds: 3600
        })
    );
    assert!(p.has_budget());
    assert_eq!(
        p.options("r").to_string(),
        "invited=refuse signOut=never budget=5 resets per 3600 s (per caller identity)"
    );
}

#[test]
fn unknown_or_mistyped_rule_option_values_are_errors_naming_the_field() {
    for (text, expected) in [
        (
            r#","invited":"Resend""#,
            r#"rules[0].invited: unknown value "Resend": expected one of "refuse", "resend""#,
        ),
        (
            r#","signOut":"sometimes""#,
            r#"rules[0].signOut: unknown value "sometimes": expected one of "never", "allowed", "always""#,
        ),
        (
            r#","signOut":true"#,
            r#"rules[0].signOut: expected one of "never", "allowed", "always", found a boolean"#,
        ),
        (
            r#","signout":"always""#,
            "rules[0].signout: unknown field (did you mean `signOut`?)",
        ),
        (
            r#","budget":{"resets":0,"perSeconds":60}"#,
            "rules[0].budget.resets: 0 is out of range: must be from 1 to 100000",
        ),
        (
            r#","budget":{"resets":100001,"perSeconds":60}"#,
            "rules[0].budget.resets: 100001 is out of range: must be from 1 to 100000",
        ),
        (
            r#","budget":{"resets":1,"perSeconds":86401}"#,
            "rules[0].budget.perSeconds: 86401 is out of range: must be from 1 to 86400",
        ),
        (
            r#","budget":{"resets":1.5,"perSeconds":60}"#,
            "rules[0].budget.resets: expected an integer from 1 to 100000, found a number",
        ),
        (
            r#","budget":{"resets":1}"#,
            "rules[0].budget.perSeconds: missing required field (an integer from 1 to 86400)",
        ),
        (
            r#","budget":{"resets":1,"perSeconds":1,"per":2}"#,
            "rules[0].budget.per: unknown field; expected one of: resets, perSeconds",
        ),
        (
            r#","budget":5"#,
            "rules[0].budget: expected an object, found a number",
        ),
    ] {
        let found = errors(&with_options(text));
        assert_eq!(found, vec![expected.to_owned()], "{text}");
    }
}

#[test]
fn options_belong_to_the_rule_that_allowed() {
    let p = policy(
        r#"{"version":1,"rules":[
            {"name":"a","callers":["*"],"userPools":["*"],"users":["a*"],"invited":"resend"},
            {"name":"b","callers":["*"],"userPools":["*"],"users":["*"],"signOut":"always"}]}"#,
    );
    assert_eq!(p.options("a").invited, Invited::Resend);
    assert_eq!(p.options("a").sign_out, SignOut::Never);
    assert_eq!(p.options("b").invited, Invited::Refuse);
    assert_eq!(p.options("b").sign_out, SignOut::Always);
}

// ---- rule option: ticket ---------------------------------------------------------------------

#[test]
fn a_ticket_option_loads_with_its_pattern_compiled() {
    let p = policy(&with_options(
        r#","ticket":{"required":true,"pattern":"INC[0-9]{7}"}"#,
    ));
    assert!(p.has_tickets());
    let rule = p.ticket_rule("r").expect("a ticket option");
    assert_eq!(rule.to_string(), r#"required, matching "INC[0-9]{7}""#);
    assert_eq!(p.check_ticket("r", Some("INC0012345")), Ok(()));
    assert_eq!(
        p.check_ticket("r", Some("INC1")),
        Err(TicketRefusal::Invalid)
    );
    assert_eq!(p.check_ticket("r", None), Err(TicketRefusal::Required));
    // `required` alone, and `pattern` alone (an optional ticket, checked when given).
    let p = policy(&with_options(r#","ticket":{"required":true}"#));
    assert_eq!(p.check_ticket("r", Some("anything")), Ok(()));
    let p = policy(&with_options(r#","ticket":{"pattern":"HD-\\d+"}"#));
    assert_eq!(p.check_ticket("r", None), Ok(()));
    assert_eq!(p.check_ticket("r", Some("HD-12")), Ok(()));
    assert_eq!(
        p.check_ticket("r", Some("HD-x")),
        Err(TicketRefusal::Invalid)
    );
    // No option: any ticket or none.
    let p = policy(&with_options(""));
    assert!(!p.has_tickets());
    assert_eq!(p.check_ticket("r", None), Ok(()));
}

#[test]
fn a_bad_ticket_option_is_an_error_at_its_location() {
    for (text, expected) in [
        (
            r#","ticket":{"required":true,"pattern":"INC("}"#,
            "rules[0].ticket.pattern: pattern is not a valid regular expression: unclosed group",
        ),
        (
            r#","ticket":{"required":"yes"}"#,
            "rules[0].ticket.required: expected true or false, found a string",
        ),
        (
            r#","ticket":{"pattern":7}"#,
            "rules[0].ticket.pattern: expected a regular expression (a string), found a number",
        ),
        (
            r#","ticket":{"required":false}"#,
            r#"rules[0].ticket: a ticket option that neither requires a ticket nor checks one does nothing: set "required": true, a "pattern", or both"#,
        ),
        (
            r#","ticket":true"#,
            "rules[0].ticket: expected an object, found a boolean",
        ),
        (
            r#","ticket":{"pattern":""}"#,
            "rules[0].ticket.pattern: pattern must not be empty",
        ),
    ] {
        let found = errors(&with_options(text));
        assert_eq!(found.len(), 1, "{text}: {found:?}");
        assert!(found[0].starts_with(expected), "{text}: {found:?}");
    }
    // A misspelt field is named, and the option, left with nothing, says so too.
    let found = errors(&with_options(r#","ticket":{"requried":true}"#));
    assert_eq!(
        found,
        vec![
            "rules[0].ticket.requried: unknown field (did you mean `required`?)".to_owned(),
            r#"rules[0].ticket: a ticket option that neither requires a ticket nor checks one does nothing: set "required": true, a "pattern", or both"#.to_owned(),
        ]
    );
}

#[test]
fn the_first_ticket_check_depends_on_the_caller_and_pool_only() {
    let p = policy(&format!(
        r#"{{"version":1,"rules":[
        {{"name":"strict","callers":["{HELPDESK}"],"userPools":["{POOL_A}"],"users":["a*"],
          "ticket":{{"required":true,"pattern":"INC[0-9]+"}}}},
        {{"name":"other-ticket","callers":["{HELPDESK}"],"userPools":["{POOL_A}"],"users":["b*"],
          "ticket":{{"required":true,"pattern":"CHG[0-9]+"}}}},
        {{"name":"free","callers":["{QUEUE}"],"userPools":["{POOL_A}"],"users":["*"]}}]}}"#
    ));
    let helpdesk = caller(HELPDESK);
    // Every rule for the helpdesk wants a ticket: none is refused whoever the user.
    assert_eq!(
        p.check_ticket_for_caller(&helpdesk, POOL_A, None),
        Err(TicketRefusal::Required)
    );
    // A ticket one of them takes passes the first check (the allowing rule decides later).
    assert_eq!(
        p.check_ticket_for_caller(&helpdesk, POOL_A, Some("CHG1")),
        Ok(())
    );
    assert_eq!(
        p.check_ticket_for_caller(&helpdesk, POOL_A, Some("INC1")),
        Ok(())
    );
    assert_eq!(
        p.check_ticket_for_caller(&helpdesk, POOL_A, Some("HD-1")),
        Err(TicketRefusal::Invalid)
    );
    assert_eq!(
        p.check_ticket("strict", Some("CHG1")),
        Err(TicketRefusal::Invalid)
    );
    // The queue's rule asks nothing; no rule for the pool: nothing to say here either.
    assert_eq!(
        p.check_ticket_for_caller(&caller(QUEUE), POOL_A, None),
        Ok(())
    );
    assert_eq!(p.check_ticket_for_caller(&helpdesk, POOL_B, None), Ok(()));
}

// ---- rule option: approval -------------------------------------------------------------------

#[test]
fn an_approval_option_loads_and_names_its_approvers() {
    let p = policy(&with_options(
        r#","approval":{"approvers":["arn:aws:iam::*:role/Lead*"],"ttlSeconds":3600}"#,
    ));
    let approval = p.approval("r").expect("the rule's approval");
    assert_eq!(approval.ttl_seconds, 3600);
    assert!(p.has_approval());
    // Case-insensitive, like callers; an anonymous caller approves nothing.
    assert!(approval.is_approver(&caller("arn:aws:iam::1:role/leadA")));
    assert!(!approval.is_approver(&caller("arn:aws:iam::1:role/helpdesk")));
    assert!(!approval.is_approver(&Caller::Anonymous));
    assert!(p.approves_any(&caller("arn:aws:iam::1:role/LeadB")));
    assert!(!p.approves_any(&caller("arn:aws:iam::1:role/helpdesk")));
    assert!(policy(&with_options("")).approval("r").is_none());
}

#[test]
fn a_malformed_approval_is_refused_with_its_location() {
    for (text, expected) in [
        (
            r#","approval":{"approvers":[],"ttlSeconds":60}"#,
            "rules[0].approval.approvers",
        ),
        (
            r#","approval":{"approvers":["anonymous"],"ttlSeconds":60}"#,
            "rules[0].approval.approvers[0]: an approver must be someone",
        ),
        (
            r#","approval":{"approvers":["a"],"ttlSeconds":0}"#,
            "rules[0].approval.ttlSeconds",
        ),
        (
            r#","approval":{"approvers":["a"],"ttlSeconds":604801}"#,
            "rules[0].approval.ttlSeconds",
        ),
        (
            r#","approval":{"approvers":["a"]}"#,
            "rules[0].approval.ttlSeconds",
        ),
        (
            r#","approval":{"approvers":["a"],"ttlSeconds":5,"x":1}"#,
            "rules[0].approval",
        ),
    ] {
        let found = errors(&with_options(text));
        assert!(
            found.iter().any(|e| e.starts_with(expected)),
            "{text}: {found:?}"
        );
    }
}

#[test]
fn an_approval_needs_the_guard_table() {
    let p = policy(&with_options(
        r#","approval":{"approvers":["lead"],"ttlSeconds":60}"#,
    ));
    let refused = p.check_budgets_have_a_table(false).expect_err("no table");
    assert_eq!(refused.errors()[0].location, "rules[0].approval");
    assert!(p.check_budgets_have_a_table(true).is_ok());
}

#[test]
fn lint_reports_an_approver_pattern_that_matches_every_caller() {
    let p = policy(&with_options(
        r#","approval":{"approvers":["lead","*"],"ttlSeconds":60}"#,
    ));
    let warnings: Vec<String> = p.lint_warnings().iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("rules[0].approval.approvers[1]: rule \"r\": every caller")),
        "{warnings:?}"
    );
    let named = policy(&with_options(
        r#","approval":{"approvers":["lead"],"ttlSeconds":60}"#,
    ));
    assert!(named.lint_warnings().is_empty());
}

//! Benchmark: one full decision against a generated policy of 50 rules × 20 patterns each
//! (5 callers, 5 user pools, 5 users, 5 groups), where only the last rule allows, so every
//! earlier rule is evaluated. Callers share a long ARN prefix, as real role ARNs do.

use std::hint::black_box;

use cognito_reset::policy::{Caller, Decision, Policy, Subject};
use criterion::{Criterion, criterion_group, criterion_main};

const RULES: usize = 50;
const PER_FIELD: usize = 5;

/// The policy document. Rules 0..40 list other roles (`.../team-{i}-{k}/*`); rules 40..50 also
/// list the request's role and pool (as their last patterns), but only rule 49 lists the user,
/// so the engine does caller, pool and user matching on the late rules before it allows.
fn generated_policy() -> String {
    let rules: Vec<serde_json::Value> = (0..RULES)
        .map(|i| {
            let last = i == RULES - 1;
            let late = i >= RULES - 10;
            let callers: Vec<String> = (0..PER_FIELD)
                .map(|k| {
                    if late && k == PER_FIELD - 1 {
                        "arn:aws:sts::123456789012:assumed-role/helpdesk/*".to_owned()
                    } else {
                        format!("arn:aws:sts::123456789012:assumed-role/team-{i}-{k}/*")
                    }
                })
                .collect();
            let pools: Vec<String> = (0..PER_FIELD)
                .map(|k| {
                    if late && k == PER_FIELD - 1 {
                        "us-west-2_*".to_owned()
                    } else {
                        format!("us-west-2_pool{i:02}{k:03}")
                    }
                })
                .collect();
            let users: Vec<String> = (0..PER_FIELD)
                .map(|k| {
                    if last && k == PER_FIELD - 1 {
                        "*@example.com".to_owned()
                    } else {
                        format!("user-{i}-{k}-*@corp.example.org")
                    }
                })
                .collect();
            let groups: Vec<String> = (0..PER_FIELD)
                .map(|k| {
                    if last && k == PER_FIELD - 1 {
                        "staff".to_owned()
                    } else {
                        format!("group-{i}-{k}")
                    }
                })
                .collect();
            serde_json::json!({
                "name": format!("rule-{i}"),
                "callers": callers,
                "userPools": pools,
                "users": users,
                "groups": groups,
            })
        })
        .collect();
    let deny_users: Vec<String> = (0..20).map(|k| format!("admin-{k}-*")).collect();
    serde_json::json!({
        "version": 1,
        "deny": {"users": deny_users, "groups": ["admins", "break-glass"]},
        "rules": rules,
    })
    .to_string()
}

fn decision(c: &mut Criterion) {
    let policy = match Policy::from_json(&generated_policy()) {
        Ok(policy) => policy,
        Err(errors) => panic!("generated policy is invalid:\n{errors}"),
    };
    let caller = Caller::Identified(vec![
        "arn:aws:sts::123456789012:assumed-role/helpdesk/session-42".to_owned(),
    ]);
    let subject = Subject {
        username: "3f1c9a2e-7b4d-4e8a-9c1f-5d6e7f8a9b0c".to_owned(),
        email: Some("Jane.Doe@Example.com".to_owned()),
        preferred_username: Some("jdoe".to_owned()),
        sub: Some("3f1c9a2e-7b4d-4e8a-9c1f-5d6e7f8a9b0c".to_owned()),
        groups: vec!["staff".to_owned(), "engineering".to_owned()],
    };
    let pool = "us-west-2_aaaaaaaaa";
    assert_eq!(
        policy.decide(&caller, pool, &subject),
        Decision::Allow {
            rule: format!("rule-{}", RULES - 1)
        }
    );
    c.bench_function("decide: 50 rules x 20 patterns, last rule allows", |b| {
        b.iter(|| policy.decide(black_box(&caller), black_box(pool), black_box(&subject)))
    });
    c.bench_function("check_caller_and_pool: 50 rules x 20 patterns", |b| {
        b.iter(|| policy.check_caller_and_pool(black_box(&caller), black_box(pool)))
    });
}

criterion_group!(benches, decision);
criterion_main!(benches);

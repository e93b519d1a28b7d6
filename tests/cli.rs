//! End-to-end tests of the `reset-policy` binary on the example policies kept in `policy/`, and
//! (with the `enqueue` feature) of what `reset-enqueue --retry-from` decides before any AWS call.

use std::path::PathBuf;
use std::process::{Command, Output};

const HELPDESK: &str = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/session-1";
const QUEUE: &str = "arn:aws:sqs:us-west-2:123456789012:password-resets";
const POOL_A: &str = "us-west-2_aaaaaaaaa";
const POOL_B: &str = "us-west-2_bbbbbbbbb";

/// A policy file in the repository's `policy/` directory.
fn policy_file(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("policy")
        .join(name)
        .display()
        .to_string()
}

/// Runs `reset-policy` with `args`.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reset-policy"))
        .args(args)
        .output()
        .expect("the reset-policy binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `explain` on the example policy with `extra` arguments.
fn explain(extra: &[&str]) -> Output {
    let file = policy_file("example.json");
    let mut args = vec!["explain", file.as_str()];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn lint_of_a_valid_policy_prints_a_summary_and_exits_zero() {
    let out = run(&["lint", &policy_file("example.json")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(
            "valid policy: 2 rules, 3 deny.users patterns, 2 deny.groups patterns, group membership used"
        ),
        "{text}"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn lint_of_an_invalid_policy_lists_every_located_error_and_exits_one() {
    let out = run(&["lint", &policy_file("invalid-example.json")]);
    assert_eq!(out.status.code(), Some(1));
    let errors = stderr(&out);
    for expected in [
        "error: version: unsupported version 2: must be 1",
        "error: deny.group: unknown field (did you mean `groups`?)",
        "error: deny.users[1]: pattern must not be empty",
        "error: rules[0].callers: must list at least one pattern",
        "error: rules[0].userPools[1]: pattern must not be blank (whitespace only)",
        "error: rules[1].userPools: expected an array of strings, found a string",
        "error: rules[1]: a rule must name `users` or `groups` or both",
        "error: rules[1].name: duplicate rule name \"helpdesk-portal\" (first used by rules[0])",
        "invalid policy: 8 errors",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert_eq!(stdout(&out), "");
}

#[test]
fn lint_of_a_shadowed_rule_warns_and_exits_zero() {
    let out = run(&["lint", &policy_file("shadowed.json")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warnings = stderr(&out);
    assert!(
        warnings.contains(
            "warning: rules[1]: rule \"support-role-one-pool\" can never match: rules[0] \"support-role\" comes first"
        ),
        "{warnings}"
    );
    assert!(
        warnings.contains("warning: rules[2]: rule \"ops-admins\" can never allow"),
        "{warnings}"
    );
    assert!(
        stdout(&out).contains("valid policy: 3 rules"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("2 warnings"), "{}", stdout(&out));
}

#[test]
fn lint_of_a_missing_file_exits_one() {
    let out = run(&["lint", &policy_file("does-not-exist.json")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

#[test]
fn explain_allow_names_the_rule_and_the_matching_patterns() {
    let out = explain(&[
        "--pool",
        POOL_A,
        "--user",
        "bob",
        "--email",
        "Bob@Example.com",
        "--group",
        "staff",
        "--caller",
        HELPDESK,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ALLOW helpdesk-portal"));
    let why: Vec<&str> = lines.collect();
    assert!(
        !why.is_empty() && why.iter().all(|l| l.starts_with("  ")),
        "{text}"
    );
    assert!(
        text.contains(r#"email "Bob@Example.com" matches "*@example.com""#),
        "{text}"
    );
    assert!(text.contains(r#"group "staff" matches "staff""#), "{text}");
}

#[test]
fn explain_deny_prints_the_reason_code_and_exits_zero() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--user", "admin-ops", "--caller", QUEUE],
            "DENY denied-user",
        ),
        (
            &["--user", "u", "--group", "break-glass", "--caller", QUEUE],
            "DENY denied-group",
        ),
        (&["--user", "bob", "--anonymous"], "DENY no-rule-for-caller"),
        (
            &["--user", "bob", "--caller", HELPDESK],
            "DENY user-not-allowed",
        ),
        (
            &["--user", "bob", "--caller", "arn:aws:iam::1:user/x"],
            "DENY no-rule-for-caller",
        ),
    ];
    for (args, first_line) in cases {
        let mut all = vec!["--pool", POOL_A];
        all.extend_from_slice(args);
        let out = explain(&all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        assert_eq!(text.lines().next(), Some(first_line), "{args:?}:\n{text}");
        assert!(text.lines().skip(1).all(|l| l.starts_with("  ")), "{text}");
    }
}

#[test]
fn explain_pool_not_allowed_lists_the_rules_considered() {
    let out = explain(&[
        "--pool",
        POOL_B,
        "--user",
        "bob",
        "--email",
        "bob@example.com",
        "--group",
        "staff",
        "--caller",
        HELPDESK,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.starts_with("DENY pool-not-allowed\n"), "{text}");
    assert!(
        text.contains(
            r#"  rules[0] "helpdesk-portal": skipped: user pool matches none of its userPools"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"  rules[1] "ticket-queue": skipped: no caller identity matches its callers"#
        ),
        "{text}"
    );
}

#[test]
fn explain_accepts_several_callers() {
    let out = explain(&[
        "--pool",
        POOL_B,
        "--user",
        "bob",
        "--caller",
        "jwt:sub:123",
        "--caller",
        QUEUE,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with("ALLOW ticket-queue\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn explain_of_an_invalid_policy_exits_one() {
    let out = run(&[
        "explain",
        &policy_file("invalid-example.json"),
        "--pool",
        POOL_A,
        "--user",
        "bob",
        "--anonymous",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error: version: unsupported version 2"));
    assert_eq!(stdout(&out), "");
}

#[test]
fn explain_without_a_caller_choice_is_a_usage_error() {
    let out = explain(&["--pool", POOL_A, "--user", "bob"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--caller"), "{}", stderr(&out));
}

#[test]
fn explain_with_both_caller_and_anonymous_is_a_usage_error() {
    let out = explain(&[
        "--pool",
        POOL_A,
        "--user",
        "bob",
        "--caller",
        QUEUE,
        "--anonymous",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn help_describes_both_commands() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("lint") && text.contains("explain"), "{text}");
    let out = run(&["explain", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for flag in [
        "--pool",
        "--user",
        "--email",
        "--preferred-username",
        "--sub",
        "--group",
        "--caller",
        "--anonymous",
    ] {
        assert!(text.contains(flag), "missing {flag} in:\n{text}");
    }
    let out = run(&["lint", "--help"]);
    assert_eq!(out.status.code(), Some(0));
}

/// Runs `reset-policy` with its stdout on a pipe whose reader has already gone, as after
/// `| head -1` has read its line: the first write gets EPIPE every time, not only when the
/// reader happens to be quick.
fn run_into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_reset-policy"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the reset-policy binary runs");
    child.wait_with_output().expect("reset-policy ends")
}

#[test]
fn a_reader_closing_the_pipe_early_ends_the_output_quietly() {
    // Given `reset-policy ... | head -1` where head has already exited
    let file = policy_file("example.json");
    for args in [
        vec![
            "explain",
            file.as_str(),
            "--pool",
            POOL_A,
            "--user",
            "bob",
            "--email",
            "bob@example.com",
            "--group",
            "staff",
            "--caller",
            HELPDESK,
        ],
        vec!["lint", file.as_str()],
        vec!["--help"],
    ] {
        let out = run_into_closed_pipe(&args);
        // then there is no panic and no complaint, and the status is the command's own
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn a_closed_pipe_keeps_the_failure_status_of_an_invalid_policy() {
    let out = run_into_closed_pipe(&["lint", &policy_file("invalid-example.json")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("invalid policy"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_output_that_cannot_be_written_is_an_error() {
    // A full disk is not a reader going away: say so and fail.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = Command::new(env!("CARGO_BIN_EXE_reset-policy"))
        .args(["lint", &policy_file("example.json")])
        .stdout(full)
        .output()
        .expect("the reset-policy binary runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot write the output"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

const ROLE: &str = "arn:aws:iam::222233334444:role/cognito-reset-target";

#[test]
fn lint_with_pool_roles_mapping_every_pool_the_rules_name_says_nothing_more() {
    let roles = format!(
        r#"{{"{POOL_A}": "{ROLE}", "{POOL_B}": {{"roleArn": "{ROLE}", "externalId": "ext-1"}}}}"#
    );
    let out = run(&["lint", &policy_file("example.json"), "--pool-roles", &roles]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert!(!stdout(&out).contains("warning"), "{}", stdout(&out));
}

#[test]
fn lint_with_pool_roles_warns_on_a_case_variant_and_an_unused_role_and_lists_unmapped_pools() {
    // Given POOL_ROLES (in a file) mapping POOL_A in another letter case, and a pool no rule names
    let file = std::env::temp_dir().join(format!("pool-roles-{}.json", std::process::id()));
    let upper = POOL_A.to_uppercase().replace("US-WEST-2", "us-west-2");
    std::fs::write(
        &file,
        format!(r#"{{"{upper}": "{ROLE}", "eu-west-1_unused1": "{ROLE}"}}"#),
    )
    .expect("a temp file");
    let out = run(&[
        "lint",
        &policy_file("example.json"),
        "--pool-roles",
        &file.display().to_string(),
    ]);
    let _ = std::fs::remove_file(&file);
    // Then the policy is still valid, with four warnings: the two rules naming POOL_A (which
    // would be asked in the function's own account), and the two roles no rule reaches
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("4 warnings"), "{}", stdout(&out));
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 4, "{err}");
    assert!(
        warnings[1].starts_with("warning: rules[1].userPools[0]: "),
        "{err}"
    );
    assert!(
        warnings[3].contains(&format!("POOL_ROLES[\"{upper}\"]")),
        "{err}"
    );
    assert!(
        warnings[0].starts_with("warning: rules[0].userPools[0]: "),
        "{err}"
    );
    assert!(
        warnings[0].contains(&upper) && warnings[0].contains("case-sensitive"),
        "{err}"
    );
    assert!(
        warnings[2].contains("POOL_ROLES[\"eu-west-1_unused1\"]: no rule allows this pool"),
        "{err}"
    );
    // And POOL_B, which it does not map, is listed as the function's own account's, not judged
    let note: Vec<&str> = err.lines().filter(|l| l.starts_with("note: ")).collect();
    assert_eq!(note.len(), 1, "{err}");
    assert!(
        note[0].contains(POOL_B) && note[0].contains("does not say its account"),
        "{err}"
    );
}

#[test]
fn lint_with_invalid_pool_roles_names_the_entry_and_exits_one() {
    let roles = format!(r#"{{"{POOL_A}": "arn:aws:iam::222233334444:user/alice"}}"#);
    let out = run(&["lint", &policy_file("example.json"), "--pool-roles", &roles]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("POOL_ROLES") && err.contains(POOL_A) && err.contains("IAM role ARN"),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
}

/// `reset-enqueue --retry-from` (issue 25): what it refuses or skips is decided before any AWS
/// call (the AWS endpoint below is a closed loopback port: a call would fail loudly).
#[cfg(feature = "enqueue")]
mod retry_from {
    use super::*;

    const POOL: &str = "us-west-2_aaaaaaaaa";

    /// Runs `reset-enqueue --queue-url <closed port> --retry-from REPORT FILE` in `dir`.
    fn enqueue(dir: &std::path::Path, report: &str, users: &str) -> Output {
        let (report_path, users_path) = (dir.join("report.csv"), dir.join("users.csv"));
        std::fs::write(&report_path, report).expect("write the report");
        std::fs::write(&users_path, users).expect("write the users");
        Command::new(env!("CARGO_BIN_EXE_reset-enqueue"))
            .args([
                "--queue-url",
                "http://127.0.0.1:9/queue/q",
                "--user-pool-id",
                POOL,
            ])
            .arg("--retry-from")
            .arg(&report_path)
            .arg(&users_path)
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_REGION", "us-west-2")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("the reset-enqueue binary runs")
    }

    fn dir(name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    const HEADER: &str = "line,userPoolId,username,messageId,outcome,code\n";

    #[test]
    fn a_report_with_nothing_to_retry_sends_nothing_and_exits_zero() {
        let dir = dir("retry-nothing");
        let report = format!(
            "{HEADER}2,{POOL},a@example.com,m1,RESET,\n3,{POOL},b@example.com,m2,REJECTED,denied-user\n"
        );
        let out = enqueue(&dir, &report, "username\na@example.com\nb@example.com\n");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stdout(&out).contains("nothing to send"), "{}", stdout(&out));
        assert!(!dir.join("report.csv.enqueue-state.jsonl").exists());
    }

    #[test]
    fn a_report_naming_users_not_in_the_file_is_refused_before_anything_is_sent() {
        let dir = dir("retry-strangers");
        let report = format!("{HEADER}2,{POOL},zed@example.com,m1,REJECTED,delivery-limit\n");
        let out = enqueue(&dir, &report, "username\na@example.com\n");
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("zed@example.com") && stderr(&out).contains("nothing was sent"),
            "{}",
            stderr(&out)
        );
        assert!(!dir.join("report.csv.enqueue-state.jsonl").exists());
    }

    #[test]
    fn a_file_that_is_not_a_report_is_refused() {
        let dir = dir("retry-not-a-report");
        let out = enqueue(
            &dir,
            "username\na@example.com\n",
            "username\na@example.com\n",
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("--wait report"), "{}", stderr(&out));
    }
}

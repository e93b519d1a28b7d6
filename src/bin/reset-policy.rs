//! `reset-policy`: the operator CLI for allowlist policies.
//!
//! - `reset-policy lint FILE` checks a policy: a one-line summary and exit 0 when valid (with
//!   warnings about rules that can never match), every located error and exit 1 when not. With
//!   `--pool-roles FILE|JSON` (the function's `POOL_ROLES`) it also checks the rules' pools
//!   against the pools mapped to other accounts' roles, as far as pool ids can tell.
//! - `reset-policy explain FILE --pool ID --user NAME ... (--caller ID... | --anonymous)` prints
//!   `ALLOW <rule>` or `DENY <reason-code>` and, indented, why. Exit 0 for either decision. For
//!   an allowing rule with a `ticket` option it prints the option and, with `--ticket T`, whether
//!   the rule takes that ticket (or `ticket-required` / `ticket-invalid`).
//!
//! Exit codes: 0 success, 1 invalid or unreadable policy (or output that cannot be written),
//! 2 usage error.
//!
//! Like ripgrep, a reader that goes away early (`reset-policy explain ... | head -1`) ends the
//! output quietly: the rest is dropped and the status is what it would have been. A closed pipe
//! is the reader's choice, not a failure of the command; under `set -o pipefail` (as in this
//! repository's Makefile) a 141 would fail the pipeline for it. Any other write error (a full
//! disk) is reported and exits 1.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Parser, Subcommand};
use cognito_reset::policy::{Caller, Policy, Subject};
use cognito_reset::pool_roles::PoolRoles;

/// Check and explain cognito-reset allowlist policies.
///
/// Exit status: 0 on success (for `explain`, whatever the decision), 1 when the policy is invalid
/// or cannot be read, 2 on a usage error. A reader closing the pipe early is not an error.
#[derive(Debug, Parser)]
#[command(name = "reset-policy", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a policy file: print a one-line summary (exit 0) or every error with its
    /// location (exit 1). Also warns about rules that can never match.
    Lint {
        /// The policy document (JSON).
        file: PathBuf,
        /// The function's POOL_ROLES (a file, or the JSON itself): warns on a rule's pool that
        /// is a case variant of a mapped pool and on a mapped pool no rule allows, and lists the
        /// pools the rules name that it does not map (reached in the function's own account; a
        /// pool id does not say its account, so those are not judged).
        #[arg(long, value_name = "FILE|JSON")]
        pool_roles: Option<String>,
    },
    /// Decide one request against a policy and say why: prints `ALLOW <rule>` or
    /// `DENY <reason-code>`, then the reasons, indented.
    #[command(group(ArgGroup::new("who").required(true).args(["caller", "anonymous"])))]
    Explain {
        /// The policy document (JSON).
        file: PathBuf,
        /// The user pool id, e.g. us-west-2_aaaaaaaaa.
        #[arg(long, value_name = "ID")]
        pool: String,
        /// The user's canonical Cognito Username.
        #[arg(long, value_name = "USERNAME")]
        user: String,
        /// The user's email attribute.
        #[arg(long, value_name = "E")]
        email: Option<String>,
        /// The user's preferred_username attribute.
        #[arg(long, value_name = "P")]
        preferred_username: Option<String>,
        /// The user's sub attribute.
        #[arg(long, value_name = "S")]
        sub: Option<String>,
        /// A group the user is in; repeat for several.
        #[arg(long = "group", value_name = "G")]
        groups: Vec<String>,
        /// A caller identity (IAM ARN, jwt:sub:.., jwt:client:.., principal:.., queue ARN);
        /// repeat for several.
        #[arg(long = "caller", value_name = "ID")]
        caller: Vec<String>,
        /// The request carries no caller identity.
        #[arg(long)]
        anonymous: bool,
        /// The request's Ticket, checked against the allowing rule's `ticket` option.
        #[arg(long, value_name = "T")]
        ticket: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Lint { file, pool_roles } => lint(&file, pool_roles.as_deref()),
        Command::Explain {
            file,
            pool,
            user,
            email,
            preferred_username,
            sub,
            groups,
            caller,
            anonymous,
            ticket,
        } => {
            let caller = if anonymous {
                Caller::Anonymous
            } else {
                Caller::Identified(caller)
            };
            let subject = Subject {
                username: user,
                email,
                preferred_username,
                sub,
                groups,
            };
            explain(&file, &caller, &pool, &subject, ticket.as_deref())
        }
    }
}

/// Writes `text` to stdout. A closed pipe drops the rest quietly and keeps `status`; any other
/// write error is reported and turns the status into a failure.
fn emit(text: &str, status: ExitCode) -> ExitCode {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => status,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => status,
        Err(e) => {
            warn(&format!("error: cannot write the output: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// One line to stderr; if even stderr is gone there is nobody left to tell.
fn warn(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// Reads and loads a policy, printing every problem to stderr.
fn load(file: &Path) -> Result<Policy, ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        warn(&format!("error: cannot read {}: {e}", file.display()));
        ExitCode::FAILURE
    })?;
    Policy::from_json(&text).map_err(|errors| {
        for error in &errors {
            warn(&format!("error: {error}"));
        }
        let n = errors.len();
        warn(&format!(
            "{}: invalid policy: {n} error{}",
            file.display(),
            if n == 1 { "" } else { "s" }
        ));
        ExitCode::FAILURE
    })
}

/// Reads `--pool-roles`: the JSON itself when it starts with `{`, a file otherwise.
fn load_pool_roles(value: &str) -> Result<PoolRoles, ExitCode> {
    let text = if value.trim_start().starts_with('{') {
        value.to_owned()
    } else {
        std::fs::read_to_string(value).map_err(|e| {
            warn(&format!("error: --pool-roles: cannot read {value}: {e}"));
            ExitCode::FAILURE
        })?
    };
    PoolRoles::parse(&text).map_err(|e| {
        warn(&format!("error: --pool-roles: POOL_ROLES: {e}"));
        ExitCode::FAILURE
    })
}

fn lint(file: &Path, pool_roles: Option<&str>) -> ExitCode {
    let roles = match pool_roles.map(load_pool_roles).transpose() {
        Ok(roles) => roles,
        Err(code) => return code,
    };
    let policy = match load(file) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let mut warnings = policy.lint_warnings();
    if let Some(roles) = &roles {
        let mapped: Vec<&str> = roles.iter().map(|(pool, _)| pool).collect();
        let checked = policy.lint_pool_roles(&mapped);
        warnings.extend(checked.warnings);
        if !checked.unmapped.is_empty() {
            warn(&format!(
                "note: POOL_ROLES does not map {}: reached in the function's own account (a pool id does not say its account: check that these are)",
                checked.unmapped.join(", ")
            ));
        }
    }
    for warning in &warnings {
        warn(&format!("warning: {warning}"));
    }
    let suffix = match warnings.len() {
        0 => String::new(),
        1 => ", 1 warning".to_owned(),
        n => format!(", {n} warnings"),
    };
    let summary = format!(
        "{}: valid policy: {}{suffix}\n",
        file.display(),
        policy.summary()
    );
    emit(&summary, ExitCode::SUCCESS)
}

fn explain(
    file: &Path,
    caller: &Caller,
    pool: &str,
    subject: &Subject,
    ticket: Option<&str>,
) -> ExitCode {
    let policy = match load(file) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let explanation = policy.explain(caller, pool, subject);
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(text, "{}", explanation.decision);
    for reason in &explanation.reasons {
        let _ = writeln!(text, "  {reason}");
    }
    if let cognito_reset::policy::Decision::Allow { rule } = &explanation.decision {
        let _ = writeln!(text, "  rule options: {}", policy.options(rule));
        if let Some(ticket_rule) = policy.ticket_rule(rule) {
            let _ = writeln!(text, "  rule ticket: {ticket_rule}");
            let verdict = match policy.check_ticket(rule, ticket) {
                Ok(()) => "accepted".to_owned(),
                Err(refusal) => format!("refused: {refusal}"),
            };
            match ticket {
                Some(ticket) => {
                    let _ = writeln!(text, "  ticket {ticket:?}: {verdict}");
                }
                None => {
                    let _ = writeln!(text, "  no ticket: {verdict}");
                }
            }
        }
    }
    if !policy.needs_groups() && !subject.groups.is_empty() {
        text.push_str("  note: the policy does not use groups; --group made no difference\n");
    } else if policy.needs_groups() && subject.groups.is_empty() {
        text.push_str("  note: the policy uses groups and no --group was given\n");
    }
    emit(&text, ExitCode::SUCCESS)
}

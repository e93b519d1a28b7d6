//! The small world every schedule runs in: one user pool (and, with [`Options::other_account`],
//! a second one in another account), five users, the callers, the policy that admits some of
//! them, and the function's configuration, with the options a schedule may turn on (sign-out,
//! resent invitations, a caller budget, pacing at real rates, `DRY_RUN`, a pool in another
//! account).

use std::fmt;
use std::time::Duration;

use cognito_reset::config::Config;

/// The pool the policy lists.
pub const POOL: &str = "us-west-2_1f950f4f389b723d0775ea6ef7e4b3c47b3100fa6981c";
/// A well-formed pool no rule lists.
pub const OTHER_POOL: &str = "us-west-2_aaaaaaaaa";
/// The pool the policy also lists, in another account (`POOL_ROLES`) and region: used only by
/// schedules with [`Options::other_account`].
pub const FOREIGN_POOL: &str = "eu-west-1_bbbbbbbbb";
/// `FUNCTION_ACCOUNT_ID`, and the account of [`FOREIGN_POOL`]'s role.
pub const FUNCTION_ACCOUNT: &str = "123456789012";
pub const FOREIGN_ACCOUNT: &str = "210987654321";
/// The ticket queue (standard) and its FIFO twin: the policy's SQS callers.
pub const QUEUE: &str = "arn:aws:sqs:us-west-2:123456789012:password-resets";
pub const FIFO_QUEUE: &str = "arn:aws:sqs:us-west-2:123456789012:password-resets.fifo";
/// A queue no rule lists.
pub const STRANGER_QUEUE: &str = "arn:aws:sqs:us-west-2:123456789012:elsewhere";
/// The helpdesk portal (IAM-authorised HTTP API caller) and a role no rule lists.
pub const PORTAL: &str = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice";
pub const INTRUDER: &str = "arn:aws:sts::123456789012:assumed-role/intruder/eve";
/// Two sessions of the helpdesk leads' role: approvers of the privileged rule (one requester
/// for budgets and self-approval, two people deciding at once for the race).
pub const LEAD: &str = "arn:aws:sts::123456789012:assumed-role/helpdesk-lead/bob";
pub const LEAD_TWO: &str = "arn:aws:sts::123456789012:assumed-role/helpdesk-lead/carol";
/// The approvers of the privileged rule: the leads, and the portal (so that the portal deciding
/// its own request is `self-approval`, and deciding a queue's request is a valid approval).
pub const APPROVERS: [&str; 2] = [
    "arn:aws:sts::123456789012:assumed-role/helpdesk-lead/*",
    "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*",
];
/// The privileged rule's `approval.ttlSeconds`.
pub const APPROVAL_TTL: Duration = Duration::from_secs(45);

/// `DEADLINE_MARGIN_MS`.
pub const MARGIN: Duration = Duration::from_millis(1000);
/// `RESET_COOLDOWN_SECONDS`.
pub const COOLDOWN: Duration = Duration::from_secs(30);
/// `IDEMPOTENCY_TTL_SECONDS` (schedules never last this long).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(86_400);
/// `MAX_RECEIVE_COUNT`: a RETRY on the third receive is GAVE_UP.
pub const MAX_RECEIVE_COUNT: u32 = 3;

/// How the rules sign out (`signOut`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SignOut {
    Never,
    Allowed,
    Always,
}

impl SignOut {
    pub fn as_str(self) -> &'static str {
        match self {
            SignOut::Never => "never",
            SignOut::Allowed => "allowed",
            SignOut::Always => "always",
        }
    }
}

/// How Cognito calls are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pacing {
    /// No pacing at all (`Rates::OFF`).
    Off,
    /// Each instance at its static share ([`RESET_RPS`] resets a second, [`READ_RPS`] reads).
    Instance,
    /// The fleet's buckets (`PACING=shared`) in an in-memory bucket store that applies
    /// `pacing::apply`, quotas [`RESET_RPS`] and [`READ_RPS`].
    Shared,
}

/// Resets a second (`COGNITO_RESET_RPS`, and `COGNITO_RESET_QUOTA` when shared), and reads.
pub const RESET_RPS: u32 = 4;
pub const READ_RPS: u32 = 10;

/// What a schedule turns on; the default is the plain world (no option at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// The rules' `signOut`.
    pub sign_out: SignOut,
    /// The rules' `"invited": "resend"` (otherwise an invited user is `invitation-pending`).
    pub resend: bool,
    /// The rules' `budget`: N resets per S seconds, per caller.
    pub budget: Option<(u32, u32)>,
    pub pacing: Pacing,
    /// `DRY_RUN=true`.
    pub dry_run: bool,
    /// `FUNCTION_ACCOUNT_ID` and `POOL_ROLES` with [`FOREIGN_POOL`] in [`FOREIGN_ACCOUNT`].
    pub other_account: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sign_out: SignOut::Never,
            resend: false,
            budget: None,
            pacing: Pacing::Off,
            dry_run: false,
            other_account: false,
        }
    }
}

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.sign_out != SignOut::Never {
            parts.push(format!("signOut {}", self.sign_out.as_str()));
        }
        if self.resend {
            parts.push("invited: resend".to_owned());
        }
        if let Some((n, s)) = self.budget {
            parts.push(format!("budget {n} per {s} s"));
        }
        match self.pacing {
            Pacing::Off => {}
            Pacing::Instance => parts.push(format!("paced per instance ({RESET_RPS} resets/s)")),
            Pacing::Shared => {
                parts.push(format!("paced by the shared bucket ({RESET_RPS} resets/s)"))
            }
        }
        if self.dry_run {
            parts.push("DRY_RUN".to_owned());
        }
        if self.other_account {
            parts.push(format!("{FOREIGN_POOL} in account {FOREIGN_ACCOUNT}"));
        }
        if parts.is_empty() {
            f.write_str("no options")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The portal may reset `staff` of the pools, the queues anyone `@example.com`; nobody may reset
/// an admin. `options` adds the rules' `signOut`, `invited` and `budget`.
pub fn policy(options: &Options) -> String {
    let mut rules = vec![
        // First: the privileged users of every pool wait for a second person, whoever asks.
        serde_json::json!({
            "name": "privileged",
            "callers": ["arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*", QUEUE, FIFO_QUEUE],
            "userPools": [POOL, FOREIGN_POOL],
            "groups": ["privileged"],
            "approval": {"approvers": APPROVERS, "ttlSeconds": APPROVAL_TTL.as_secs()}
        }),
        serde_json::json!({
            "name": "portal",
            "callers": ["arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*"],
            "userPools": [POOL, FOREIGN_POOL],
            "groups": ["staff"]
        }),
        serde_json::json!({
            "name": "queue",
            "callers": [QUEUE, FIFO_QUEUE],
            "userPools": [POOL, FOREIGN_POOL],
            "users": ["*@example.com"]
        }),
    ];
    for rule in &mut rules {
        if options.sign_out != SignOut::Never {
            rule["signOut"] = serde_json::Value::from(options.sign_out.as_str());
        }
        if options.resend {
            rule["invited"] = serde_json::Value::from("resend");
        }
        if let Some((resets, per_seconds)) = options.budget {
            rule["budget"] = serde_json::json!({"resets": resets, "perSeconds": per_seconds});
        }
    }
    serde_json::json!({
        "version": 1,
        "deny": {"groups": ["admins"]},
        "rules": rules
    })
    .to_string()
}

/// The function's configuration: the guard on, events on, 3 attempts a Cognito call, and the
/// schedule's options (the harness builds the directory unpaced, `Rates::OFF`, for
/// [`Pacing::Off`]).
pub fn config(max_concurrency: usize, options: &Options) -> Config {
    let policy = policy(options);
    let concurrency = max_concurrency.to_string();
    let margin = MARGIN.as_millis().to_string();
    let cooldown = COOLDOWN.as_secs().to_string();
    let ttl = IDEMPOTENCY_TTL.as_secs().to_string();
    let receives = MAX_RECEIVE_COUNT.to_string();
    let reset_rps = RESET_RPS.to_string();
    let read_rps = READ_RPS.to_string();
    let roles = serde_json::json!({FOREIGN_POOL: {
        "roleArn": format!("arn:aws:iam::{FOREIGN_ACCOUNT}:role/cognito-reset-target"),
        "externalId": "faults"
    }})
    .to_string();
    let mut vars: Vec<(&str, &str)> = vec![
        ("POLICY", &policy),
        ("GUARD_TABLE", "cognito-reset-guard"),
        ("EVENT_BUS", "faults"),
        ("RESET_COOLDOWN_SECONDS", &cooldown),
        ("IDEMPOTENCY_TTL_SECONDS", &ttl),
        ("DEADLINE_MARGIN_MS", &margin),
        ("MAX_CONCURRENCY", &concurrency),
        ("MAX_RECEIVE_COUNT", &receives),
        ("COGNITO_TIMEOUT_MS", "3000"),
        ("COGNITO_MAX_ATTEMPTS", "3"),
        ("GUARD_TIMEOUT_MS", "300"),
    ];
    match options.pacing {
        Pacing::Off => {}
        Pacing::Instance => vars.extend([
            ("PACING", "instance"),
            ("COGNITO_RESET_RPS", reset_rps.as_str()),
            ("COGNITO_CREATION_RPS", reset_rps.as_str()),
            ("COGNITO_UPDATE_RPS", reset_rps.as_str()),
            ("COGNITO_READ_RPS", read_rps.as_str()),
            ("COGNITO_RESOURCE_READ_RPS", read_rps.as_str()),
        ]),
        Pacing::Shared => vars.extend([
            ("PACING", "shared"),
            ("MAX_INSTANCES", "2"),
            ("COGNITO_RESET_QUOTA", reset_rps.as_str()),
            ("COGNITO_CREATION_QUOTA", reset_rps.as_str()),
            ("COGNITO_UPDATE_QUOTA", reset_rps.as_str()),
            ("COGNITO_READ_QUOTA", read_rps.as_str()),
            ("COGNITO_RESOURCE_READ_QUOTA", read_rps.as_str()),
        ]),
    }
    if options.dry_run {
        vars.push(("DRY_RUN", "true"));
    }
    if options.other_account {
        vars.extend([
            ("FUNCTION_ACCOUNT_ID", FUNCTION_ACCOUNT),
            ("POOL_ROLES", roles.as_str()),
        ]);
    }
    Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .expect("a valid configuration")
}

/// A user of the world. `Ghost` is not in the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum User {
    Ann,
    Bob,
    /// In `admins`: denied.
    Mal,
    /// In `privileged`: her resets wait for an approval (the privileged rule, first).
    Pam,
    /// Invited, never signed in (`FORCE_CHANGE_PASSWORD`): `invitation-pending`, or her
    /// invitation sent again under `"invited": "resend"`.
    Ivy,
    Ghost,
}

impl User {
    pub fn local(self) -> &'static str {
        match self {
            User::Ann => "ann",
            User::Bob => "bob",
            User::Mal => "mal",
            User::Pam => "pam",
            User::Ivy => "ivy",
            User::Ghost => "ghost",
        }
    }

    /// Cognito's username (what a claim is keyed on), for a user that exists.
    pub fn canonical(self) -> Option<String> {
        (self != User::Ghost).then(|| format!("{}-0001", self.local()))
    }

    pub fn groups(self) -> &'static [&'static str] {
        match self {
            User::Mal => &["staff", "admins"],
            User::Pam => &["staff", "privileged"],
            _ => &["staff"],
        }
    }

    /// The users that exist (in each pool).
    pub const EXISTING: [User; 5] = [User::Ann, User::Bob, User::Mal, User::Ivy, User::Pam];

    /// Cognito's `UserStatus` before anything happens to the user.
    pub fn initial_status(self) -> &'static str {
        match self {
            User::Ivy => "FORCE_CHANGE_PASSWORD",
            _ => "CONFIRMED",
        }
    }
}

/// How a request names its user: an alias, the canonical name or a case variant all resolve to
/// the same user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Spelling {
    Email,
    Canonical,
    Shouted,
}

/// Which pool a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pool {
    Listed,
    Unlisted,
    /// [`FOREIGN_POOL`], listed, in another account with [`Options::other_account`].
    Foreign,
}

impl Pool {
    pub fn id(self) -> &'static str {
        match self {
            Pool::Listed => POOL,
            Pool::Unlisted => OTHER_POOL,
            Pool::Foreign => FOREIGN_POOL,
        }
    }
}

/// One request of a schedule. Its ticket (`ClientMetadata.ticket`) is `T<index>` in the
/// schedule's list, so that the fake Cognito can tell which request a reset was sent for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Req {
    pub user: User,
    pub spelling: Spelling,
    pub pool: Pool,
    /// No `Username`: REJECTED `invalid-request` before anything else.
    pub invalid: bool,
    /// `"SignOut": true`.
    pub sign_out: bool,
}

impl Req {
    /// The username as the request sends it.
    pub fn name(&self) -> String {
        let local = self.user.local();
        match self.spelling {
            Spelling::Email => format!("{local}@example.com"),
            Spelling::Canonical => format!("{local}-0001"),
            Spelling::Shouted => format!("{local}@example.com").to_uppercase(),
        }
    }

    pub fn pool_id(&self) -> &'static str {
        self.pool.id()
    }

    /// The request's JSON body.
    pub fn body(&self, ticket: usize) -> serde_json::Value {
        let mut body = serde_json::json!({
            "UserPoolId": self.pool_id(),
            "ClientMetadata": {"ticket": format!("T{ticket}")},
        });
        if !self.invalid {
            body["Username"] = serde_json::Value::from(self.name());
        }
        if self.sign_out {
            body["SignOut"] = serde_json::Value::Bool(true);
        }
        body
    }
}

impl fmt::Display for Req {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.invalid {
            return write!(f, "(no Username)");
        }
        write!(f, "{}", self.name())?;
        match self.pool {
            Pool::Listed => {}
            Pool::Unlisted => write!(f, " in an unlisted pool")?,
            Pool::Foreign => write!(f, " in the other account's pool")?,
        }
        if self.sign_out {
            write!(f, " +SignOut")?;
        }
        Ok(())
    }
}

/// Who sends a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sender {
    /// The helpdesk portal, over the HTTP API.
    Portal,
    /// A role no rule lists, over the HTTP API.
    Intruder,
    /// The standard ticket queue.
    Queue,
    /// The FIFO ticket queue.
    FifoQueue,
    /// A queue no rule lists.
    StrangerQueue,
    /// A helpdesk lead (an approver), over the HTTP API.
    Lead,
    /// Another session of the leads' role.
    LeadTwo,
}

impl Sender {
    pub fn arn(self) -> &'static str {
        match self {
            Sender::Portal => PORTAL,
            Sender::Intruder => INTRUDER,
            Sender::Queue => QUEUE,
            Sender::FifoQueue => FIFO_QUEUE,
            Sender::StrangerQueue => STRANGER_QUEUE,
            Sender::Lead => LEAD,
            Sender::LeadTwo => LEAD_TWO,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sender::Portal => "portal",
            Sender::Intruder => "intruder",
            Sender::Queue => "queue",
            Sender::FifoQueue => "fifo queue",
            Sender::StrangerQueue => "stranger queue",
            Sender::Lead => "lead bob",
            Sender::LeadTwo => "lead carol",
        }
    }
}

/// The refusal a request must get whatever Cognito says, if any: decided by the request and the
/// caller alone (a user's own state is looked up, so it is checked against what Cognito said).
pub fn refusal_by_policy(sender: Sender, req: &Req) -> Option<&'static str> {
    if req.invalid {
        return Some("invalid-request");
    }
    if matches!(sender, Sender::Intruder | Sender::StrangerQueue) {
        return Some("no-rule-for-caller");
    }
    if req.pool == Pool::Unlisted {
        return Some("pool-not-allowed");
    }
    None
}

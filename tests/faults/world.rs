//! The small world every schedule runs in: one user pool, four users, the callers, the policy
//! that admits some of them, and the function's configuration.

use std::fmt;
use std::time::Duration;

use cognito_reset::config::Config;

/// The pool the policy lists.
pub const POOL: &str = "us-west-2_1f950f4f389b723d0775ea6ef7e4b3c47b3100fa6981c";
/// A well-formed pool no rule lists.
pub const OTHER_POOL: &str = "us-west-2_aaaaaaaaa";
/// The ticket queue (standard) and its FIFO twin: the policy's SQS callers.
pub const QUEUE: &str = "arn:aws:sqs:us-west-2:123456789012:password-resets";
pub const FIFO_QUEUE: &str = "arn:aws:sqs:us-west-2:123456789012:password-resets.fifo";
/// A queue no rule lists.
pub const STRANGER_QUEUE: &str = "arn:aws:sqs:us-west-2:123456789012:elsewhere";
/// The helpdesk portal (IAM-authorised HTTP API caller) and a role no rule lists.
pub const PORTAL: &str = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice";
pub const INTRUDER: &str = "arn:aws:sts::123456789012:assumed-role/intruder/eve";

/// `DEADLINE_MARGIN_MS`.
pub const MARGIN: Duration = Duration::from_millis(1000);
/// `RESET_COOLDOWN_SECONDS`.
pub const COOLDOWN: Duration = Duration::from_secs(30);
/// `IDEMPOTENCY_TTL_SECONDS` (schedules never last this long).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(86_400);
/// `MAX_RECEIVE_COUNT`: a RETRY on the third receive is GAVE_UP.
pub const MAX_RECEIVE_COUNT: u32 = 3;

/// The portal may reset `staff` of the pool, the queues anyone `@example.com`; nobody may reset
/// an admin.
pub fn policy() -> String {
    serde_json::json!({
        "version": 1,
        "deny": {"groups": ["admins"]},
        "rules": [
            {
                "name": "portal",
                "callers": ["arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*"],
                "userPools": [POOL],
                "groups": ["staff"]
            },
            {
                "name": "queue",
                "callers": [QUEUE, FIFO_QUEUE],
                "userPools": [POOL],
                "users": ["*@example.com"]
            }
        ]
    })
    .to_string()
}

/// The function's configuration: the guard on, events on, 3 attempts a Cognito call (the
/// harness builds the directory unpaced, `Rates::OFF`, whatever the rates say).
pub fn config(max_concurrency: usize) -> Config {
    let policy = policy();
    let concurrency = max_concurrency.to_string();
    let margin = MARGIN.as_millis().to_string();
    let cooldown = COOLDOWN.as_secs().to_string();
    let ttl = IDEMPOTENCY_TTL.as_secs().to_string();
    let receives = MAX_RECEIVE_COUNT.to_string();
    let vars: Vec<(&str, &str)> = vec![
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
    Ghost,
}

impl User {
    pub fn local(self) -> &'static str {
        match self {
            User::Ann => "ann",
            User::Bob => "bob",
            User::Mal => "mal",
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
            _ => &["staff"],
        }
    }

    /// The directory's users: canonical username, email, groups.
    pub fn directory() -> Vec<(String, String, Vec<String>)> {
        [User::Ann, User::Bob, User::Mal]
            .into_iter()
            .map(|u| {
                (
                    u.canonical().unwrap_or_default(),
                    format!("{}@example.com", u.local()),
                    u.groups().iter().map(|g| (*g).to_owned()).collect(),
                )
            })
            .collect()
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
        match self.pool {
            Pool::Listed => POOL,
            Pool::Unlisted => OTHER_POOL,
        }
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
        body
    }
}

impl fmt::Display for Req {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.invalid {
            return write!(f, "(no Username)");
        }
        write!(f, "{}", self.name())?;
        if self.pool == Pool::Unlisted {
            write!(f, " in an unlisted pool")?;
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
}

impl Sender {
    pub fn arn(self) -> &'static str {
        match self {
            Sender::Portal => PORTAL,
            Sender::Intruder => INTRUDER,
            Sender::Queue => QUEUE,
            Sender::FifoQueue => FIFO_QUEUE,
            Sender::StrangerQueue => STRANGER_QUEUE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sender::Portal => "portal",
            Sender::Intruder => "intruder",
            Sender::Queue => "queue",
            Sender::FifoQueue => "fifo queue",
            Sender::StrangerQueue => "stranger queue",
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

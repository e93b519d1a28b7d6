//! `--wait`: the outcome events (EventBridge "Password Reset Outcome", routed to a results queue
//! by a rule like `events/outcome-events/rule-route-pool-to-queue.json`), matched to the users
//! sent, then a table by outcome and code and a CSV report of every user.
//!
//! An event is this run's when its `idempotencyKey` (for SQS records: the message id) is the
//! message id the state file recorded for a user; for a user in doubt (no message id), when its
//! pool and requested username match. Matched events are recorded in the state file (so a second
//! `--wait` resumes) and deleted from the results queue; any other message is left alone (it
//! becomes visible again after 60 s).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use serde::Deserialize;

use crate::input::{Entry, Key};
use crate::state::{Outcome, State, Status};

/// The outcome written for a user with none (yet) when the wait ended.
pub const NO_OUTCOME: &str = "NO_OUTCOME";
/// SQS refused the user's message: nothing was enqueued.
pub const NOT_SENT: &str = "NOT_SENT";
/// The user's message may or may not be on the queue, and no outcome came.
pub const IN_DOUBT: &str = "IN_DOUBT";
/// The REJECTED codes that pass later, once the pool can send (`delivery-limit`) or Cognito's
/// per-user window is over (`attempt-limit`): `--retry-from` sends these users again.
pub const RETRIED_CODES: [&str; 2] = ["delivery-limit", "attempt-limit"];
/// A RETRY on the record's last receive (dead-lettered): `--retry-from` sends it again.
pub const GAVE_UP: &str = "GAVE_UP";

/// Whether `--retry-from` sends a user with this outcome again.
pub fn retried(outcome: &str, code: Option<&str>) -> bool {
    outcome == GAVE_UP
        || (outcome == "REJECTED" && code.is_some_and(|c| RETRIED_CODES.contains(&c)))
}

/// `--retry-from`: the users of a report whose outcome may pass when sent again
/// (`delivery-limit`, `attempt-limit`, `GAVE_UP`), with the label of each one's outcome.
pub fn retry_keys(report: &[u8]) -> Result<BTreeMap<Key, String>, String> {
    let mut reader = csv::Reader::from_reader(report);
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("no {name} column: is this a --wait report?"))
    };
    let (pool, username, outcome, code) = (
        column("userPoolId")?,
        column("username")?,
        column("outcome")?,
        column("code")?,
    );
    let mut keys = BTreeMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        let field = |i: usize| record.get(i).unwrap_or_default();
        let code = Some(field(code)).filter(|c| !c.is_empty());
        if retried(field(outcome), code) {
            keys.insert(
                Key {
                    pool: field(pool).to_owned(),
                    username: field(username).to_owned(),
                },
                code.filter(|_| field(outcome) != GAVE_UP)
                    .unwrap_or(GAVE_UP)
                    .to_owned(),
            );
        }
    }
    Ok(keys)
}

/// The users a report can re-drive with `--retry-from`, by label (`delivery-limit`,
/// `attempt-limit`, `GAVE_UP`).
pub fn redrivable(rows: &[Row]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| retried(&r.outcome, r.code.as_deref()))
    {
        let label = if row.outcome == GAVE_UP {
            GAVE_UP
        } else {
            row.code.as_deref().unwrap_or_default()
        };
        *counts.entry(label).or_default() += 1;
    }
    counts
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    detail: Detail,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    outcome: String,
    code: Option<String>,
    user_pool_id: Option<String>,
    requested_username: Option<String>,
    idempotency_key: Option<String>,
    id: Option<String>,
}

/// One outcome event, as far as matching needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub message_ids: Vec<String>,
    pub key: Option<Key>,
    pub outcome: Outcome,
}

/// Reads an outcome event from a results-queue message body; `None` for anything else.
pub fn parse_event(body: &str) -> Option<Event> {
    let envelope: Envelope = serde_json::from_str(body).ok()?;
    if envelope
        .detail_type
        .as_deref()
        .is_some_and(|t| t != "Password Reset Outcome")
    {
        return None;
    }
    let d = envelope.detail;
    let key = match (d.user_pool_id, d.requested_username) {
        (Some(pool), Some(username)) => Some(Key { pool, username }),
        _ => None,
    };
    Some(Event {
        message_ids: d.idempotency_key.into_iter().chain(d.id).collect(),
        key,
        outcome: Outcome {
            outcome: d.outcome,
            code: d.code,
        },
    })
}

/// Who this run waits for, and how to recognise their events.
pub struct Waiting {
    by_message_id: HashMap<String, Key>,
    in_doubt: HashMap<Key, ()>,
    /// Users with a message on the queue (sent) and no outcome yet.
    pub pending: usize,
}

impl Waiting {
    /// From the state: every sent user (waited for) and every user in doubt (matched if seen).
    pub fn new(entries: &[Entry], state: &State) -> Waiting {
        let mut waiting = Waiting {
            by_message_id: HashMap::new(),
            in_doubt: HashMap::new(),
            pending: 0,
        };
        for entry in entries {
            let done = state.outcome_of(&entry.key).is_some();
            match state.status(&entry.key) {
                Some(Status::Sent { message_id }) if !done => {
                    waiting.pending += 1;
                    waiting
                        .by_message_id
                        .insert(message_id.clone(), entry.key.clone());
                }
                Some(Status::InDoubt { .. }) if !done => {
                    waiting.in_doubt.insert(entry.key.clone(), ());
                }
                _ => {}
            }
        }
        waiting
    }

    /// The user `event` is about, if one of ours still waiting; takes it off the list.
    pub fn claim(&mut self, event: &Event) -> Option<Key> {
        for id in &event.message_ids {
            if let Some(key) = self.by_message_id.remove(id) {
                self.pending -= 1;
                return Some(key);
            }
        }
        let key = event.key.as_ref()?;
        self.in_doubt.remove(key).map(|()| key.clone())
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: u64,
    pub key: Key,
    pub message_id: Option<String>,
    pub outcome: String,
    pub code: Option<String>,
}

/// Every user of the input with its outcome (or why there is none).
pub fn rows(entries: &[Entry], state: &State) -> Vec<Row> {
    entries
        .iter()
        .map(|entry| {
            let status = state.status(&entry.key);
            let message_id = match status {
                Some(Status::Sent { message_id }) => Some(message_id.clone()),
                _ => None,
            };
            let (outcome, code) = match (state.outcome_of(&entry.key), status) {
                (Some(o), _) => (o.outcome.clone(), o.code.clone()),
                (None, Some(Status::Sent { .. })) => (NO_OUTCOME.to_owned(), None),
                (None, Some(Status::InDoubt { .. })) => (IN_DOUBT.to_owned(), None),
                (None, Some(Status::Refused { why })) => (NOT_SENT.to_owned(), Some(why.clone())),
                (None, None) => (NOT_SENT.to_owned(), None),
            };
            Row {
                line: entry.line,
                key: entry.key.clone(),
                message_id,
                outcome,
                code,
            }
        })
        .collect()
}

/// The table by outcome and code: `outcome  code  users`.
pub fn table(rows: &[Row]) -> String {
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for row in rows {
        let code = if row.outcome == NOT_SENT {
            "" // the refusal text is in the report
        } else {
            row.code.as_deref().unwrap_or("")
        };
        *counts.entry((row.outcome.as_str(), code)).or_default() += 1;
    }
    let width = counts
        .keys()
        .map(|(o, _)| o.len())
        .chain(["outcome".len()])
        .max()
        .unwrap_or(7);
    let code_width = counts
        .keys()
        .map(|(_, c)| c.len())
        .chain(["code".len()])
        .max()
        .unwrap_or(4);
    let mut out = format!("{:width$}  {:code_width$}  users\n", "outcome", "code");
    for ((outcome, code), n) in &counts {
        out.push_str(&format!("{outcome:width$}  {code:code_width$}  {n:>5}\n"));
    }
    out.push_str(&format!(
        "{:width$}  {:code_width$}  {:>5}\n",
        "total",
        "",
        rows.len()
    ));
    out
}

/// Writes the CSV report: one row per user of the input.
pub fn write_report(rows: &[Row], out: impl Write) -> csv::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record([
        "line",
        "userPoolId",
        "username",
        "messageId",
        "outcome",
        "code",
    ])?;
    for row in rows {
        writer.write_record([
            row.line.to_string().as_str(),
            &row.key.pool,
            &row.key.username,
            row.message_id.as_deref().unwrap_or(""),
            &row.outcome,
            row.code.as_deref().unwrap_or(""),
        ])?;
    }
    writer.flush()?;
    Ok(())
}

/// Whether every user ended RESET.
pub fn all_reset(rows: &[Row]) -> bool {
    rows.iter().all(|r| r.outcome == "RESET")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_sample_events_are_read() {
        let reset = parse_event(include_str!("../../../events/outcome-events/reset.json")).unwrap();
        assert_eq!(reset.outcome.outcome, "RESET");
        let rejected =
            parse_event(include_str!("../../../events/outcome-events/rejected.json")).unwrap();
        assert_eq!(rejected.outcome.outcome, "REJECTED");
        assert_eq!(rejected.outcome.code.as_deref(), Some("denied-user"));
        assert!(!rejected.message_ids.is_empty());
        assert!(rejected.key.is_some());
        assert_eq!(parse_event("{\"not\": \"an event\"}"), None);
    }

    #[test]
    fn the_table_counts_by_outcome_and_code() {
        let row = |outcome: &str, code: Option<&str>| Row {
            line: 2,
            key: Key {
                pool: "p".into(),
                username: "u".into(),
            },
            message_id: None,
            outcome: outcome.into(),
            code: code.map(Into::into),
        };
        let rows = vec![
            row("RESET", None),
            row("RESET", None),
            row("REJECTED", Some("denied-user")),
            row(NO_OUTCOME, None),
        ];
        let table = table(&rows);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(lines.contains(&vec!["RESET", "2"]), "{table}");
        assert!(
            lines.contains(&vec!["REJECTED", "denied-user", "1"]),
            "{table}"
        );
        assert!(lines.contains(&vec![NO_OUTCOME, "1"]), "{table}");
        assert!(lines.contains(&vec!["total", "4"]), "{table}");
        assert!(redrivable(&rows).is_empty());
        assert!(!all_reset(&rows));
        let mut csv = Vec::new();
        write_report(&rows, &mut csv).unwrap();
        assert_eq!(String::from_utf8(csv).unwrap().lines().count(), 5);
    }

    #[test]
    fn retry_from_selects_the_limits_and_the_dead_letters_only() {
        let report = "line,userPoolId,username,messageId,outcome,code\n\
                      2,p,a,m1,RESET,\n\
                      3,p,b,m2,REJECTED,delivery-limit\n\
                      4,p,c,m3,REJECTED,attempt-limit\n\
                      5,p,d,m4,GAVE_UP,throttled\n\
                      6,p,e,m5,REJECTED,denied-user\n\
                      7,p,f,,IN_DOUBT,\n\
                      8,p,g,m6,REJECTED,reset-unconfirmed\n";
        let keys = retry_keys(report.as_bytes()).expect("a report");
        let got: Vec<(&str, &str)> = keys
            .iter()
            .map(|(k, label)| (k.username.as_str(), label.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("b", "delivery-limit"),
                ("c", "attempt-limit"),
                ("d", GAVE_UP)
            ]
        );
        assert!(retry_keys(b"username\na\n").is_err(), "not a report");
        let row = |outcome: &str, code: Option<&str>| Row {
            line: 2,
            key: Key {
                pool: "p".into(),
                username: "u".into(),
            },
            message_id: None,
            outcome: outcome.into(),
            code: code.map(Into::into),
        };
        let rows = [
            row("REJECTED", Some("delivery-limit")),
            row("REJECTED", Some("delivery-limit")),
            row("REJECTED", Some("attempt-limit")),
            row(GAVE_UP, Some("throttled")),
            row("REJECTED", Some("user-not-found")),
        ];
        let counts = redrivable(&rows);
        assert_eq!(counts.get("delivery-limit"), Some(&2));
        assert_eq!(counts.get("attempt-limit"), Some(&1));
        assert_eq!(counts.get(GAVE_UP), Some(&1));
        assert_eq!(counts.len(), 3);
    }
}

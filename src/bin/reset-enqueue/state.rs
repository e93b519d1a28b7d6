//! The state file: what was sent, written as it goes, so that running the same command again
//! sends only what was not sent, and no interruption ever sends a user twice.
//!
//! One JSON object per line, appended and synced to disk (`fsync`) before the next step:
//!
//! - `header`: what makes a run "the same": the input's SHA-256, the queue URL, `--user-pool-id`,
//!   `--reason` and `--ticket`. A state file written for anything else is refused, naming what differs.
//! - `intent`: the users of one `SendMessageBatch` call, written **before** the call.
//! - `sent`: a user SQS accepted, with its message id, written after the call answered.
//! - `refused`: a user SQS refused (nothing was enqueued): sent again on the next run.
//! - `outcome`: a user's final outcome seen by `--wait`.
//!
//! A user with an `intent` and no `sent` or `refused` after it is **in doubt**: the process
//! stopped (or the call's answer was ambiguous) between the intent and the answer, so the
//! message may be on the queue. It is never sent again by default (see [`plan`]): a duplicate
//! message would mean a second reset code. For a FIFO queue within [`FIFO_RESEND_WINDOW_SECS`]
//! of the intent, resending is safe: SQS drops a message whose deduplication id it saw in the
//! last five minutes, so such users are sent again.
//!
//! A crash can also cut the last line short: a last line without its newline is dropped (and the
//! file truncated to the last whole line) on the next open; a bad line anywhere else is an error.
//! The file is locked while a run uses it, so two runs cannot share it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::input::{Entry, Key};

/// For a FIFO queue, an in-doubt user whose intent is younger than this is sent again: SQS's
/// deduplication window is five minutes; one minute of margin for clock skew and slow calls.
pub const FIFO_RESEND_WINDOW_SECS: u64 = 240;

const VERSION: u32 = 1;

/// What makes two runs "the same": a state file is only ever resumed by a run with all of these
/// equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `sha256:<hex>` of the input's bytes.
    pub input: String,
    pub queue: String,
    pub pool: Option<String>,
    pub reason: Option<String>,
    /// `--ticket` (absent from state files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Line {
    Header {
        version: u32,
        #[serde(flatten)]
        identity: Identity,
    },
    Intent {
        at: u64,
        keys: Vec<Key>,
    },
    #[serde(rename_all = "camelCase")]
    Sent {
        key: Key,
        message_id: String,
    },
    Refused {
        key: Key,
        why: String,
    },
    Outcome {
        key: Key,
        outcome: String,
        code: Option<String>,
    },
}

/// Where one user stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// An intent was written at `at` (Unix seconds) and no answer after it: maybe on the queue.
    InDoubt { at: u64 },
    /// SQS accepted it.
    Sent { message_id: String },
    /// SQS refused it: nothing was enqueued.
    Refused { why: String },
}

/// A final outcome read by `--wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub outcome: String,
    pub code: Option<String>,
}

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is in use by another reset-enqueue (it is locked); wait for that run to end, or \
         choose another file with --state"
    )]
    Locked { path: PathBuf },
    #[error(
        "{path}: line {line} is not a state record ({why}); the file is not a reset-enqueue state file, or it was edited"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error(
        "{path} records a different run: {differences}. A state file is resumed only by the same \
         input (byte for byte), queue, --user-pool-id and --reason. To start a new run, choose \
         another file with --state (or move this one away once you know what it sent)"
    )]
    Mismatch { path: PathBuf, differences: String },
}

/// An open state file: its records so far, and the file to append to.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    file: File,
    statuses: HashMap<Key, Status>,
    outcomes: HashMap<Key, Outcome>,
    /// Whether the file held a previous run's records when opened.
    pub resumed: bool,
}

impl State {
    /// Opens (or creates) the state file for `identity`, locked for this run.
    pub fn open(path: &Path, identity: &Identity) -> Result<State, StateError> {
        let io_error = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(e)),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error)?;

        // A crash may have cut the last line short: keep whole lines only.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            file.set_len(whole as u64).map_err(io_error)?;
            file.seek(SeekFrom::End(0)).map_err(io_error)?;
        }
        let mut state = State {
            path: path.to_owned(),
            file,
            statuses: HashMap::new(),
            outcomes: HashMap::new(),
            resumed: whole > 0,
        };
        let text = String::from_utf8_lossy(&bytes[..whole]);
        let mut lines = text.lines().enumerate();
        match lines.next() {
            None => state.append(&Line::Header {
                version: VERSION,
                identity: identity.clone(),
            })?,
            Some((_, first)) => match serde_json::from_str::<Line>(first) {
                Ok(Line::Header {
                    version,
                    identity: found,
                }) if version == VERSION => {
                    let differences = differences(&found, identity);
                    if !differences.is_empty() {
                        return Err(StateError::Mismatch {
                            path: path.to_owned(),
                            differences,
                        });
                    }
                }
                Ok(_) => return Err(state.corrupt(1, "the first line is not a header".into())),
                Err(e) => return Err(state.corrupt(1, e.to_string())),
            },
        }
        for (n, line) in lines {
            match serde_json::from_str::<Line>(line) {
                Ok(line) => state.apply(line),
                Err(e) => return Err(state.corrupt(n + 1, e.to_string())),
            }
        }
        Ok(state)
    }

    fn corrupt(&self, line: usize, why: String) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            line,
            why,
        }
    }

    fn apply(&mut self, line: Line) {
        match line {
            Line::Header { .. } => {}
            Line::Intent { at, keys } => {
                for key in keys {
                    self.statuses.insert(key, Status::InDoubt { at });
                }
            }
            Line::Sent { key, message_id } => {
                self.statuses.insert(key, Status::Sent { message_id });
            }
            Line::Refused { key, why } => {
                self.statuses.insert(key, Status::Refused { why });
            }
            Line::Outcome { key, outcome, code } => {
                self.outcomes.insert(key, Outcome { outcome, code });
            }
        }
    }

    /// Appends one record and syncs it to disk before returning.
    fn append(&mut self, line: &Line) -> Result<(), StateError> {
        let mut text = serde_json::to_string(line).map_err(|e| StateError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|source| StateError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Records that `keys` are about to be sent, at `at` (Unix seconds). Must return before the
    /// call is made.
    pub fn intent(&mut self, keys: &[Key], at: u64) -> Result<(), StateError> {
        let line = Line::Intent {
            at,
            keys: keys.to_vec(),
        };
        self.append(&line)?;
        self.apply(line);
        Ok(())
    }

    /// Records that SQS accepted `key`.
    pub fn sent(&mut self, key: &Key, message_id: &str) -> Result<(), StateError> {
        let line = Line::Sent {
            key: key.clone(),
            message_id: message_id.to_owned(),
        };
        self.append(&line)?;
        self.apply(line);
        Ok(())
    }

    /// Records that SQS refused `key` (nothing was enqueued).
    pub fn refused(&mut self, key: &Key, why: &str) -> Result<(), StateError> {
        let line = Line::Refused {
            key: key.clone(),
            why: why.to_owned(),
        };
        self.append(&line)?;
        self.apply(line);
        Ok(())
    }

    /// Records a user's final outcome.
    pub fn outcome(&mut self, key: &Key, outcome: &Outcome) -> Result<(), StateError> {
        let line = Line::Outcome {
            key: key.clone(),
            outcome: outcome.outcome.clone(),
            code: outcome.code.clone(),
        };
        self.append(&line)?;
        self.apply(line);
        Ok(())
    }

    /// Where `key` stands, if it was ever tried.
    pub fn status(&self, key: &Key) -> Option<&Status> {
        self.statuses.get(key)
    }

    /// The final outcome recorded for `key`, if any.
    pub fn outcome_of(&self, key: &Key) -> Option<&Outcome> {
        self.outcomes.get(key)
    }
}

fn differences(found: &Identity, wanted: &Identity) -> String {
    let mut out = Vec::new();
    if found.input != wanted.input {
        out.push("the input's content differs".to_owned());
    }
    if found.queue != wanted.queue {
        out.push(format!(
            "it was for the queue {}, not {}",
            found.queue, wanted.queue
        ));
    }
    let shown = |v: &Option<String>| {
        v.as_deref()
            .map_or("(none)".to_owned(), |v| format!("{v:?}"))
    };
    if found.pool != wanted.pool {
        out.push(format!(
            "--user-pool-id was {}, now {}",
            shown(&found.pool),
            shown(&wanted.pool)
        ));
    }
    if found.reason != wanted.reason {
        out.push(format!(
            "--reason was {}, now {}",
            shown(&found.reason),
            shown(&wanted.reason)
        ));
    }
    if found.ticket != wanted.ticket {
        out.push(format!(
            "--ticket was {}, now {}",
            shown(&found.ticket),
            shown(&wanted.ticket)
        ));
    }
    out.join("; ")
}

/// What a run does with each user of the input, given the state.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Never sent, refused before, or (FIFO, inside the window) in doubt: send now.
    pub send: Vec<Entry>,
    /// Already accepted by SQS on an earlier run.
    pub already_sent: Vec<Key>,
    /// In doubt and not sent again: may or may not be on the queue.
    pub in_doubt: Vec<Key>,
}

/// Sorts the input's users by what the state says. `fifo`: the queue deduplicates within five
/// minutes; `now`: Unix seconds.
pub fn plan(entries: &[Entry], state: &State, fifo: bool, now: u64) -> Plan {
    let mut plan = Plan::default();
    for entry in entries {
        match state.status(&entry.key) {
            None | Some(Status::Refused { .. }) => plan.send.push(entry.clone()),
            Some(Status::Sent { .. }) => plan.already_sent.push(entry.key.clone()),
            Some(Status::InDoubt { at }) => {
                if fifo && now.saturating_sub(*at) < FIFO_RESEND_WINDOW_SECS {
                    plan.send.push(entry.clone());
                } else {
                    plan.in_doubt.push(entry.key.clone());
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Defaults, parse};
    use cognito_reset::request::UserPoolId;

    fn entries(names: &[&str]) -> Vec<Entry> {
        let text = format!("username\n{}\n", names.join("\n"));
        let defaults = Defaults {
            pool: Some(UserPoolId::parse("us-west-2_aaaaaaaaa").unwrap()),
            reason: None,
            ticket: None,
        };
        parse(text.as_bytes(), &defaults).unwrap().entries
    }

    fn identity() -> Identity {
        Identity {
            input: "sha256:00".into(),
            queue: "https://sqs.us-west-2.amazonaws.com/123456789012/resets".into(),
            pool: Some("us-west-2_aaaaaaaaa".into()),
            reason: None,
            ticket: None,
        }
    }

    fn keys(entries: &[Entry]) -> Vec<Key> {
        entries.iter().map(|e| e.key.clone()).collect()
    }

    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir()
                .join(format!("reset-enqueue-state-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
        fn file(&self) -> PathBuf {
            self.0.join("users.csv.state")
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_second_run_sends_only_what_the_first_did_not() {
        let dir = Dir::new("round-trip");
        let users = entries(&["alice", "bob", "carol", "dave"]);
        {
            let mut state = State::open(&dir.file(), &identity()).unwrap();
            assert!(!state.resumed);
            assert_eq!(plan(&users, &state, false, 100).send, users);
            state.intent(&keys(&users[..3]), 100).unwrap();
            state.sent(&users[0].key, "m-alice").unwrap();
            state.sent(&users[1].key, "m-bob").unwrap();
            state
                .refused(&users[2].key, "InvalidParameterValue")
                .unwrap();
            let outcome = Outcome {
                outcome: "RESET".into(),
                code: None,
            };
            state.outcome(&users[0].key, &outcome).unwrap();
        }
        let state = State::open(&dir.file(), &identity()).unwrap();
        assert!(state.resumed);
        let plan = plan(&users, &state, false, 200);
        // carol was refused (nothing enqueued) and dave never tried: both go now.
        assert_eq!(
            keys(&plan.send),
            keys(&[users[2].clone(), users[3].clone()])
        );
        assert_eq!(plan.already_sent, keys(&users[..2]));
        assert!(plan.in_doubt.is_empty());
        assert_eq!(
            state.status(&users[1].key),
            Some(&Status::Sent {
                message_id: "m-bob".into()
            })
        );
        assert_eq!(state.outcome_of(&users[0].key).unwrap().outcome, "RESET");
    }

    #[test]
    fn a_crash_between_a_send_and_its_record_never_sends_the_user_again() {
        // Given a run that wrote its intent for a batch, made the call (SQS may have enqueued
        // the messages) and died before writing the answer.
        let dir = Dir::new("crash");
        let users = entries(&["alice", "bob", "carol"]);
        {
            let mut state = State::open(&dir.file(), &identity()).unwrap();
            state.intent(&keys(&users[..2]), 1_000).unwrap();
            state.sent(&users[0].key, "m-alice").unwrap();
            // ... the crash: no record for bob, and half a line for the next batch.
        }
        let mut file = OpenOptions::new().append(true).open(dir.file()).unwrap();
        file.write_all(br#"{"kind":"intent","at":1001,"keys":[{"po"#)
            .unwrap();
        drop(file);

        // When the same command runs again, on a standard queue.
        let mut state = State::open(&dir.file(), &identity()).unwrap();
        let standard = plan(&users, &state, false, 1_010);
        // Then bob is in doubt and not sent; carol (never tried: the torn intent is dropped) is.
        assert_eq!(standard.in_doubt, vec![users[1].key.clone()]);
        assert_eq!(keys(&standard.send), vec![users[2].key.clone()]);
        assert_eq!(standard.already_sent, vec![users[0].key.clone()]);
        // On a FIFO queue, within SQS's deduplication window, bob is sent again (SQS drops the
        // copy); after it, he is not.
        assert_eq!(
            keys(&plan(&users, &state, true, 1_000 + FIFO_RESEND_WINDOW_SECS - 1).send),
            keys(&users[1..])
        );
        assert_eq!(
            plan(&users, &state, true, 1_000 + FIFO_RESEND_WINDOW_SECS).in_doubt,
            vec![users[1].key.clone()]
        );
        // And the file stays readable after the torn line: the next record lands on its own line.
        state.sent(&users[2].key, "m-carol").unwrap();
        drop(state);
        let state = State::open(&dir.file(), &identity()).unwrap();
        assert_eq!(plan(&users, &state, false, 1_020).already_sent.len(), 2);
    }

    #[test]
    fn a_different_file_queue_pool_or_reason_is_refused_naming_the_difference() {
        let dir = Dir::new("mismatch");
        drop(State::open(&dir.file(), &identity()).unwrap());
        let other = Identity {
            input: "sha256:01".into(),
            reason: Some("INC-2".into()),
            ..identity()
        };
        let error = State::open(&dir.file(), &other).unwrap_err().to_string();
        assert!(error.contains("the input's content differs"), "{error}");
        assert!(
            error.contains("--reason was (none), now \"INC-2\""),
            "{error}"
        );
        assert!(!error.contains("it was for the queue"), "{error}");
    }

    #[test]
    fn a_state_file_in_use_is_refused() {
        let dir = Dir::new("locked");
        let _first = State::open(&dir.file(), &identity()).unwrap();
        let error = State::open(&dir.file(), &identity()).unwrap_err();
        assert!(matches!(error, StateError::Locked { .. }), "{error}");
    }

    #[test]
    fn a_damaged_line_before_the_last_is_an_error_with_its_number() {
        let dir = Dir::new("corrupt");
        drop(State::open(&dir.file(), &identity()).unwrap());
        let mut file = OpenOptions::new().append(true).open(dir.file()).unwrap();
        file.write_all(b"not json\n{\"kind\":\"intent\",\"at\":1,\"keys\":[]}\n")
            .unwrap();
        drop(file);
        let error = State::open(&dir.file(), &identity()).unwrap_err();
        assert!(
            matches!(error, StateError::Corrupt { line: 2, .. }),
            "{error}"
        );
    }
}

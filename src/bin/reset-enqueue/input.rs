//! The input file: CSV with a header row, read whole and validated before anything is sent.
//!
//! The header must have a `username` column; `reason`, `userPoolId` and `ticket` columns, when
//! present, override `--reason`, `--user-pool-id` and `--ticket` per row (an empty cell takes the
//! flag's value; column names are matched without regard to case; other columns are ignored and
//! named in a warning). A UTF-8 byte-order mark, blank lines
//! and spaces around fields are ignored; fields may be quoted (`"a, b"`, `""` for a quote).
//!
//! Every row becomes the message body the function reads (`UserPoolId`, `Username`, `Reason`,
//! `Ticket`)
//! and is parsed back with the function's own parser ([`ResetRequest::from_json`]): a row this
//! accepts is a request the function accepts. The same user (pool and username) twice is sent
//! once and reported.

use std::collections::HashMap;
use std::fmt;

use cognito_reset::request::{ResetRequest, UserPoolId};
use sha2::{Digest, Sha256};

/// One user to send: a validated request and its message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The line of the input the row starts on (1 is the header).
    pub line: u64,
    /// The user's key: pool and username, as sent.
    pub key: Key,
    /// The reason sent with the request, if any.
    pub reason: Option<String>,
    /// The ticket sent with the request (`Ticket`), if any.
    pub ticket: Option<String>,
    /// The SQS message body, in the function's request shape.
    pub body: String,
}

/// A user: the pool and the username as requested. Unique within one input.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Key {
    pub pool: String,
    pub username: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.username, self.pool)
    }
}

/// A line that cannot be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line number (1-based; the header is line 1). 0 for the file as a whole.
    pub line: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

/// A note that does not stop the run (a duplicate, an ignored column).
pub type Note = Problem;

/// The validated input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The users to send, in file order, each once.
    pub entries: Vec<Entry>,
    /// Duplicates and ignored columns.
    pub notes: Vec<Note>,
    /// `sha256:<hex>` of the input's bytes, exactly as read.
    pub digest: String,
}

/// The flags that fill in what a row leaves out.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub pool: Option<UserPoolId>,
    pub reason: Option<String>,
    /// `--ticket`: the `Ticket` of rows whose `ticket` cell is empty (or without the column).
    pub ticket: Option<String>,
}

const BOM: &[u8] = b"\xef\xbb\xbf";

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Parses and validates the whole input. `Err` carries every problem found (nothing may be sent).
pub fn parse(bytes: &[u8], defaults: &Defaults) -> Result<Input, Vec<Problem>> {
    let digest = digest(bytes);
    let text = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text);

    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => return Err(vec![csv_problem(1, &e)]),
    };
    let columns = match Columns::find(&headers) {
        Ok((columns, ignored)) => {
            if !ignored.is_empty() {
                notes.push(Note {
                    line: 1,
                    message: format!("ignored column(s): {}", ignored.join(", ")),
                });
            }
            columns
        }
        Err(message) => return Err(vec![Problem { line: 1, message }]),
    };

    // The csv crate counts neither the blank lines it skips nor their bytes in a record's start
    // (its position is where the previous record ended): the line is that of the first byte
    // after the line breaks there.
    let newlines: Vec<u64> = memchr_newlines(text);
    let line_at = |byte: u64| {
        let start = (byte..)
            .zip(
                text.iter()
                    .skip(usize::try_from(byte).unwrap_or(usize::MAX)),
            )
            .find(|&(_, &b)| b != b'\r' && b != b'\n')
            .map_or(byte, |(i, _)| i);
        newlines.partition_point(|&n| n < start) as u64 + 1
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: HashMap<Key, u64> = HashMap::new();
    let mut folded: HashMap<(String, String), (u64, String)> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, |p| line_at(p.byte()));
                problems.push(csv_problem(line, &e));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| line_at(p.byte()));
        if record.iter().all(str::is_empty) {
            continue; // a blank line, or one of only commas and spaces
        }
        if record.len() != headers.len() {
            problems.push(Problem {
                line,
                message: format!(
                    "has {} field(s), the header has {} (quote a field that contains a comma)",
                    record.len(),
                    headers.len()
                ),
            });
            continue;
        }
        match row(&record, &columns, defaults, line) {
            Ok(entry) => {
                if let Some(first) = seen.get(&entry.key) {
                    notes.push(Note {
                        line,
                        message: format!(
                            "{} is already on line {first}: sent once (this line is skipped)",
                            entry.key
                        ),
                    });
                    continue;
                }
                let lower = (entry.key.pool.clone(), entry.key.username.to_lowercase());
                if let Some((first, name)) = folded.get(&lower) {
                    notes.push(Note {
                        line,
                        message: format!(
                            "{} differs from {name} on line {first} only in case: both are sent \
                             (in a pool with case-insensitive usernames they are one user, and \
                             the function's cooldown stops the second reset)",
                            entry.key
                        ),
                    });
                } else {
                    folded.insert(lower, (line, entry.key.username.clone()));
                }
                seen.insert(entry.key.clone(), line);
                entries.push(entry);
            }
            Err(message) => problems.push(Problem { line, message }),
        }
    }
    if problems.is_empty() && entries.is_empty() {
        problems.push(Problem {
            line: 0,
            message: "no users: the file has a header and no rows".to_owned(),
        });
    }
    if problems.is_empty() {
        Ok(Input {
            entries,
            notes,
            digest,
        })
    } else {
        Err(problems)
    }
}

/// The byte offsets of every `\n` in `text`.
fn memchr_newlines(text: &[u8]) -> Vec<u64> {
    (0u64..)
        .zip(text)
        .filter(|&(_, &b)| b == b'\n')
        .map(|(i, _)| i)
        .collect()
}

fn csv_problem(line: u64, error: &csv::Error) -> Problem {
    let message = match error.kind() {
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_owned(),
        _ => format!("cannot be read as CSV: {error}"),
    };
    Problem { line, message }
}

/// Where the known columns are.
struct Columns {
    username: usize,
    reason: Option<usize>,
    pool: Option<usize>,
    ticket: Option<usize>,
}

impl Columns {
    /// The known columns and the names of the others; `Err` when `username` is missing or a
    /// known column appears twice.
    fn find(headers: &csv::StringRecord) -> Result<(Columns, Vec<String>), String> {
        let (mut username, mut reason, mut pool, mut ticket) = (None, None, None, None);
        let mut ignored = Vec::new();
        for (i, name) in headers.iter().enumerate() {
            let slot = match name.to_ascii_lowercase().as_str() {
                "username" => &mut username,
                "reason" => &mut reason,
                "userpoolid" => &mut pool,
                "ticket" => &mut ticket,
                _ => {
                    ignored.push(format!("{name:?}"));
                    continue;
                }
            };
            if slot.replace(i).is_some() {
                return Err(format!("the header has the column {name:?} twice"));
            }
        }
        let username = username.ok_or_else(|| {
            format!(
                "the header must have a username column (optional: reason, userPoolId, ticket); found: {}",
                headers
                    .iter()
                    .map(|h| format!("{h:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        Ok((
            Columns {
                username,
                reason,
                pool,
                ticket,
            },
            ignored,
        ))
    }
}

/// One row into an entry, through the function's own request parser.
fn row(
    record: &csv::StringRecord,
    columns: &Columns,
    defaults: &Defaults,
    line: u64,
) -> Result<Entry, String> {
    let field = |i: Option<usize>| i.and_then(|i| record.get(i)).filter(|v| !v.is_empty());
    let username = field(Some(columns.username)).ok_or("username is empty")?;
    let pool = match field(columns.pool) {
        Some(pool) => pool.to_owned(),
        None => defaults
            .pool
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .ok_or("no user pool: the userPoolId column is empty and --user-pool-id is not set")?,
    };
    let reason = field(columns.reason)
        .map(str::to_owned)
        .or_else(|| defaults.reason.clone());
    let mut body = serde_json::Map::new();
    body.insert("UserPoolId".into(), pool.clone().into());
    body.insert("Username".into(), username.into());
    if let Some(reason) = &reason {
        body.insert("Reason".into(), reason.clone().into());
    }
    let ticket = field(columns.ticket)
        .map(str::to_owned)
        .or_else(|| defaults.ticket.clone());
    if let Some(ticket) = &ticket {
        body.insert("Ticket".into(), ticket.clone().into());
    }
    let body = serde_json::Value::Object(body).to_string();
    let request = ResetRequest::from_json(&body, None).map_err(|e| e.message)?;
    Ok(Entry {
        line,
        key: Key {
            pool: request.user_pool_id.as_str().to_owned(),
            username: request.username.as_str().to_owned(),
        },
        reason: request.reason,
        ticket: request.ticket.map(|t| t.as_str().to_owned()),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "us-west-2_aaaaaaaaa";

    fn defaults() -> Defaults {
        Defaults {
            pool: Some(UserPoolId::parse(POOL).unwrap()),
            reason: Some("INC-1".to_owned()),
            ticket: None,
        }
    }

    fn users(input: &Input) -> Vec<(&str, &str, Option<&str>)> {
        input
            .entries
            .iter()
            .map(|e| {
                (
                    e.key.pool.as_str(),
                    e.key.username.as_str(),
                    e.reason.as_deref(),
                )
            })
            .collect()
    }

    #[test]
    fn rows_become_the_functions_requests_with_the_flags_filling_in() {
        let text = "username,reason,userPoolId\nalice,,\nbob,leaked,eu-west-1_bbbbbbbbb\n";
        let input = parse(text.as_bytes(), &defaults()).unwrap();
        assert_eq!(
            users(&input),
            vec![
                (POOL, "alice", Some("INC-1")),
                ("eu-west-1_bbbbbbbbb", "bob", Some("leaked"))
            ]
        );
        let body: serde_json::Value = serde_json::from_str(&input.entries[1].body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"UserPoolId": "eu-west-1_bbbbbbbbb", "Username": "bob", "Reason": "leaked"})
        );
        // The function's parser accepts every body as it is.
        for entry in &input.entries {
            ResetRequest::from_json(&entry.body, None).unwrap();
        }
        assert_eq!(input.entries[1].line, 3);
    }

    #[test]
    fn quoted_fields_keep_commas_and_quotes() {
        let text = "username,reason\n\"carol@example.com\",\"phished, ticket \"\"INC-9\"\"\"\n";
        let input = parse(text.as_bytes(), &defaults()).unwrap();
        assert_eq!(
            users(&input),
            vec![(POOL, "carol@example.com", Some("phished, ticket \"INC-9\""))]
        );
    }

    #[test]
    fn a_byte_order_mark_blank_lines_and_crlf_are_ignored() {
        let text = "\u{feff}Username\r\n\r\nalice\r\n   \r\n\r\nbob\r\n";
        let input = parse(text.as_bytes(), &defaults()).unwrap();
        assert_eq!(
            users(&input),
            vec![(POOL, "alice", Some("INC-1")), (POOL, "bob", Some("INC-1"))]
        );
        assert_eq!(input.entries[1].line, 6);
        // The digest is of the bytes as read, BOM included.
        assert_eq!(input.digest, digest(text.as_bytes()));
    }

    #[test]
    fn a_duplicate_user_is_sent_once_and_reported() {
        let text = "username,userPoolId\nalice,\nbob,\nalice,\nalice,eu-west-1_bbbbbbbbb\nAlice,\n";
        let input = parse(text.as_bytes(), &defaults()).unwrap();
        assert_eq!(
            users(&input),
            vec![
                (POOL, "alice", Some("INC-1")),
                (POOL, "bob", Some("INC-1")),
                ("eu-west-1_bbbbbbbbb", "alice", Some("INC-1")),
                (POOL, "Alice", Some("INC-1")),
            ]
        );
        assert_eq!(input.notes.len(), 2, "{:?}", input.notes);
        assert_eq!(input.notes[0].line, 4);
        assert!(input.notes[0].message.contains("already on line 2"));
        assert_eq!(input.notes[1].line, 6);
        assert!(input.notes[1].message.contains("only in case"));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number_and_why() {
        let text = "username,userPoolId,reason\n\
                    alice,,\n\
                    has space,,\n\
                    ,,no name\n\
                    bob,not-a-pool,\n\
                    carol,mars-north-1_abc,\n\
                    dave\n\
                    erin,,\n";
        let problems = parse(text.as_bytes(), &defaults()).unwrap_err();
        let lines: Vec<u64> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7], "{problems:?}");
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(text[0].contains("whitespace"), "{text:?}");
        assert!(text[1].contains("username is empty"), "{text:?}");
        assert!(text[2].contains("UserPoolId"), "{text:?}");
        assert!(text[3].contains("not an AWS region"), "{text:?}");
        assert!(text[4].contains("1 field(s), the header has 3"), "{text:?}");
    }

    #[test]
    fn a_reason_longer_than_the_function_takes_is_refused() {
        let text = format!("username,reason\nalice,{}\n", "x".repeat(513));
        let problems = parse(text.as_bytes(), &defaults()).unwrap_err();
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].message.contains("Reason"), "{problems:?}");
    }

    #[test]
    fn a_missing_pool_is_an_error_on_each_line_that_needs_one() {
        let text = "username,userPoolId\nalice,\nbob,eu-west-1_bbbbbbbbb\n";
        let problems = parse(text.as_bytes(), &Defaults::default()).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].message.contains("--user-pool-id"));
    }

    #[test]
    fn the_header_needs_a_username_column_and_other_columns_are_named() {
        let problems = parse(b"user,email\nalice,a@example.com\n", &defaults()).unwrap_err();
        assert_eq!(problems[0].line, 1);
        assert!(problems[0].message.contains("username column"));

        let problems = parse(b"username,Username\nalice,alice\n", &defaults()).unwrap_err();
        assert!(problems[0].message.contains("twice"));

        let input = parse(b"email,username\na@example.com,alice\n", &defaults()).unwrap();
        assert_eq!(users(&input), vec![(POOL, "alice", Some("INC-1"))]);
        assert!(input.notes[0].message.contains("\"email\""));
    }

    #[test]
    fn a_ticket_column_wins_over_the_flag_per_row_and_goes_in_the_body() {
        let flag = Defaults {
            ticket: Some("INC0000001".to_owned()),
            ..defaults()
        };
        let text = "username,ticket\nalice,INC0000042\nbob,\n";
        let input = parse(text.as_bytes(), &flag).unwrap();
        let tickets: Vec<Option<&str>> =
            input.entries.iter().map(|e| e.ticket.as_deref()).collect();
        assert_eq!(tickets, vec![Some("INC0000042"), Some("INC0000001")]);
        let body: serde_json::Value = serde_json::from_str(&input.entries[0].body).unwrap();
        assert_eq!(body["Ticket"], "INC0000042");
        // Without the flag, an empty cell sends no Ticket at all.
        let input = parse(text.as_bytes(), &defaults()).unwrap();
        let body: serde_json::Value = serde_json::from_str(&input.entries[1].body).unwrap();
        assert_eq!(body.get("Ticket"), None, "{body}");
        // A ticket the function would refuse is refused here, on its line.
        let problems = parse(b"username,ticket\nalice,INC 42\n", &flag).unwrap_err();
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].message.starts_with("Ticket:"), "{problems:?}");
    }

    #[test]
    fn an_empty_file_or_invalid_utf8_is_refused() {
        assert!(parse(b"username\n\n", &defaults()).is_err());
        assert!(parse(b"", &defaults()).is_err());
        let problems = parse(b"username\nal\xffce\n", &defaults()).unwrap_err();
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].message.contains("UTF-8"), "{problems:?}");
    }
}

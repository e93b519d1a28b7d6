//! Sending: `SendMessageBatch` calls of up to ten users, a few in flight, each written to the
//! state file before the call (intent) and after its answer.
//!
//! What an answer proves decides what happens next, as everywhere in this project:
//!
//! - an entry the call refused, or a call refused or throttled as a whole: nothing was enqueued,
//!   so the entry is tried again **alone**, with backoff; still refused after that: reported
//!   (exit 1) and recorded as refused, so the next run sends it;
//! - an ambiguous answer (a timeout, a 5xx, a connection lost after sending): the messages may be
//!   on the queue, so they are never sent again by this run or (see `state`) the next; no new
//!   call starts after one, since the queue is probably unreachable.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::input::{Entry, Key};
use crate::state::{State, StateError};

/// `SendMessageBatch` takes at most ten entries.
pub const BATCH: usize = 10;

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub key: Key,
    pub body: String,
    /// FIFO queues: one group per user, so that one user's requests stay in order.
    pub group_id: Option<String>,
    /// FIFO queues: from the pool, the user and the input, so SQS drops a copy sent within five
    /// minutes.
    pub dedup_id: Option<String>,
}

impl Outgoing {
    /// The message for `entry`; `fifo` adds the group and deduplication ids.
    pub fn new(entry: &Entry, fifo: bool, input_digest: &str) -> Outgoing {
        let hash = |parts: &[&str]| {
            let mut hasher = Sha256::new();
            for part in parts {
                hasher.update(part.as_bytes());
                hasher.update([0]);
            }
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let (pool, user) = (entry.key.pool.as_str(), entry.key.username.as_str());
        Outgoing {
            key: entry.key.clone(),
            body: entry.body.clone(),
            group_id: fifo.then(|| hash(&["group", pool, user])),
            dedup_id: fifo.then(|| hash(&["dedup", pool, user, input_digest])),
        }
    }
}

/// Why a whole call failed, classified by what it proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Throttled: nothing was enqueued; later may pass.
    Throttled(String),
    /// Refused: nothing was enqueued.
    Refused(String),
    /// The call may have enqueued some or all of the messages.
    Ambiguous(String),
}

/// The queue, as the sender sees it.
pub trait Queue: Send + Sync + 'static {
    /// Sends up to ten messages; per entry, in order: the message id, or why SQS refused it.
    fn send_batch(
        &self,
        batch: Vec<Outgoing>,
    ) -> impl Future<Output = Result<Vec<Result<String, String>>, CallError>> + Send;
}

/// What became of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Sent(String),
    /// Refused after every attempt: nothing was enqueued.
    Refused(String),
    /// May be on the queue: not sent again.
    InDoubt(String),
}

/// Attempts and backoff.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Calls of a batch throttled as a whole, in all.
    pub batch_attempts: u32,
    /// Calls of one refused entry alone, after the batch.
    pub alone_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            batch_attempts: 4,
            alone_attempts: 3,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
        }
    }
}

impl Retry {
    fn backoff(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(1 << attempt.min(16)).min(self.cap)
    }
}

/// Sends one batch: the call, then every refused entry alone.
pub async fn send_batch<Q: Queue>(
    queue: &Q,
    batch: Vec<Outgoing>,
    retry: Retry,
) -> Vec<(Key, Answer)> {
    let mut answers = Vec::with_capacity(batch.len());
    let mut alone: Vec<(Outgoing, String)> = Vec::new();
    let mut attempt = 0;
    loop {
        match queue.send_batch(batch.clone()).await {
            Ok(results) => {
                for (outgoing, result) in batch.iter().zip(results) {
                    match result {
                        Ok(id) => answers.push((outgoing.key.clone(), Answer::Sent(id))),
                        Err(why) => alone.push((outgoing.clone(), why)),
                    }
                }
                break;
            }
            Err(CallError::Throttled(why)) if attempt + 1 < retry.batch_attempts => {
                tokio::time::sleep(retry.backoff(attempt)).await;
                attempt += 1;
                let _ = why;
            }
            Err(CallError::Throttled(why) | CallError::Refused(why)) => {
                alone.extend(batch.iter().map(|o| (o.clone(), why.clone())));
                break;
            }
            Err(CallError::Ambiguous(why)) => {
                answers.extend(
                    batch
                        .iter()
                        .map(|o| (o.key.clone(), Answer::InDoubt(why.clone()))),
                );
                return answers;
            }
        }
    }
    for (outgoing, mut why) in alone {
        let mut answer = None;
        for attempt in 0..retry.alone_attempts {
            tokio::time::sleep(retry.backoff(attempt)).await;
            match queue.send_batch(vec![outgoing.clone()]).await {
                Ok(mut results) => match results.pop() {
                    Some(Ok(id)) => {
                        answer = Some(Answer::Sent(id));
                        break;
                    }
                    Some(Err(refused)) => why = refused,
                    None => why = "SQS answered without this entry".to_owned(),
                },
                Err(CallError::Throttled(refused) | CallError::Refused(refused)) => why = refused,
                Err(CallError::Ambiguous(doubt)) => {
                    answer = Some(Answer::InDoubt(doubt));
                    break;
                }
            }
        }
        answers.push((outgoing.key.clone(), answer.unwrap_or(Answer::Refused(why))));
    }
    answers
}

/// Counts for the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sent: usize,
    pub refused: usize,
    pub in_doubt: usize,
    /// Not started: the run stopped first (Ctrl-C, or an ambiguous answer).
    pub not_started: usize,
}

/// How the run ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub counts: Counts,
    /// Every refused or in-doubt user, with why.
    pub problems: Vec<(Key, Answer)>,
    pub interrupted: bool,
}

/// Sends `entries`, `in_flight` calls at a time, recording each step in `state`. `now` gives
/// Unix seconds for the intents; `on_answer` sees every answer (progress); `stop` resolving
/// (Ctrl-C) stops new calls: those in flight finish and are recorded.
#[allow(clippy::too_many_arguments)]
pub async fn send_all<Q: Queue>(
    queue: Arc<Q>,
    state: &mut State,
    entries: &[Entry],
    fifo: bool,
    input_digest: &str,
    in_flight: usize,
    retry: Retry,
    now: impl Fn() -> u64,
    mut on_answer: impl FnMut(&Counts),
    stop: impl Future<Output = ()>,
) -> Result<Report, StateError> {
    let mut report = Report::default();
    let mut chunks = entries.chunks(BATCH);
    let mut tasks: JoinSet<Vec<(Key, Answer)>> = JoinSet::new();
    let mut keys_of: HashMap<tokio::task::Id, Vec<Key>> = HashMap::new();
    let mut stopping = false;
    tokio::pin!(stop);
    loop {
        while !stopping && tasks.len() < in_flight.max(1) {
            let Some(chunk) = chunks.next() else { break };
            let batch: Vec<Outgoing> = chunk
                .iter()
                .map(|e| Outgoing::new(e, fifo, input_digest))
                .collect();
            let keys: Vec<Key> = batch.iter().map(|o| o.key.clone()).collect();
            // The intent is on disk before the call can start.
            state.intent(&keys, now())?;
            let queue = Arc::clone(&queue);
            let handle = tasks.spawn(async move { send_batch(&*queue, batch, retry).await });
            keys_of.insert(handle.id(), keys);
        }
        if tasks.is_empty() {
            break;
        }
        tokio::select! {
            joined = tasks.join_next_with_id() => {
                let answers = match joined {
                    Some(Ok((id, answers))) => {
                        keys_of.remove(&id);
                        answers
                    }
                    Some(Err(e)) => keys_of
                        .remove(&e.id())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|k| (k, Answer::InDoubt(format!("the sending task failed: {e}"))))
                        .collect(),
                    None => Vec::new(),
                };
                for (key, answer) in answers {
                    match &answer {
                        Answer::Sent(id) => {
                            state.sent(&key, id)?;
                            report.counts.sent += 1;
                        }
                        Answer::Refused(why) => {
                            state.refused(&key, why)?;
                            report.counts.refused += 1;
                            report.problems.push((key, answer));
                        }
                        Answer::InDoubt(_) => {
                            // Left as the intent says: in doubt, never sent again by itself.
                            report.counts.in_doubt += 1;
                            report.problems.push((key, answer));
                            stopping = true;
                        }
                    }
                }
                on_answer(&report.counts);
            }
            () = &mut stop, if !stopping => {
                stopping = true;
                report.interrupted = true;
            }
        }
    }
    report.counts.not_started = chunks.map(<[Entry]>::len).sum();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::input::{Defaults, parse};
    use crate::state::{Identity, plan};
    use cognito_reset::request::UserPoolId;

    /// A queue that answers from a script (by call number) and records every call's usernames.
    #[derive(Default)]
    struct FakeQueue {
        calls: Mutex<Vec<Vec<String>>>,
        /// (call number, user) -> refuse that entry on that call.
        refuse: Vec<(usize, &'static str)>,
        /// Refuse this user on every call.
        always_refuse: Option<&'static str>,
        /// call number -> the whole call fails so.
        fail: Vec<(usize, CallError)>,
    }

    impl Queue for FakeQueue {
        fn send_batch(
            &self,
            batch: Vec<Outgoing>,
        ) -> impl Future<Output = Result<Vec<Result<String, String>>, CallError>> + Send {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.len();
            calls.push(batch.iter().map(|o| o.key.username.clone()).collect());
            let answer = match self.fail.iter().find(|(call, _)| *call == n) {
                Some((_, error)) => Err(error.clone()),
                None => Ok(batch
                    .iter()
                    .map(|o| {
                        let user = o.key.username.as_str();
                        if self.refuse.contains(&(n, user)) || self.always_refuse == Some(user) {
                            Err("InternalError".to_owned())
                        } else {
                            Ok(format!("m-{user}"))
                        }
                    })
                    .collect()),
            };
            async move { answer }
        }
    }

    fn entries(n: usize) -> Vec<Entry> {
        let names: Vec<String> = (0..n).map(|i| format!("user{i:03}")).collect();
        let text = format!("username\n{}\n", names.join("\n"));
        let defaults = Defaults {
            pool: Some(UserPoolId::parse("us-west-2_aaaaaaaaa").unwrap()),
            reason: None,
            ticket: None,
        };
        parse(text.as_bytes(), &defaults).unwrap().entries
    }

    fn state(name: &str) -> (State, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("reset-enqueue-send-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let identity = Identity {
            input: "sha256:00".into(),
            queue: "q".into(),
            pool: None,
            reason: None,
            ticket: None,
        };
        (State::open(&path, &identity).unwrap(), path)
    }

    async fn run(queue: Arc<FakeQueue>, state: &mut State, entries: &[Entry]) -> Report {
        send_all(
            queue,
            state,
            entries,
            false,
            "sha256:00",
            1,
            Retry::default(),
            || 1,
            |_| {},
            std::future::pending(),
        )
        .await
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn users_go_ten_a_call_and_a_second_run_sends_none_again() {
        let (mut state, path) = state("tens");
        let users = entries(25);
        let queue = Arc::new(FakeQueue::default());
        let report = run(Arc::clone(&queue), &mut state, &users).await;
        assert_eq!(report.counts.sent, 25);
        let sizes: Vec<usize> = queue.calls.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 5]);
        drop(state);
        let identity = Identity {
            input: "sha256:00".into(),
            queue: "q".into(),
            pool: None,
            reason: None,
            ticket: None,
        };
        let state = State::open(&path, &identity).unwrap();
        let plan = plan(&users, &state, false, 2);
        assert!(plan.send.is_empty());
        assert_eq!(plan.already_sent.len(), 25);
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_entry_is_retried_alone_and_one_refused_every_time_is_reported() {
        let (mut state, path) = state("refused");
        let users = entries(10);
        let queue = Arc::new(FakeQueue {
            refuse: vec![(0, "user003")],
            always_refuse: Some("user007"),
            ..FakeQueue::default()
        });
        let report = run(Arc::clone(&queue), &mut state, &users).await;
        assert_eq!(report.counts.sent, 9);
        assert_eq!(report.counts.refused, 1);
        assert_eq!(report.problems[0].0.username, "user007");
        let calls = queue.calls.lock().unwrap().clone();
        // The batch, user003 alone (accepted), user007 alone three times.
        assert_eq!(calls.len(), 5);
        assert_eq!(calls[1], vec!["user003"]);
        assert!(calls[2..].iter().all(|c| c == &vec!["user007"]));
        // Refused means nothing was enqueued: the next run sends user007 again.
        assert_eq!(keys(&plan(&users, &state, false, 2).send), vec!["user007"]);
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_batch_is_sent_again_whole() {
        let (mut state, path) = state("throttled");
        let users = entries(10);
        let queue = Arc::new(FakeQueue {
            fail: vec![(0, CallError::Throttled("RequestThrottled".into()))],
            ..FakeQueue::default()
        });
        let report = run(Arc::clone(&queue), &mut state, &users).await;
        assert_eq!(report.counts.sent, 10);
        assert_eq!(queue.calls.lock().unwrap().len(), 2);
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ambiguous_answer_is_never_sent_again_and_stops_new_calls() {
        let (mut state, path) = state("ambiguous");
        let users = entries(30);
        let queue = Arc::new(FakeQueue {
            fail: vec![(1, CallError::Ambiguous("timed out".into()))],
            ..FakeQueue::default()
        });
        let report = run(Arc::clone(&queue), &mut state, &users).await;
        assert_eq!(
            report.counts,
            Counts {
                sent: 10,
                refused: 0,
                in_doubt: 10,
                not_started: 10
            }
        );
        // Two calls only: the second's users were not retried, the third batch never started.
        assert_eq!(queue.calls.lock().unwrap().len(), 2);
        // The next run (standard queue) sends only the batch that never started.
        let next = plan(&users, &state, false, 100);
        assert_eq!(next.in_doubt.len(), 10);
        assert_eq!(keys(&next.send), keys(&users[20..]));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn fifo_messages_carry_a_group_per_user_and_a_dedup_id_per_user_and_input() {
        let users = entries(2);
        let a = Outgoing::new(&users[0], true, "sha256:aa");
        let b = Outgoing::new(&users[1], true, "sha256:aa");
        let a_other_file = Outgoing::new(&users[0], true, "sha256:bb");
        assert_ne!(a.group_id, b.group_id);
        assert_eq!(a.group_id, a_other_file.group_id);
        assert_ne!(a.dedup_id, a_other_file.dedup_id);
        assert_eq!(
            a.dedup_id,
            Outgoing::new(&users[0], true, "sha256:aa").dedup_id
        );
        assert!(a.dedup_id.as_ref().is_some_and(|id| id.len() <= 128));
        assert_eq!(Outgoing::new(&users[0], false, "sha256:aa").group_id, None);
    }

    fn keys<T: AsKey>(items: &[T]) -> Vec<String> {
        items.iter().map(|i| i.username().to_owned()).collect()
    }

    trait AsKey {
        fn username(&self) -> &str;
    }
    impl AsKey for Entry {
        fn username(&self) -> &str {
            &self.key.username
        }
    }
}

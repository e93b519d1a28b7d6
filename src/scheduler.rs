//! Runs the records of one invocation: side by side, at most `MAX_CONCURRENCY` at once, FIFO
//! message groups in order, never starting one too close to the invocation's deadline.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::deadline::Deadline;
use crate::invocation::Invocation;
use crate::outcome::{RecordResult, ResetError};
use crate::pipeline::App;
use crate::record::Job;

/// Runs every job, at most `MAX_CONCURRENCY` at once; results in job order.
pub async fn run_all(
    app: &Arc<App>,
    jobs: Vec<Job>,
    deadline: Deadline,
    invocation: &Arc<Invocation>,
) -> Vec<RecordResult> {
    let chains = jobs.into_iter().map(|job| vec![job]).collect();
    run_chains(app, chains, deadline, invocation, false)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Runs FIFO jobs: in order within a message group, groups side by side. After a RETRY in a
/// group, the group's later jobs are not started and come back as `fifo-group-halted`.
pub async fn run_fifo(
    app: &Arc<App>,
    jobs: Vec<(String, Job)>,
    deadline: Deadline,
    invocation: &Arc<Invocation>,
) -> Vec<RecordResult> {
    // Group while remembering each job's place in the batch.
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(jobs.len());
    let mut index_of_group: HashMap<String, usize> = HashMap::new();
    let mut chains: Vec<Vec<Job>> = Vec::new();
    for (group, job) in jobs {
        let g = *index_of_group.entry(group).or_insert_with(|| {
            chains.push(Vec::new());
            chains.len() - 1
        });
        order.push((g, chains[g].len()));
        chains[g].push(job);
    }
    let mut results: Vec<Vec<Option<RecordResult>>> =
        run_chains(app, chains, deadline, invocation, true)
            .await
            .into_iter()
            .map(|chain| chain.into_iter().map(Some).collect())
            .collect();
    order
        .into_iter()
        .map(|(g, i)| {
            results[g][i]
                .take()
                .unwrap_or(Err(ResetError::FifoGroupHalted))
        })
        .collect()
}

/// Runs chains side by side (each chain in order), one permit per running job.
async fn run_chains(
    app: &Arc<App>,
    chains: Vec<Vec<Job>>,
    deadline: Deadline,
    invocation: &Arc<Invocation>,
    halt_after_retry: bool,
) -> Vec<Vec<RecordResult>> {
    let semaphore = Arc::new(Semaphore::new(app.config.max_concurrency));
    let mut tasks = JoinSet::new();
    let lengths: Vec<usize> = chains.iter().map(Vec::len).collect();
    for (index, chain) in chains.into_iter().enumerate() {
        let app = Arc::clone(app);
        let semaphore = Arc::clone(&semaphore);
        let invocation = Arc::clone(invocation);
        let run = async move {
            let mut results = Vec::with_capacity(chain.len());
            let mut halted = false;
            for job in chain {
                if halted {
                    results.push(app.skip(job, ResetError::FifoGroupHalted, &invocation));
                    continue;
                }
                let result = match semaphore.acquire().await {
                    Ok(_permit) => app.run(job, deadline, &invocation).await,
                    // The semaphore is never closed; should it be, do not start the job.
                    Err(_) => app.skip(job, ResetError::Deadline, &invocation),
                };
                if halt_after_retry && crate::outcome::hand_back(&result) {
                    halted = true;
                }
                results.push(result);
            }
            (index, results)
        };
        // The records' spans are children of the invocation's, on whatever thread they run.
        tasks.spawn(run.instrument(tracing::Span::current()));
    }
    let mut done: Vec<Option<Vec<RecordResult>>> = lengths.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, results)) => done[index] = Some(results),
            // A panicking record fails the whole invocation, so every record is retried:
            // nothing is acknowledged that was not processed.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    // A task can only be missing if it was cancelled, which nothing here does; its records
    // are still accounted for, as retries.
    done.into_iter()
        .zip(lengths)
        .map(|(results, len)| {
            results.unwrap_or_else(|| (0..len).map(|_| Err(ResetError::Deadline)).collect())
        })
        .collect()
}

//! The SQS client: the request queue ([`Queue`] over `SendMessageBatch`) and the results queue
//! (receive and delete). Errors are classified by the function's own table
//! (`cognito_reset::aws::error::classify`): what proves nothing was enqueued, and what does not.
//!
//! The SDK's own retries are off: it would resend a batch after a timeout, and a timeout does
//! not prove the messages were not enqueued. The sender retries what is safe to retry.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use cognito_reset::aws::error::classify;
use cognito_reset::failure::{Effect, Fault};

use crate::send::{CallError, Outgoing, Queue};

/// SQS codes that say the queue URL or the credentials are wrong.
const MISCONFIGURED: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "InvalidAddress",
    "InvalidSecurity",
];

/// One client for both queues.
pub async fn client(queue_url: &str) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    // No region configured: take it from a queue URL like https://sqs.eu-west-1.amazonaws.com/..
    if std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        && let Some(region) = region_of(queue_url)
    {
        loader = loader.region(aws_config::Region::new(region));
    }
    Client::new(&loader.load().await)
}

fn region_of(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    match (parts.next(), parts.next()) {
        (Some("sqs"), Some(region)) if region.contains('-') => Some(region.to_owned()),
        _ => None,
    }
}

fn describe<E>(
    error: &aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> CallError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let classified = classify(error, MISCONFIGURED);
    let message = error.as_service_error().and_then(|e| e.message());
    let text = match (&classified.code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.clone(),
        _ => format!("{}", aws_sdk_sqs::error::DisplayErrorContext(error)),
    };
    match (classified.effect, classified.fault) {
        (Effect::Unknown, _) => CallError::Ambiguous(text),
        (Effect::None, Fault::Throttled) => CallError::Throttled(text),
        (Effect::None, _) => CallError::Refused(text),
    }
}

/// What the sender needs to know about the queue before the first message.
pub struct QueueInfo {
    pub fifo: bool,
}

/// Checks the queue exists and can be read (URL, credentials, region) before anything is sent.
pub async fn probe(client: &Client, url: &str) -> Result<QueueInfo, String> {
    let answer = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::FifoQueue)
        .send()
        .await
        .map_err(|e| match describe(&e) {
            CallError::Throttled(t) | CallError::Refused(t) | CallError::Ambiguous(t) => t,
        })?;
    let fifo_attribute = answer
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::FifoQueue))
        .is_some_and(|v| v == "true");
    Ok(QueueInfo {
        fifo: fifo_attribute || url.ends_with(".fifo"),
    })
}

/// The request queue.
pub struct SqsQueue {
    pub client: Client,
    pub url: String,
}

impl Queue for SqsQueue {
    async fn send_batch(
        &self,
        batch: Vec<Outgoing>,
    ) -> Result<Vec<Result<String, String>>, CallError> {
        let mut entries = Vec::with_capacity(batch.len());
        for (i, outgoing) in batch.iter().enumerate() {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&outgoing.body)
                .set_message_group_id(outgoing.group_id.clone())
                .set_message_deduplication_id(outgoing.dedup_id.clone())
                .build()
                .map_err(|e| CallError::Refused(e.to_string()))?;
            entries.push(entry);
        }
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let mut results: Vec<Result<String, String>> = (0..batch.len())
            .map(|_| Err("SQS answered without this entry".to_owned()))
            .collect();
        for ok in output.successful() {
            if let Some(slot) = ok
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *slot = Ok(ok.message_id().to_owned());
            }
        }
        for failed in output.failed() {
            if let Some(slot) = failed
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *slot = Err(match failed.message() {
                    Some(message) => format!("{}: {message}", failed.code()),
                    None => failed.code().to_owned(),
                });
            }
        }
        Ok(results)
    }
}

/// One message received from the results queue.
pub struct Received {
    pub body: String,
    pub receipt: String,
}

/// Receives up to ten messages from the results queue, waiting up to `wait` for the first.
pub async fn receive(client: &Client, url: &str, wait: Duration) -> Result<Vec<Received>, String> {
    let output = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(i32::try_from(wait.as_secs().min(20)).unwrap_or(20))
        .visibility_timeout(60)
        .send()
        .await
        .map_err(|e| match describe(&e) {
            CallError::Throttled(t) | CallError::Refused(t) | CallError::Ambiguous(t) => t,
        })?;
    Ok(output
        .messages()
        .iter()
        .filter_map(|m| {
            Some(Received {
                body: m.body()?.to_owned(),
                receipt: m.receipt_handle()?.to_owned(),
            })
        })
        .collect())
}

/// Deletes a message read from the results queue.
pub async fn delete(client: &Client, url: &str, receipt: &str) -> Result<(), String> {
    client
        .delete_message()
        .queue_url(url)
        .receipt_handle(receipt)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| match describe(&e) {
            CallError::Throttled(t) | CallError::Refused(t) | CallError::Ambiguous(t) => t,
        })
}

#[cfg(test)]
mod tests {
    use super::region_of;

    #[test]
    fn the_region_comes_from_an_sqs_url_when_none_is_configured() {
        assert_eq!(
            region_of("https://sqs.eu-west-1.amazonaws.com/123456789012/resets").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of("http://127.0.0.1:5000/123456789012/resets"), None);
    }
}

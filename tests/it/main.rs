//! One integration-test binary for the Lambda function: events from `events/` in, responses and
//! Cognito calls (aws-smithy-mocks, or a slow counting HTTP client) out.

mod bus;
mod cognito;
mod dynamodb;
mod events;
mod guard;
mod helpers;
mod http;
mod logs;
mod metrics;
mod policy_source;
mod sqs;

//! One integration-test binary for the Lambda function: events from `events/` in, responses and
//! Cognito calls (aws-smithy-mocks, or a slow counting HTTP client) out.

mod accounts;
mod audit;
mod bus;
mod callers;
mod cognito;
mod dynamodb;
mod events;
mod guard;
mod helpdesk;
mod helpers;
mod http;
mod logging;
mod logs;
mod metrics;
mod openapi;
mod pacing;
mod policy_source;
mod properties;
mod sqs;
mod tickets;

//! One span per AWS call, for X-Ray ([`crate::xray`]): an SDK interceptor registered on every
//! client, so that no port has to remember it.
//!
//! The span is an OpenTelemetry client span (`rpc.system = aws-api`), which the X-Ray exporter
//! turns into an `aws` subsegment named by the service (`CognitoIdentityProvider`, `DynamoDB`,
//! `EventBridge`, `SSM`, `STS`) with the operation (`AdminGetUser`, `PutItem`, ...) and the AWS
//! request id. Its fields: the attempts the SDK made, whether an attempt was throttled, and the
//! time the call had (its operation timeout: what was left of its stage of the deadline). It is
//! a child of the span that made the call (the record, a guard decision). Nothing from the
//! request or the response body is read: no username, no `ClientMetadata`.
//!
//! Without tracing, or in an invocation that is not sampled ([`crate::xray::sampled`] false),
//! every hook returns at once: no span, and none of the call's names or timeouts read.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use aws_smithy_types::timeout::TimeoutConfig;
use tracing::field::Empty;

use super::error::THROTTLED;

/// The interceptor: give it to every client's config builder (`.interceptor(AwsCalls)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsCalls;

/// The call's span and what its attempts saw, in the call's config bag.
#[derive(Debug, Clone)]
struct Call {
    span: tracing::Span,
    attempts: u32,
    throttled: bool,
}

impl Storable for Call {
    type Storer = StoreReplace<Self>;
}

/// Whether a response says the call was throttled: HTTP 429, or a throttling error type in
/// the `x-amzn-errortype` header (JSON protocols; the part before `:`).
pub fn throttled(status: u16, error_type: Option<&str>) -> bool {
    status == 429
        || error_type
            .map(|t| t.split(':').next().unwrap_or(t))
            .map(|t| t.rsplit('#').next().unwrap_or(t))
            .is_some_and(|code| THROTTLED.contains(&code))
}

impl Intercept for AwsCalls {
    fn name(&self) -> &'static str {
        "AwsCalls"
    }

    // Not `read_before_execution`: a client's interceptors see that one before the operation's
    // configuration (its name, its timeouts) is in the bag.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !crate::xray::sampled() {
            return Ok(());
        }
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().replace(' ', ""), m.name().to_owned()))
            .unwrap_or_else(|| ("AWS".to_owned(), "unknown".to_owned()));
        let budget_ms = cfg
            .load::<TimeoutConfig>()
            .and_then(TimeoutConfig::operation_timeout)
            .map(|budget| budget.as_millis() as u64);
        let span = tracing::debug_span!(
            "aws",
            otel.name = %operation,
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = %service,
            rpc.method = %operation,
            aws.request_id = Empty,
            attempts = Empty,
            throttled = Empty,
            stage_budget_ms = budget_ms,
        );
        cfg.interceptor_state().store_put(Call {
            span,
            attempts: 0,
            throttled: false,
        });
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(call) = cfg.load::<Call>() {
            let mut call = call.clone();
            call.attempts += 1;
            cfg.interceptor_state().store_put(call);
        }
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(call) = cfg.load::<Call>() else {
            return Ok(());
        };
        let response = context.response();
        let headers = response.headers();
        if let Some(id) = headers
            .get("x-amzn-requestid")
            .or_else(|| headers.get("x-amz-request-id"))
        {
            call.span.record("aws.request_id", id);
        }
        if throttled(response.status().as_u16(), headers.get("x-amzn-errortype")) {
            let mut call = call.clone();
            call.throttled = true;
            cfg.interceptor_state().store_put(call);
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(call) = cfg.load::<Call>() {
            call.span.record("attempts", call.attempts);
            call.span.record("throttled", call.throttled);
            // The span ends here, not when the bag is dropped.
            cfg.interceptor_state().unset::<Call>();
        }
        Ok(())
    }
}

/// The span of an `AssumeRole` (a pool in another account, [`crate::aws::accounts`]): made by
/// aws-config's credentials provider, whose STS client takes no interceptor, so it is spanned
/// around the provider's call: the same name and kind, without the fields only an interceptor
/// sees (the attempts, throttling, the request id). `None` without tracing, or when the
/// invocation under way is not sampled.
pub fn assume_role_span() -> Option<tracing::Span> {
    crate::xray::sampled().then(|| {
        tracing::debug_span!(
            "aws",
            otel.name = "AssumeRole",
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "STS",
            rpc.method = "AssumeRole",
            aws.request_id = Empty,
            attempts = Empty,
            throttled = Empty,
            stage_budget_ms = Empty,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_a_429_or_a_throttling_error_type() {
        assert!(throttled(429, None));
        assert!(throttled(400, Some("TooManyRequestsException:")));
        assert!(throttled(
            400,
            Some("com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException")
        ));
        assert!(!throttled(400, Some("UserNotFoundException:")));
        assert!(!throttled(200, None));
    }
}

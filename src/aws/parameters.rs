//! The parameter store's port: the live policy document, read from SSM Parameter Store with
//! decryption (a `String` or a `SecureString`, standard or advanced tier).
//!
//! The port itself is [`ParameterSource`] (beside the [`crate::policy_source::PolicyStore`]
//! that uses it); [`SsmParameter`] is its SDK implementation.

use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::types::ParameterType;
use aws_sdk_ssm::{Client, config};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::ClientSettings;
use super::error::classify;
use crate::failure::Fault;
use crate::policy_source::{
    FetchError, FetchErrorKind, FetchFuture, ParameterSource, PolicyText, VARIABLE,
};

/// SSM's and KMS's own codes for a configuration problem.
const MISCONFIGURED: &[&str] = &["ValidationException", "InvalidKeyId"];

fn from_sdk(error: SdkError<GetParameterError, HttpResponse>) -> FetchError {
    let kind = match &error {
        SdkError::ServiceError(context) => match context.err() {
            GetParameterError::ParameterNotFound(_)
            | GetParameterError::ParameterVersionNotFound(_) => FetchErrorKind::NotFound,
            GetParameterError::InvalidKeyId(_) => FetchErrorKind::Misconfigured,
            GetParameterError::InternalServerError(_) => FetchErrorKind::Upstream,
            _ => classify(&error, MISCONFIGURED).fault.into(),
        },
        _ => classify(&error, MISCONFIGURED).fault.into(),
    };
    FetchError::new(kind, error)
}

impl From<Fault> for FetchErrorKind {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Throttled => FetchErrorKind::Throttled,
            Fault::Unavailable => FetchErrorKind::Unavailable,
            Fault::Misconfigured => FetchErrorKind::Misconfigured,
            Fault::Upstream => FetchErrorKind::Upstream,
        }
    }
}

/// A parameter in SSM Parameter Store (a name or an ARN), read with decryption.
#[derive(Debug, Clone)]
pub struct SsmParameter {
    client: Client,
    name: String,
}

impl SsmParameter {
    /// `name` is the value of `POLICY_PARAMETER`; `client` is configured with [`configure`].
    pub fn new(client: Client, name: &str) -> SsmParameter {
        SsmParameter {
            client,
            name: name.to_owned(),
        }
    }
}

impl ParameterSource for SsmParameter {
    fn describe(&self) -> String {
        format!("{VARIABLE}={}", self.name)
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let output = self
                .client
                .get_parameter()
                .name(&self.name)
                .with_decryption(true)
                .send()
                .await
                .map_err(from_sdk)?;
            let parameter = output.parameter.ok_or_else(|| {
                FetchError::new(
                    FetchErrorKind::Upstream,
                    "GetParameter returned no parameter",
                )
            })?;
            if parameter.r#type() == Some(&ParameterType::StringList) {
                return Err(FetchError::new(
                    FetchErrorKind::Misconfigured,
                    "the parameter is a StringList; store the policy as a String or SecureString",
                ));
            }
            let text = parameter.value().map(str::to_owned).ok_or_else(|| {
                FetchError::new(FetchErrorKind::Upstream, "GetParameter returned no value")
            })?;
            Ok(PolicyText {
                text,
                version: parameter.version().to_string(),
            })
        })
    }
}

/// Applies retries and timeouts to an SSM client configuration.
pub fn configure(builder: config::Builder, settings: ClientSettings) -> config::Builder {
    builder
        .retry_config(settings.retry_config())
        .timeout_config(settings.timeout_config())
}

//! One classification of every SDK error into the model's [`Fault`] and [`Effect`].
//!
//! Every port calls [`classify`] on a failed call and maps the result (and its own modeled
//! errors, first) into its kind: the tables of error codes live here, once.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{DispatchFailure, SdkError};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::failure::{Effect, Fault};

/// Throttling codes of every AWS service this function calls.
pub(crate) const THROTTLED: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "TooManyUpdates",
];

/// Codes that say the function's role, credentials or configuration are wrong.
const MISCONFIGURED: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredTokenException",
    "ExpiredToken",
    "NotAuthorizedForSourceException",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
];

/// Codes of a service that is down for a moment.
const UNAVAILABLE: &[&str] = &["ServiceUnavailable", "ServiceUnavailableException"];

/// STS's codes for a role it will not let this function assume as configured (beyond the shared
/// `AccessDenied`, `InvalidClientTokenId`, `ExpiredToken`).
const STS_MISCONFIGURED: &[&str] = &[
    "ValidationError",
    "RegionDisabledException",
    "MalformedPolicyDocument",
    "PackedPolicyTooLarge",
];

/// The prefix of a failed `AssumeRole`'s code in a Cognito call's error (`sts:AccessDenied`): the
/// audit line then says which call failed, and STS's throttling is not Cognito's.
pub const STS_PREFIX: &str = "sts:";

/// A failed SDK call, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub fault: Fault,
    /// Whether the call may have been performed.
    pub effect: Effect,
    /// The service's error code, when it answered with one.
    pub code: Option<String>,
    /// True when the failure is the SDK's timeout (the caller may attribute it to the deadline).
    pub timed_out: bool,
}

/// The fault of an error code, with a service's own extra codes for misconfiguration.
pub fn fault_of_code(code: Option<&str>, misconfigured: &[&str]) -> Fault {
    match code {
        Some(code) if THROTTLED.contains(&code) => Fault::Throttled,
        Some(code) if MISCONFIGURED.contains(&code) || misconfigured.contains(&code) => {
            Fault::Misconfigured
        }
        Some(code) if UNAVAILABLE.contains(&code) => Fault::Unavailable,
        // Anything else, including codes added after this build: an upstream failure, retried,
        // never silently dropped.
        _ => Fault::Upstream,
    }
}

/// Classifies a failed call; `misconfigured` names the service's own configuration errors.
pub fn classify<E>(error: &SdkError<E, HttpResponse>, misconfigured: &[&str]) -> Classified
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let none = |fault| Classified {
        fault,
        effect: Effect::None,
        code: None,
        timed_out: false,
    };
    let unknown = |fault| Classified {
        fault,
        effect: Effect::Unknown,
        code: None,
        timed_out: false,
    };
    if let Some(classified) = credentials_failure(error) {
        return classified;
    }
    match error {
        SdkError::ServiceError(context) => {
            let code = context.err().code();
            let status = context.raw().status().as_u16();
            Classified {
                fault: fault_of_code(code, misconfigured),
                // A 5xx answer does not prove the request was not performed.
                effect: if status >= 500 {
                    Effect::Unknown
                } else {
                    Effect::None
                },
                code: code.map(str::to_owned),
                timed_out: false,
            }
        }
        SdkError::TimeoutError(_) => Classified {
            timed_out: true,
            ..unknown(Fault::Unavailable)
        },
        SdkError::DispatchFailure(failure) if failure.is_user() => none(Fault::Misconfigured),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => Classified {
            timed_out: true,
            ..unknown(Fault::Unavailable)
        },
        SdkError::DispatchFailure(failure) if refused(failure) => none(Fault::Unavailable),
        SdkError::DispatchFailure(_) => unknown(Fault::Unavailable),
        SdkError::ResponseError(_) => unknown(Fault::Upstream),
        // Request construction failed: credentials, region or endpoint set-up. Never sent.
        SdkError::ConstructionFailure(_) => none(Fault::Misconfigured),
        // SdkError is non-exhaustive: an unknown failure mode is transient and ambiguous.
        _ => unknown(Fault::Unavailable),
    }
}

/// A call that failed for its credentials (the SDK resolves them before it sends anything):
/// never sent. A failed `AssumeRole` (a pool of `POOL_ROLES`) is classified by STS's answer:
/// access denied or an invalid role or external id is `Misconfigured`, throttling `Throttled`,
/// anything else (5xx, timeouts, connection failures) `Unavailable`.
fn credentials_failure<E>(error: &SdkError<E, HttpResponse>) -> Option<Classified>
where
    E: StdError + 'static,
{
    if matches!(error, SdkError::ServiceError(_)) {
        return None;
    }
    let credentials = chain(error.source()).find_map(|e| e.downcast_ref::<CredentialsError>())?;
    if let Some(sts) = chain(credentials.source())
        .find_map(|e| e.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>())
    {
        let inner = classify(sts, STS_MISCONFIGURED);
        return Some(Classified {
            fault: match inner.fault {
                Fault::Upstream => Fault::Unavailable,
                fault => fault,
            },
            effect: Effect::None,
            code: Some(format!(
                "{STS_PREFIX}{}",
                inner.code.as_deref().unwrap_or("AssumeRole")
            )),
            timed_out: false,
        });
    }
    let fault = match credentials {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            Fault::Misconfigured
        }
        _ => Fault::Unavailable,
    };
    Some(Classified {
        fault,
        effect: Effect::None,
        code: None,
        timed_out: false,
    })
}

/// True when the connection was refused: the request never left.
fn refused(failure: &DispatchFailure) -> bool {
    let connector = failure
        .as_connector_error()
        .map(|e| e as &(dyn StdError + 'static));
    chain(connector).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// `first` and every error below it (its source, the source's source, ...).
fn chain<'e>(
    first: Option<&'e (dyn StdError + 'static)>,
) -> impl Iterator<Item = &'e (dyn StdError + 'static)> {
    std::iter::successors(first, |&e| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_error_codes_are_classified_on_purpose() {
        assert_eq!(
            fault_of_code(Some("AccessDeniedException"), &[]),
            Fault::Misconfigured
        );
        assert_eq!(
            fault_of_code(Some("ThrottlingException"), &[]),
            Fault::Throttled
        );
        assert_eq!(
            fault_of_code(
                Some("ResourceNotFoundException"),
                &["ResourceNotFoundException"]
            ),
            Fault::Misconfigured
        );
        assert_eq!(fault_of_code(Some("SomethingNew"), &[]), Fault::Upstream);
        assert_eq!(fault_of_code(None, &[]), Fault::Upstream);
    }
}

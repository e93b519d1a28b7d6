//! The fake Cognito: a directory of three users behind [`CognitoApi`], one attempt per call,
//! honouring the attempt's timeout as the SDK does, with the schedule's fault applied.
//!
//! A reset that the fault lets through is *performed* when the request arrives (the user gets a
//! code), whatever then happens to its answer.

use std::sync::Arc;
use std::time::Duration;

use cognito_reset::aws::BoxFuture;
use cognito_reset::aws::cognito::{CognitoApi, GroupsPage, UserRecord};
use cognito_reset::failure::{CognitoError, CognitoErrorKind as K, Effect};
use cognito_reset::request::{ClientMetadata, UserPoolId};
use tokio::time::Instant;

use crate::faults::{Answered, CognitoCall, Fault, Injector, Op, arrive};
use crate::world::User;

#[derive(Debug)]
pub struct FakeCognito {
    injector: Arc<Injector>,
    users: Vec<(String, String, Vec<String>)>,
    /// Users a performed reset turned `RESET_REQUIRED` (Cognito's status after a reset).
    reset: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl FakeCognito {
    pub fn new(injector: Arc<Injector>) -> FakeCognito {
        FakeCognito {
            injector,
            users: User::directory(),
            reset: std::sync::Mutex::default(),
        }
    }

    /// By canonical name or email, ignoring case (a case-insensitive pool).
    fn find(&self, name: &str) -> Option<&(String, String, Vec<String>)> {
        self.users.iter().find(|(username, email, _)| {
            username.eq_ignore_ascii_case(name) || email.eq_ignore_ascii_case(name)
        })
    }

    fn not_found(op: Op) -> CognitoError {
        CognitoError::new(
            K::UserNotFound,
            op.name(),
            Effect::None,
            "User does not exist.",
        )
    }

    /// One attempt of `op` on `name`: `answer` is what Cognito does and says when it performs
    /// the call.
    async fn call<T>(
        &self,
        op: Op,
        name: &str,
        ticket: Option<String>,
        timeout: Duration,
        answer: impl FnOnce() -> Result<T, CognitoError>,
    ) -> Result<T, CognitoError> {
        let ctx = self.injector.next(op);
        let start = Instant::now();
        let arrives = Some(ctx.arrival(start));
        let error =
            |kind, effect, what: &'static str| CognitoError::new(kind, op.name(), effect, what);
        // Whether Cognito performs the call, and the failure it answers with instead of its own
        // answer (a timeout never answers).
        let (arrives, performs, failure) = match ctx.fault {
            None | Some(Fault::Echo | Fault::Outage) => (arrives, true, None),
            Some(Fault::Throttle) => (
                arrives,
                false,
                Some(error(K::Throttled, Effect::None, "Rate exceeded")),
            ),
            Some(Fault::LimitExceeded) => (
                arrives,
                false,
                Some(
                    error(K::Throttled, Effect::None, "Attempt limit exceeded")
                        .with_ids(None, Some("LimitExceededException".to_owned())),
                ),
            ),
            Some(Fault::Refuse) => {
                let refusal = match op {
                    Op::Reset => error(K::NotResettable, Effect::None, "not allowed now"),
                    _ => Self::not_found(op),
                };
                (arrives, false, Some(refusal))
            }
            Some(Fault::ServerError { landed }) => (
                arrives,
                landed,
                Some(error(
                    K::Upstream,
                    Effect::Unknown,
                    "InternalErrorException",
                )),
            ),
            Some(Fault::Timeout { landed }) => (None, landed, None),
            Some(Fault::ConnectionReset) => (
                arrives,
                false,
                Some(error(K::Unavailable, Effect::Unknown, "connection reset")),
            ),
            Some(Fault::ConnectionRefused) => (
                arrives,
                false,
                Some(error(K::Unavailable, Effect::None, "connection refused")),
            ),
            Some(Fault::Lost) => (
                arrives,
                true,
                Some(error(
                    K::Unavailable,
                    Effect::Unknown,
                    "connection reset after sending",
                )),
            ),
        };
        let answer = performs.then(answer);
        let performed = op == Op::Reset && matches!(answer, Some(Ok(_)));
        if performed && let Some((canonical, _, _)) = self.find(name) {
            // The user's status changes when the request arrives, whatever the answer does.
            self.reset
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(canonical.clone());
        }
        let cut = arrive(arrives, start + timeout).await;
        let result = if cut {
            Err(error(K::Unavailable, Effect::Unknown, "attempt timed out"))
        } else {
            match (failure, answer) {
                (Some(failure), _) => Err(failure),
                (None, Some(answer)) => answer,
                (None, None) => unreachable!("every fault without a failure performs the call"),
            }
        };
        self.injector.cognito(CognitoCall {
            inv: ctx.inv,
            op,
            name: name.to_owned(),
            ticket,
            start,
            end: Instant::now(),
            fault: ctx.fault,
            at: ctx.at,
            performed,
            answered: match &result {
                Ok(_) => Answered::Ok,
                Err(e) => Answered::Err(e.kind, e.effect),
            },
        });
        result
    }
}

impl CognitoApi for FakeCognito {
    fn get_user<'a>(
        &'a self,
        _pool: &'a UserPoolId,
        username: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<UserRecord, CognitoError>> {
        Box::pin(self.call(Op::GetUser, username, None, timeout, move || {
            match self.find(username) {
                Some((canonical, email, _)) => Ok(UserRecord {
                    username: canonical.clone(),
                    email: Some(email.clone()),
                    preferred_username: None,
                    sub: Some(canonical.clone()),
                    enabled: true,
                    status: Some(
                        if self
                            .reset
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(canonical)
                        {
                            "RESET_REQUIRED"
                        } else {
                            "CONFIRMED"
                        }
                        .to_owned(),
                    ),
                }),
                None => Err(Self::not_found(Op::GetUser)),
            }
        }))
    }

    fn list_groups<'a>(
        &'a self,
        _pool: &'a UserPoolId,
        username: &'a str,
        _next_token: Option<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<GroupsPage, CognitoError>> {
        Box::pin(self.call(Op::ListGroups, username, None, timeout, move || {
            match self.find(username) {
                Some((_, _, groups)) => Ok(GroupsPage {
                    groups: groups.clone(),
                    next_token: None,
                }),
                None => Err(Self::not_found(Op::ListGroups)),
            }
        }))
    }

    fn reset_password<'a>(
        &'a self,
        _pool: &'a UserPoolId,
        username: &'a str,
        client_metadata: &'a ClientMetadata,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>> {
        let ticket = client_metadata.entries().get("ticket").cloned();
        Box::pin(self.call(Op::Reset, username, ticket, timeout, move || {
            // The service resets by canonical username only.
            match self.find(username) {
                Some((canonical, _, _)) if canonical == username => {
                    Ok(Some(format!("cognito-{username}")))
                }
                _ => Err(Self::not_found(Op::Reset)),
            }
        }))
    }

    // The harness's users are all CONFIRMED and its policy never signs out: a call of either is
    // a bug the run must show.
    fn resend_invitation<'a>(
        &'a self,
        _pool: &'a UserPoolId,
        username: &'a str,
        _client_metadata: &'a ClientMetadata,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>> {
        panic!("AdminCreateUser called for {username}: the harness has no invited user")
    }

    fn global_sign_out<'a>(
        &'a self,
        _pool: &'a UserPoolId,
        username: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>> {
        panic!("AdminUserGlobalSignOut called for {username}: the harness's policy never signs out")
    }
}

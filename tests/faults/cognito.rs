//! The fake Cognito: the world's users in each pool it serves (the listed pool and the other
//! account's) behind [`CognitoApi`], one attempt per call, honouring the attempt's timeout as
//! the SDK does, with the schedule's fault applied.
//!
//! A reset that the fault lets through is *performed* when the request arrives (the user gets a
//! code), whatever then happens to its answer. Cognito's `UserStatus` is kept per user:
//! `AdminGetUser` returns it, a performed `AdminResetUserPassword` sets it to `RESET_REQUIRED`
//! (a user in `RESET_REQUIRED` can be reset again), a resent invitation leaves the invited user
//! in `FORCE_CHANGE_PASSWORD`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cognito_reset::aws::BoxFuture;
use cognito_reset::aws::cognito::{CognitoApi, GroupsPage, UserRecord};
use cognito_reset::failure::{CognitoError, CognitoErrorKind as K, Effect};
use cognito_reset::request::{ClientMetadata, UserPoolId};
use tokio::time::Instant;

use crate::faults::{Answered, CognitoCall, Fault, Injector, Op, arrive};
use crate::world::{FOREIGN_POOL, POOL, User};

#[derive(Debug)]
pub struct FakeCognito {
    injector: Arc<Injector>,
    /// `UserStatus` by (pool, canonical username), shared by every instance's client.
    status: Arc<Mutex<BTreeMap<(String, String), String>>>,
}

impl FakeCognito {
    pub fn new(injector: Arc<Injector>) -> FakeCognito {
        let status = [POOL, FOREIGN_POOL]
            .into_iter()
            .flat_map(|pool| {
                User::EXISTING.into_iter().filter_map(move |u| {
                    let canonical = u.canonical()?;
                    Some(((pool.to_owned(), canonical), u.initial_status().to_owned()))
                })
            })
            .collect();
        FakeCognito {
            injector,
            status: Arc::new(Mutex::new(status)),
        }
    }

    /// Another instance's client of the same Cognito.
    pub fn sibling(&self, injector: Arc<Injector>) -> FakeCognito {
        FakeCognito {
            injector,
            status: Arc::clone(&self.status),
        }
    }

    /// By canonical name or email, ignoring case (a case-insensitive pool), in a pool this
    /// Cognito serves.
    fn find(&self, pool: &UserPoolId, name: &str) -> Option<User> {
        if pool.as_str() != POOL && pool.as_str() != FOREIGN_POOL {
            return None;
        }
        User::EXISTING.into_iter().find(|u| {
            u.canonical().is_some_and(|c| c.eq_ignore_ascii_case(name))
                || format!("{}@example.com", u.local()).eq_ignore_ascii_case(name)
        })
    }

    fn status_of(&self, pool: &UserPoolId, user: User) -> String {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status
            .get(&(
                pool.as_str().to_owned(),
                user.canonical().unwrap_or_default(),
            ))
            .cloned()
            .unwrap_or_else(|| user.initial_status().to_owned())
    }

    fn set_status(&self, pool: &UserPoolId, user: User, to: &str) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.insert(
            (
                pool.as_str().to_owned(),
                user.canonical().unwrap_or_default(),
            ),
            to.to_owned(),
        );
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
        pool: &UserPoolId,
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
                    Op::Reset | Op::Resend => {
                        error(K::NotResettable, Effect::None, "not allowed now")
                    }
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
        let performed =
            matches!(op, Op::Reset | Op::Resend | Op::SignOut) && matches!(answer, Some(Ok(_)));
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
            seq: ctx.seq,
            task: tokio::task::try_id(),
            op,
            pool: pool.as_str().to_owned(),
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
        pool: &'a UserPoolId,
        username: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<UserRecord, CognitoError>> {
        Box::pin(
            self.call(
                Op::GetUser,
                pool,
                username,
                None,
                timeout,
                move || match self.find(pool, username) {
                    Some(user) => {
                        let canonical = user.canonical().unwrap_or_default();
                        Ok(UserRecord {
                            username: canonical.clone(),
                            email: Some(format!("{}@example.com", user.local())),
                            preferred_username: None,
                            sub: Some(canonical),
                            enabled: true,
                            status: Some(self.status_of(pool, user)),
                        })
                    }
                    None => Err(Self::not_found(Op::GetUser)),
                },
            ),
        )
    }

    fn list_groups<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        _next_token: Option<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<GroupsPage, CognitoError>> {
        Box::pin(
            self.call(
                Op::ListGroups,
                pool,
                username,
                None,
                timeout,
                move || match self.find(pool, username) {
                    Some(user) => Ok(GroupsPage {
                        groups: user.groups().iter().map(|g| (*g).to_owned()).collect(),
                        next_token: None,
                    }),
                    None => Err(Self::not_found(Op::ListGroups)),
                },
            ),
        )
    }

    fn reset_password<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        client_metadata: &'a ClientMetadata,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>> {
        let ticket = client_metadata.entries().get("ticket").cloned();
        Box::pin(
            self.call(Op::Reset, pool, username, ticket, timeout, move || {
                // The service resets by canonical username only; an invited user has no
                // password to reset (Cognito: NotAuthorizedException).
                match self.find(pool, username) {
                    Some(user) if user.canonical().as_deref() == Some(username) => {
                        if self.status_of(pool, user) == "FORCE_CHANGE_PASSWORD" {
                            return Err(CognitoError::new(
                                K::NotResettable,
                                Op::Reset.name(),
                                Effect::None,
                                "User password cannot be reset in the current state.",
                            ));
                        }
                        self.set_status(pool, user, "RESET_REQUIRED");
                        Ok(Some(format!("cognito-{username}")))
                    }
                    _ => Err(Self::not_found(Op::Reset)),
                }
            }),
        )
    }

    fn resend_invitation<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        client_metadata: &'a ClientMetadata,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>> {
        let ticket = client_metadata.entries().get("ticket").cloned();
        Box::pin(
            self.call(Op::Resend, pool, username, ticket, timeout, move || {
                // RESEND only for a user still in FORCE_CHANGE_PASSWORD (Cognito: UnsupportedUserStateException).
                match self.find(pool, username) {
                    Some(user) if user.canonical().as_deref() == Some(username) => {
                        if self.status_of(pool, user) != "FORCE_CHANGE_PASSWORD" {
                            return Err(CognitoError::new(
                                K::NotResettable,
                                Op::Resend.name(),
                                Effect::None,
                                "the user is not in FORCE_CHANGE_PASSWORD",
                            ));
                        }
                        Ok(Some(format!("cognito-resend-{username}")))
                    }
                    _ => Err(Self::not_found(Op::Resend)),
                }
            }),
        )
    }

    fn global_sign_out<'a>(
        &'a self,
        pool: &'a UserPoolId,
        username: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, CognitoError>> {
        Box::pin(
            self.call(
                Op::SignOut,
                pool,
                username,
                None,
                timeout,
                move || match self.find(pool, username) {
                    Some(user) if user.canonical().as_deref() == Some(username) => {
                        Ok(Some(format!("cognito-signout-{username}")))
                    }
                    _ => Err(Self::not_found(Op::SignOut)),
                },
            ),
        )
    }
}

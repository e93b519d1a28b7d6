//! HTTP requests from API Gateway (REST and HTTP APIs), Lambda function URLs and ALB.
//!
//! POST only; a JSON body (base64 bodies decoded) of at most 64 KiB holding one request object,
//! or an array of 1 to 25 of them answered with 207 and one result per item, each as if sent
//! alone. Error bodies carry a code and a human message, never internal error text.
//!
//! An optional `Idempotency-Key` header (1 to 255 printable ASCII characters) names the request
//! for the guard: a repeat gets the earlier answer again, with `"replayed": true` and the header
//! `Idempotent-Replayed: true`. Item *i* of a batch uses `<key>#<i>`.

use std::borrow::Cow;
use std::sync::Arc;

use aws_lambda_events::alb::AlbTargetGroupResponse;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use aws_lambda_events::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::deadline::Deadline;
use crate::invocation::Invocation;
use crate::outcome::{Answer, RecordResult, ResetError, Settled};
use crate::pipeline::App;
use crate::policy::Caller;
use crate::record::{Job, Origin, Source};
use crate::request::{InvalidRequest, ResetRequest, UserPoolId};
use crate::scheduler::run_all;

/// Largest accepted body, after base64 decoding.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most requests in one batch body.
pub const MAX_BATCH: usize = 25;
/// The request header naming an idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The parts of an HTTP event the function looks at.
#[derive(Debug)]
pub struct HttpRequest<'a> {
    /// Which integration sent the request; decides the response's shape.
    pub source: Source,
    /// ALB with multi-value headers on: the response must use them too.
    pub multi_value_headers: bool,
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Option<&'a str>,
    pub is_base64_encoded: bool,
    pub caller: Caller,
    /// The caller's IAM principal id (IAM auth only): it reads the answers of the queued
    /// requests it sent ([`crate::caller::principal_reader`]).
    pub principal_id: Option<&'a str>,
    /// The request's path (`/reset`, `/approvals/{id}`, `/requests/{id}`), when the
    /// integration gives one.
    pub path: Option<&'a str>,
}

/// Which route a path names: by its last two segments, so that a stage or a base path in front
/// changes nothing. Any other path (`/`, `/reset`, a function URL's root) is the reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `POST /reset` (and every path that is not one of the others).
    Reset,
    /// `POST /approvals/{approvalId}`.
    Approval(Cow<'a, str>),
    /// `GET /requests/{id}` (percent-decoded: a batch item's `<request id>#<index>` travels as
    /// `%23`).
    Status(Cow<'a, str>),
}

impl<'a> Route<'a> {
    /// The route of `path`.
    pub fn of(path: Option<&'a str>) -> Route<'a> {
        let Some(path) = path else {
            return Route::Reset;
        };
        let mut segments = path.trim_end_matches('/').rsplit('/');
        let (Some(id), Some(parent)) = (segments.next(), segments.next()) else {
            return Route::Reset;
        };
        if id.is_empty() {
            return Route::Reset;
        }
        match parent {
            "approvals" => Route::Approval(percent_decoded(id)),
            "requests" => Route::Status(percent_decoded(id)),
            _ => Route::Reset,
        }
    }
}

/// A path segment with its `%XX` escapes decoded (HTTP APIs, function URLs and ALBs pass the
/// raw path; REST APIs a decoded one, where a decoded id has no `%` left). A segment that does
/// not decode to UTF-8, or has a broken escape, is kept as it is: it names no id.
fn percent_decoded(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                return Cow::Borrowed(segment);
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(segment),
    }
}

/// The body's requests, each parsed on its own.
enum Requests {
    One(Result<ResetRequest, InvalidRequest>),
    Many(Vec<Result<ResetRequest, InvalidRequest>>),
}

/// Answers one HTTP event with the integration's response object.
pub async fn handle(
    app: &Arc<App>,
    request: HttpRequest<'_>,
    request_id: &str,
    deadline: Deadline,
    invocation: &Arc<Invocation>,
) -> Value {
    let shape = Shape {
        source: request.source,
        multi_value_headers: request.multi_value_headers,
    };
    match Route::of(request.path) {
        Route::Reset => {}
        Route::Approval(id) => {
            let (status, headers, body) = if request.method.eq_ignore_ascii_case("POST") {
                match decoded_body(&request) {
                    Ok(body) => {
                        crate::approvals::decide(
                            app,
                            request.source,
                            &request.caller,
                            &id,
                            body.as_deref(),
                            request_id,
                            deadline,
                            invocation,
                        )
                        .await
                    }
                    Err(error) => {
                        let answer = Answer::new(Err(&error), None, request_id);
                        (answer.status, Vec::new(), answer.body())
                    }
                }
            } else {
                not_allowed("POST", request_id)
            };
            return respond(shape, status, headers, body);
        }
        Route::Status(id) => {
            let (status, headers, body) = if request.method.eq_ignore_ascii_case("GET") {
                let reader = crate::caller::principal_reader(request.principal_id);
                crate::approvals::status(app, &request.caller, reader, &id, request_id, deadline)
                    .await
            } else {
                not_allowed("GET", request_id)
            };
            return respond(shape, status, headers, body);
        }
    }
    let origin = Origin {
        source: request.source,
        id: request_id.to_owned(),
        index: None,
        caller: Arc::new(request.caller.clone()),
        reader: None,
    };
    let requests = idempotency_key(request.headers).and_then(|key| {
        read_body(&request, app.config.default_user_pool_id.as_ref()).map(|body| (key, body))
    });
    match requests {
        Err(error) => {
            // Audited like any other record, then answered.
            let job = Job {
                origin,
                request: Err(error),
                idempotency_key: None,
                last_receive: false,
            };
            let result = app.run(job, deadline, invocation).await;
            let (status, headers, body) = single_response(&result, None, request_id);
            respond(shape, status, headers, body)
        }
        Ok((key, Requests::One(parsed))) => {
            let pool = pool_of(&parsed);
            let job = Job {
                origin,
                request: parsed.map_err(ResetError::from),
                idempotency_key: key,
                last_receive: false,
            };
            let result = app.run(job, deadline, invocation).await;
            let (status, headers, body) = single_response(&result, pool.as_deref(), request_id);
            respond(shape, status, headers, body)
        }
        Ok((key, Requests::Many(items))) => {
            let pools: Vec<Option<String>> = items.iter().map(pool_of).collect();
            let jobs = items
                .into_iter()
                .enumerate()
                .map(|(index, parsed)| Job {
                    origin: Origin {
                        index: Some(index),
                        ..origin.clone()
                    },
                    request: parsed.map_err(ResetError::from),
                    idempotency_key: key.clone(),
                    last_receive: false,
                })
                .collect();
            let results = run_all(app, jobs, deadline, invocation).await;
            let items: Vec<Value> = results
                .iter()
                .zip(pools)
                .enumerate()
                .map(|(index, (result, pool))| {
                    let (status, _, body) = single_response(result, pool.as_deref(), request_id);
                    let mut item = Map::new();
                    item.insert("index".into(), json!(index));
                    item.insert("status".into(), json!(status));
                    item.extend(body);
                    Value::Object(item)
                })
                .collect();
            let mut body = Map::new();
            body.insert("results".into(), Value::Array(items));
            respond(shape, 207, Vec::new(), body)
        }
    }
}

/// 405 with the route's one method in `Allow`.
fn not_allowed(method: &'static str, request_id: &str) -> crate::approvals::Reply {
    let answer = Answer::new(Err(&ResetError::MethodNotAllowed), None, request_id);
    let mut body = answer.body();
    body.insert(
        "message".into(),
        Value::from(format!("only {method} is allowed on this route")),
    );
    (answer.status, vec![("allow", method.to_owned())], body)
}

/// The body as text (base64 decoded), at most [`MAX_BODY_BYTES`].
fn decoded_body(request: &HttpRequest<'_>) -> Result<Option<String>, ResetError> {
    let Some(raw) = request.body else {
        return Ok(None);
    };
    let text = if request.is_base64_encoded {
        if raw.len() / 4 * 3 > MAX_BODY_BYTES + 3 {
            return Err(ResetError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| {
                InvalidRequest::body("the body is marked base64 but is not valid base64")
            })?;
        String::from_utf8(bytes).map_err(|_| InvalidRequest::body("the body is not valid UTF-8"))?
    } else {
        raw.to_owned()
    };
    if text.len() > MAX_BODY_BYTES {
        return Err(ResetError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(Some(text))
}

fn pool_of(parsed: &Result<ResetRequest, InvalidRequest>) -> Option<String> {
    parsed.as_ref().ok().map(|r| r.user_pool_id.to_string())
}

/// The `Idempotency-Key` header, if sent: 1 to 255 printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ResetError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        ResetError::from(InvalidRequest::header(
            "Idempotency-Key",
            format!(
                "must be one value of 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"
            ),
        ))
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let key = value.to_str().map_err(|_| invalid())?.trim();
    let printable = key.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !printable {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

/// Checks method, content type and size; decodes and splits the body into requests.
fn read_body(
    request: &HttpRequest<'_>,
    default_pool: Option<&UserPoolId>,
) -> Result<Requests, ResetError> {
    if !request.method.eq_ignore_ascii_case("POST") {
        return Err(ResetError::MethodNotAllowed);
    }
    if let Some(content_type) = request.headers.get(CONTENT_TYPE) {
        let is_json = content_type.to_str().is_ok_and(|value| {
            let mime = value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
        if !is_json {
            return Err(ResetError::UnsupportedMediaType);
        }
    }
    let raw = request.body.unwrap_or("");
    let decoded;
    let text: &str = if request.is_base64_encoded {
        // Base64 is 4 bytes per 3: refuse oversized bodies before decoding them.
        if raw.len() / 4 * 3 > MAX_BODY_BYTES + 3 {
            return Err(ResetError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| {
                InvalidRequest::body("the body is marked base64 but is not valid base64")
            })?;
        decoded = String::from_utf8(bytes)
            .map_err(|_| InvalidRequest::body("the body is not valid UTF-8"))?;
        &decoded
    } else {
        raw
    };
    if text.len() > MAX_BODY_BYTES {
        return Err(ResetError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    if text.trim().is_empty() {
        return Err(InvalidRequest::body("the body is empty: send a JSON reset request").into());
    }
    if text.trim_start().starts_with('[') {
        let items: Vec<Box<RawValue>> = serde_json::from_str(text).map_err(|e| {
            InvalidRequest::body(format!("the body is not a valid JSON array: {e}"))
        })?;
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(InvalidRequest::body(format!(
                "a batch must hold 1 to {MAX_BATCH} requests, not {}",
                items.len()
            ))
            .into());
        }
        Ok(Requests::Many(
            items
                .iter()
                .map(|item| ResetRequest::from_json(item.get(), default_pool))
                .collect(),
        ))
    } else {
        Ok(Requests::One(ResetRequest::from_json(text, default_pool)))
    }
}

/// Status, extra headers and JSON body for one record's result.
fn single_response(
    result: &RecordResult,
    pool: Option<&str>,
    request_id: &str,
) -> (u16, Vec<(&'static str, String)>, Map<String, Value>) {
    match result {
        Ok(Settled::Replayed(answer)) => {
            let mut body = answer.body();
            body.insert("replayed".into(), Value::Bool(true));
            let headers = vec![("idempotent-replayed", "true".to_owned())];
            (answer.status, headers, body)
        }
        Ok(Settled::Reset(reset)) => {
            let answer = Answer::new(Ok(reset), pool, request_id);
            (answer.status, Vec::new(), answer.body())
        }
        Ok(Settled::Pending(pending)) => {
            let answer = Answer::pending(pending, pool, request_id);
            (answer.status, Vec::new(), answer.body())
        }
        Err(error) => {
            let mut headers = Vec::new();
            if let ResetError::MethodNotAllowed = error {
                headers.push(("allow", "POST".to_owned()));
            }
            if let Some(seconds) = error.retry_after_secs() {
                headers.push(("retry-after", seconds.to_string()));
            }
            let answer = Answer::new(Err(error), pool, request_id);
            (answer.status, headers, answer.body())
        }
    }
}

/// How the integration wants its response.
#[derive(Debug, Clone, Copy)]
struct Shape {
    source: Source,
    multi_value_headers: bool,
}

/// Builds the integration's response object with aws_lambda_events' response types.
fn respond(
    shape: Shape,
    status: u16,
    extra_headers: Vec<(&'static str, String)>,
    body: Map<String, Value>,
) -> Value {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in extra_headers {
        // Values are ASCII built here (numbers, `POST`, `true`): never rejected.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let body = Some(Body::Text(Value::Object(body).to_string()));
    let status_code = i64::from(status);
    let response = match shape.source {
        Source::Alb => {
            let mut response = AlbTargetGroupResponse::default();
            response.status_code = status_code;
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            response.status_description = Some(format!("{status} {reason}"));
            if shape.multi_value_headers {
                response.multi_value_headers = headers;
            } else {
                response.headers = headers;
            }
            response.body = body;
            // ALB wants exactly one of the two header maps: drop the unused (empty) one.
            let unused = if shape.multi_value_headers {
                "headers"
            } else {
                "multiValueHeaders"
            };
            serde_json::to_value(response).map(|mut value| {
                if let Some(fields) = value.as_object_mut() {
                    fields.remove(unused);
                }
                value
            })
        }
        Source::RestApi => {
            let mut response = ApiGatewayProxyResponse::default();
            response.status_code = status_code;
            response.headers = headers;
            response.body = body;
            serde_json::to_value(response)
        }
        // HTTP API and function URLs (payload 2.0); SQS never gets here.
        _ => {
            let mut response = ApiGatewayV2httpResponse::default();
            response.status_code = status_code;
            response.headers = headers;
            response.body = body;
            serde_json::to_value(response)
        }
    };
    // Serializing these types cannot fail (string keys, string values); should it, say so.
    response.unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not serialize the response");
        json!({"statusCode": 500})
    })
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn a_route_is_named_by_the_paths_last_two_segments() {
        assert_eq!(Route::of(None), Route::Reset);
        assert_eq!(Route::of(Some("/reset")), Route::Reset);
        assert_eq!(Route::of(Some("/")), Route::Reset);
        assert_eq!(
            Route::of(Some("/prod/approvals/abc")),
            Route::Approval("abc".into())
        );
        assert_eq!(
            Route::of(Some("/lambda-url/cognito-reset/requests/r-1#2/")),
            Route::Status("r-1#2".into())
        );
        // However long the id: the route's own answer (404), never the reset's.
        let long = format!("/requests/{}", "0".repeat(300));
        assert!(matches!(Route::of(Some(&long)), Route::Status(_)));
        assert_eq!(Route::of(Some("/requests/")), Route::Reset);
    }

    #[test]
    fn an_id_is_percent_decoded_and_a_broken_escape_is_kept_as_sent() {
        // A batch item's id, as a client must send it (`#` would start a fragment)
        assert_eq!(
            Route::of(Some("/requests/r-1%232")),
            Route::Status("r-1#2".into())
        );
        assert_eq!(
            Route::of(Some("/approvals/a%2Fb")),
            Route::Approval("a/b".into())
        );
        for raw in ["r-1%2", "r-1%zz2", "r-%ff"] {
            assert_eq!(
                Route::of(Some(&format!("/requests/{raw}"))),
                Route::Status(raw.into())
            );
        }
    }
}

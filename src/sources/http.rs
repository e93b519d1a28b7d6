//! HTTP requests from API Gateway (REST and HTTP APIs), Lambda function URLs and ALB.
//!
//! POST only; a JSON body (base64 bodies decoded) of at most 64 KiB holding one request object,
//! or an array of 1 to 25 of them answered with 207 and one result per item, each as if sent
//! alone. Error bodies carry a code and a human message, never internal error text.

use std::sync::Arc;

use aws_lambda_events::http::{HeaderMap, StatusCode, header::CONTENT_TYPE};
use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::outcome::ResetError;
use crate::policy::Caller;
use crate::request::{InvalidRequest, ResetRequest, UserPoolId};
use crate::service::{App, Deadline, Job, Origin, RecordResult, run_all};

/// Largest accepted body, after base64 decoding.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most requests in one batch body.
pub const MAX_BATCH: usize = 25;

/// Which integration sent the request; decides the response's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    RestApi,
    HttpApi,
    FunctionUrl,
    Alb { multi_value_headers: bool },
}

impl Flavor {
    fn source(self) -> &'static str {
        match self {
            Flavor::RestApi => "rest-api",
            Flavor::HttpApi => "http-api",
            Flavor::FunctionUrl => "function-url",
            Flavor::Alb { .. } => "alb",
        }
    }
}

/// The parts of an HTTP event the function looks at.
#[derive(Debug)]
pub struct HttpRequest<'a> {
    pub flavor: Flavor,
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Option<&'a str>,
    pub is_base64_encoded: bool,
    pub caller: Caller,
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
) -> Value {
    let flavor = request.flavor;
    let origin = Origin {
        source: flavor.source(),
        id: request_id.to_owned(),
        caller: Arc::new(request.caller.clone()),
    };
    let requests = read_body(&request, app.config.default_user_pool_id.as_ref());
    match requests {
        Err(error) => {
            // Audited like any other record, then answered.
            let result = app
                .run(
                    Job {
                        origin,
                        request: Err(error),
                    },
                    deadline,
                )
                .await;
            let (status, headers, body) = single_response(&result, None, request_id);
            respond(flavor, status, headers, body)
        }
        Ok(Requests::One(parsed)) => {
            let pool = pool_of(&parsed);
            let job = Job {
                origin,
                request: parsed.map_err(ResetError::from),
            };
            let result = app.run(job, deadline).await;
            let (status, headers, body) = single_response(&result, pool.as_deref(), request_id);
            respond(flavor, status, headers, body)
        }
        Ok(Requests::Many(items)) => {
            let pools: Vec<Option<String>> = items.iter().map(pool_of).collect();
            let jobs = items
                .into_iter()
                .map(|parsed| Job {
                    origin: origin.clone(),
                    request: parsed.map_err(ResetError::from),
                })
                .collect();
            let results = run_all(app, jobs, deadline).await;
            let items: Vec<Value> = results
                .iter()
                .zip(pools)
                .enumerate()
                .map(|(index, (result, pool))| {
                    let (status, _, body) = single_response(result, pool.as_deref(), request_id);
                    let mut item = Map::new();
                    item.insert("index".into(), json!(index));
                    item.insert("status".into(), json!(status));
                    if let Value::Object(fields) = body {
                        item.extend(fields);
                    }
                    Value::Object(item)
                })
                .collect();
            respond(flavor, 207, Vec::new(), json!({ "results": items }))
        }
    }
}

fn pool_of(parsed: &Result<ResetRequest, InvalidRequest>) -> Option<String> {
    parsed.as_ref().ok().map(|r| r.user_pool_id.to_string())
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
            return Err(ResetError::PayloadTooLarge);
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
        return Err(ResetError::PayloadTooLarge);
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
) -> (u16, Vec<(&'static str, String)>, Value) {
    match result {
        Ok(reset) => {
            let body = json!({
                "outcome": reset.outcome(),
                "userPoolId": pool,
                "username": reset.username,
                "requestId": request_id,
            });
            (200, Vec::new(), body)
        }
        Err(error) => {
            let mut headers = Vec::new();
            if let ResetError::MethodNotAllowed = error {
                headers.push(("allow", "POST".to_owned()));
            }
            if let Some(seconds) = error.retry_after_secs() {
                headers.push(("retry-after", seconds.to_string()));
            }
            let body = json!({
                "error": error.code(),
                "message": error.public_message(),
                "requestId": request_id,
            });
            (error.http_status(), headers, body)
        }
    }
}

/// Builds the integration's response object.
fn respond(
    flavor: Flavor,
    status: u16,
    extra_headers: Vec<(&'static str, String)>,
    body: Value,
) -> Value {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    headers.extend(extra_headers);
    let mut response = Map::new();
    response.insert("statusCode".into(), json!(status));
    match flavor {
        Flavor::Alb {
            multi_value_headers: true,
        } => {
            let multi: Map<String, Value> = headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!([v])))
                .collect();
            response.insert("multiValueHeaders".into(), Value::Object(multi));
        }
        _ => {
            let single: Map<String, Value> = headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect();
            response.insert("headers".into(), Value::Object(single));
        }
    }
    if let Flavor::Alb { .. } = flavor {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        response.insert(
            "statusDescription".into(),
            json!(format!("{status} {reason}")),
        );
    }
    response.insert("body".into(), json!(body.to_string()));
    response.insert("isBase64Encoded".into(), json!(false));
    Value::Object(response)
}

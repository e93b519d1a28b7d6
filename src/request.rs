//! The reset request and its validated parts.
//!
//! A request carries the same fields as `aws cognito-idp admin-reset-user-password
//! --cli-input-json` (`UserPoolId`, `Username`, `ClientMetadata`) plus an optional `Reason` for
//! the audit log, `SignOut`, and an optional `Ticket` (the helpdesk ticket the reset is done
//! for: checked against the rule's `ticket`, written in the audit line, the event and the answer,
//! and passed to Cognito as `ClientMetadata.ticket`). Each field is accepted in PascalCase or
//! camelCase. The raw JSON is parsed here, at the edge, into newtypes that can only hold valid
//! values, so nothing unvalidated reaches the service: an unknown field, a field given in both spellings, a duplicate key, a wrong type or
//! trailing data is an [`InvalidRequest`] naming the field.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Maximum length of a user pool id, as Cognito documents it.
pub const MAX_USER_POOL_ID_LEN: usize = 55;
/// Maximum length of a username, as Cognito documents it.
pub const MAX_USERNAME_LEN: usize = 128;
/// Maximum length of the free-text `Reason`.
pub const MAX_REASON_LEN: usize = 512;
/// Maximum number of `ClientMetadata` entries.
pub const MAX_CLIENT_METADATA_ENTRIES: usize = 50;
/// Maximum total size of `ClientMetadata` keys and values, in bytes.
pub const MAX_CLIENT_METADATA_BYTES: usize = 4096;
/// Maximum length of a `Ticket`, in characters (all printable ASCII).
pub const MAX_TICKET_LEN: usize = crate::policy::ticket::MAX_TICKET_LEN;
/// The `ClientMetadata` key a `Ticket` is passed to Cognito under.
pub const TICKET_METADATA_KEY: &str = "ticket";

/// The AWS regions a user pool can live in. A pool id naming anything else is refused before any
/// call (a new region is one line here).
pub const AWS_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

/// Longest field name repeated back in an error message.
const MAX_ECHOED_FIELD_CHARS: usize = 64;

/// Why a request was refused before anything was looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    /// The offending field, in the spelling the caller used, when there is one.
    pub field: Option<String>,
    /// What is wrong, in words a caller can act on.
    pub message: String,
}

impl InvalidRequest {
    fn field(field: &str, message: impl Into<String>) -> Self {
        // Field names come from the caller: keep echoes of unknown ones short.
        let field: String = if field.chars().count() > MAX_ECHOED_FIELD_CHARS {
            field
                .chars()
                .take(MAX_ECHOED_FIELD_CHARS)
                .chain(['…'])
                .collect()
        } else {
            field.to_owned()
        };
        let field = field.as_str();
        InvalidRequest {
            field: Some(field.to_owned()),
            message: format!("{field}: {}", message.into()),
        }
    }

    /// An error about a request header (named as HTTP spells it).
    pub fn header(name: &str, message: impl Into<String>) -> Self {
        InvalidRequest {
            field: Some(name.to_owned()),
            message: format!("{name}: {}", message.into()),
        }
    }

    /// An error about the request as a whole (not one field).
    pub fn body(message: impl Into<String>) -> Self {
        InvalidRequest {
            field: None,
            message: message.into(),
        }
    }
}

/// A Cognito user pool id: `<region>_<id>`, at most 55 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserPoolId(String);

impl UserPoolId {
    /// Validates a pool id as Cognito does (`[\w-]+_[0-9a-zA-Z]+`, 1 to 55 characters).
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > MAX_USER_POOL_ID_LEN {
            return Err(format!(
                "must be 1 to {MAX_USER_POOL_ID_LEN} characters, like us-west-2_aaaaaaaaa"
            ));
        }
        let valid = value.split_once('_').is_some_and(|(region, id)| {
            !region.is_empty()
                && region
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !id.is_empty()
                && id.chars().all(|c| c.is_ascii_alphanumeric())
        });
        if !valid {
            return Err("must look like <region>_<id>, e.g. us-west-2_aaaaaaaaa".to_owned());
        }
        let pool = UserPoolId(value.to_owned());
        if !AWS_REGIONS.contains(&pool.region()) {
            return Err(format!(
                "names the region {:?}, which is not an AWS region",
                pool.region()
            ));
        }
        Ok(pool)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool's region: its id up to the first `_` (`us-west-2` of `us-west-2_aaaaaaaaa`).
    pub fn region(&self) -> &str {
        self.0.split_once('_').map_or("", |(region, _)| region)
    }
}

impl fmt::Display for UserPoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A username as the caller gave it: 1 to 128 characters, no whitespace or control characters.
///
/// It may be the canonical username, an alias (email, preferred username) or the `sub`; the
/// service resolves it to the canonical user before any decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Validates a username with Cognito's own rules.
    pub fn parse(value: &str) -> Result<Self, String> {
        let chars = value.chars().count();
        if chars == 0 || chars > MAX_USERNAME_LEN {
            return Err(format!("must be 1 to {MAX_USERNAME_LEN} characters"));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".to_owned());
        }
        Ok(Username(value.to_owned()))
    }

    /// The username as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// String-to-string metadata passed through to Cognito's Lambda triggers. Never logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientMetadata(BTreeMap<String, String>);

impl ClientMetadata {
    /// Validates the size bounds.
    pub fn parse(entries: BTreeMap<String, String>) -> Result<Self, String> {
        if entries.len() > MAX_CLIENT_METADATA_ENTRIES {
            return Err(format!(
                "at most {MAX_CLIENT_METADATA_ENTRIES} entries are allowed"
            ));
        }
        let bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_CLIENT_METADATA_BYTES {
            return Err(format!(
                "keys and values must total at most {MAX_CLIENT_METADATA_BYTES} bytes"
            ));
        }
        if entries.keys().any(|k| k.is_empty()) {
            return Err("keys must not be empty".to_owned());
        }
        Ok(ClientMetadata(entries))
    }

    /// The entries, for the Cognito call.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ClientMetadata {
    // Values may carry ticket details or personal data: show only the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A helpdesk ticket reference (`INC0012345`, `HELP-42`): 1 to [`MAX_TICKET_LEN`] printable
/// ASCII characters, no spaces. Not a secret, but it names someone's case: it goes in the audit
/// line, the event and the answer, never in a metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ticket(String);

impl Ticket {
    /// Validates a ticket reference.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > MAX_TICKET_LEN {
            return Err(format!(
                "must be 1 to {MAX_TICKET_LEN} printable ASCII characters, like INC0012345"
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "must be printable ASCII characters only (no spaces or control characters)"
                    .to_owned(),
            );
        }
        Ok(Ticket(value.to_owned()))
    }

    /// The ticket as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated reset request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRequest {
    pub user_pool_id: UserPoolId,
    pub username: Username,
    /// The metadata as Cognito receives it: the request's own, with `ticket` set to the
    /// request's `Ticket` when it has one (replacing a `ticket` the request's metadata had).
    pub client_metadata: ClientMetadata,
    /// `Ticket`: the helpdesk ticket the reset is done for.
    pub ticket: Option<Ticket>,
    /// Free text for the audit log only.
    pub reason: Option<String>,
    /// `SignOut`: sign the user out everywhere after the reset (the rule must allow it).
    pub sign_out: bool,
}

impl ResetRequest {
    /// The ticket as a string, when the request names one.
    pub fn ticket(&self) -> Option<&str> {
        self.ticket.as_ref().map(Ticket::as_str)
    }

    /// Parses one request from JSON text, using `default_pool` when `UserPoolId` is absent.
    pub fn from_json(
        text: &str,
        default_pool: Option<&UserPoolId>,
    ) -> Result<ResetRequest, InvalidRequest> {
        let raw: RawRequest = serde_json::from_str(text).map_err(|e| {
            // Our own validation errors come back through serde as custom messages that
            // already name the field; syntax errors get a generic prefix.
            let message = e.to_string();
            match message.split_once(FIELD_MARK) {
                Some((_, rest)) => {
                    let (field, msg) = rest.split_once(FIELD_MARK).unwrap_or((rest, ""));
                    let msg = msg.split(" at line ").next().unwrap_or(msg);
                    InvalidRequest::field(field, msg)
                }
                None => InvalidRequest::body(format!("body is not a valid request: {message}")),
            }
        })?;
        raw.validate(default_pool)
    }
}

/// Marks a field name inside a serde custom error so it can be recovered without guessing.
const FIELD_MARK: char = '\u{1f}';

fn field_error<E: de::Error>(field: &str, message: impl fmt::Display) -> E {
    E::custom(format!("{FIELD_MARK}{field}{FIELD_MARK}{message}"))
}

/// The request as it came, before validation; tracks which spelling set each field.
#[derive(Default)]
struct RawRequest {
    user_pool_id: Option<(String, String)>,
    username: Option<(String, String)>,
    client_metadata: Option<(String, BTreeMap<String, String>)>,
    reason: Option<(String, Option<String>)>,
    sign_out: Option<(String, bool)>,
    ticket: Option<(String, Option<String>)>,
}

impl RawRequest {
    fn validate(self, default_pool: Option<&UserPoolId>) -> Result<ResetRequest, InvalidRequest> {
        let user_pool_id = match self.user_pool_id {
            Some((key, value)) => {
                UserPoolId::parse(&value).map_err(|m| InvalidRequest::field(&key, m))?
            }
            None => default_pool.cloned().ok_or_else(|| {
                InvalidRequest::field(
                    "UserPoolId",
                    "is required (no DEFAULT_USER_POOL_ID is configured)",
                )
            })?,
        };
        let username = match self.username {
            Some((key, value)) => {
                Username::parse(&value).map_err(|m| InvalidRequest::field(&key, m))?
            }
            None => return Err(InvalidRequest::field("Username", "is required")),
        };
        let ticket = match self.ticket {
            Some((key, Some(text))) => {
                Some(Ticket::parse(&text).map_err(|m| InvalidRequest::field(&key, m))?)
            }
            _ => None,
        };
        let client_metadata = match self.client_metadata {
            Some((key, value)) => {
                ClientMetadata::parse(value).map_err(|m| InvalidRequest::field(&key, m))?
            }
            None => ClientMetadata::default(),
        };
        let client_metadata = match &ticket {
            None => client_metadata,
            Some(ticket) => {
                let mut entries = client_metadata.0;
                entries.insert(TICKET_METADATA_KEY.to_owned(), ticket.as_str().to_owned());
                ClientMetadata::parse(entries).map_err(|m| {
                    InvalidRequest::field(
                        "ClientMetadata",
                        format!("with the Ticket added as \"ticket\", {m}"),
                    )
                })?
            }
        };
        let reason = match self.reason {
            Some((key, Some(text))) => {
                if text.chars().count() > MAX_REASON_LEN {
                    return Err(InvalidRequest::field(
                        &key,
                        format!("must be at most {MAX_REASON_LEN} characters"),
                    ));
                }
                Some(text)
            }
            _ => None,
        };
        Ok(ResetRequest {
            user_pool_id,
            username,
            client_metadata,
            ticket,
            reason,
            sign_out: self.sign_out.is_some_and(|(_, value)| value),
        })
    }
}

#[derive(Clone, Copy)]
enum Field {
    UserPoolId,
    Username,
    ClientMetadata,
    Reason,
    SignOut,
    Ticket,
}

impl Field {
    fn from_key(key: &str) -> Option<Field> {
        match key {
            "UserPoolId" | "userPoolId" => Some(Field::UserPoolId),
            "Username" | "username" => Some(Field::Username),
            "ClientMetadata" | "clientMetadata" => Some(Field::ClientMetadata),
            "Reason" | "reason" => Some(Field::Reason),
            "SignOut" | "signOut" => Some(Field::SignOut),
            "Ticket" | "ticket" => Some(Field::Ticket),
            _ => None,
        }
    }
}

fn set_once<T, E: de::Error>(
    slot: &mut Option<(String, T)>,
    key: String,
    value: T,
) -> Result<(), E> {
    if let Some((first, _)) = slot {
        let message = if *first == key {
            "is given more than once".to_owned()
        } else {
            format!("is given twice, as {first} and as {key}: use one spelling")
        };
        return Err(field_error(&key, message));
    }
    *slot = Some((key, value));
    Ok(())
}

impl<'de> serde::Deserialize<'de> for RawRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;

        impl<'de> Visitor<'de> for RawVisitor {
            type Value = RawRequest;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object with UserPoolId and Username")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRequest, A::Error> {
                let mut raw = RawRequest::default();
                while let Some(key) = map.next_key::<String>()? {
                    let Some(field) = Field::from_key(&key) else {
                        let _: IgnoredAny = map.next_value()?;
                        return Err(field_error(
                            &key,
                            "is not a known field (expected UserPoolId, Username, ClientMetadata, Reason, SignOut, Ticket)",
                        ));
                    };
                    match field {
                        Field::UserPoolId | Field::Username => {
                            let value = map.next_value::<serde_json::Value>()?;
                            let serde_json::Value::String(text) = value else {
                                return Err(field_error(&key, "must be a string"));
                            };
                            let slot = match field {
                                Field::UserPoolId => &mut raw.user_pool_id,
                                _ => &mut raw.username,
                            };
                            set_once(slot, key, text)?;
                        }
                        Field::ClientMetadata => {
                            let value = map.next_value::<serde_json::Value>()?;
                            let entries =
                                string_map(value).map_err(|m| field_error::<A::Error>(&key, m))?;
                            set_once(&mut raw.client_metadata, key, entries)?;
                        }
                        Field::Reason | Field::Ticket => {
                            let value = map.next_value::<serde_json::Value>()?;
                            let text = match value {
                                serde_json::Value::String(text) => Some(text),
                                serde_json::Value::Null => None,
                                _ => return Err(field_error(&key, "must be a string")),
                            };
                            let slot = match field {
                                Field::Reason => &mut raw.reason,
                                _ => &mut raw.ticket,
                            };
                            set_once(slot, key, text)?;
                        }
                        Field::SignOut => {
                            let value = map.next_value::<serde_json::Value>()?;
                            let serde_json::Value::Bool(value) = value else {
                                return Err(field_error(&key, "must be true or false"));
                            };
                            set_once(&mut raw.sign_out, key, value)?;
                        }
                    }
                }
                Ok(raw)
            }
        }

        deserializer.deserialize_map(RawVisitor)
    }
}

fn string_map(value: serde_json::Value) -> Result<BTreeMap<String, String>, String> {
    let serde_json::Value::Object(object) = value else {
        return Err("must be an object of string values".to_owned());
    };
    object
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            _ => Err(format!("value of {k:?} must be a string")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "us-west-2_aaaaaaaaa";

    fn parse(text: &str) -> Result<ResetRequest, InvalidRequest> {
        ResetRequest::from_json(text, None)
    }

    #[test]
    fn accepts_the_cli_input_json_fields() {
        let req = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"diego@example.com","ClientMetadata":{{"ticket":"INC-1"}},"Reason":"locked out"}}"#
        ))
        .unwrap();
        assert_eq!(req.user_pool_id.as_str(), POOL);
        assert_eq!(req.username.as_str(), "diego@example.com");
        assert_eq!(req.client_metadata.entries()["ticket"], "INC-1");
        assert_eq!(req.reason.as_deref(), Some("locked out"));
        assert!(!req.sign_out);
    }

    #[test]
    fn sign_out_is_a_boolean_in_either_spelling() {
        for (field, value, expected) in [
            ("SignOut", "true", true),
            ("signOut", "true", true),
            ("SignOut", "false", false),
        ] {
            let req = parse(&format!(
                r#"{{"UserPoolId":"{POOL}","Username":"a","{field}":{value}}}"#
            ))
            .unwrap();
            assert_eq!(req.sign_out, expected, "{field}: {value}");
        }
        for value in [r#""true""#, "1", "null"] {
            let err = parse(&format!(
                r#"{{"UserPoolId":"{POOL}","Username":"a","SignOut":{value}}}"#
            ))
            .unwrap_err();
            assert_eq!(err.field.as_deref(), Some("SignOut"), "{value}");
            assert_eq!(err.message, "SignOut: must be true or false");
        }
        let err = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","SignOut":true,"signOut":true}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("signOut"));
    }

    #[test]
    fn accepts_camel_case() {
        let req = parse(&format!(
            r#"{{"userPoolId":"{POOL}","username":"diego","clientMetadata":{{}},"reason":"x"}}"#
        ))
        .unwrap();
        assert_eq!(req.username.as_str(), "diego");
    }

    #[test]
    fn both_spellings_of_a_field_are_rejected_naming_it() {
        let err = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","username":"b"}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("username"));
        assert!(err.message.contains("Username"), "{}", err.message);
    }

    #[test]
    fn duplicate_keys_are_rejected_not_last_wins() {
        let err = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"diego","Username":"admin"}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("Username"));
    }

    #[test]
    fn unknown_fields_are_rejected_naming_them() {
        let err = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","Password":"hunter2"}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("Password"));
        assert!(!err.message.contains("hunter2"));
    }

    #[test]
    fn long_unknown_field_names_are_cut_short_in_messages() {
        let key = "k".repeat(10_000);
        let err = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","{key}":1}}"#
        ))
        .unwrap_err();
        assert!(err.message.len() < 300, "{}", err.message.len());
    }

    #[test]
    fn wrong_types_are_rejected_naming_the_field() {
        for (body, field) in [
            (
                format!(r#"{{"UserPoolId":"{POOL}","Username":7}}"#),
                "Username",
            ),
            (
                format!(r#"{{"UserPoolId":["{POOL}"],"Username":"a"}}"#),
                "UserPoolId",
            ),
            (
                format!(r#"{{"UserPoolId":"{POOL}","Username":"a","ClientMetadata":{{"k":1}}}}"#),
                "ClientMetadata",
            ),
            (
                format!(r#"{{"UserPoolId":"{POOL}","Username":"a","ClientMetadata":"k=v"}}"#),
                "ClientMetadata",
            ),
            (
                format!(r#"{{"UserPoolId":"{POOL}","Username":"a","Reason":5}}"#),
                "Reason",
            ),
        ] {
            let err = parse(&body).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{body}: {}", err.message);
        }
    }

    #[test]
    fn trailing_garbage_and_non_objects_are_rejected() {
        assert!(parse(&format!(r#"{{"UserPoolId":"{POOL}","Username":"a"}} x"#)).is_err());
        assert!(parse(r#""diego""#).is_err());
        assert!(parse("").is_err());
        assert!(parse("[1]").is_err());
    }

    #[test]
    fn missing_fields_are_named() {
        let err = parse(&format!(r#"{{"UserPoolId":"{POOL}"}}"#)).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("Username"));
        let err = parse(r#"{"Username":"a"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("UserPoolId"));
    }

    #[test]
    fn default_pool_fills_a_missing_pool_id_only() {
        let default = UserPoolId::parse("eu-west-1_bbbbbbbbb").unwrap();
        let req = ResetRequest::from_json(r#"{"Username":"a"}"#, Some(&default)).unwrap();
        assert_eq!(req.user_pool_id, default);
        let req = ResetRequest::from_json(
            &format!(r#"{{"UserPoolId":"{POOL}","Username":"a"}}"#),
            Some(&default),
        )
        .unwrap();
        assert_eq!(req.user_pool_id.as_str(), POOL);
    }

    #[test]
    fn pool_ids_are_validated_as_cognito_does() {
        assert!(UserPoolId::parse(POOL).is_ok());
        assert!(
            UserPoolId::parse("us-west-2_1f950f4f389b723d0775ea6ef7e4b3c47b3100fa6981c").is_ok()
        );
        for bad in [
            "",
            "us-west-2",
            "_abc",
            "us-west-2_",
            "us west-2_abc",
            "us-west-2_ab-c",
            &format!("us-west-2_{}", "a".repeat(46)),
            "mars-east-1_abc",
            "us-west-9_abc",
            "local_abc",
        ] {
            assert!(UserPoolId::parse(bad).is_err(), "{bad:?}");
        }
        let pool = UserPoolId::parse("eu-west-1_abc").unwrap();
        assert_eq!(pool.region(), "eu-west-1");
        let err = UserPoolId::parse("mars-east-1_abc").unwrap_err();
        assert!(err.contains("not an AWS region"), "{err}");
    }

    #[test]
    fn usernames_are_validated_as_cognito_does() {
        assert!(Username::parse("émile+test@example.com").is_ok());
        assert!(Username::parse(&"a".repeat(128)).is_ok());
        for bad in [
            "",
            "admin ",
            " admin",
            "ad\tmin",
            "ad\u{0}min",
            &"a".repeat(129),
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reason_and_metadata_are_bounded() {
        let long = "x".repeat(MAX_REASON_LEN + 1);
        let err = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","Reason":"{long}"}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("Reason"));
        let big = "v".repeat(MAX_CLIENT_METADATA_BYTES);
        let err = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","ClientMetadata":{{"k":"{big}"}}}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("ClientMetadata"));
    }

    #[test]
    fn a_ticket_is_parsed_in_either_spelling_and_replaces_the_metadata_ticket() {
        for field in ["Ticket", "ticket"] {
            let req = parse(&format!(
                r#"{{"UserPoolId":"{POOL}","Username":"a","ClientMetadata":{{"ticket":"OLD-1","lang":"fr"}},"{field}":"INC0012345"}}"#
            ))
            .unwrap();
            assert_eq!(req.ticket(), Some("INC0012345"), "{field}");
            assert_eq!(req.client_metadata.entries()["ticket"], "INC0012345");
            assert_eq!(req.client_metadata.entries()["lang"], "fr");
        }
        // Without a Ticket, the request's own metadata ticket goes to Cognito unchanged.
        let req = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","ClientMetadata":{{"ticket":"OLD-1"}}}}"#
        ))
        .unwrap();
        assert_eq!(req.ticket(), None);
        assert_eq!(req.client_metadata.entries()["ticket"], "OLD-1");
        // A null Ticket is no ticket.
        let req = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","Ticket":null}}"#
        ))
        .unwrap();
        assert_eq!(req.ticket(), None);
        assert!(req.client_metadata.is_empty());
    }

    #[test]
    fn a_ticket_is_short_printable_ascii() {
        assert!(Ticket::parse(&"A".repeat(MAX_TICKET_LEN)).is_ok());
        assert!(Ticket::parse("HD#42/b").is_ok());
        for bad in [
            "",
            "INC 1",
            "INC\n1",
            "INC\u{0}1",
            "INC-é",
            &"A".repeat(MAX_TICKET_LEN + 1),
        ] {
            assert!(Ticket::parse(bad).is_err(), "{bad:?}");
        }
        for value in ["7", "true", "[\"INC1\"]", "\"INC 1\""] {
            let err = parse(&format!(
                r#"{{"UserPoolId":"{POOL}","Username":"a","Ticket":{value}}}"#
            ))
            .unwrap_err();
            assert_eq!(err.field.as_deref(), Some("Ticket"), "{value}");
        }
        let err = parse(&format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","Ticket":"A","ticket":"B"}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("ticket"));
    }

    #[test]
    fn a_ticket_that_overflows_the_metadata_bounds_is_refused() {
        let entries: String = (0..MAX_CLIENT_METADATA_ENTRIES)
            .map(|i| format!(r#""k{i}":"v""#))
            .collect::<Vec<_>>()
            .join(",");
        let body =
            format!(r#"{{"UserPoolId":"{POOL}","Username":"a","ClientMetadata":{{{entries}}}}}"#);
        assert!(parse(&body).is_ok());
        let body = format!(
            r#"{{"UserPoolId":"{POOL}","Username":"a","ClientMetadata":{{{entries}}},"Ticket":"INC1"}}"#
        );
        let err = parse(&body).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("ClientMetadata"));
        assert!(err.message.contains("Ticket"), "{}", err.message);
    }

    #[test]
    fn client_metadata_debug_shows_keys_not_values() {
        let md = ClientMetadata::parse(BTreeMap::from([(
            "ticket".to_owned(),
            "secret-value".to_owned(),
        )]))
        .unwrap();
        let shown = format!("{md:?}");
        assert!(
            shown.contains("ticket") && !shown.contains("secret-value"),
            "{shown}"
        );
    }
}

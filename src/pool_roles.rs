//! Which account each user pool lives in, and the role that reaches it (`POOL_ROLES`).
//!
//! `POOL_ROLES` is a JSON object from user pool id to either a role ARN or
//! `{"roleArn": "...", "externalId": "..."}`. A pool it names is reached through that role (in
//! the role's account); any other pool through the function's own role, in the function's own
//! account (`FUNCTION_ACCOUNT_ID`, which the template sets to `AWS::AccountId`).
//!
//! Pure data: validated once at start-up ([`PoolRoles::parse`]) and by `reset-policy lint
//! --pool-roles`; the credentials themselves are the AWS layer's (`aws::accounts`).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::request::UserPoolId;

/// IAM's bounds of an external id.
pub const EXTERNAL_ID_LEN: std::ops::RangeInclusive<usize> = 2..=1224;
/// IAM's bound of a role ARN.
const MAX_ROLE_ARN_LEN: usize = 2048;
/// IAM's bound of a role name.
const MAX_ROLE_NAME_LEN: usize = 64;

/// An IAM role ARN: `arn:<partition>:iam::<account>:role/<path/><name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleArn {
    arn: String,
    /// Where the account id starts and ends in `arn`.
    account: (usize, usize),
}

impl RoleArn {
    /// Validates a role ARN (not a user, an assumed-role session or another service's ARN).
    pub fn parse(value: &str) -> Result<RoleArn, String> {
        const SHAPE: &str =
            "must be an IAM role ARN like arn:aws:iam::222233334444:role/cognito-reset-target";
        if value.len() > MAX_ROLE_ARN_LEN {
            return Err(format!("{SHAPE} (at most {MAX_ROLE_ARN_LEN} characters)"));
        }
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(SHAPE.to_owned());
        };
        let name = resource.strip_prefix("role/").map(|rest| {
            // role/<path/>name: the name is after the last slash.
            (rest, rest.rsplit('/').next().unwrap_or(""))
        });
        let valid = *arn == "arn"
            && !partition.is_empty()
            && partition
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-')
            && *service == "iam"
            && region.is_empty()
            && account.len() == 12
            && account.chars().all(|c| c.is_ascii_digit())
            && name.is_some_and(|(path, name)| {
                (1..=MAX_ROLE_NAME_LEN).contains(&name.len())
                    && path
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
                    && !path.contains("//")
            });
        if !valid {
            return Err(SHAPE.to_owned());
        }
        let start = arn.len() + partition.len() + service.len() + region.len() + 4;
        Ok(RoleArn {
            arn: value.to_owned(),
            account: (start, start + 12),
        })
    }

    /// The ARN as given.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The role's account id (12 digits).
    pub fn account(&self) -> &str {
        &self.arn[self.account.0..self.account.1]
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// The role that reaches one pool, and the external id its trust policy asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolRole {
    pub role_arn: RoleArn,
    /// `sts:ExternalId`; never logged (it is a shared secret of sorts).
    pub external_id: Option<String>,
}

/// A `POOL_ROLES` entry that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolRolesError {
    #[error(
        "must be a JSON object from user pool id to a role ARN or {{\"roleArn\", \"externalId\"}}: {0}"
    )]
    NotJson(String),
    #[error("entry {entry:?}: {message}")]
    Entry { entry: String, message: String },
}

/// `POOL_ROLES`: the pools reached through another role; every other pool is the function's
/// own account's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolRoles {
    roles: BTreeMap<String, PoolRole>,
}

impl PoolRoles {
    /// Parses and validates `POOL_ROLES`: every key a user pool id, every value a role ARN or
    /// `{"roleArn": ..., "externalId": ...}` (no other field), the external id 2–1224 of the
    /// characters IAM allows (`[\w+=,.@:/-]`).
    pub fn parse(text: &str) -> Result<PoolRoles, PoolRolesError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| PoolRolesError::NotJson(e.to_string()))?;
        let Value::Object(entries) = value else {
            return Err(PoolRolesError::NotJson("not an object".into()));
        };
        let mut roles = BTreeMap::new();
        for (pool, role) in entries {
            let entry = |message: String| PoolRolesError::Entry {
                entry: pool.clone(),
                message,
            };
            UserPoolId::parse(&pool).map_err(|e| entry(format!("not a user pool id: {e}")))?;
            let (arn, external_id) = match &role {
                Value::String(arn) => (arn.as_str(), None),
                Value::Object(fields) => {
                    if let Some(other) = fields
                        .keys()
                        .find(|k| !matches!(k.as_str(), "roleArn" | "externalId"))
                    {
                        return Err(entry(format!(
                            "unknown field {other:?} (only \"roleArn\" and \"externalId\")"
                        )));
                    }
                    let arn = match fields.get("roleArn") {
                        Some(Value::String(arn)) => arn.as_str(),
                        _ => return Err(entry("\"roleArn\" must be a string".into())),
                    };
                    let external_id = match fields.get("externalId") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(id)) => Some(id.clone()),
                        Some(_) => return Err(entry("\"externalId\" must be a string".into())),
                    };
                    (arn, external_id)
                }
                _ => {
                    return Err(entry(
                        "must be a role ARN or {\"roleArn\": ..., \"externalId\": ...}".into(),
                    ));
                }
            };
            let role_arn = RoleArn::parse(arn).map_err(|e| entry(format!("roleArn {e}")))?;
            if let Some(id) = &external_id {
                // The value is not echoed: it may be a secret of the target account's admins.
                let chars = id.chars().count();
                if !EXTERNAL_ID_LEN.contains(&chars)
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c))
                {
                    return Err(entry(format!(
                        "externalId must be {} to {} of the characters A-Z a-z 0-9 _+=,.@:/- (got {chars} characters)",
                        EXTERNAL_ID_LEN.start(),
                        EXTERNAL_ID_LEN.end()
                    )));
                }
            }
            roles.insert(
                pool,
                PoolRole {
                    role_arn,
                    external_id,
                },
            );
        }
        Ok(PoolRoles { roles })
    }

    /// The role that reaches `pool`, when `POOL_ROLES` names it.
    pub fn role_of(&self, pool: &str) -> Option<&PoolRole> {
        self.roles.get(pool)
    }

    /// Every mapped pool and its role.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PoolRole)> {
        self.roles.iter().map(|(pool, role)| (pool.as_str(), role))
    }

    /// Whether no pool is mapped.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }
}

/// The accounts the function acts in: its own, and the one of each mapped pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    /// `FUNCTION_ACCOUNT_ID`; `None` when unset (local runs).
    pub own: Option<String>,
    pub roles: PoolRoles,
}

impl Accounts {
    /// The account `pool` is reached in: its role's, or the function's own (`None` when the
    /// function's own account is not known).
    pub fn account_of(&self, pool: &UserPoolId) -> Option<&str> {
        match self.roles.role_of(pool.as_str()) {
            Some(role) => Some(role.role_arn.account()),
            None => self.own.as_deref(),
        }
    }
}

/// Validates an AWS account id: 12 digits.
pub fn valid_account_id(value: &str) -> bool {
    value.len() == 12 && value.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_arn_knows_its_account_and_other_arns_are_refused() {
        let arn = RoleArn::parse("arn:aws:iam::222233334444:role/team/cognito-reset").unwrap();
        assert_eq!(arn.account(), "222233334444");
        let cn = RoleArn::parse("arn:aws-cn:iam::123456789012:role/r").unwrap();
        assert_eq!(cn.account(), "123456789012");
        for bad in [
            "",
            "role/r",
            "arn:aws:iam::222233334444:user/alice",
            "arn:aws:sts::222233334444:assumed-role/r/session",
            "arn:aws:iam:us-east-1:222233334444:role/r",
            "arn:aws:iam::2222333344:role/r",
            "arn:aws:iam::222233334444:role/",
            "arn:aws:iam::222233334444:role/has space",
            "arn:aws:s3:::bucket",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad:?}");
        }
        let long_name = format!("arn:aws:iam::222233334444:role/{}", "n".repeat(65));
        assert!(RoleArn::parse(&long_name).is_err());
    }

    #[test]
    fn pool_roles_take_an_arn_or_an_object_with_an_external_id() {
        let roles = PoolRoles::parse(
            r#"{"eu-west-1_abc": "arn:aws:iam::222233334444:role/r",
                "us-east-1_xyz": {"roleArn": "arn:aws:iam::333344445555:role/r", "externalId": "helpdesk-7"}}"#,
        )
        .unwrap();
        let a = roles.role_of("eu-west-1_abc").unwrap();
        assert_eq!(a.role_arn.account(), "222233334444");
        assert_eq!(a.external_id, None);
        let b = roles.role_of("us-east-1_xyz").unwrap();
        assert_eq!(b.external_id.as_deref(), Some("helpdesk-7"));
        assert!(roles.role_of("eu-west-1_other").is_none());
        assert!(PoolRoles::parse("{}").unwrap().is_empty());
    }

    #[test]
    fn a_bad_entry_is_named_and_a_secret_external_id_is_not_echoed() {
        let error = |text: &str| PoolRoles::parse(text).unwrap_err().to_string();
        assert!(error("[1]").contains("must be a JSON object"));
        assert!(error("{").contains("must be a JSON object"));
        let e = error(r#"{"not a pool": "arn:aws:iam::222233334444:role/r"}"#);
        assert!(
            e.contains("\"not a pool\"") && e.contains("not a user pool id"),
            "{e}"
        );
        let e = error(r#"{"eu-west-1_abc": "arn:aws:iam::222233334444:user/u"}"#);
        assert!(
            e.contains("\"eu-west-1_abc\"") && e.contains("IAM role ARN"),
            "{e}"
        );
        let e = error(
            r#"{"eu-west-1_abc": {"roleArn": "arn:aws:iam::222233334444:role/r", "externalId": "x"}}"#,
        );
        assert!(
            e.contains("\"eu-west-1_abc\"") && e.contains("2 to 1224"),
            "{e}"
        );
        let long = "s".repeat(1225);
        let e = error(&format!(
            r#"{{"eu-west-1_abc": {{"roleArn": "arn:aws:iam::222233334444:role/r", "externalId": "{long}"}}}}"#
        ));
        assert!(e.contains("1225 characters") && !e.contains(&long), "{e}");
        let e = error(
            r#"{"eu-west-1_abc": {"roleArn": "arn:aws:iam::222233334444:role/r", "externalId": "has space"}}"#,
        );
        assert!(e.contains("externalId") && !e.contains("has space"), "{e}");
        let e = error(r#"{"eu-west-1_abc": {"role": "arn:aws:iam::222233334444:role/r"}}"#);
        assert!(e.contains("unknown field \"role\""), "{e}");
        let e = error(r#"{"eu-west-1_abc": 7}"#);
        assert!(e.contains("must be a role ARN"), "{e}");
    }

    #[test]
    fn a_mapped_pool_is_in_its_roles_account_and_others_in_the_functions_own() {
        let accounts = Accounts {
            own: Some("111122223333".into()),
            roles: PoolRoles::parse(r#"{"eu-west-1_abc": "arn:aws:iam::222233334444:role/r"}"#)
                .unwrap(),
        };
        let pool = |id| UserPoolId::parse(id).unwrap();
        assert_eq!(
            accounts.account_of(&pool("eu-west-1_abc")),
            Some("222233334444")
        );
        assert_eq!(
            accounts.account_of(&pool("eu-west-1_def")),
            Some("111122223333")
        );
        let unknown = Accounts {
            own: None,
            ..accounts
        };
        assert_eq!(unknown.account_of(&pool("eu-west-1_def")), None);
    }
}

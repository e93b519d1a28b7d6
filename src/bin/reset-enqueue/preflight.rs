//! The preflight: before anything is sent, `DescribeUserPool` for every pool in the file, so that
//! a mass reset that Cognito's default email sender cannot deliver is refused up front.
//!
//! A pool that sends email with Cognito's default sender (`EmailSendingAccount`
//! `COGNITO_DEFAULT`, or no email configuration) sends about [`DEFAULT_SENDER_DAILY_LIMIT`]
//! emails a day; past that every reset ends REJECTED `delivery-limit`. With more users of such
//! a pool in the file (or a pool that could not be described), the run is refused (exit 2)
//! unless `--allow-default-email`. The findings (sender, account recovery setting, users per
//! pool) are printed either way.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cognitoidentityprovider::Client;
use aws_sdk_cognitoidentityprovider::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_cognitoidentityprovider::types::{EmailSendingAccountType, UserPoolType};
use cognito_reset::request::UserPoolId;

use crate::input::Entry;

/// About how many emails a day Cognito's default sender sends for a pool.
pub const DEFAULT_SENDER_DAILY_LIMIT: usize = 50;

/// How a pool sends email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// Cognito's default sender (`COGNITO_DEFAULT`, or no email configuration).
    CognitoDefault,
    /// The pool's own Amazon SES configuration (`DEVELOPER`), from this identity when named.
    Ses { source: Option<String> },
    /// `DescribeUserPool` failed: why.
    Unknown(String),
}

/// What the preflight found about one pool of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub pool: String,
    /// Users of this pool in the file (to be sent by this run).
    pub users: usize,
    pub sender: Sender,
    /// The account recovery setting: recovery mechanisms by priority, or Cognito's legacy
    /// behaviour when the pool has none; `None` when the pool could not be described.
    pub recovery: Option<String>,
}

impl Finding {
    /// Whether this pool's users, this many, may run into the default sender's daily limit.
    fn over_default_limit(&self) -> bool {
        self.users > DEFAULT_SENDER_DAILY_LIMIT && !matches!(self.sender, Sender::Ses { .. })
    }

    /// One line of the summary.
    pub fn line(&self) -> String {
        let sender = match &self.sender {
            Sender::CognitoDefault => format!(
                "email sender COGNITO_DEFAULT (Cognito's default: about {DEFAULT_SENDER_DAILY_LIMIT} emails a day)"
            ),
            Sender::Ses {
                source: Some(source),
            } => format!("email sender Amazon SES ({source})"),
            Sender::Ses { source: None } => "email sender Amazon SES".to_owned(),
            Sender::Unknown(why) => {
                format!("email sender unknown (DescribeUserPool failed: {why})")
            }
        };
        let recovery = self.recovery.as_deref().unwrap_or("unknown");
        format!(
            "preflight: pool {}: {} user(s) in the file; {sender}; account recovery: {recovery}",
            self.pool, self.users
        )
    }
}

/// Users per pool of `entries`.
pub fn users_per_pool(entries: &[Entry]) -> BTreeMap<String, usize> {
    let mut pools = BTreeMap::new();
    for entry in entries {
        *pools.entry(entry.key.pool.clone()).or_default() += 1;
    }
    pools
}

/// What a described pool says: its sender and its recovery setting.
pub fn read_pool(pool: &UserPoolType) -> (Sender, String) {
    let email = pool.email_configuration();
    let sender = match email.and_then(|e| e.email_sending_account()) {
        Some(EmailSendingAccountType::Developer) => Sender::Ses {
            source: email.and_then(|e| e.source_arn()).map(str::to_owned),
        },
        // COGNITO_DEFAULT, no configuration, or a value added after this build: the default
        // sender's limit is the safe assumption.
        _ => Sender::CognitoDefault,
    };
    let recovery = match pool.account_recovery_setting() {
        Some(setting) if !setting.recovery_mechanisms().is_empty() => {
            let mut mechanisms: Vec<_> = setting.recovery_mechanisms().iter().collect();
            mechanisms.sort_by_key(|m| m.priority());
            mechanisms
                .iter()
                .map(|m| m.name().as_str())
                .collect::<Vec<_>>()
                .join(" then ")
        }
        _ => "not set (Cognito's legacy behaviour: a verified phone first, then email)".to_owned(),
    };
    (sender, recovery)
}

/// `DescribeUserPool` for every pool of `entries` (one client per region), in pool order.
pub async fn describe(entries: &[Entry]) -> Vec<Finding> {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await;
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    let mut findings = Vec::new();
    for (pool, users) in users_per_pool(entries) {
        // Pools were validated by the input parser; a region comes from the id's prefix.
        let region = UserPoolId::parse(&pool)
            .map(|p| p.region().to_owned())
            .unwrap_or_default();
        let client = clients
            .entry(region.clone())
            .or_insert_with(|| {
                Client::from_conf(
                    aws_sdk_cognitoidentityprovider::config::Builder::from(&config)
                        .region(aws_config::Region::new(region))
                        .build(),
                )
            })
            .clone();
        let (sender, recovery) = match client.describe_user_pool().user_pool_id(&pool).send().await
        {
            Ok(output) => match output.user_pool() {
                Some(described) => {
                    let (sender, recovery) = read_pool(described);
                    (sender, Some(recovery))
                }
                None => (Sender::Unknown("no pool in the answer".to_owned()), None),
            },
            Err(error) => {
                let why = match (error.code(), error.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_owned(),
                    _ => DisplayErrorContext(&error).to_string(),
                };
                (Sender::Unknown(why), None)
            }
        };
        findings.push(Finding {
            pool,
            users,
            sender,
            recovery,
        });
    }
    findings
}

/// The refusal, when a pool of the file may run into the default sender's daily limit and
/// `--allow-default-email` was not given.
pub fn check(findings: &[Finding], allow_default_email: bool) -> Result<(), String> {
    if allow_default_email {
        return Ok(());
    }
    let over: Vec<String> = findings
        .iter()
        .filter(|f| f.over_default_limit())
        .map(|f| match &f.sender {
            Sender::Unknown(_) => format!(
                "pool {} has {} users in the file and its email sender could not be read \
                 (DescribeUserPool failed: the operator needs cognito-idp:DescribeUserPool)",
                f.pool, f.users
            ),
            _ => format!(
                "pool {} has {} users in the file and sends email with Cognito's default sender",
                f.pool, f.users
            ),
        })
        .collect();
    if over.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}. Cognito's default sender sends about {DEFAULT_SENDER_DAILY_LIMIT} emails a day per \
         pool: past that every reset ends REJECTED delivery-limit. Configure the pool to send \
         email with Amazon SES (EmailConfiguration EmailSendingAccount=DEVELOPER), or pass \
         --allow-default-email to send anyway. Nothing was sent",
        over.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cognitoidentityprovider::types::{
        AccountRecoverySettingType, EmailConfigurationType, RecoveryOptionNameType,
        RecoveryOptionType,
    };

    fn finding(users: usize, sender: Sender) -> Finding {
        Finding {
            pool: "us-west-2_abc".into(),
            users,
            sender,
            recovery: None,
        }
    }

    #[test]
    fn more_than_the_daily_limit_on_the_default_sender_is_refused_unless_allowed() {
        let many = [finding(51, Sender::CognitoDefault)];
        let refusal = check(&many, false).expect_err("refused");
        assert!(refusal.contains("us-west-2_abc") && refusal.contains("51 users"));
        assert!(refusal.contains("50 emails a day") && refusal.contains("Amazon SES"));
        assert!(refusal.contains("--allow-default-email"));
        assert_eq!(check(&many, true), Ok(()));
        // At the limit, or with SES, it passes.
        assert_eq!(check(&[finding(50, Sender::CognitoDefault)], false), Ok(()));
        let ses = Sender::Ses { source: None };
        assert_eq!(check(&[finding(5000, ses)], false), Ok(()));
        // A pool that could not be described is not assumed to have SES.
        let unknown = [finding(51, Sender::Unknown("AccessDeniedException".into()))];
        assert!(check(&unknown, false).is_err());
        assert_eq!(
            check(&[finding(3, Sender::Unknown("x".into()))], false),
            Ok(())
        );
    }

    #[test]
    fn a_pool_without_email_configuration_uses_the_default_sender() {
        let bare = UserPoolType::builder().build();
        let (sender, recovery) = read_pool(&bare);
        assert_eq!(sender, Sender::CognitoDefault);
        assert!(recovery.contains("legacy"), "{recovery}");

        let ses = UserPoolType::builder()
            .email_configuration(
                EmailConfigurationType::builder()
                    .email_sending_account(EmailSendingAccountType::Developer)
                    .source_arn("arn:aws:ses:us-west-2:123456789012:identity/example.com")
                    .build(),
            )
            .account_recovery_setting(
                AccountRecoverySettingType::builder()
                    .recovery_mechanisms(
                        RecoveryOptionType::builder()
                            .name(RecoveryOptionNameType::VerifiedPhoneNumber)
                            .priority(2)
                            .build()
                            .expect("option"),
                    )
                    .recovery_mechanisms(
                        RecoveryOptionType::builder()
                            .name(RecoveryOptionNameType::VerifiedEmail)
                            .priority(1)
                            .build()
                            .expect("option"),
                    )
                    .build(),
            )
            .build();
        let (sender, recovery) = read_pool(&ses);
        assert!(matches!(sender, Sender::Ses { source: Some(s) } if s.ends_with("example.com")));
        assert_eq!(recovery, "verified_email then verified_phone_number");
    }
}

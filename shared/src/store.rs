use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};

use crate::{Error, PasswordPolicy, SecretProblem, stage};

/// What `DescribeSecret` says about a secret's rotation.
#[derive(Debug, Clone, Default)]
pub struct SecretVersions {
    /// The secret's ARN, as `DescribeSecret` answers it.
    pub arn: Option<String>,
    pub rotation_enabled: bool,
    /// Version id -> staging labels.
    pub stages: HashMap<String, Vec<String>>,
    /// The rotation function's ARN, when one is configured.
    pub rotation_lambda_arn: Option<String>,
    /// The rotation schedule, for people: `rate(10 days)`, `cron(...)` or `every 30 days`, and
    /// the rotation window (`within 2h`) when one is set.
    pub rotation_schedule: Option<String>,
    /// When the secret was last rotated (RFC 3339).
    pub last_rotated: Option<String>,
    /// When Secrets Manager will next rotate it (RFC 3339).
    pub next_rotation: Option<String>,
}

impl SecretVersions {
    pub fn has_stage(&self, version: &str, label: &str) -> bool {
        self.stages.get(version).is_some_and(|labels| labels.iter().any(|l| l == label))
    }

    /// The version that holds `label`, if any.
    pub fn version_with(&self, label: &str) -> Option<&str> {
        self.stages.iter().find(|(_, labels)| labels.iter().any(|l| l == label)).map(|(v, _)| v.as_str())
    }
}

/// The Secrets Manager calls the rotation steps make.
///
/// Implemented on the SDK client; the unit tests use an in-memory implementation
/// that can inject faults.
pub trait SecretStore: Send + Sync + 'static {
    fn describe(&self, secret_id: &str) -> impl Future<Output = Result<SecretVersions, Error>> + Send;

    /// The value of the version with `label` (and `version_id`, when given); `None` when
    /// no such version holds a value.
    fn get_value(
        &self,
        secret_id: &str,
        version_id: Option<&str>,
        label: &str,
    ) -> impl Future<Output = Result<Option<SecretString>, Error>> + Send;

    /// Stores `value` as version `token`, staged `AWSPENDING`.
    fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&SecretString>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Moves `label` to `to_version` (if given) and off `from_version` (if given).
    fn move_stage(
        &self,
        secret_id: &str,
        label: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    fn random_password(&self, policy: &PasswordPolicy) -> impl Future<Output = Result<SecretString, Error>> + Send;
}

/// The real Secrets Manager, through the AWS SDK.
#[derive(Debug, Clone)]
pub struct SecretsManager {
    client: Client,
}

impl SecretsManager {
    pub fn new(client: Client) -> Self {
        SecretsManager { client }
    }

    /// A client from the standard AWS configuration chain: region, credentials and
    /// `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_SECRETS_MANAGER` from the environment.
    /// `SECRETS_MANAGER_ENDPOINT`, which AWS's templates read, is honoured too.
    pub async fn from_env() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(&config).timeout_config(timeouts());
        if let Ok(endpoint) = std::env::var("SECRETS_MANAGER_ENDPOINT")
            && !endpoint.is_empty()
        {
            builder = builder.endpoint_url(endpoint);
        }
        SecretsManager::new(Client::from_conf(builder.build()))
    }
}

/// Bounds on every Secrets Manager call: a stalled endpoint (a VPC endpoint's security group,
/// a NAT that drops packets) gives a retryable error naming the call, not a Lambda timeout.
/// An attempt is retried by the SDK (3 attempts in all), and the whole call stays well inside
/// the 30 s function timeout the template sets.
fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(12))
        .build()
}

fn sdk_error<E, R>(operation: &'static str, secret_id: &str, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let retryable = match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            code.contains("Throttling") || code == "InternalServiceError" || code == "LimitExceededException"
        }
        // No answer, or an answer that was cut off: the call may work next time.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => false,
    };
    // Display only, never Debug: the Debug form of an SDK error holds the raw HTTP response,
    // whose body can be a secret value.
    let detail = match &error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!("{}: {}", err.code().unwrap_or("error"), err.message().unwrap_or("no message"))
        }
        other => crate::with_causes(other),
    };
    Error::SecretsManager { operation, secret: secret_id.to_owned(), detail, retryable }
}

impl SecretStore for SecretsManager {
    async fn describe(&self, secret_id: &str) -> Result<SecretVersions, Error> {
        let out = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeSecret", secret_id, e))?;
        let date = |d: Option<&aws_sdk_secretsmanager::primitives::DateTime>| {
            d.and_then(|d| d.fmt(aws_sdk_secretsmanager::primitives::DateTimeFormat::DateTime).ok())
        };
        Ok(SecretVersions {
            arn: out.arn().map(str::to_owned),
            rotation_enabled: out.rotation_enabled().unwrap_or(false),
            stages: out.version_ids_to_stages().cloned().unwrap_or_default(),
            rotation_lambda_arn: out.rotation_lambda_arn().map(str::to_owned),
            rotation_schedule: out.rotation_rules().and_then(|rules| {
                let schedule = match (rules.schedule_expression(), rules.automatically_after_days()) {
                    (Some(expression), _) => expression.to_owned(),
                    (None, Some(days)) => format!("every {days} days"),
                    (None, None) => return None,
                };
                Some(match rules.duration() {
                    Some(window) => format!("{schedule}, within {window}"),
                    None => schedule,
                })
            }),
            last_rotated: date(out.last_rotated_date()),
            next_rotation: date(out.next_rotation_date()),
        })
    }

    async fn get_value(
        &self,
        secret_id: &str,
        version_id: Option<&str>,
        label: &str,
    ) -> Result<Option<SecretString>, Error> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .set_version_id(version_id.map(str::to_owned))
            .version_stage(label)
            .send()
            .await;
        match result {
            Ok(out) => match out.secret_string() {
                Some(text) => Ok(Some(SecretString::from(text))),
                None => Err(Error::InvalidSecret {
                    secret: secret_id.to_owned(),
                    stage: label.to_owned(),
                    problem: SecretProblem::Binary,
                }),
            },
            Err(SdkError::ServiceError(e)) if e.err().is_resource_not_found_exception() => Ok(None),
            Err(e) => Err(sdk_error("GetSecretValue", secret_id, e)),
        }
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&SecretString>,
    ) -> Result<(), Error> {
        self.client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(token)
            .secret_string(value.expose_secret())
            .version_stages(stage::PENDING)
            .set_rotation_token(rotation_token.map(|t| t.expose_secret().to_owned()))
            .send()
            .await
            .map_err(|e| sdk_error("PutSecretValue", secret_id, e))?;
        Ok(())
    }

    async fn move_stage(
        &self,
        secret_id: &str,
        label: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> Result<(), Error> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(label)
            .set_move_to_version_id(to_version.map(str::to_owned))
            .set_remove_from_version_id(from_version.map(str::to_owned))
            .send()
            .await
            .map_err(|e| sdk_error("UpdateSecretVersionStage", secret_id, e))?;
        Ok(())
    }

    async fn random_password(&self, policy: &PasswordPolicy) -> Result<SecretString, Error> {
        let out = self
            .client
            .get_random_password()
            .password_length(policy.length)
            .set_exclude_characters(Some(policy.exclude_characters.clone()).filter(|c| !c.is_empty()))
            .exclude_numbers(policy.exclude_numbers)
            .exclude_punctuation(policy.exclude_punctuation)
            .exclude_uppercase(policy.exclude_uppercase)
            .exclude_lowercase(policy.exclude_lowercase)
            .require_each_included_type(policy.require_each_included_type)
            .send()
            .await
            .map_err(|e| sdk_error("GetRandomPassword", "(none)", e))?;
        let password = out.random_password().ok_or_else(|| Error::SecretsManager {
            operation: "GetRandomPassword",
            secret: "(none)".into(),
            detail: "the answer held no password".into(),
            retryable: true,
        })?;
        Ok(SecretString::from(password))
    }
}

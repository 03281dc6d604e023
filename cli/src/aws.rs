//! The AWS clients, from the default chain as the functions build theirs, and what `status`
//! reads of a secret.

use std::time::Duration;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::{DateTime, DateTimeFormat};
use serde_json::{Value, json};

use crate::Failure;

pub async fn config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A Secrets Manager client as the functions make theirs: `AWS_ENDPOINT_URL`, and
/// `SECRETS_MANAGER_ENDPOINT` of AWS's templates, and bounded calls.
pub fn secrets_client(config: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(12))
        .build();
    let mut builder = aws_sdk_secretsmanager::config::Builder::from(config).timeout_config(timeouts);
    if let Ok(endpoint) = std::env::var("SECRETS_MANAGER_ENDPOINT")
        && !endpoint.is_empty()
    {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_secretsmanager::Client::from_conf(builder.build())
}

/// An SDK error as the functions word it: the call, the secret, the service's code and message
/// (Display only: the Debug form holds the raw response).
pub fn sdk_failure<E, R>(operation: &str, target: &str, error: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match &error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!("{}: {}", err.code().unwrap_or("error"), err.message().unwrap_or("no message"))
        }
        other => rotation::with_causes(other),
    };
    Failure::failed(format!("{operation} on {target} failed: {detail}"))
}

pub fn date(date: Option<&DateTime>) -> Option<String> {
    date.and_then(|d| d.fmt(DateTimeFormat::DateTime).ok())
}

/// One version of a secret.
#[derive(Debug, Clone)]
pub struct Version {
    pub id: String,
    pub stages: Vec<String>,
    pub created: Option<DateTime>,
}

/// What `DescribeSecret` and `ListSecretVersionIds` say about a secret.
#[derive(Debug, Clone)]
pub struct SecretState {
    pub name: String,
    pub arn: String,
    pub rotation_enabled: bool,
    pub function: Option<String>,
    pub rules: Value,
    pub last_rotated: Option<DateTime>,
    pub next_rotation: Option<DateTime>,
    /// Newest first.
    pub versions: Vec<Version>,
}

impl SecretState {
    pub async fn read(client: &aws_sdk_secretsmanager::Client, secret_id: &str) -> Result<Self, Failure> {
        let shown = rotation::shown(secret_id);
        let described = client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| sdk_failure("Secrets Manager DescribeSecret", &format!("secret {shown}"), e))?;
        let mut created = std::collections::HashMap::new();
        let mut next_token = None;
        loop {
            let page = client
                .list_secret_version_ids()
                .secret_id(secret_id)
                .include_deprecated(true)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| sdk_failure("Secrets Manager ListSecretVersionIds", &format!("secret {shown}"), e))?;
            for version in page.versions() {
                if let Some(id) = version.version_id() {
                    created.insert(id.to_owned(), version.created_date().cloned());
                }
            }
            next_token = page.next_token().map(str::to_owned);
            if next_token.is_none() {
                break;
            }
        }
        let mut versions: Vec<Version> = described
            .version_ids_to_stages()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|(id, mut stages)| {
                stages.sort_by_key(|s| stage_order(s));
                Version { created: created.get(&id).cloned().flatten(), id, stages }
            })
            .collect();
        // Versions that hold no label (deprecated) are listed too, after the labelled ones.
        for (id, date) in created {
            if !versions.iter().any(|v| v.id == id) {
                versions.push(Version { id, stages: Vec::new(), created: date });
            }
        }
        versions.sort_by(|a, b| {
            let rank = |v: &Version| v.stages.iter().map(|s| stage_order(s)).min().unwrap_or(9);
            rank(a).cmp(&rank(b)).then_with(|| b.created.map(|d| d.secs()).cmp(&a.created.map(|d| d.secs())))
        });
        let rules = described.rotation_rules().map(|r| {
            json!({
                "automatically_after_days": r.automatically_after_days(),
                "duration": r.duration(),
                "schedule_expression": r.schedule_expression(),
            })
        });
        Ok(SecretState {
            name: described.name().unwrap_or(secret_id).to_owned(),
            arn: described.arn().unwrap_or(secret_id).to_owned(),
            rotation_enabled: described.rotation_enabled().unwrap_or(false),
            function: described.rotation_lambda_arn().map(str::to_owned),
            rules: rules.unwrap_or(Value::Null),
            last_rotated: described.last_rotated_date().cloned(),
            next_rotation: described.next_rotation_date().cloned(),
            versions,
        })
    }

    /// The version staged `AWSPENDING` that is not `AWSCURRENT`: a rotation in progress (or stuck).
    pub fn in_progress(&self) -> Option<&Version> {
        self.versions.iter().find(|v| {
            v.stages.iter().any(|s| s == rotation::stage::PENDING)
                && !v.stages.iter().any(|s| s == rotation::stage::CURRENT)
        })
    }

    /// The rules for people: "every 30 days", "rate(4 hours), window 2h".
    pub fn rules_text(&self) -> String {
        if self.rules.is_null() {
            return "none".into();
        }
        let mut parts = Vec::new();
        if let Some(days) = self.rules["automatically_after_days"].as_i64() {
            parts.push(format!("every {days} days"));
        }
        if let Some(expression) = self.rules["schedule_expression"].as_str() {
            parts.push(expression.to_owned());
        }
        if let Some(window) = self.rules["duration"].as_str() {
            parts.push(format!("window {window}"));
        }
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    }

    pub fn versions_json(&self) -> Value {
        Value::Array(
            self.versions
                .iter()
                .map(|v| json!({"id": v.id, "stages": v.stages, "created": date(v.created.as_ref())}))
                .collect(),
        )
    }

    /// Version id -> stages, the labelled versions only, for "before" and "after".
    pub fn stages_json(&self) -> Value {
        Value::Object(
            self.versions.iter().filter(|v| !v.stages.is_empty()).map(|v| (v.id.clone(), json!(v.stages))).collect(),
        )
    }
}

fn stage_order(stage: &str) -> u8 {
    match stage {
        rotation::stage::CURRENT => 0,
        rotation::stage::PENDING => 1,
        rotation::stage::PREVIOUS => 2,
        _ => 3,
    }
}

/// When `date` is from now, for people: "4 minutes ago", "in 30 days".
pub fn ago(date: &DateTime) -> String {
    let seconds = ago_seconds(date);
    let span = |s: i64| match s {
        0..=119 => format!("{s} seconds"),
        120..=7199 => format!("{} minutes", s / 60),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    };
    if seconds >= 0 { format!("{} ago", span(seconds)) } else { format!("in {}", span(-seconds)) }
}

/// Seconds since `date`.
pub fn ago_seconds(date: &DateTime) -> i64 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    now - date.secs()
}

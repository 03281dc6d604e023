use std::fmt;

use secrecy::SecretString;

use crate::Error;

/// One of the four rotation steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Step {
    type Err = Error;

    fn from_str(step: &str) -> Result<Self, Error> {
        match step {
            "createSecret" => Ok(Step::Create),
            "setSecret" => Ok(Step::Set),
            "testSecret" => Ok(Step::Test),
            "finishSecret" => Ok(Step::Finish),
            other => Err(Error::UnknownStep(other.chars().take(64).collect())),
        }
    }
}

/// The event Secrets Manager sends to a rotation function.
///
/// `aws_lambda_events` has no `RotationToken`, which must be passed back to
/// `PutSecretValue` when present, so this crate owns the type.
#[derive(Debug)]
pub struct RotationEvent {
    pub step: Step,
    /// The secret's ARN when AWS invokes the function; emulators send its name.
    pub secret_id: String,
    /// The version id of the new secret version: the idempotency key of the rotation.
    pub token: String,
    /// Identifies the caller to `PutSecretValue`; a credential, never logged.
    pub rotation_token: Option<SecretString>,
}

impl RotationEvent {
    /// Parses the event, naming the field that is missing or malformed and never echoing
    /// a value (a `RotationToken` of the wrong type would otherwise end up in a log line).
    pub fn from_json(value: serde_json::Value) -> Result<Self, Error> {
        let serde_json::Value::Object(fields) = value else {
            return Err(Error::InvalidEvent(
                "expected a JSON object with Step, SecretId and ClientRequestToken".into(),
            ));
        };
        let field = |name: &'static str| -> Result<Option<String>, Error> {
            match fields.get(name) {
                None => Ok(None),
                Some(serde_json::Value::String(text)) if text.is_empty() => {
                    Err(Error::InvalidEvent(format!("field `{name}` is empty")))
                }
                Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
                Some(_) => Err(Error::InvalidEvent(format!("field `{name}` must be a string"))),
            }
        };
        let required =
            |name: &'static str| field(name)?.ok_or_else(|| Error::InvalidEvent(format!("missing field `{name}`")));
        Ok(RotationEvent {
            step: required("Step")?.parse()?,
            secret_id: required("SecretId")?,
            token: required("ClientRequestToken")?,
            rotation_token: field("RotationToken")?.map(SecretString::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    #[test]
    fn parses_an_event_from_aws_with_rotation_token() {
        let event = RotationEvent::from_json(json!({
            "Step": "setSecret",
            "SecretId": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
            "ClientRequestToken": "4f1c1d36-0000-4000-8000-000000000001",
            "RotationToken": "opaque-token-value"
        }))
        .unwrap();
        assert_eq!(event.step, Step::Set);
        assert_eq!(event.secret_id, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf");
        assert_eq!(event.token, "4f1c1d36-0000-4000-8000-000000000001");
        assert_eq!(event.rotation_token.unwrap().expose_secret(), "opaque-token-value");
    }

    #[test]
    fn accepts_a_secret_name_and_no_rotation_token() {
        let event = RotationEvent::from_json(json!({
            "Step": "finishSecret", "SecretId": "prod/db", "ClientRequestToken": "t"
        }))
        .unwrap();
        assert_eq!(event.secret_id, "prod/db");
        assert!(event.rotation_token.is_none());
    }

    #[test]
    fn debug_output_hides_the_rotation_token() {
        let event = RotationEvent::from_json(json!({
            "Step": "createSecret", "SecretId": "s", "ClientRequestToken": "t", "RotationToken": "hunter2-token"
        }))
        .unwrap();
        assert!(!format!("{event:?}").contains("hunter2-token"));
    }

    #[test]
    fn names_the_missing_field() {
        let err = RotationEvent::from_json(json!({"Step": "createSecret", "SecretId": "s"})).unwrap_err();
        assert_eq!(err.to_string(), "invalid rotation event: missing field `ClientRequestToken`");
        let err = RotationEvent::from_json(json!({"ClientRequestToken": "t", "SecretId": "s"})).unwrap_err();
        assert_eq!(err.to_string(), "invalid rotation event: missing field `Step`");
        let err = RotationEvent::from_json(json!("createSecret")).unwrap_err();
        assert!(err.to_string().starts_with("invalid rotation event: expected a JSON object"));
    }

    #[test]
    fn rejects_an_unknown_step_by_name() {
        let err = RotationEvent::from_json(json!({
            "Step": "deleteSecret", "SecretId": "s", "ClientRequestToken": "t"
        }))
        .unwrap_err();
        assert_eq!(err.kind(), "UnknownStep");
        assert!(err.to_string().contains("`deleteSecret`"));
    }
}

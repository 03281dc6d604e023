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
            other => Err(Error::UnknownStep(crate::error::shown(&other.chars().take(64).collect::<String>()))),
        }
    }
}

/// The longest `SecretId` Secrets Manager accepts (an ARN; a name has at most 512).
const MAX_SECRET_ID_CHARS: usize = 2048;
/// The longest `ClientRequestToken` Secrets Manager accepts.
const MAX_TOKEN_CHARS: usize = 64;
/// A bound far above any `RotationToken` seen, so an oversized event is refused early.
const MAX_ROTATION_TOKEN_CHARS: usize = 8192;
/// The longest step name a message repeats.
const MAX_STEP_CHARS: usize = 64;

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
        let bounded = |name: &'static str, value: String, limit: usize| -> Result<String, Error> {
            let length = value.chars().count();
            if length > limit {
                return Err(Error::InvalidEvent(format!(
                    "field `{name}` is {length} characters long; Secrets Manager sends at most {limit}"
                )));
            }
            if value.chars().any(char::is_control) {
                return Err(Error::InvalidEvent(format!("field `{name}` holds a control character")));
            }
            Ok(value)
        };
        let step = required("Step")?;
        let step = if step.chars().count() > MAX_STEP_CHARS || step.chars().any(char::is_control) {
            return Err(Error::UnknownStep(crate::error::shown(
                &step.chars().take(MAX_STEP_CHARS).collect::<String>(),
            )));
        } else {
            step.parse()?
        };
        Ok(RotationEvent {
            step,
            secret_id: bounded("SecretId", required("SecretId")?, MAX_SECRET_ID_CHARS)?,
            token: bounded("ClientRequestToken", required("ClientRequestToken")?, MAX_TOKEN_CHARS)?,
            rotation_token: field("RotationToken")?
                .map(|token| bounded("RotationToken", token, MAX_ROTATION_TOKEN_CHARS))
                .transpose()?
                .map(SecretString::from),
        })
    }
}

/// The operator's preflight request, `{"Action": "check", "SecretId": "..."}`: `None` when the
/// event names no `Action` (a rotation step), else the secret to check or the error naming the
/// field that is wrong. No value is echoed.
pub fn check_request(value: &serde_json::Value) -> Option<Result<String, Error>> {
    let fields = value.as_object()?;
    let action = fields.get("Action")?;
    Some(match action {
        serde_json::Value::String(action) if action == "check" => match fields.get("SecretId") {
            None => Err(Error::InvalidEvent("missing field `SecretId` (the secret to check)".into())),
            Some(serde_json::Value::String(id)) if id.is_empty() => {
                Err(Error::InvalidEvent("field `SecretId` is empty".into()))
            }
            Some(serde_json::Value::String(id)) if id.chars().count() > MAX_SECRET_ID_CHARS => {
                Err(Error::InvalidEvent(format!(
                    "field `SecretId` is {} characters long; Secrets Manager accepts at most {MAX_SECRET_ID_CHARS}",
                    id.chars().count()
                )))
            }
            Some(serde_json::Value::String(id)) if id.chars().any(char::is_control) => {
                Err(Error::InvalidEvent("field `SecretId` holds a control character".into()))
            }
            Some(serde_json::Value::String(id)) => Ok(id.clone()),
            Some(_) => Err(Error::InvalidEvent("field `SecretId` must be a string".into())),
        },
        serde_json::Value::String(_) => {
            Err(Error::InvalidEvent("field `Action` names an unknown action: the only action is `check`".into()))
        }
        _ => Err(Error::InvalidEvent("field `Action` must be the string `check`".into())),
    })
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
    fn reads_a_check_request_and_names_the_wrong_field() {
        assert!(check_request(&json!({"Step": "createSecret", "SecretId": "s"})).is_none());
        assert_eq!(check_request(&json!({"Action": "check", "SecretId": "prod/db"})).unwrap().unwrap(), "prod/db");
        let err = check_request(&json!({"Action": "check"})).unwrap().unwrap_err();
        assert_eq!(err.error_type(), "Permanent.InvalidEvent");
        assert!(err.to_string().contains("`SecretId`"), "{err}");
        let err = check_request(&json!({"Action": "rotate-now-secret-value", "SecretId": "s"})).unwrap().unwrap_err();
        assert!(err.to_string().contains("`Action`") && !err.to_string().contains("rotate-now"), "{err}");
        let err = check_request(&json!({"Action": 7, "SecretId": "s"})).unwrap().unwrap_err();
        assert!(err.to_string().contains("`Action`"), "{err}");
        let err = check_request(&json!({"Action": "check", "SecretId": ["s"]})).unwrap().unwrap_err();
        assert!(err.to_string().contains("`SecretId` must be a string"), "{err}");
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

    #[test]
    fn oversized_or_nested_fields_are_refused_without_echo() {
        let huge = "s".repeat(200_000);
        let err =
            RotationEvent::from_json(json!({"Step": "createSecret", "SecretId": huge, "ClientRequestToken": "t"}))
                .unwrap_err();
        assert_eq!(err.error_type(), "Permanent.InvalidEvent");
        assert!(err.to_string().contains("`SecretId` is 200000 characters long"), "{err}");
        assert!(err.to_string().len() < 200, "{err}");
        let long_token = "t".repeat(65);
        let err =
            RotationEvent::from_json(json!({"Step": "setSecret", "SecretId": "s", "ClientRequestToken": long_token}))
                .unwrap_err();
        assert!(err.to_string().contains("`ClientRequestToken` is 65 characters long"), "{err}");
        let err = RotationEvent::from_json(json!({"Step": "setSecret", "SecretId": "a\nb", "ClientRequestToken": "t"}))
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid rotation event: field `SecretId` holds a control character");
        let nested = json!({"Step": {"a": [1, {"b": "secret-in-here"}]}, "SecretId": "s", "ClientRequestToken": "t"});
        let err = RotationEvent::from_json(nested).unwrap_err();
        assert_eq!(err.to_string(), "invalid rotation event: field `Step` must be a string");
        let err =
            RotationEvent::from_json(json!({"Step": "x".repeat(100_000), "SecretId": "s", "ClientRequestToken": "t"}))
                .unwrap_err();
        assert_eq!(err.error_type(), "Permanent.UnknownStep");
        assert!(err.to_string().len() < 200, "{err}");
        for payload in [json!(null), json!(42), json!([{"Step": "createSecret"}]), json!(true)] {
            let err = RotationEvent::from_json(payload).unwrap_err();
            assert_eq!(err.error_type(), "Permanent.InvalidEvent");
        }
    }
}

/// The invocation's payload as the runtime hands it over. Reading it never fails, so that a
/// payload that is no JSON value (or one nested deeper than serde_json's 128 levels) is answered
/// with this crate's `Permanent.InvalidEvent`, not with the runtime's own error type.
#[derive(Debug)]
pub enum Payload {
    Json(serde_json::Value),
    /// What could not be read is not kept: it may hold anything.
    Unreadable,
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Payload::Json(value)
    }
}

impl<'de> serde::Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The runtime reads the payload with this and does not require the input to end after
        // it, so giving up half way is safe.
        Ok(serde_json::Value::deserialize(deserializer).map(Payload::Json).unwrap_or(Payload::Unreadable))
    }
}

#[cfg(test)]
mod payload_tests {
    use serde::Deserialize;

    use super::Payload;

    /// As the Lambda runtime reads a payload: no check that the input ends after it.
    fn read(body: &str) -> Payload {
        let mut deserializer = serde_json::Deserializer::from_str(body);
        Payload::deserialize(&mut deserializer).unwrap()
    }

    #[test]
    fn a_json_payload_is_read_and_any_other_is_unreadable() {
        assert!(matches!(read(r#"{"Step": "createSecret"}"#), Payload::Json(_)));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(read(&deep), Payload::Unreadable));
        assert!(matches!(read("not json"), Payload::Unreadable));
    }
}

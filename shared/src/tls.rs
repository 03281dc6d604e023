use serde_json::Value;

use crate::SecretProblem;

/// How a connection to the target is protected, decided by the secret.
///
/// Whatever the mode, a failed TLS handshake is an error: there is never a silent retry
/// in plain text, unlike AWS's Python templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text. Only when the secret says `"ssl": false` or `"sslmode": "disable"`.
    Disable,
    /// Encrypted, certificate not checked (`"sslmode": "require"`).
    Require,
    /// Encrypted, certificate chain checked, host name not (`"sslmode": "verify-ca"`).
    VerifyCa,
    /// Encrypted, chain and host name checked: the default.
    VerifyFull,
}

impl TlsMode {
    /// Reads `sslmode` (which wins when present) and `ssl` from the secret's fields.
    pub(crate) fn from_fields(ssl: Option<&Value>, sslmode: Option<&Value>) -> Result<Self, SecretProblem> {
        if let Some(mode) = sslmode {
            let invalid = SecretProblem::InvalidField {
                field: "sslmode",
                expected: "one of disable, require, verify-ca, verify-full",
            };
            return match mode.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("disable") => Ok(TlsMode::Disable),
                Some("require") => Ok(TlsMode::Require),
                Some("verify-ca") => Ok(TlsMode::VerifyCa),
                Some("verify-full") => Ok(TlsMode::VerifyFull),
                _ => Err(invalid),
            };
        }
        let invalid = SecretProblem::InvalidField { field: "ssl", expected: "true or false (boolean or string)" };
        match ssl {
            None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(TlsMode::VerifyFull),
            Some(Value::Bool(false)) => Ok(TlsMode::Disable),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" => Ok(TlsMode::VerifyFull),
                "false" => Ok(TlsMode::Disable),
                _ => Err(invalid),
            },
            Some(_) => Err(invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mode(ssl: Option<Value>, sslmode: Option<Value>) -> Result<TlsMode, SecretProblem> {
        TlsMode::from_fields(ssl.as_ref(), sslmode.as_ref())
    }

    #[test]
    fn verifies_fully_unless_told_otherwise() {
        assert_eq!(mode(None, None), Ok(TlsMode::VerifyFull));
        assert_eq!(mode(Some(json!(true)), None), Ok(TlsMode::VerifyFull));
        assert_eq!(mode(Some(json!("true")), None), Ok(TlsMode::VerifyFull));
        assert_eq!(mode(Some(json!("True")), None), Ok(TlsMode::VerifyFull));
    }

    #[test]
    fn plain_text_only_when_the_secret_says_so() {
        assert_eq!(mode(Some(json!(false)), None), Ok(TlsMode::Disable));
        assert_eq!(mode(Some(json!("false")), None), Ok(TlsMode::Disable));
        assert_eq!(mode(None, Some(json!("disable"))), Ok(TlsMode::Disable));
    }

    #[test]
    fn sslmode_wins_over_ssl() {
        assert_eq!(mode(Some(json!(false)), Some(json!("verify-full"))), Ok(TlsMode::VerifyFull));
        assert_eq!(mode(Some(json!(true)), Some(json!("require"))), Ok(TlsMode::Require));
        assert_eq!(mode(None, Some(json!("verify-ca"))), Ok(TlsMode::VerifyCa));
    }

    #[test]
    fn rejects_values_it_cannot_read() {
        assert!(mode(Some(json!("yes please")), None).is_err());
        assert!(mode(Some(json!(1)), None).is_err());
        assert!(mode(None, Some(json!("prefer"))).is_err(), "prefer would allow a plain-text fallback");
        assert!(mode(None, Some(json!("allow"))).is_err());
    }
}

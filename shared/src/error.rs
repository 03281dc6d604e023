/// Everything that can stop a rotation step.
///
/// Messages name the secret, the version, the step, the field or the host: never a
/// password, a key or a `RotationToken`. [`Error::is_retryable`] says whether running
/// the rotation again can succeed without anyone changing anything; Secrets Manager
/// retries either way, but operators alert on the difference.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid rotation event: {0}")]
    InvalidEvent(String),

    #[error("unknown rotation step `{0}`: expected createSecret, setSecret, testSecret or finishSecret")]
    UnknownStep(String),

    #[error("invalid configuration: environment variable {variable} {problem}")]
    Config { variable: &'static str, problem: String },

    #[error("rotation is not enabled for secret {secret}")]
    RotationDisabled { secret: String },

    #[error("secret {secret} has no version {token}: the ClientRequestToken is not a version of this secret")]
    UnknownVersion { secret: String, token: String },

    #[error("version {token} of secret {secret} is not staged AWSPENDING (its stages: {stages})")]
    NotPending { secret: String, token: String, stages: String },

    #[error("secret {secret} has no value staged {stage}")]
    MissingValue { secret: String, stage: String },

    #[error("the {stage} value of secret {secret} is invalid: {problem}")]
    InvalidSecret { secret: String, stage: String, problem: SecretProblem },

    #[error("Secrets Manager {operation} on secret {secret} failed: {detail}")]
    SecretsManager { operation: &'static str, secret: String, detail: String, retryable: bool },

    #[error(
        "the AWSPENDING secret names {pending} but the AWSCURRENT secret names {current}: \
         single-user rotation changes the password of one user on one host"
    )]
    UserMismatch { current: String, pending: String },

    #[error("the {strategy} strategy needs a master secret, but field `masterarn` of secret {secret} is missing")]
    MasterArnMissing { secret: String, strategy: crate::Strategy },

    #[error("the master secret {masterarn}, named by field `masterarn` of secret {secret}, {problem}")]
    MasterSecret { secret: String, masterarn: String, problem: String },

    #[error(
        "the AWSPENDING secret names {pending} but alternating-users rotation expects {expected}, \
         the other user of {current}"
    )]
    NotAlternating { current: String, pending: String, expected: String },

    #[error(
        "the AWSCURRENT password of {account} is rejected: a secret whose current credentials do not log in \
         cannot be trusted to name the user to create or change"
    )]
    CurrentRejected { account: String },

    #[error("the master password of {account} is rejected")]
    MasterRejected { account: String },

    #[error("user name {name} of the alternate user is {length} long; {limit}")]
    AlternateNameTooLong { name: String, length: String, limit: String },

    #[error("cannot reach {host}:{port}: {detail}")]
    Unreachable { host: String, port: u16, detail: String },

    #[error("TLS with {host}:{port} failed (no plain-text fallback is attempted): {detail}")]
    Tls { host: String, port: u16, detail: String },

    #[error("neither the AWSCURRENT nor the AWSPREVIOUS password of user {user} logs in to {host}:{port}")]
    NoWorkingCredentials { user: String, host: String, port: u16 },

    #[error(
        "the AWSPENDING password of user {user} is rejected by {host}:{port}: setSecret has not run or did not take effect"
    )]
    PendingRejected { user: String, host: String, port: u16 },

    #[error("the AWSCURRENT password of user {user} still logs in to {host}:{port}: the password was not changed")]
    OldPasswordStillAccepted { user: String, host: String, port: u16 },

    #[error(
        "{step} did not finish before the invocation's deadline: a login, statement or Secrets Manager call \
         was still waiting (see the log lines before this one); raise the function's timeout or lower \
         CONNECT_TIMEOUT_SECONDS / STATEMENT_TIMEOUT_SECONDS"
    )]
    OutOfTime { step: String },

    #[error("{action} on {host}:{port} failed: {detail}")]
    Target { action: &'static str, host: String, port: u16, detail: String, retryable: bool },

    #[error("the admin secret {admin_secret} of profile {profile} {problem}")]
    AdminSecret { profile: String, admin_secret: String, problem: String },

    /// An HTTP call of an API-key profile failed. `url` has no query string; no header, key
    /// or response body is ever part of `detail`.
    #[error("the `{call}` call of profile {profile} ({url}) failed: {detail}")]
    ProviderCall { profile: String, call: &'static str, url: String, detail: String, retryable: bool },

    /// An API-key profile's call would go to a URL the function may not call.
    #[error("the `{call}` call of profile {profile} may not go to {url}: {rule}")]
    UrlNotAllowed { profile: String, call: &'static str, url: String, rule: String },

    #[error("the {stage} key of secret {secret} is refused by the `test` call of profile {profile}{hint}")]
    KeyRejected { secret: String, stage: String, profile: String, hint: String },

    #[error(
        "the AWSCURRENT key of secret {secret} is still accepted by the `test` call of profile {profile}: \
         the credential was not changed"
    )]
    OldKeyStillAccepted { secret: String, profile: String },

    /// A pending version that can no longer succeed, with the way out.
    #[error(
        "{inner}. The AWSPENDING version {token} cannot complete: {why}. To abandon it, remove its label \
         (`aws secretsmanager update-secret-version-stage --secret-id {secret} --version-stage AWSPENDING \
         --remove-from-version-id {token}`), correct AWSCURRENT if needed, and start a new rotation"
    )]
    StalePending { inner: Box<Error>, secret: String, token: String, why: String },
}

/// An error's message followed by each of its causes, `: `-separated: what a library's
/// Display alone leaves out. Display only, never Debug (the Debug form of an SDK error holds
/// the raw HTTP response, whose body can be a secret value).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut detail = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

/// What is wrong with a secret's value. Field names only, never field values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    #[error("it is not valid JSON ({0})")]
    NotJson(String),
    #[error("it is a JSON {0}, not an object")]
    NotAnObject(&'static str),
    #[error("it is stored as binary (SecretBinary); a JSON SecretString is required")]
    Binary,
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    InvalidField { field: &'static str, expected: &'static str },
    #[error("field `engine` is `{found}`, but this function rotates {expected}")]
    WrongEngine { found: String, expected: String },
    /// As `Rule`, for a field whose name comes from configuration (an API-key profile's fields).
    #[error("field `{field}` {rule}")]
    FieldRule { field: String, rule: String },
    /// A value a profile's call needs is missing from the secret.
    #[error("the `{call}` call of profile {profile} needs {what}")]
    NeededByProfile { profile: String, call: &'static str, what: String },
    /// A field of the right type whose content breaks a rule; `rule` describes the rule and
    /// what was found (a length, a kind of character), never the value.
    #[error("field `{field}` {rule}")]
    Rule { field: &'static str, rule: String },
}

/// The longest identifier (secret id, version id, user or host name) a message repeats whole.
pub const MAX_SHOWN_CHARS: usize = 256;

/// The longest `errorMessage` a function returns.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// `text`, cut to `max` characters with a note of how long it was, for messages.
pub fn clip(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… ({count} characters in all)")
}

/// An identifier for a message: cut to [`MAX_SHOWN_CHARS`], control characters shown escaped
/// so one value cannot forge a log line.
pub fn shown(text: &str) -> String {
    let clipped = clip(text, MAX_SHOWN_CHARS);
    if clipped.chars().any(char::is_control) { clipped.escape_default().to_string() } else { clipped }
}

impl Error {
    /// Whether the same rotation can succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::OutOfTime { .. } => true,
            Error::SecretsManager { retryable, .. }
            | Error::Target { retryable, .. }
            | Error::ProviderCall { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// A stable name for the kind of failure, used as the Lambda `errorType`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidEvent(_) => "InvalidEvent",
            Error::UnknownStep(_) => "UnknownStep",
            Error::Config { .. } => "InvalidConfiguration",
            Error::RotationDisabled { .. } => "RotationDisabled",
            Error::UnknownVersion { .. } => "UnknownVersion",
            Error::NotPending { .. } => "VersionNotPending",
            Error::MissingValue { .. } => "MissingSecretValue",
            Error::InvalidSecret { .. } => "InvalidSecret",
            Error::SecretsManager { .. } => "SecretsManager",
            Error::UserMismatch { .. } => "UserMismatch",
            Error::MasterArnMissing { .. } => "MasterArnMissing",
            Error::MasterSecret { .. } => "InvalidMasterSecret",
            Error::NotAlternating { .. } => "NotAlternating",
            Error::CurrentRejected { .. } => "CurrentPasswordRejected",
            Error::MasterRejected { .. } => "MasterPasswordRejected",
            Error::AlternateNameTooLong { .. } => "AlternateNameTooLong",
            Error::Unreachable { .. } => "TargetUnreachable",
            Error::Tls { .. } => "Tls",
            Error::NoWorkingCredentials { .. } => "NoWorkingCredentials",
            Error::PendingRejected { .. } => "PendingPasswordRejected",
            Error::OldPasswordStillAccepted { .. } => "OldPasswordStillAccepted",
            Error::OutOfTime { .. } => "OutOfTime",
            Error::Target { .. } => "TargetCommand",
            Error::AdminSecret { .. } => "InvalidAdminSecret",
            Error::ProviderCall { .. } => "ProviderCall",
            Error::UrlNotAllowed { .. } => "UrlNotAllowed",
            Error::KeyRejected { .. } => "KeyRejected",
            Error::OldKeyStillAccepted { .. } => "OldKeyStillAccepted",
            Error::StalePending { inner, .. } => inner.kind(),
        }
    }

    /// The Lambda `errorType`: `Retryable.<Kind>` or `Permanent.<Kind>`.
    pub fn error_type(&self) -> String {
        let class = if self.is_retryable() { "Retryable" } else { "Permanent" };
        format!("{class}.{}", self.kind())
    }
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(error: Error) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type(),
            error_message: clip(&error.to_string(), MAX_MESSAGE_CHARS),
        }
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[test]
    fn every_cause_follows_the_message() {
        let inner = std::io::Error::other("connection reset");
        let outer = std::io::Error::new(std::io::ErrorKind::BrokenPipe, Wrapped(inner));
        assert_eq!(with_causes(&outer), "dispatch failure: connection reset");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("dispatch failure")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}

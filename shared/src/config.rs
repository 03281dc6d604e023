use std::sync::Arc;
use std::time::Duration;

use crate::net::TlsConfigs;
use crate::{EngineInfo, Error, PasswordPolicy, Strategy};

/// How a function connects to its target, from the environment.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// `CONNECT_TIMEOUT_SECONDS`, default 5: how long one login attempt may take.
    pub timeout: Duration,
    /// `STATEMENT_TIMEOUT_SECONDS`, default 10: how long one statement, or a wait for a lock,
    /// may take after login. Shortened when the invocation's deadline is nearer.
    pub statement_timeout: Duration,
    /// The PEM certificates of `CA_BUNDLE_PATH`, trusted beside the public roots; read once.
    pub ca_bundle: Option<Arc<[u8]>>,
    /// TLS client configurations for every mode, built once per process from the trusted roots.
    pub tls: Arc<TlsConfigs>,
}

/// Everything a function reads from its environment, once per process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: PasswordPolicy,
    pub connect: ConnectSettings,
    /// `ROTATION_STRATEGY`: the strategy for secrets that do not name one.
    pub strategy: Option<Strategy>,
    /// `USERNAME_CHARACTER_LIMIT`: the longest alternate user name allowed, in characters
    /// (AWS's MySQL template reads it, default 16 there); the engine's own limit applies too.
    pub username_character_limit: Option<usize>,
}

impl Settings {
    pub fn from_env(engine: &EngineInfo) -> Result<Self, Error> {
        Self::from_lookup(&|name| std::env::var(name).ok(), engine)
    }

    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>, engine: &EngineInfo) -> Result<Self, Error> {
        let timeout = seconds(lookup, "CONNECT_TIMEOUT_SECONDS", 5)?;
        let statement_timeout = seconds(lookup, "STATEMENT_TIMEOUT_SECONDS", 10)?;
        let ca_bundle = match lookup("CA_BUNDLE_PATH").filter(|p| !p.is_empty()) {
            None => None,
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|e| Error::Config {
                    variable: "CA_BUNDLE_PATH",
                    problem: format!("names {path}, which cannot be read: {e}"),
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(Error::Config {
                        variable: "CA_BUNDLE_PATH",
                        problem: format!("names {path}, which holds no PEM certificate"),
                    });
                }
                Some(Arc::from(pem))
            }
        };
        let strategy = match lookup("ROTATION_STRATEGY").filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(name) => Some(name.parse().map_err(|()| Error::Config {
                variable: "ROTATION_STRATEGY",
                problem: format!("must be one of {}", Strategy::NAMES),
            })?),
        };
        let username_character_limit = match lookup("USERNAME_CHARACTER_LIMIT").filter(|s| !s.trim().is_empty()) {
            None => engine.default_username_character_limit,
            Some(text) => Some(text.trim().parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| Error::Config {
                variable: "USERNAME_CHARACTER_LIMIT",
                problem: "must be a whole number greater than 0".into(),
            })?),
        };
        Ok(Settings {
            username_character_limit,
            policy: PasswordPolicy::from_lookup(lookup, engine.default_excluded_characters)?,
            connect: ConnectSettings {
                timeout,
                statement_timeout,
                tls: Arc::new(TlsConfigs::new(ca_bundle.as_deref())?),
                ca_bundle,
            },
            strategy,
        })
    }
}

/// A duration in seconds from `variable` (fractions allowed), `default` when it is not set.
fn seconds(lookup: &impl Fn(&str) -> Option<String>, variable: &'static str, default: u64) -> Result<Duration, Error> {
    match lookup(variable).filter(|text| !text.trim().is_empty()) {
        None => Ok(Duration::from_secs(default)),
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 300.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| Error::Config {
                variable,
                problem: "must be a number of seconds greater than 0 and at most 300".into(),
            }),
    }
}

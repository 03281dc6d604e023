use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::net::TlsConfigs;

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

impl ConnectSettings {
    /// `CONNECT_TIMEOUT_SECONDS`, `STATEMENT_TIMEOUT_SECONDS` and `CA_BUNDLE_PATH`; the TLS
    /// configurations are built here, once.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
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
        Ok(ConnectSettings {
            timeout,
            statement_timeout,
            tls: Arc::new(TlsConfigs::new(ca_bundle.as_deref())?),
            ca_bundle,
        })
    }
}

/// A duration in seconds from `variable` (fractions allowed), `default` when it is not set.
pub fn seconds(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
) -> Result<Duration, Error> {
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

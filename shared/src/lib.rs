//! The Secrets Manager rotation engine shared by every rotation function.
//!
//! Secrets Manager rotates a secret by invoking a Lambda function four times
//! (`createSecret`, `setSecret`, `testSecret`, `finishSecret`). The steps, the guard
//! that runs before each of them, the secret format and the password policy live here
//! once; a function crate only implements [`Target`] for its service and calls [`run`].

mod config;
pub mod deadline;
mod error;
mod event;
mod lambda;
mod logging;
mod metrics;
pub mod net;
mod policy;
mod secret;
mod steps;
mod store;
mod strategy;
mod target;
mod tls;

pub use config::{ConnectSettings, Settings};
pub use error::{Error, SecretProblem, with_causes};
pub use event::{RotationEvent, Step};
pub use lambda::run;
pub use policy::PasswordPolicy;
pub use secret::DatabaseSecret;
pub use steps::Rotator;
pub use store::{SecretStore, SecretVersions, SecretsManager};
pub use strategy::{Strategy, alternate_username, main_username};
pub use target::{EngineInfo, Login, Target};
pub use tls::TlsMode;

/// The Amazon RDS global certificate bundle (the commercial regions' root CAs), trusted beside
/// Mozilla's roots so that RDS, Aurora and RDS Proxy verify with no setting. Provenance and the
/// regions it lacks: `shared/certs/README.md`.
pub const AMAZON_RDS_ROOTS_PEM: &[u8] = include_bytes!("../certs/amazon-rds-global.pem");

/// Re-exported so that function crates and tests name one `SecretString` type.
pub use secrecy::{ExposeSecret, SecretString};

/// Staging labels Secrets Manager attaches to versions.
pub mod stage {
    pub const CURRENT: &str = "AWSCURRENT";
    pub const PENDING: &str = "AWSPENDING";
    pub const PREVIOUS: &str = "AWSPREVIOUS";
}

#[cfg(test)]
mod steps_tests;
#[cfg(test)]
mod testing;

//! The Secrets Manager rotation engine shared by every rotation function.
//!
//! Secrets Manager rotates a secret by invoking a Lambda function four times
//! (`createSecret`, `setSecret`, `testSecret`, `finishSecret`).
//!
//! - The core, for every kind of credential: the event, the guard before each step,
//!   `finishSecret`'s stage moves and every verified Secrets Manager write ([`engine`]), the
//!   Secrets Manager store, errors, logs, metrics, deadlines, connections and TLS, and the Lambda
//!   glue ([`serve`]). A kind of credential implements [`Rotation`].
//! - [`database`]: the rotation of a database user's password (AWS's secret format, the
//!   strategies, the credential cascade). A database function implements [`Target`] and calls
//!   [`database::run`]; the API-key function implements [`Rotation`] itself.

pub mod check;
mod config;
pub mod database;
pub mod deadline;
pub mod engine;
mod error;
mod event;
mod lambda;
mod logging;
mod metrics;
pub mod net;
mod policy;
mod store;
mod tls;

pub use config::{ConnectSettings, seconds};
pub use engine::{CheckContext, Invoker, Rotation, Rotator, StepContext};
pub use error::{Error, SecretProblem, shown, with_causes};
pub use event::{RotationEvent, Step};
pub use lambda::serve;
pub use policy::PasswordPolicy;
pub use store::{SecretStore, SecretVersions, SecretsManager};
pub use tls::TlsMode;

// The database kind's names, at the root too: every database function names them.
pub use database::{
    DatabaseRotation, DatabaseSecret, EngineInfo, Login, Settings, Strategy, Target, alternate_username, main_username,
};

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

/// In-memory doubles of Secrets Manager and of a database, with fault injection, for unit tests
/// (of this crate, and of function crates through the `testing` feature).
#[cfg(any(test, feature = "testing"))]
pub mod testing;

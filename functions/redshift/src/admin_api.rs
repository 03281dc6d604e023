//! The `admin-api` strategy: an admin user whose password only the Redshift API can set.
//!
//! Provisioned clusters take `ModifyCluster(ClusterIdentifier, MasterUserPassword)`, Redshift
//! Serverless namespaces `UpdateNamespace(namespaceName, adminUsername, adminUserPassword)`.
//! Both apply the change asynchronously: after the call, setSecret logs in with the new password
//! until it works, within the invocation's deadline. The API takes the password itself (over
//! TLS to the AWS endpoint): it offers no hashed form.

use std::time::{Duration, Instant};

use aws_sdk_redshift::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;
use tracing::info;

use postgres_rotation::session::Connector;
use rotation::{DatabaseSecret, Error, Login, deadline};

/// The secret fields that name what the API changes.
pub const CLUSTER_FIELD: &str = "dbClusterIdentifier";
pub const NAMESPACE_FIELD: &str = "namespaceName";

/// How long setSecret waits for a change to take effect when no deadline is nearer.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// Between two logins that test whether the change took effect, and between two calls the
/// service refused because the cluster or namespace was busy.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const BUSY_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// What the API changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTarget {
    Cluster(String),
    Namespace(String),
}

impl ApiTarget {
    /// From the secret's `dbClusterIdentifier` or `namespaceName` (exactly one of them).
    pub fn of(secret: &DatabaseSecret) -> Result<Self, Error> {
        let invalid = |detail: String| Error::Target {
            action: "admin-api rotation",
            host: secret.host.clone(),
            port: secret.port,
            detail,
            retryable: false,
        };
        let read = |field| secret.extra_string(field).map_err(|problem| invalid(problem.to_string()));
        match (read(CLUSTER_FIELD)?, read(NAMESPACE_FIELD)?) {
            (Some(cluster), None) => Ok(ApiTarget::Cluster(cluster)),
            (None, Some(namespace)) => Ok(ApiTarget::Namespace(namespace)),
            (Some(_), Some(_)) => Err(invalid(format!(
                "the secret names both {CLUSTER_FIELD} and {NAMESPACE_FIELD}; the admin-api strategy needs exactly one"
            ))),
            (None, None) => Err(invalid(format!(
                "the admin-api strategy needs field `{CLUSTER_FIELD}` (a provisioned cluster) or `{NAMESPACE_FIELD}` \
                 (Redshift Serverless) in the secret"
            ))),
        }
    }

    fn operation(&self) -> &'static str {
        match self {
            ApiTarget::Cluster(_) => "ModifyCluster",
            ApiTarget::Namespace(_) => "UpdateNamespace",
        }
    }
}

/// The API clients, built at the first admin-api rotation of the process (other strategies
/// never pay for them).
#[derive(Default)]
pub struct AdminApi {
    clients: OnceCell<Clients>,
}

struct Clients {
    redshift: aws_sdk_redshift::Client,
    serverless: aws_sdk_redshiftserverless::Client,
}

/// What one call answered.
enum Outcome {
    Done,
    /// The cluster or namespace is busy with another change: try again shortly.
    Busy(String),
}

impl AdminApi {
    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                // AWS_ENDPOINT_URL_REDSHIFT / AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS are honoured.
                let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(12))
                    .build();
                Clients {
                    redshift: aws_sdk_redshift::Client::from_conf(
                        aws_sdk_redshift::config::Builder::from(&config).timeout_config(timeouts.clone()).build(),
                    ),
                    serverless: aws_sdk_redshiftserverless::Client::from_conf(
                        aws_sdk_redshiftserverless::config::Builder::from(&config).timeout_config(timeouts).build(),
                    ),
                }
            })
            .await
    }

    /// Sets the password of the secret's user through the API, then waits until it logs in.
    pub async fn set_password(
        &self,
        connector: &Connector,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<(), Error> {
        let target = ApiTarget::of(secret)?;
        let operation = target.operation();
        let started = Instant::now();
        let limit = deadline::bound(SETTLE_LIMIT);
        let clients = self.clients().await;
        loop {
            match self.call(clients, &target, secret, new_password).await? {
                Outcome::Done => break,
                Outcome::Busy(detail) => {
                    if started.elapsed() + BUSY_RETRY_INTERVAL >= limit {
                        return Err(api_error(operation, secret, format!("{detail} (busy for {limit:?})"), true));
                    }
                    info!(operation, %detail, "the service is busy with another change; trying again");
                    tokio::time::sleep(BUSY_RETRY_INTERVAL).await;
                }
            }
        }
        info!(operation, "the service accepted the new password; waiting until it takes effect");
        loop {
            match connector.login(secret).await? {
                Login::Accepted(session) => {
                    session.close().await;
                    info!(operation, waited_ms = started.elapsed().as_millis() as u64, "the new password is in effect");
                    return Ok(());
                }
                Login::Rejected if started.elapsed() + POLL_INTERVAL < limit => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Login::Rejected => {
                    return Err(api_error(
                        operation,
                        secret,
                        format!(
                            "the service accepted the new password, but it did not log in within {limit:?}; \
                             the rotation can be retried (setSecret calls {operation} again with the same password)"
                        ),
                        true,
                    ));
                }
            }
        }
    }

    async fn call(
        &self,
        clients: &Clients,
        target: &ApiTarget,
        secret: &DatabaseSecret,
        new_password: &SecretString,
    ) -> Result<Outcome, Error> {
        let operation = target.operation();
        let answer = match target {
            ApiTarget::Cluster(cluster) => clients
                .redshift
                .modify_cluster()
                .cluster_identifier(cluster)
                .master_user_password(new_password.expose_secret())
                .send()
                .await
                .map(drop)
                .map_err(|e| classify(e, &["InvalidClusterState", "InvalidClusterStateFault"])),
            ApiTarget::Namespace(namespace) => clients
                .serverless
                .update_namespace()
                .namespace_name(namespace)
                .admin_username(&secret.username)
                .admin_user_password(new_password.expose_secret())
                .send()
                .await
                .map(drop)
                .map_err(|e| classify(e, &["ConflictException"])),
        };
        match answer {
            Ok(()) => Ok(Outcome::Done),
            Err(Failure::Busy(detail)) => Ok(Outcome::Busy(detail)),
            Err(Failure::Other { detail, retryable }) => Err(api_error(operation, secret, detail, retryable)),
        }
    }
}

fn api_error(operation: &'static str, secret: &DatabaseSecret, detail: String, retryable: bool) -> Error {
    Error::Target { action: operation, host: secret.host.clone(), port: secret.port, detail, retryable }
}

enum Failure {
    Busy(String),
    Other { detail: String, retryable: bool },
}

/// An SDK error as `busy` (one of `busy_codes`: the resource is in the middle of another
/// change), retryable (throttling, the service's own failures, no answer) or permanent.
/// Display forms only: the Debug form of an SDK error holds the raw request and response.
fn classify<E, R>(error: SdkError<E, R>, busy_codes: &[&str]) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("error");
            let detail = format!("{code}: {}", err.message().unwrap_or("no message"));
            if busy_codes.contains(&code) {
                Failure::Busy(detail)
            } else {
                Failure::Other { detail, retryable: is_retryable_code(code) }
            }
        }
        other => {
            let detail = rotation::with_causes(other);
            let retryable =
                matches!(other, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_));
            Failure::Other { detail, retryable }
        }
    }
}

fn is_retryable_code(code: &str) -> bool {
    code.contains("Throttling")
        || matches!(code, "InternalServerException" | "InternalFailure" | "ServiceUnavailable" | "RequestTimeout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rotation::{EngineInfo, SecretString};

    const ENGINE: EngineInfo = crate::ENGINE;

    fn secret(extra: &str) -> DatabaseSecret {
        let text = format!(r#"{{"engine": "redshift", "host": "h", "username": "admin", "password": "p"{extra}}}"#);
        DatabaseSecret::parse(&SecretString::from(text), &ENGINE).unwrap()
    }

    #[test]
    fn the_secret_names_a_cluster_or_a_namespace() {
        assert_eq!(
            ApiTarget::of(&secret(r#", "dbClusterIdentifier": "c1""#)).unwrap(),
            ApiTarget::Cluster("c1".into())
        );
        assert_eq!(
            ApiTarget::of(&secret(r#", "namespaceName": "ns", "workgroupName": "wg""#)).unwrap(),
            ApiTarget::Namespace("ns".into())
        );
        let neither = ApiTarget::of(&secret("")).unwrap_err().to_string();
        assert!(neither.contains("dbClusterIdentifier") && neither.contains("namespaceName"), "{neither}");
        let both = ApiTarget::of(&secret(r#", "dbClusterIdentifier": "c1", "namespaceName": "ns""#)).unwrap_err();
        assert!(both.to_string().contains("exactly one"));
        assert!(!both.is_retryable());
        let wrong = ApiTarget::of(&secret(r#", "dbClusterIdentifier": 7"#)).unwrap_err();
        assert!(wrong.to_string().contains("`dbClusterIdentifier` must be a string"), "{wrong}");
    }

    #[test]
    fn throttling_and_service_failures_are_retryable_refusals_are_not() {
        for code in ["ThrottlingException", "Throttling", "InternalServerException", "ServiceUnavailable"] {
            assert!(is_retryable_code(code), "{code}");
        }
        for code in [
            "ClusterNotFound",
            "ResourceNotFoundException",
            "ValidationException",
            "AccessDenied",
            "UnauthorizedOperation",
        ] {
            assert!(!is_retryable_code(code), "{code}");
        }
    }
}

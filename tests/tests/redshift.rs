//! The Redshift rotation function, end to end: the real binary under `cargo lambda watch`,
//! LocalStack's Secrets Manager, and the PostgreSQL server standing in for Redshift (same
//! protocol, same md5 password form): users in `md5_users` log in with md5 authentication and
//! have their passwords stored in md5 form, over verified TLS.
//!
//! What only Redshift runs (roles, `GRANT ROLE`, names over 63 bytes, the sha256 login) is
//! covered by the function's unit tests.

use e2e::scenarios::{self, Engine, Fixture};
use e2e::*;
use serde_json::{Value, json};

const DB: Engine = Engine::Redshift;
const FUNCTION: &str = "redshift-rotation";

fn md5_form(password: &str, user: &str) -> String {
    postgres_protocol::password::md5(password.as_bytes(), user)
}

/// The password a role has stored, as the server keeps it.
async fn stored_password(env: &TestEnv, role: &str) -> String {
    use sqlx::Connection;
    let mut admin = env.pg_admin().await;
    let stored: Option<String> = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role)
        .fetch_one(&mut admin)
        .await
        .expect("read pg_authid");
    admin.close().await.ok();
    stored.unwrap_or_default()
}

#[tokio::test]
async fn rotates_the_password_of_a_single_user_sending_only_its_md5_form() {
    let (f, new_password) = scenarios::rotates_a_single_user(DB).await;
    let md5 = md5_form(&new_password, &f.user);
    assert_eq!(stored_password(&f.env, &f.user).await, md5, "the server stores the md5 form");
    let log = f.env.pg_log_text();
    assert!(
        log.contains(&format!("ALTER USER \"{}\" PASSWORD '{md5}'", f.user)),
        "the md5 form is what the server saw"
    );
    assert!(!log.contains(&new_password), "the plain-text password never reaches the server's statement log");
    // Redshift takes no startup `options`: the statement bound is set after login.
    assert!(log.contains("SET statement_timeout TO "), "statement_timeout is set with SET after login");
    let current = secret_value(&f.client, &f.secret, None, "AWSCURRENT").await;
    assert_eq!(current["engine"], "redshift");
    assert!(current.get("dbname").is_none(), "the default database (dev) was used without being written");
}

#[tokio::test]
async fn the_cluster_and_namespace_fields_are_kept() {
    let extra = json!({"dbClusterIdentifier": "analytics", "namespaceName": "ns", "workgroupName": "wg"});
    let f = Fixture::new(DB, extra.clone()).await;
    f.rotate_once().await;
    let current = secret_value(&f.client, &f.secret, None, "AWSCURRENT").await;
    for (field, value) in extra.as_object().unwrap() {
        assert_eq!(&current[field], value, "{field} is carried over");
    }
    assert!(f.logs_in(&f.password_of(None, "AWSCURRENT").await).await);
}

e2e::common_scenarios!(DB, wrong_engine: "postgres", expected: "redshift");

/// A master user as Redshift has one (a superuser, md5 password) and a secret for it with only
/// `username` and `password`. Returns the secret's ARN and the user's name.
async fn create_master(env: &TestEnv) -> (String, String) {
    let name = unique("rsmaster");
    let password = format!("Master-{}", uuid::Uuid::new_v4().simple());
    env.create_redshift_user(&name, &password, "SUPERUSER").await;
    let arn = create_secret(
        &env.secrets_client(),
        &unique("redshift/master"),
        &json!({"username": name, "password": password}),
    )
    .await;
    (arn, name)
}

/// A main user with a group, a schema and table of its own, and a table granted directly; its
/// secret names a master secret. The secret uses the database `postgres`, where the tests'
/// helpers make the objects.
struct Pair {
    fixture: Fixture,
    main: String,
    group: String,
}

impl std::ops::Deref for Pair {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.fixture
    }
}

impl Pair {
    async fn new(main: &str, extra: Value) -> Self {
        let env = TestEnv::from_env();
        let (master_arn, _) = create_master(&env).await;
        let mut fields = json!({"dbname": "postgres"});
        for (key, value) in extra.as_object().unwrap() {
            fields[key] = value.clone();
        }
        let fixture = Fixture::with_master(DB, main, &master_arn, fields).await;
        let group = unique("analysts");
        let (m, g) = (quote_ident(main), quote_ident(&group));
        env.admin_sql(&format!(
            "CREATE ROLE {g} NOLOGIN; GRANT {g} TO {m}; \
             CREATE SCHEMA {m} AUTHORIZATION {m}; CREATE TABLE {m}.orders (id int); ALTER TABLE {m}.orders OWNER TO {m}; \
             CREATE TABLE {m}.by_group (id int); GRANT USAGE ON SCHEMA {m} TO {g}; GRANT SELECT ON {m}.by_group TO {g}; \
             CREATE TABLE public.{direct} (x int); GRANT SELECT, INSERT ON public.{direct} TO {m}",
            direct = quote_ident(&format!("{main}_direct")),
        ))
        .await;
        Pair { fixture, main: main.to_owned(), group }
    }

    fn clone_name(&self) -> String {
        format!("{}_clone", self.main)
    }
}

#[tokio::test]
async fn alternating_users_the_clone_is_a_twin_of_the_main_user_on_every_rotation() {
    let p = Pair::new(&unique("shop"), json!({})).await;
    let clone = p.clone_name();
    let (m, c) = (quote_ident(&p.main), quote_ident(&clone));
    let direct = format!("public.{}", quote_ident(&format!("{}_direct", p.main)));

    p.rotate_once().await;
    let (user, clone_password) = p.current_credentials().await;
    assert_eq!(user, clone, "the first rotation hands over to the clone");
    assert!(p.env.pg_logs_in(&p.main, &p.password).await, "the main user still logs in: no downtime");
    // The clone logs in with md5 authentication: it joined the main user's groups (md5_users).
    assert!(p.env.pg_logs_in(&clone, &clone_password).await);
    assert_eq!(stored_password(&p.env, &clone).await, md5_form(&clone_password, &clone));

    // What the main user owns, what it was granted directly and through its group.
    p.env
        .sql_as(&clone, &clone_password, &format!("INSERT INTO {m}.orders VALUES (1); SELECT * FROM {m}.orders"))
        .await
        .unwrap();
    p.env.sql_as(&clone, &clone_password, &format!("SELECT * FROM {m}.by_group")).await.unwrap();
    p.env
        .sql_as(&clone, &clone_password, &format!("INSERT INTO {direct} VALUES (1); SELECT * FROM {direct}"))
        .await
        .unwrap();
    // Nothing the main user lacks.
    let error = p.env.sql_as(&clone, &clone_password, &format!("UPDATE {direct} SET x = 2")).await.unwrap_err();
    assert!(error.contains("permission denied"), "{error}");

    let log = p.env.pg_log_text();
    let created = format!("CREATE USER {c} PASSWORD '{}'", md5_form(&clone_password, &clone));
    assert!(log.contains(&created), "the clone was created with the md5 form");
    assert!(log.contains(&format!("ALTER GROUP {} ADD USER {c}", quote_ident(&p.group))));
    assert!(!log.contains(&clone_password), "no plain-text password in the server's statement log");

    // A grant the main user receives later reaches the clone at the clone's next rotation.
    let later = format!("public.{}", quote_ident(&format!("{}_later", p.main)));
    p.env.admin_sql(&format!("CREATE TABLE {later} (x int); GRANT SELECT ON {later} TO {m}")).await;
    p.rotate_once().await;
    let (user, main_password) = p.current_credentials().await;
    assert_eq!(user, p.main);
    assert!(p.env.pg_logs_in(&p.main, &main_password).await);
    assert!(!p.env.pg_logs_in(&p.main, &p.password).await, "the main user's old password is gone");
    assert!(p.env.pg_logs_in(&clone, &clone_password).await, "the clone still logs in");
    assert!(p.env.sql_as(&clone, &clone_password, &format!("SELECT * FROM {later}")).await.is_err());

    p.rotate_once().await;
    let (user, newer_clone_password) = p.current_credentials().await;
    assert_eq!(user, clone);
    assert!(!p.env.pg_logs_in(&clone, &clone_password).await);
    p.env.sql_as(&clone, &newer_clone_password, &format!("SELECT * FROM {later}")).await.unwrap();
    p.env.sql_as(&clone, &newer_clone_password, &format!("SELECT * FROM {m}.orders")).await.unwrap();

    // What was in place was not granted again.
    let log = p.env.pg_log_text();
    assert!(log.contains(&format!("ALTER USER {c} PASSWORD '{}'", md5_form(&newer_clone_password, &clone))));
    let orders_grants = log.matches(&format!("ON TABLE {m}.\"orders\" TO {c}")).count();
    assert_eq!(orders_grants, 1, "the grant on the main user's table was made once");
    for password in [&clone_password, &main_password, &newer_clone_password] {
        assert!(!log.contains(password.as_str()));
    }
    p.env.assert_functions_log_hides(&[&clone_password, &main_password, &newer_clone_password]);
}

#[tokio::test]
async fn the_master_rotates_a_single_user_whose_passwords_all_stopped_working() {
    let p = Pair::new(&unique("locked"), json!({"rotation_strategy": "single-user-with-master"})).await;
    p.rotate_once().await; // so an AWSPREVIOUS version exists
    p.env.set_redshift_password(&p.main, "Neither-current-nor-previous1").await;

    p.rotate_once().await;
    let (user, password) = p.current_credentials().await;
    assert_eq!(user, p.main, "single user: the name stays");
    assert!(p.env.pg_logs_in(&p.main, &password).await);
    assert!(!p.env.pg_logs_in(&p.main, "Neither-current-nor-previous1").await);
    assert_eq!(stored_password(&p.env, &p.main).await, md5_form(&password, &p.main));
    assert!(!p.env.role_exists(&p.clone_name()).await);
}

#[tokio::test]
async fn a_clone_name_over_127_bytes_is_refused_before_anything_is_stored() {
    let env = TestEnv::from_env();
    let client = env.secrets_client();
    let (master_arn, _) = create_master(&env).await;
    // 122 bytes; with _clone 128. (The PostgreSQL stand-in could not hold such a user; the
    // check runs before any login.)
    let main = format!("{}_{}", "n".repeat(111), &unique("x")[2..]);
    assert_eq!(main.len(), 122);
    let value = json!({"engine": "redshift", "host": "localhost", "port": env.pg_port, "username": main,
                       "password": "Initial-pw-1", "masterarn": master_arn});
    let secret = create_secret(&client, &unique("redshift/long"), &value).await;
    let token = start_rotation(&env, &client, &secret).await;
    let before = stages(&client, &secret).await;
    let error = invoke_step(&env, FUNCTION, "createSecret", &secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.AlternateNameTooLong", "{error:?}");
    assert!(error.message.contains("Amazon Redshift allows 127"), "{error:?}");
    assert_eq!(stages(&client, &secret).await, before);
}

#[tokio::test]
async fn a_forged_secret_whose_current_password_fails_creates_no_user() {
    let p = Pair::new(&unique("forged"), json!({})).await;
    p.env.set_redshift_password(&p.main, "Changed-behind-the-secret1").await;
    let token = p.start_rotation().await;
    p.step("createSecret", &token).await.unwrap();
    let before = p.stages().await;
    let error = p.step("setSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.CurrentPasswordRejected", "{error:?}");
    assert_eq!(p.stages().await, before);
    assert!(!p.env.role_exists(&p.clone_name()).await, "no clone was created");
}

#[tokio::test]
async fn the_new_password_follows_redshifts_rules() {
    let f = Fixture::new(DB, json!({})).await;
    for _ in 0..3 {
        f.rotate_once().await;
        let password = f.password_of(None, "AWSCURRENT").await;
        assert_eq!(password.len(), 32);
        assert!(password.chars().any(|c| c.is_ascii_uppercase()));
        assert!(password.chars().any(|c| c.is_ascii_lowercase()));
        assert!(password.chars().any(|c| c.is_ascii_digit()));
        assert!(!password.chars().any(|c| "'\"\\/@ ".contains(c)), "no character Redshift refuses");
        assert!(f.logs_in(&password).await);
    }
}

#[tokio::test]
async fn a_certificate_for_another_host_fails_without_a_plain_text_attempt() {
    let f = scenarios::a_certificate_for_another_host_fails(DB).await;
    // pg_hba.conf rejects and logs every connection without TLS.
    let log = f.env.pg_log_text();
    let plain_text_attempts: Vec<_> =
        log.lines().filter(|l| l.contains(&f.user) && l.contains("no encryption")).map(str::to_owned).collect();
    assert!(plain_text_attempts.is_empty(), "the server saw plain-text logins: {plain_text_attempts:?}");
}

#[tokio::test]
async fn a_lock_held_on_the_user_fails_retryably_within_the_statement_bound_set_after_login() {
    let f = Fixture::new(DB, json!({})).await;
    let token = f.start_rotation().await;
    f.step("createSecret", &token).await.unwrap();
    let stages_before = f.stages().await;
    let pending = f.password_of(Some(&token), "AWSPENDING").await;

    // A long transaction that changed the user and has not committed: ALTER USER waits for it.
    // Redshift has no lock_timeout; the statement_timeout the function sets after login ends the wait.
    let mut holder = f.env.hold_lock_on_role(&f.user).await;

    let started = std::time::Instant::now();
    let error = f.step("setSecret", &token).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(error.error_type, "Retryable.TargetCommand", "{error:?}");
    assert!(error.message.contains("STATEMENT_TIMEOUT_SECONDS"), "{error:?}");
    assert!(waited < std::time::Duration::from_secs(20), "setSecret gave up after {waited:?}");
    f.assert_unchanged(&stages_before).await;
    assert!(!f.logs_in(&pending).await, "the pending password was not set");

    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    drop(holder);
    f.rotate(&token).await.expect("the retried rotation succeeds once the lock is gone");
    assert!(f.logs_in(&pending).await);
    assert!(!f.logs_in(&f.password).await);
}

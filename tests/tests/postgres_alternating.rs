//! Alternating users and single user with the master secret, for PostgreSQL, end to end.

use e2e::scenarios::{Db, Fixture};
use e2e::*;
use serde_json::{Value, json};

const FUNCTION: &str = "postgres-rotation";

/// A main role owning a table, and its secret pointing at a master secret.
struct Pair {
    fixture: Fixture,
    main: String,
    master: String,
}

impl std::ops::Deref for Pair {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.fixture
    }
}

impl Pair {
    /// `extra` fields override or add to the secret's JSON (`"masterarn": null` removes it).
    async fn new(main: &str, extra: Value) -> Self {
        let pair = Pair::without_admin_option(main, extra).await;
        pair.env.let_pg_master_administer(&pair.master, main).await;
        pair
    }

    /// As [`Pair::new`], but the master holds no `ADMIN OPTION` on the main role.
    async fn without_admin_option(main: &str, extra: Value) -> Self {
        let env = TestEnv::from_env();
        let (master_arn, master) = env.create_pg_master().await;
        let fixture = Fixture::with_master(Db::Postgres, main, &master_arn, extra).await;
        let schema = quote_ident(main);
        env.admin_sql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema} AUTHORIZATION {schema}; \
             CREATE TABLE {schema}.orders (id int); ALTER TABLE {schema}.orders OWNER TO {schema}; \
             ALTER ROLE {schema} SET search_path TO {schema}, public"
        ))
        .await;
        Pair { fixture, main: main.to_owned(), master }
    }

    async fn rotate(&self) -> String {
        self.fixture.rotate_once().await
    }

    async fn current(&self) -> (String, String) {
        self.fixture.current_credentials().await
    }
}

#[tokio::test]
async fn alternating_users_share_privileges_and_objects_with_no_downtime() {
    let p = Pair::new(&unique("shop"), json!({})).await;
    let clone = format!("{}_clone", p.main);
    let schema = quote_ident(&p.main);

    p.rotate().await;
    let (user, clone_password) = p.current().await;
    assert_eq!(user, clone, "the first rotation hands over to the clone");
    assert!(p.env.pg_logs_in(&p.main, &p.password).await, "the main user still logs in: no downtime");

    // The clone uses what the main user owns, and what it creates belongs to the main user.
    p.env.sql_as(&clone, &clone_password, "INSERT INTO orders VALUES (1); SELECT * FROM orders").await.unwrap();
    p.env.sql_as(&clone, &clone_password, &format!("CREATE TABLE {schema}.made_by_clone (x int)")).await.unwrap();
    p.env.sql_as(&p.main, &p.password, "INSERT INTO made_by_clone VALUES (2); DROP TABLE made_by_clone").await.unwrap();

    // A grant the main user receives later reaches the clone without another rotation.
    let later = quote_ident(&unique("later"));
    p.env.admin_sql(&format!("CREATE TABLE public.{later} (x int)")).await;
    assert!(p.env.sql_as(&clone, &clone_password, &format!("SELECT * FROM public.{later}")).await.is_err());
    p.env.admin_sql(&format!("GRANT SELECT ON public.{later} TO {schema}")).await;
    p.env.sql_as(&clone, &clone_password, &format!("SELECT * FROM public.{later}")).await.unwrap();

    // The second rotation returns to the main user with a new password; the clone keeps working.
    p.rotate().await;
    let (user, main_password) = p.current().await;
    assert_eq!(user, p.main);
    assert_ne!(main_password, p.password);
    assert!(p.env.pg_logs_in(&p.main, &main_password).await);
    assert!(!p.env.pg_logs_in(&p.main, &p.password).await, "the main user's old password is gone");
    assert!(p.env.pg_logs_in(&clone, &clone_password).await, "the clone still logs in");

    // The third rotation changes the clone's password again, through the existing role.
    p.rotate().await;
    let (user, newer_clone_password) = p.current().await;
    assert_eq!(user, clone);
    assert!(p.env.pg_logs_in(&clone, &newer_clone_password).await);
    assert!(!p.env.pg_logs_in(&clone, &clone_password).await);
    assert!(p.env.pg_logs_in(&p.main, &main_password).await);
}

#[tokio::test]
async fn names_that_need_quoting_work() {
    let p = Pair::new(&format!("Shop \"{}\" Owner", &unique("q")[2..]), json!({})).await;
    p.rotate().await;
    let (user, password) = p.current().await;
    assert_eq!(user, format!("{}_clone", p.main));
    p.env.sql_as(&user, &password, "SELECT * FROM orders").await.unwrap();
}

/// Starts a rotation on `p`, expects createSecret or setSecret to fail with `error_type`
/// and `message`, and checks that no clone exists and the stages did not move.
async fn assert_refused(p: &Pair, step: &str, error_type: &str, message: &str) {
    let token = start_rotation(&p.env, &p.client, &p.secret).await;
    if step == "setSecret" {
        invoke_step(&p.env, FUNCTION, "createSecret", &p.secret, &token).await.expect("createSecret");
    }
    let before = stages(&p.client, &p.secret).await;
    let error = invoke_step(&p.env, FUNCTION, step, &p.secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, error_type, "{error:?}");
    assert!(error.message.contains(message), "{:?} should contain {message:?}", error.message);
    assert_eq!(stages(&p.client, &p.secret).await, before);
    assert!(!p.env.role_exists(&format!("{}_clone", p.main)).await, "no clone was created");
}

#[tokio::test]
async fn a_missing_or_broken_master_secret_is_named_and_nothing_changes() {
    let env = TestEnv::from_env();
    let client = env.secrets_client();

    let p = Pair::new(&unique("nomaster"), json!({"masterarn": null, "rotation_strategy": "alternating-users"})).await;
    assert_refused(&p, "createSecret", "Permanent.MasterArnMissing", "field `masterarn`").await;

    let p =
        Pair::new(&unique("gone"), json!({"masterarn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:nope"}))
            .await;
    assert_refused(&p, "createSecret", "Permanent.InvalidMasterSecret", "cannot be read").await;

    let not_json =
        client.create_secret().name(unique("pg/m")).secret_string("admin:pw").send().await.unwrap().arn.unwrap();
    let p = Pair::new(&unique("notjson"), json!({ "masterarn": not_json })).await;
    assert_refused(&p, "createSecret", "Permanent.InvalidMasterSecret", "is not valid JSON").await;

    let elsewhere = json!({"username": "x", "password": "y", "host": "db.elsewhere.example"});
    let elsewhere = create_secret(&client, &unique("pg/m"), &elsewhere).await;
    let p = Pair::new(&unique("elsewhere"), json!({ "masterarn": elsewhere })).await;
    assert_refused(&p, "createSecret", "Permanent.InvalidMasterSecret", "is for db.elsewhere.example").await;
}

#[tokio::test]
async fn a_forged_secret_whose_current_password_fails_creates_no_user() {
    let p = Pair::new(&unique("forged"), json!({})).await;
    p.env.set_role_password(&p.main, "changed-behind-the-secret").await;
    assert_refused(&p, "setSecret", "Permanent.CurrentPasswordRejected", "is rejected").await;
}

#[tokio::test]
async fn a_clone_name_over_63_bytes_is_refused_before_anything_is_stored() {
    let main = format!("{}_{}", "n".repeat(50), &unique("x")[2..]); // 61 bytes; with _clone 67
    let p = Pair::new(&main, json!({})).await;
    assert_refused(&p, "createSecret", "Permanent.AlternateNameTooLong", "allows 63").await;
}

#[tokio::test]
async fn the_master_rotates_a_single_user_whose_passwords_all_stopped_working() {
    let p = Pair::new(&unique("locked"), json!({"rotation_strategy": "single-user-with-master"})).await;
    p.rotate().await; // so an AWSPREVIOUS version exists
    p.env.set_role_password(&p.main, "neither-current-nor-previous").await;

    p.rotate().await;
    let (user, password) = p.current().await;
    assert_eq!(user, p.main, "single user: the name stays");
    assert!(p.env.pg_logs_in(&p.main, &password).await);
    assert!(!p.env.pg_logs_in(&p.main, "neither-current-nor-previous").await);
    assert!(!p.env.role_exists(&format!("{}_clone", p.main)).await);
}

#[tokio::test]
async fn users_created_beforehand_only_get_new_passwords() {
    let p = Pair::new(&unique("precreated"), json!({})).await;
    let clone = format!("{}_clone", p.main);
    let (main, clone_q) = (quote_ident(&p.main), quote_ident(&clone));
    // The operator's own set-up, in lower case so the function's statements stand out in the log.
    p.env
        .admin_sql(&format!(
            "create role {clone_q} login password 'operator-made'; grant {main} to {clone_q}; \
             alter role {clone_q} set search_path to {main}, public; alter role {clone_q} set role to {main}"
        ))
        .await;
    p.env.let_pg_master_administer(&p.master, &clone).await;

    p.rotate().await;
    let (user, password) = p.current().await;
    assert_eq!(user, clone);
    p.env.sql_as(&clone, &password, "SELECT * FROM orders").await.unwrap();
    let log = p.env.pg_log_text();
    assert!(log.contains(&format!("ALTER ROLE {clone_q} PASSWORD 'SCRAM-SHA-256$")), "the password was set");
    for needless in
        [format!("CREATE ROLE {clone_q}"), format!("GRANT {main} TO {clone_q}"), format!("ALTER ROLE {clone_q} SET")]
    {
        assert!(!log.contains(&needless), "nothing already in place is redone: found {needless:?}");
    }
}

#[tokio::test]
async fn a_master_without_admin_option_on_postgresql_16_is_told_what_to_grant() {
    let p =
        Pair::without_admin_option(&unique("noadmin"), json!({"rotation_strategy": "single-user-with-master"})).await;
    let token = p.start_rotation().await;
    p.step("createSecret", &token).await.unwrap();
    let stages_before = p.stages().await;
    let result = p.step("setSecret", &token).await;
    if p.env.pg_version < 16 {
        result.expect("before PostgreSQL 16, CREATEROLE alone may change any non-superuser role's password");
        return;
    }
    let error = result.unwrap_err();
    assert_eq!(error.error_type, "Permanent.TargetCommand", "{error:?}");
    let grant = format!("GRANT {} TO {} WITH ADMIN OPTION", quote_ident(&p.main), quote_ident(&p.master));
    assert!(error.message.contains("lacks ADMIN OPTION on role") && error.message.contains(&grant), "{error:?}");
    p.assert_unchanged(&stages_before).await;
    assert!(p.logs_in(&p.password).await, "the password did not change");

    p.env.let_pg_master_administer(&p.master, &p.main).await;
    p.fixture.rotate(&token).await.expect("with ADMIN OPTION granted, the retry succeeds");
    assert!(p.logs_in(&p.password_of(None, "AWSCURRENT").await).await);
}

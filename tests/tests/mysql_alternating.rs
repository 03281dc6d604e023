//! Alternating users and single user with the master secret, for MySQL/MariaDB, end to end.

use e2e::scenarios::{Db, Fixture};
use e2e::*;
use serde_json::{Value, json};

const FUNCTION: &str = "mysql-rotation";

/// A short unique name: `USERNAME_CHARACTER_LIMIT` (16 by default) must fit `<name>_clone`.
fn short_name(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// A master account shaped like the master user of RDS (every privilege, with grant option;
/// not the server's root), and a secret for it with only `username` and `password`.
async fn create_master(env: &TestEnv, client: &aws_sdk_secretsmanager::Client) -> (String, String) {
    let name = short_name("mst");
    let password = format!("master-{}", uuid::Uuid::new_v4().simple());
    env.mysql_create_user(&name, "%", &password).await;
    env.mysql_admin_sql(&format!("GRANT ALL PRIVILEGES ON *.* TO {} WITH GRANT OPTION", mysql_account(&name, "%")))
        .await;
    let secret = create_secret(client, &unique("mysql/master"), &json!({"username": name, "password": password})).await;
    (name, secret)
}

/// A main account `'main'@'%'` and its secret pointing at a master secret.
struct Pair {
    fixture: Fixture,
    master: String,
    main: String,
    clone: String,
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
        let env = TestEnv::from_env();
        let (master, master_secret) = create_master(&env, &env.secrets_client()).await;
        let fixture = Fixture::with_master(Db::Mysql, main, &master_secret, extra).await;
        Pair { fixture, master, main: main.to_owned(), clone: format!("{main}_clone") }
    }

    async fn rotate(&self) -> String {
        self.fixture.rotate_once().await
    }

    async fn current(&self) -> (String, String) {
        self.fixture.current_credentials().await
    }

    /// A table `rotation_test.<name>_<main>`, as `db`.`table`.
    async fn table(&self, name: &str) -> String {
        let table = format!("`rotation_test`.`{name}_{}`", self.main);
        self.env.mysql_admin_sql(&format!("CREATE TABLE {table} (id int)")).await;
        table
    }

    /// How often the function sent `statement` (the test's own statements are lower case).
    fn sent(&self, statement: &str) -> usize {
        self.env.mysql_log_text().matches(statement).count()
    }
}

#[tokio::test]
async fn the_clone_gets_every_grant_role_and_limit_and_the_main_user_keeps_working() {
    let p = Pair::new(&short_name("shop"), json!({})).await;
    let (main, clone) = (mysql_account(&p.main, "%"), mysql_account(&p.clone, "%"));
    let orders = p.table("orders").await;
    let ledger = p.table("ledger").await;
    let reports = p.table("reports").await;
    let role = format!("`reader_{}`", p.main);
    let master = mysql_account(&p.master, "%");
    // A second host part with its own grant; TLS required and a connection limit on the first.
    let other_host = mysql_account(&p.main, "10.9.%");
    p.env
        .mysql_admin_sql(&format!(
            "grant select, insert on {orders} to {main}; \
             grant select on {ledger} to {main} with grant option; \
             create role {role}; grant select on {reports} to {role}; grant {role} to {master} with admin option; \
             grant {role} to {main}; set default role {role} for {main}; \
             alter user {main} require ssl with max_user_connections 5; \
             create user {other_host} identified by 'other'; grant select on {orders} to {other_host}"
        ))
        .await;

    p.rotate().await;
    let (user, clone_password) = p.current().await;
    assert_eq!(user, p.clone, "the first rotation hands over to the clone");
    assert!(p.env.mysql_logs_in(&p.main, &p.password).await, "the main user still logs in: no downtime");
    assert_eq!(p.env.mysql_hosts(&p.clone).await, ["%", "10.9.%"], "the clone has the main user's host parts");

    // The clone can do what the main user can: tables, the grant option, the default role.
    let as_clone = |sql: String| {
        let (env, user, password) = (p.env.clone(), p.clone.clone(), clone_password.clone());
        async move { env.mysql_sql_as(&user, &password, &sql).await }
    };
    as_clone(format!("INSERT INTO {orders} VALUES (1); SELECT * FROM {orders}")).await.unwrap();
    as_clone(format!("SELECT * FROM {reports}")).await.expect("the role is the clone's default role");
    as_clone(format!("GRANT SELECT ON {ledger} TO {other_host}")).await.expect("the grant option came along");
    let grants = p.env.mysql_grants(&p.clone, "%").await;
    let quoted = format!("`{}`@`%`", p.clone);
    for line in [
        format!("GRANT SELECT, INSERT ON {orders} TO {quoted}"),
        format!("GRANT SELECT ON {ledger} TO {quoted} WITH GRANT OPTION"),
        format!("GRANT {role} TO {quoted}"),
        format!("SET DEFAULT ROLE {role} FOR {quoted}"),
    ] {
        assert!(grants.contains(&line), "{line} missing from {grants:?}");
    }
    assert!(
        p.env
            .mysql_grants(&p.clone, "10.9.%")
            .await
            .contains(&format!("GRANT SELECT ON {orders} TO `{}`@`10.9.%`", p.clone))
    );
    let limits = p
        .env
        .mysql_rows(&format!(
            "SELECT ssl_type, max_user_connections FROM mysql.user WHERE User = {} AND Host = '%'",
            mysql_literal(&p.clone)
        ))
        .await;
    assert_eq!(limits, [["ANY", "5"]], "TLS requirement and connection limit copied");
    assert!(!p.env.mysql_log_text().contains(&clone_password), "the clone's password never reached the server as text");

    // The second rotation returns to the main user with a new password; the clone keeps working.
    p.env.mysql_admin_sql(&format!("grant update on {orders} to {main}")).await;
    p.rotate().await;
    let (user, main_password) = p.current().await;
    assert_eq!(user, p.main);
    assert_ne!(main_password, p.password);
    assert!(p.env.mysql_logs_in(&p.main, &main_password).await);
    assert!(!p.env.mysql_logs_in(&p.main, &p.password).await, "the main user's old password is gone");
    assert!(p.env.mysql_logs_in(&p.clone, &clone_password).await, "the clone still logs in");
    let recreated =
        p.env.mysql_log_text().lines().filter(|l| l.contains(&format!("CREATE USER {main} REQUIRE"))).count();
    assert_eq!(recreated, 0, "the main user is not recreated");

    // The third rotation updates the existing clone: the grant the main user gained since is
    // added, nothing already in place is sent again.
    p.rotate().await;
    let (user, newer_clone_password) = p.current().await;
    assert_eq!(user, p.clone);
    assert!(p.env.mysql_logs_in(&p.clone, &newer_clone_password).await);
    assert!(!p.env.mysql_logs_in(&p.clone, &clone_password).await);
    assert!(p.env.mysql_logs_in(&p.main, &main_password).await);
    p.env.mysql_sql_as(&p.clone, &newer_clone_password, &format!("UPDATE {orders} SET id = 2")).await.unwrap();
    assert_eq!(p.sent(&format!("CREATE USER {clone}")), 1);
    assert_eq!(p.sent(&format!("GRANT SELECT, INSERT ON {orders} TO {clone}")), 1, "not granted twice");
    assert_eq!(p.sent(&format!("GRANT SELECT, INSERT, UPDATE ON {orders} TO {clone}")), 1);
    assert_eq!(p.sent(&format!("GRANT SELECT ON {ledger} TO {clone} WITH GRANT OPTION")), 1);
    assert_eq!(p.sent(&format!("GRANT {role} TO {clone}")), 1);
    assert_eq!(p.sent(&format!("ALTER USER {clone} IDENTIFIED BY PASSWORD '*")), 2);
}

/// Starts a rotation on `p`, expects `step` to fail with `error_type` and `message`, and
/// checks that no clone exists and the stages did not move.
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
    assert!(p.env.mysql_hosts(&p.clone).await.is_empty(), "no clone was created");
    if step == "createSecret" {
        let pending = p
            .client
            .get_secret_value()
            .secret_id(&p.secret)
            .version_id(&token)
            .version_stage("AWSPENDING")
            .send()
            .await;
        assert!(pending.is_err(), "no pending value was stored");
    }
}

#[tokio::test]
async fn a_clone_name_over_the_character_limit_is_refused_before_anything_is_stored() {
    let p = Pair::new(&short_name("toolong"), json!({})).await; // 13 characters; with _clone 19
    assert_refused(&p, "createSecret", "Permanent.AlternateNameTooLong", "USERNAME_CHARACTER_LIMIT allows 16").await;
}

#[tokio::test]
async fn a_forged_secret_whose_current_password_fails_creates_no_user() {
    let p = Pair::new(&short_name("frg"), json!({})).await;
    p.env.mysql_set_password(&p.main, "%", "changed-behind-the-secret").await;
    assert_refused(&p, "setSecret", "Permanent.CurrentPasswordRejected", "is rejected").await;
}

#[tokio::test]
async fn test_secret_refuses_a_clone_that_lacks_a_grant_of_the_main_user() {
    let p = Pair::new(&short_name("chk"), json!({})).await;
    let orders = p.table("orders").await;
    let main = mysql_account(&p.main, "%");
    // With SELECT on the mysql schema the clone may read the main user's grants, so testSecret compares them.
    p.env
        .mysql_admin_sql(&format!("grant select, insert on {orders} to {main}; grant select on mysql.* to {main}"))
        .await;
    let token = start_rotation(&p.env, &p.client, &p.secret).await;
    for step in ["createSecret", "setSecret"] {
        invoke_step(&p.env, FUNCTION, step, &p.secret, &token).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
    }
    p.env.mysql_admin_sql(&format!("revoke insert on {orders} from {}", mysql_account(&p.clone, "%"))).await;

    let error = invoke_step(&p.env, FUNCTION, "testSecret", &p.secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.TargetCommand", "{error:?}");
    assert!(error.message.contains("lacks privileges of"), "{error:?}");
    assert!(error.message.contains(&format!("GRANT SELECT, INSERT ON {orders} TO")), "{error:?}");
    assert_eq!(stages(&p.client, &p.secret).await[&token], ["AWSPENDING"], "nothing was finished");

    // Once the clone has its grants back, the same rotation completes.
    p.env.mysql_admin_sql(&format!("grant insert on {orders} to {}", mysql_account(&p.clone, "%"))).await;
    for step in ["testSecret", "finishSecret"] {
        invoke_step(&p.env, FUNCTION, step, &p.secret, &token).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
    }
    assert_eq!(p.current().await.0, p.clone);
}

#[tokio::test]
async fn a_set_secret_stopped_halfway_leaves_a_locked_clone_and_the_retry_completes_it() {
    let p = Pair::new(&short_name("half"), json!({})).await;
    let orders = p.table("orders").await;
    let (main, clone) = (mysql_account(&p.main, "%"), mysql_account(&p.clone, "%"));
    let role = format!("`writer_{}`", p.main);
    // The master may not hand on this role yet (no ADMIN OPTION): replaying it fails.
    p.env
        .mysql_admin_sql(&format!(
            "create role {role}; grant insert on {orders} to {role}; grant {role} to {main}; \
             grant select on {orders} to {main}"
        ))
        .await;
    let token = start_rotation(&p.env, &p.client, &p.secret).await;
    invoke_step(&p.env, FUNCTION, "createSecret", &p.secret, &token).await.unwrap();
    let pending =
        secret_value(&p.client, &p.secret, Some(&token), "AWSPENDING").await["password"].as_str().unwrap().to_owned();

    let error = invoke_step(&p.env, FUNCTION, "setSecret", &p.secret, &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.TargetCommand", "{error:?}");
    assert!(error.message.contains(&format!("GRANT {role} TO {clone}")), "the failed statement is named: {error:?}");
    assert!(!error.message.contains(&pending));
    assert_eq!(p.env.mysql_hosts(&p.clone).await, ["%"], "the clone was created");
    let login = p.env.mysql_sql_as(&p.clone, &pending, "SELECT 1").await.unwrap_err();
    // Locked, and without the pending password: MariaDB answers "access denied" before it looks at the lock.
    assert!(login.contains("Access denied"), "a clone without its grants cannot log in: {login}");

    // Someone gives the master what it lacks; Secrets Manager's retry completes the same rotation.
    p.env.mysql_admin_sql(&format!("grant {role} to {} with admin option", mysql_account(&p.master, "%"))).await;
    for step in ["setSecret", "testSecret", "finishSecret"] {
        invoke_step(&p.env, FUNCTION, step, &p.secret, &token).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
    }
    assert_eq!(p.current().await, (p.clone.clone(), pending.clone()));
    p.env.mysql_sql_as(&p.clone, &pending, &format!("SELECT * FROM {orders}")).await.unwrap();
    p.env
        .mysql_sql_as(&p.clone, &pending, &format!("SET ROLE {role}; INSERT INTO {orders} VALUES (1)"))
        .await
        .expect("the role reached the clone on the retry");
    assert_eq!(p.sent(&format!("CREATE USER {clone}")), 1, "the retry did not create the clone again");
}

#[tokio::test]
async fn users_created_beforehand_only_get_new_passwords() {
    let p = Pair::new(&short_name("pre"), json!({})).await;
    let orders = p.table("orders").await;
    let (main, clone) = (mysql_account(&p.main, "%"), mysql_account(&p.clone, "%"));
    // The operator's own set-up, in lower case so the function's statements stand out in the log.
    p.env
        .mysql_admin_sql(&format!(
            "grant select on {orders} to {main}; create user {clone} identified by 'operator-made'; \
             grant select on {orders} to {clone}"
        ))
        .await;

    p.rotate().await;
    let (user, password) = p.current().await;
    assert_eq!(user, p.clone);
    p.env.mysql_sql_as(&p.clone, &password, &format!("SELECT * FROM {orders}")).await.unwrap();
    assert_eq!(p.sent(&format!("ALTER USER {clone} IDENTIFIED BY PASSWORD '*")), 1, "the password was set");
    let log = p.env.mysql_log_text();
    for needless in
        [format!("CREATE USER {clone}"), format!("GRANT SELECT ON {orders} TO {clone}"), "REQUIRE".to_owned()]
    {
        let found: Vec<_> = log.lines().filter(|l| l.contains(&clone) && l.contains(&needless)).collect();
        assert!(found.is_empty(), "nothing already in place is redone: found {found:?}");
    }
}

#[tokio::test]
async fn the_master_rotates_a_single_user_on_every_host_whatever_its_name() {
    // A name with a quote, a backslash and a percent sign, on two host parts, whose current and
    // previous passwords both stopped working.
    let user = format!("o'b\\r%{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let p = Pair::new(&user, json!({"rotation_strategy": "single-user-with-master"})).await;
    p.env.mysql_create_user(&user, "10.9.%", "other-host").await;
    p.rotate().await; // so an AWSPREVIOUS version exists
    p.env.mysql_set_password(&user, "%", "neither-current-nor-previous").await;

    p.rotate().await;
    let (current_user, password) = p.current().await;
    assert_eq!(current_user, user, "single user: the name stays");
    assert!(p.env.mysql_logs_in(&user, &password).await);
    assert!(!p.env.mysql_logs_in(&user, "neither-current-nor-previous").await);
    assert!(p.env.mysql_hosts(&p.clone).await.is_empty(), "no clone");
    let hashes = p
        .env
        .mysql_rows(&format!(
            "SELECT DISTINCT authentication_string FROM mysql.user WHERE User = {}",
            mysql_literal(&user)
        ))
        .await;
    assert_eq!(hashes.len(), 1, "both host parts have the new password: {hashes:?}");
    // One statement for both host parts, so no retry can find the password set on one only.
    let hash = &hashes[0][0];
    let (everywhere, subnet) = (mysql_account(&user, "%"), mysql_account(&user, "10.9.%"));
    let statement =
        format!("ALTER USER {everywhere} IDENTIFIED BY PASSWORD '{hash}', {subnet} IDENTIFIED BY PASSWORD '{hash}'");
    assert_eq!(p.sent(&statement), 1);
    assert!(!p.env.mysql_log_text().contains(&password), "the password never reached the server as text");
}

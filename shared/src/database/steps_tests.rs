//! Unit tests of the four steps over in-memory doubles, with injected faults.
//!
//! Each test plays Secrets Manager: `RotateSecret` leaves the token staged `AWSPENDING` with no
//! value, then the four steps are invoked in order through `Rotator::handle`, and the whole
//! sequence is invoked again after a failure. Assertions are on what a user sees: which version
//! holds which label, which password the database accepts, what the error says.

use serde_json::{Value, json};

use crate::testing::{FailWhen, FakeDb, FakeTarget, MemoryStore, SecretState, StoreOp, TargetOp};
use crate::{DatabaseRotation, Error, Rotator, Settings, Target, stage};

const NAME: &str = "prod/orders-db";
/// The version the secret was created with.
const FIRST: &str = "11111111-1111-4111-8111-111111111111";
/// The `ClientRequestToken` of the rotation under test.
const TOKEN: &str = "22222222-2222-4222-8222-222222222222";
const USER: &str = "orders_app";
const HOST: &str = "orders.cluster-abc.eu-west-1.rds.amazonaws.com";
const OLD_PASSWORD: &str = "Old-Password-7f3a9c";
/// Sent by Secrets Manager; a credential that must reach PutSecretValue and nothing else.
const ROTATION_TOKEN: &str = "rotation-token-e1d2c3b4a5";
const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// The secret as RDS writes it, with fields the engine does not know.
fn first_value() -> Value {
    json!({
        "engine": "postgres",
        "host": HOST,
        "port": 5432,
        "username": USER,
        "password": OLD_PASSWORD,
        "dbname": "orders",
        "dbInstanceIdentifier": "orders-prod-1",
        "proxy": {"endpoints": ["a", "b"], "idle": null}
    })
}

fn with_password(mut value: Value, password: &str) -> Value {
    value["password"] = json!(password);
    value
}

fn password_of(value: &Value) -> String {
    value["password"].as_str().expect("the secret has a password").to_owned()
}

fn default_settings() -> Settings {
    Settings::from_lookup(&|_| None, &FakeTarget::ENGINE).unwrap()
}

/// A secret, a database and a rotator over them.
struct Fixture {
    store: MemoryStore,
    db: FakeDb,
    rotator: Rotator<MemoryStore, DatabaseRotation<FakeTarget>>,
    arn: String,
}

impl Fixture {
    /// A secret whose `AWSCURRENT` password logs in, rotation started with [`TOKEN`].
    fn rotating() -> Self {
        let fixture = Fixture::not_rotating();
        fixture.store.start_rotation(&fixture.arn, TOKEN);
        fixture
    }

    /// A secret whose `AWSCURRENT` password logs in, with no rotation under way.
    fn not_rotating() -> Self {
        Fixture::with_settings(default_settings())
    }

    fn with_settings(settings: Settings) -> Self {
        let store = MemoryStore::new();
        let arn = store.create_secret(NAME, FIRST, &first_value());
        let db = FakeDb::new();
        db.set_user_password(USER, OLD_PASSWORD);
        let rotator = Rotator::new(store.clone(), DatabaseRotation::new(FakeTarget::with_db(db.clone()), settings));
        Fixture { store, db, rotator, arn }
    }

    fn event(&self, step: &str, token: &str) -> Value {
        json!({"Step": step, "SecretId": self.arn, "ClientRequestToken": token, "RotationToken": ROTATION_TOKEN})
    }

    async fn step(&self, step: &str, token: &str) -> Result<(), Error> {
        self.rotator.handle(self.event(step, token)).await.map(|_| ())
    }

    /// The four steps in order, stopping at the first error, as Secrets Manager runs them.
    async fn rotate(&self, token: &str) -> Result<(), Error> {
        for step in STEPS {
            self.step(step, token).await?;
        }
        Ok(())
    }

    /// Runs the whole rotation again after each failure, at most `attempts` times.
    async fn rotate_with_retries(&self, token: &str, attempts: usize) -> Result<(), Error> {
        let mut result = self.rotate(token).await;
        for _ in 1..attempts {
            if result.is_ok() {
                break;
            }
            result = self.rotate(token).await;
        }
        result
    }

    fn state(&self) -> SecretState {
        self.store.secret(&self.arn)
    }

    fn version_with(&self, label: &str) -> Option<String> {
        self.store.version_with(&self.arn, label)
    }

    fn value(&self, version: &str) -> Value {
        self.store.value(&self.arn, version).unwrap_or_else(|| panic!("version {version} holds no value"))
    }

    /// The password stored in version `version`.
    fn password_in(&self, version: &str) -> String {
        password_of(&self.value(version))
    }

    fn db_password(&self) -> String {
        self.db.password(USER).expect("the user exists")
    }

    /// What a finished rotation looks like: `token` is `AWSCURRENT` with a new password the
    /// database accepts, `previous` is `AWSPREVIOUS`, nothing is `AWSPENDING`, and every other
    /// field of the secret is unchanged.
    fn assert_rotated(&self, token: &str, previous: &str) {
        let state = self.state();
        assert_eq!(self.version_with(stage::CURRENT).as_deref(), Some(token), "AWSCURRENT: {state:#?}");
        assert_eq!(self.version_with(stage::PREVIOUS).as_deref(), Some(previous), "AWSPREVIOUS: {state:#?}");
        assert_eq!(self.version_with(stage::PENDING), None, "AWSPENDING left behind: {state:#?}");
        let new_password = self.password_in(token);
        assert_ne!(new_password, self.password_in(previous), "the password did not change");
        assert_eq!(self.db_password(), new_password, "the database and AWSCURRENT disagree");
        assert_eq!(self.value(token), with_password(self.value(previous), &new_password), "other fields changed");
    }

    /// Every password and token this fixture knows: none may appear in an error.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![OLD_PASSWORD.to_owned(), ROTATION_TOKEN.to_owned()];
        secrets.extend(self.db.password(USER));
        for version in self.state().versions.keys() {
            if let Some(value) = self.store.value(&self.arn, version)
                && let Some(password) = value["password"].as_str()
            {
                secrets.push(password.to_owned());
            }
        }
        secrets
    }

    fn assert_reveals_no_secret(&self, err: &Error) {
        assert_no_secret_in(err, &self.secrets());
    }
}

fn assert_no_secret_in(err: &Error, secrets: &[String]) {
    let shown = [format!("{err:?}"), err.to_string()];
    for secret in secrets {
        for text in &shown {
            assert!(!text.contains(secret.as_str()), "an error reveals a secret: {text}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The guard
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_step_fails_when_rotation_is_disabled_and_changes_nothing() {
    let f = Fixture::rotating();
    f.store.set_rotation_enabled(&f.arn, false);
    let before = f.state();
    for step in STEPS {
        let err = f.step(step, TOKEN).await.unwrap_err();
        assert!(matches!(&err, Error::RotationDisabled { secret } if *secret == f.arn), "{step}: {err:?}");
        assert!(!err.is_retryable());
        assert_eq!(err.to_string(), format!("rotation is not enabled for secret {}", f.arn));
    }
    assert_eq!(f.state(), before);
    assert_eq!(f.store.calls(), [StoreOp::Describe; 4], "the guard reads, nothing else");
    assert!(f.db.calls().is_empty(), "the database was contacted");
}

#[tokio::test]
async fn every_step_fails_when_the_token_is_not_a_version_of_the_secret() {
    let f = Fixture::rotating();
    let before = f.state();
    for step in STEPS {
        let err = f.step(step, "33333333-no-such-version").await.unwrap_err();
        assert!(matches!(&err, Error::UnknownVersion { token, .. } if token == "33333333-no-such-version"), "{err:?}");
        assert!(err.to_string().contains("has no version 33333333-no-such-version"), "{err}");
        assert!(!err.is_retryable());
    }
    assert_eq!(f.state(), before);
    assert!(f.db.calls().is_empty());
}

#[tokio::test]
async fn every_step_succeeds_without_changes_when_the_token_is_already_current() {
    let f = Fixture::not_rotating();
    f.store.set_rotation_enabled(&f.arn, true);
    let before = f.state();
    for step in STEPS {
        f.step(step, FIRST).await.unwrap_or_else(|e| panic!("{step}: {e}"));
    }
    assert_eq!(f.state(), before);
    assert_eq!(f.store.calls(), [StoreOp::Describe; 4], "a finished rotation needs no other call");
    assert!(f.db.calls().is_empty());
    assert_eq!(f.db_password(), OLD_PASSWORD);
}

#[tokio::test]
async fn every_step_fails_when_the_token_is_the_previous_version() {
    let f = Fixture::rotating();
    f.rotate(TOKEN).await.unwrap();
    let before = f.state();
    let db_before = f.db_password();
    for step in STEPS {
        let err = f.step(step, FIRST).await.unwrap_err();
        assert!(matches!(&err, Error::NotPending { token, stages, .. } if token == FIRST && stages == "AWSPREVIOUS"));
        assert_eq!(
            err.to_string(),
            format!("version {FIRST} of secret {} is not staged AWSPENDING (its stages: AWSPREVIOUS)", f.arn)
        );
    }
    assert_eq!(f.state(), before);
    assert_eq!(f.db_password(), db_before);
}

#[tokio::test]
async fn an_unknown_step_is_rejected_by_name_before_any_call() {
    let f = Fixture::rotating();
    let err = f.rotator.handle(f.event("rotateSecret", TOKEN)).await.unwrap_err();
    assert!(matches!(&err, Error::UnknownStep(step) if step == "rotateSecret"));
    assert!(err.to_string().starts_with("unknown rotation step `rotateSecret`"), "{err}");
    assert!(f.store.calls().is_empty());
    f.assert_reveals_no_secret(&err);
}

#[tokio::test]
async fn an_event_missing_a_field_is_rejected_naming_the_field() {
    let f = Fixture::rotating();
    for field in ["Step", "SecretId", "ClientRequestToken"] {
        let mut event = f.event("createSecret", TOKEN);
        event.as_object_mut().unwrap().remove(field);
        let err = f.rotator.handle(event).await.unwrap_err();
        assert_eq!(err.to_string(), format!("invalid rotation event: missing field `{field}`"));
        assert_eq!(err.error_type(), "Permanent.InvalidEvent");
        f.assert_reveals_no_secret(&err);
    }
    assert!(f.store.calls().is_empty());
}

/// An event whose `field` has a value of the wrong type.
fn event_with(f: &Fixture, field: &str, value: Value) -> Value {
    let mut event = f.event("createSecret", TOKEN);
    event[field] = value;
    event
}

#[tokio::test]
async fn an_event_field_of_the_wrong_type_is_rejected_naming_the_field() {
    let f = Fixture::rotating();
    for (field, value) in [("ClientRequestToken", json!(null)), ("SecretId", json!(42)), ("Step", json!(["setSecret"]))]
    {
        let err = f.rotator.handle(event_with(&f, field, value)).await.unwrap_err();
        assert_eq!(err.kind(), "InvalidEvent");
        assert!(err.to_string().contains(&format!("`{field}`")), "the error does not name {field}: {err}");
    }
    assert!(f.store.calls().is_empty());
}

#[tokio::test]
async fn a_rotation_token_of_the_wrong_type_is_not_echoed() {
    let f = Fixture::rotating();
    let err = f.rotator.handle(event_with(&f, "RotationToken", json!(987_654_321))).await.unwrap_err();
    assert_eq!(err.kind(), "InvalidEvent");
    assert_no_secret_in(&err, &["987654321".to_owned()]);
}

#[tokio::test]
async fn finish_removes_a_pending_label_left_on_the_current_version() {
    // Emulators leave AWSPENDING on the finished version; Secrets Manager then refuses the
    // next rotation.
    let f = Fixture::rotating();
    f.store.put_value(&f.arn, TOKEN, &with_password(first_value(), "Emulator-Pw-1"), &[stage::PENDING]);
    f.store.move_label(&f.arn, stage::CURRENT, Some(TOKEN), Some(FIRST));
    f.db.set_user_password(USER, "Emulator-Pw-1");
    for step in ["createSecret", "setSecret", "testSecret"] {
        f.step(step, TOKEN).await.unwrap();
    }
    assert_eq!(f.store.labels(&f.arn, TOKEN), [stage::CURRENT, stage::PENDING], "only finishSecret changes labels");
    f.step("finishSecret", TOKEN).await.unwrap();
    f.assert_rotated(TOKEN, FIRST);
}

// ---------------------------------------------------------------------------------------------
// A whole rotation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rotation_makes_the_token_current_with_a_new_password_the_database_accepts() {
    let f = Fixture::rotating();
    f.rotate(TOKEN).await.unwrap();
    f.assert_rotated(TOKEN, FIRST);
    assert_eq!(f.store.labels(&f.arn, TOKEN), [stage::CURRENT]);
    assert_eq!(f.store.labels(&f.arn, FIRST), [stage::PREVIOUS]);
    let new_password = f.password_in(TOKEN);
    assert_eq!(new_password.len(), 32, "PASSWORD_LENGTH defaults to 32");
    assert_eq!(f.db.login_attempts(USER, &new_password), 2, "setSecret tries it first, testSecret logs in with it");
    assert_eq!(f.db.passwords_set(), 1);
}

#[tokio::test]
async fn a_rotation_keeps_every_other_field_of_the_secret_in_order() {
    let f = Fixture::rotating();
    f.rotate(TOKEN).await.unwrap();
    let new = f.value(TOKEN);
    assert_eq!(new, with_password(first_value(), &f.password_in(TOKEN)));
    let keys: Vec<&String> = new.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["engine", "host", "port", "username", "password", "dbname", "dbInstanceIdentifier", "proxy"]);
}

#[tokio::test]
async fn the_rotation_token_of_the_event_reaches_put_secret_value() {
    let f = Fixture::rotating();
    f.rotate(TOKEN).await.unwrap();
    assert_eq!(f.store.rotation_tokens(), [Some(ROTATION_TOKEN.to_owned())]);

    let without = Fixture::rotating();
    for step in STEPS {
        let mut event = without.event(step, TOKEN);
        event.as_object_mut().unwrap().remove("RotationToken");
        without.rotator.handle(event).await.unwrap();
    }
    assert_eq!(without.store.rotation_tokens(), [None]);
}

#[tokio::test]
async fn create_secret_asks_for_a_password_that_follows_the_policy() {
    let lookup = |name: &str| match name {
        "PASSWORD_LENGTH" => Some("12".to_owned()),
        "EXCLUDE_PUNCTUATION" => Some("true".to_owned()),
        _ => None,
    };
    let f = Fixture::with_settings(Settings::from_lookup(&lookup, &FakeTarget::ENGINE).unwrap());
    f.store.start_rotation(&f.arn, TOKEN);
    f.step("createSecret", TOKEN).await.unwrap();
    let password = f.password_in(TOKEN);
    assert_eq!(password.len(), 12);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()), "{password}");
}

#[tokio::test]
async fn create_secret_run_again_keeps_the_pending_value_it_stored() {
    let f = Fixture::rotating();
    f.step("createSecret", TOKEN).await.unwrap();
    let stored = f.value(TOKEN);
    f.step("createSecret", TOKEN).await.unwrap();
    assert_eq!(f.value(TOKEN), stored);
    assert_eq!(f.store.calls().iter().filter(|op| **op == StoreOp::RandomPassword).count(), 1);
    assert_eq!(f.store.calls().iter().filter(|op| **op == StoreOp::PutPending).count(), 1);
}

#[tokio::test]
async fn running_a_finished_rotation_again_changes_nothing() {
    let f = Fixture::rotating();
    f.rotate(TOKEN).await.unwrap();
    let after = f.state();
    let password = f.db_password();

    f.rotate(TOKEN).await.unwrap();
    for step in STEPS {
        f.step(step, TOKEN).await.unwrap_or_else(|e| panic!("{step} alone: {e}"));
    }

    assert_eq!(f.state(), after);
    assert_eq!(f.db_password(), password);
    assert_eq!(f.db.passwords_set(), 1);
    assert_eq!(f.store.rotation_tokens().len(), 1, "PutSecretValue ran again");
}

#[tokio::test]
async fn a_second_rotation_makes_the_first_token_previous() {
    let f = Fixture::rotating();
    f.rotate(TOKEN).await.unwrap();
    let next = "55555555-5555-4555-8555-555555555555";
    f.store.start_rotation(&f.arn, next);
    f.rotate(next).await.unwrap();
    f.assert_rotated(next, TOKEN);
    assert!(f.store.labels(&f.arn, FIRST).is_empty(), "the oldest version keeps a label");
}

// ---------------------------------------------------------------------------------------------
// setSecret
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn set_secret_does_not_change_a_password_the_database_already_has() {
    // An earlier run of this rotation changed the password and then failed.
    let f = Fixture::rotating();
    f.step("createSecret", TOKEN).await.unwrap();
    f.db.set_user_password(USER, &f.password_in(TOKEN));
    f.step("setSecret", TOKEN).await.unwrap();
    assert_eq!(f.db.passwords_set(), 0);
    assert_eq!(f.db.login_attempts(USER, OLD_PASSWORD), 0, "the current password was tried");
    f.step("testSecret", TOKEN).await.unwrap();
    f.step("finishSecret", TOKEN).await.unwrap();
    f.assert_rotated(TOKEN, FIRST);
}

#[tokio::test]
async fn set_secret_logs_in_with_the_previous_password_when_the_current_one_is_rejected() {
    let f = Fixture::rotating();
    // The secret was rotated by hand to SECOND, but the database still has the first password.
    let second = "66666666-6666-4666-8666-666666666666";
    f.store.put_value(&f.arn, second, &with_password(first_value(), "Second-Password-b2"), &[stage::CURRENT]);
    assert_eq!(f.version_with(stage::PREVIOUS).as_deref(), Some(FIRST));

    f.rotate(TOKEN).await.unwrap();

    assert_eq!(f.db.login_attempts(USER, "Second-Password-b2"), 2, "setSecret and testSecret try AWSCURRENT");
    assert_eq!(f.db.login_attempts(USER, OLD_PASSWORD), 1, "setSecret falls back to AWSPREVIOUS");
    f.assert_rotated(TOKEN, second);
}

#[tokio::test]
async fn set_secret_fails_when_neither_current_nor_previous_password_logs_in() {
    let f = Fixture::rotating();
    f.db.set_user_password(USER, "Changed-By-Someone-Else-9");
    f.step("createSecret", TOKEN).await.unwrap();
    let before = f.state();

    let err = f.step("setSecret", TOKEN).await.unwrap_err();

    assert!(matches!(&err, Error::NoWorkingCredentials { user, host, port: 5432 } if user == USER && host == HOST));
    assert_eq!(
        err.to_string(),
        format!("neither the AWSCURRENT nor the AWSPREVIOUS password of user {USER} logs in to {HOST}:5432")
    );
    assert!(!err.is_retryable());
    assert_eq!(f.state(), before);
    assert_eq!(f.db_password(), "Changed-By-Someone-Else-9");
    assert_eq!(f.db.passwords_set(), 0);
    f.assert_reveals_no_secret(&err);
}

#[tokio::test]
async fn set_secret_fails_when_the_previous_version_is_rejected_too() {
    let f = Fixture::rotating();
    let second = "66666666-6666-4666-8666-666666666666";
    f.store.put_value(&f.arn, second, &with_password(first_value(), "Second-Password-b2"), &[stage::CURRENT]);
    f.db.set_user_password(USER, "Changed-By-Someone-Else-9");

    let err = f.rotate(TOKEN).await.unwrap_err();

    assert!(matches!(err, Error::NoWorkingCredentials { .. }), "{err:?}");
    assert_eq!(f.db.login_attempts(USER, OLD_PASSWORD), 1, "AWSPREVIOUS was not tried");
    assert_eq!(f.db_password(), "Changed-By-Someone-Else-9");
    f.assert_reveals_no_secret(&err);
}

#[tokio::test]
async fn set_secret_refuses_a_pending_secret_for_another_user() {
    let f = Fixture::rotating();
    let mut forged = with_password(first_value(), "Forged-Password-4");
    forged["username"] = json!("postgres");
    f.store.put_value(&f.arn, TOKEN, &forged, &[stage::PENDING]);
    f.db.set_user_password("postgres", "Superuser-Password-5");
    let before = f.state();

    let err = f.step("setSecret", TOKEN).await.unwrap_err();

    assert_eq!(err.kind(), "UserMismatch", "{err:?}");
    assert!(err.to_string().contains(&format!("AWSPENDING secret names postgres@{HOST}:5432")), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "aws secretsmanager update-secret-version-stage --secret-id {} --version-stage AWSPENDING \
             --remove-from-version-id {TOKEN}",
            f.arn
        )),
        "the way out: {err}"
    );
    assert!(err.to_string().contains(&format!("AWSCURRENT secret names {USER}@{HOST}:5432")), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(f.state(), before);
    assert_eq!(f.db.password("postgres").as_deref(), Some("Superuser-Password-5"));
    assert_eq!(f.db_password(), OLD_PASSWORD);
    assert_eq!(f.db.passwords_set(), 0);
    assert_no_secret_in(&err, &["Forged-Password-4".to_owned(), "Superuser-Password-5".to_owned()]);
}

#[tokio::test]
async fn an_unreachable_database_fails_retryably_changes_nothing_and_a_retry_succeeds() {
    let f = Fixture::rotating();
    f.step("createSecret", TOKEN).await.unwrap();
    let before = f.state();
    let pending = f.value(TOKEN);
    f.db.set_unreachable(true);

    for step in ["setSecret", "testSecret"] {
        let err = f.step(step, TOKEN).await.unwrap_err();
        assert!(matches!(&err, Error::Unreachable { host, port: 5432, .. } if host == HOST), "{step}: {err:?}");
        assert!(err.is_retryable());
        assert_eq!(err.error_type(), "Retryable.TargetUnreachable");
        f.assert_reveals_no_secret(&err);
    }
    assert!(f.rotate(TOKEN).await.is_err());
    assert_eq!(f.state(), before);
    assert_eq!(f.db_password(), OLD_PASSWORD);

    f.db.set_unreachable(false);
    f.rotate(TOKEN).await.unwrap();
    f.assert_rotated(TOKEN, FIRST);
    assert_eq!(f.value(TOKEN), pending, "the retry stored another password");
}

// ---------------------------------------------------------------------------------------------
// testSecret
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn test_secret_fails_when_the_old_password_still_logs_in() {
    let f = Fixture::rotating();
    f.db.retain_old_passwords();
    f.step("createSecret", TOKEN).await.unwrap();
    f.step("setSecret", TOKEN).await.unwrap();

    let err = f.step("testSecret", TOKEN).await.unwrap_err();

    assert!(matches!(err, Error::OldPasswordStillAccepted { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("the AWSCURRENT password of user {USER} still logs in to {HOST}:5432: the password was not changed")
    );
    assert!(!err.is_retryable());
    assert_eq!(f.version_with(stage::CURRENT).as_deref(), Some(FIRST));
    f.assert_reveals_no_secret(&err);
}

#[tokio::test]
async fn test_secret_fails_when_the_pending_password_is_rejected() {
    let f = Fixture::rotating();
    f.step("createSecret", TOKEN).await.unwrap();

    let err = f.step("testSecret", TOKEN).await.unwrap_err();

    assert!(matches!(&err, Error::PendingRejected { user, host, port: 5432 } if user == USER && host == HOST));
    assert_eq!(err.error_type(), "Permanent.PendingPasswordRejected");
    assert_eq!(f.version_with(stage::CURRENT).as_deref(), Some(FIRST));
    assert_eq!(f.db_password(), OLD_PASSWORD);
    f.assert_reveals_no_secret(&err);
}

// ---------------------------------------------------------------------------------------------
// Faults: every call can fail, before or after taking effect, and a retry recovers
// ---------------------------------------------------------------------------------------------

/// Whether a fault is a Secrets Manager write whose answer was lost after it took effect: the
/// steps verify such writes by reading back, so the rotation goes on.
fn lost_write(op: StoreOp, when: FailWhen) -> bool {
    when == FailWhen::After && matches!(op, StoreOp::PutPending | StoreOp::MoveStage)
}

/// The calls a complete, fault-free rotation makes.
async fn calls_of_a_clean_rotation() -> (Vec<StoreOp>, Vec<TargetOp>) {
    let f = Fixture::rotating();
    f.rotate(TOKEN).await.unwrap();
    (f.store.calls(), f.db.calls())
}

#[tokio::test]
async fn a_rotation_retried_after_any_secrets_manager_fault_ends_consistent() {
    let (calls, _) = calls_of_a_clean_rotation().await;
    assert!(calls.len() >= 12, "a rotation makes at least 12 calls: {calls:?}");
    for when in [FailWhen::Before, FailWhen::After] {
        for (k, op) in calls.iter().enumerate().map(|(i, op)| (i + 1, op)) {
            let case = format!("{op:?} (call {k}) fails {when:?}");
            let f = Fixture::rotating();
            f.store.fail(StoreOp::Any, k, when);

            if lost_write(*op, when) {
                // The write took effect: the read-back finds it and the step goes on.
                if let Err(err) = f.rotate(TOKEN).await {
                    panic!("{case}: a write that took effect is not verified: {err:?}\n{:#?}", f.state());
                }
                f.assert_rotated(TOKEN, FIRST);
                continue;
            }
            let err = f.rotate(TOKEN).await.expect_err(&case);
            assert!(
                matches!(&err, Error::SecretsManager { operation, retryable: true, .. } if *operation == op.api_name()),
                "{case}: the injected fault is not what the rotation reports: {err:?}"
            );
            f.assert_reveals_no_secret(&err);

            if let Err(err) = f.rotate_with_retries(TOKEN, 3).await {
                panic!("{case}: the retried rotation fails: {err:?}\n{:#?}", f.state());
            }
            f.assert_rotated(TOKEN, FIRST);
            assert_eq!(f.store.rotation_tokens().last(), Some(&Some(ROTATION_TOKEN.to_owned())), "{case}");
        }
    }
}

#[tokio::test]
async fn a_rotation_retried_after_any_database_fault_ends_consistent() {
    let (_, calls) = calls_of_a_clean_rotation().await;
    assert!(calls.contains(&TargetOp::SetPassword) && calls.contains(&TargetOp::Check), "{calls:?}");
    for when in [FailWhen::Before, FailWhen::After] {
        for (k, op) in calls.iter().enumerate().map(|(i, op)| (i + 1, op)) {
            let case = format!("{op:?} (database call {k}) fails {when:?}");
            let f = Fixture::rotating();
            f.db.fail(TargetOp::Any, k, when);

            let err = f.rotate(TOKEN).await.expect_err(&case);
            assert!(err.is_retryable(), "{case}: {err:?}");
            assert!(matches!(err, Error::Unreachable { .. } | Error::Target { .. }), "{case}: {err:?}");
            assert_eq!(f.version_with(stage::CURRENT).as_deref(), Some(FIRST), "{case}: finished despite the fault");
            f.assert_reveals_no_secret(&err);

            if let Err(err) = f.rotate_with_retries(TOKEN, 3).await {
                panic!("{case}: the retried rotation fails: {err:?}\n{:#?}", f.state());
            }
            f.assert_rotated(TOKEN, FIRST);
        }
    }
}

#[tokio::test]
async fn a_password_change_whose_answer_was_lost_is_not_made_twice() {
    let f = Fixture::rotating();
    f.db.fail(TargetOp::SetPassword, 1, FailWhen::After);
    let err = f.rotate(TOKEN).await.unwrap_err();
    assert!(matches!(err, Error::Target { action: "ALTER ROLE", retryable: true, .. }), "{err:?}");
    assert_eq!(f.db_password(), f.password_in(TOKEN), "the change took effect");

    f.rotate(TOKEN).await.unwrap();
    assert_eq!(f.db.passwords_set(), 1, "the retry changed the password again");
    f.assert_rotated(TOKEN, FIRST);
}

#[tokio::test]
async fn a_pending_value_whose_answer_was_lost_is_kept_by_the_retry() {
    let f = Fixture::rotating();
    f.store.fail(StoreOp::PutPending, 1, FailWhen::After);
    f.step("createSecret", TOKEN).await.expect("the stored value is found by reading back");
    let stored = f.value(TOKEN);
    let calls = f.store.calls();
    let put = calls.iter().position(|op| *op == StoreOp::PutPending).unwrap();
    assert_eq!(calls[put + 1], StoreOp::GetValue, "PutSecretValue is verified by reading back: {calls:?}");

    f.rotate(TOKEN).await.unwrap();
    assert_eq!(f.value(TOKEN), stored, "the retry replaced the stored value");
    f.assert_rotated(TOKEN, FIRST);
}

#[tokio::test]
async fn a_pending_value_that_was_not_stored_fails_retryably() {
    let f = Fixture::rotating();
    f.store.fail(StoreOp::PutPending, 1, FailWhen::Before);
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert!(matches!(err, Error::SecretsManager { operation: "PutSecretValue", retryable: true, .. }), "{err:?}");
    assert_eq!(f.state().versions[TOKEN].value, None);
    f.rotate(TOKEN).await.unwrap();
    f.assert_rotated(TOKEN, FIRST);
}

#[tokio::test]
async fn a_finish_whose_answer_was_lost_completes_on_retry() {
    let f = Fixture::rotating();
    f.store.fail(StoreOp::MoveStage, 1, FailWhen::After);
    f.store.fail(StoreOp::MoveStage, 2, FailWhen::After);
    f.rotate(TOKEN).await.expect("both stage moves took effect and are verified");
    f.assert_rotated(TOKEN, FIRST);

    // A move that did not happen stays an error, and the retry completes it.
    let f = Fixture::rotating();
    f.store.fail(StoreOp::MoveStage, 2, FailWhen::Before);
    let err = f.rotate(TOKEN).await.unwrap_err();
    assert!(matches!(err, Error::SecretsManager { operation: "UpdateSecretVersionStage", .. }), "{err:?}");
    assert_eq!(f.version_with(stage::PENDING).as_deref(), Some(TOKEN), "AWSPENDING is still on the token");
    f.rotate(TOKEN).await.unwrap();
    f.assert_rotated(TOKEN, FIRST);
}

// ---------------------------------------------------------------------------------------------
// Secrets never appear in errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn errors_about_a_broken_current_secret_never_reveal_its_text() {
    let broken = [
        r#"{"engine": "postgres", "host": "h", "username": "u", "password": "Leaky-Pass-1""#.to_owned(),
        r#"host=h user=u password=Leaky-Pass-1"#.to_owned(),
        r#"{"engine": "postgres", "host": "h", "username": "u", "password": "Leaky-Pass-1"} trailing"#.to_owned(),
        r#"["Leaky-Pass-1"]"#.to_owned(),
        r#""Leaky-Pass-1""#.to_owned(),
    ];
    for text in broken {
        let f = Fixture::rotating();
        f.store.put_text(&f.arn, "77777777-broken", &text, &[stage::CURRENT]);
        let err = f.step("createSecret", TOKEN).await.unwrap_err();
        assert!(matches!(err, Error::InvalidSecret { .. }), "{text}: {err:?}");
        assert_no_secret_in(&err, &["Leaky-Pass-1".to_owned()]);
    }
}

#[tokio::test]
async fn errors_about_a_wrong_field_never_reveal_the_password() {
    let mut numeric_password = first_value();
    numeric_password["password"] = json!(8_675_309_123_u64);
    let mut wrong_engine = first_value();
    wrong_engine["engine"] = json!("mysql");
    for value in [numeric_password, wrong_engine] {
        let f = Fixture::rotating();
        f.store.put_value(&f.arn, "88888888-wrong", &value, &[stage::CURRENT]);
        let err = f.step("createSecret", TOKEN).await.unwrap_err();
        assert!(matches!(err, Error::InvalidSecret { .. }), "{err:?}");
        assert_no_secret_in(&err, &["8675309123".to_owned(), OLD_PASSWORD.to_owned()]);
        f.assert_reveals_no_secret(&err);
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies that use the master secret
// ---------------------------------------------------------------------------------------------

const MASTER_NAME: &str = "prod/orders-db/master";
const MASTER_USER: &str = "rds_admin";
const MASTER_PASSWORD: &str = "Master-Password-0b1c";
const CLONE: &str = "orders_app_clone";

/// A secret with a `masterarn` (and `extra` fields) whose master logs in, rotation started.
fn with_master(extra: Value) -> Fixture {
    let store = MemoryStore::new();
    // RDS-managed master secrets hold only the credentials.
    let master_arn =
        store.create_secret(MASTER_NAME, FIRST, &json!({"username": MASTER_USER, "password": MASTER_PASSWORD}));
    let mut value = first_value();
    value["masterarn"] = json!(master_arn);
    for (key, field) in extra.as_object().into_iter().flatten() {
        value[key] = field.clone();
    }
    let arn = store.create_secret(NAME, FIRST, &value);
    store.start_rotation(&arn, TOKEN);
    let db = FakeDb::new();
    db.set_user_password(USER, OLD_PASSWORD);
    db.add_admin(MASTER_USER, MASTER_PASSWORD);
    let rotator =
        Rotator::new(store.clone(), DatabaseRotation::new(FakeTarget::with_db(db.clone()), default_settings()));
    Fixture { store, db, rotator, arn }
}

fn username_in(value: &Value) -> &str {
    value["username"].as_str().expect("the secret has a username")
}

#[tokio::test]
async fn alternating_users_hand_over_to_the_clone_and_back_with_no_downtime() {
    let f = with_master(json!({}));
    f.rotate(TOKEN).await.unwrap();
    let current = f.value(TOKEN);
    assert_eq!(username_in(&current), CLONE, "a masterarn means alternating users");
    assert_eq!(f.db.password(CLONE), Some(password_of(&current)));
    assert_eq!(f.db.member_of(CLONE).as_deref(), Some(USER));
    assert_eq!(f.db_password(), OLD_PASSWORD, "the main user keeps working");
    assert_eq!(f.version_with(stage::PREVIOUS).as_deref(), Some(FIRST));

    const SECOND: &str = "33333333-3333-4333-8333-333333333333";
    f.store.start_rotation(&f.arn, SECOND);
    f.rotate(SECOND).await.unwrap();
    let back = f.value(SECOND);
    assert_eq!(username_in(&back), USER, "the second rotation returns to the main user");
    assert_ne!(password_of(&back), OLD_PASSWORD);
    assert_eq!(f.db_password(), password_of(&back));
    assert_eq!(f.db.password(CLONE), Some(password_of(&current)), "the clone keeps working");
}

#[tokio::test]
async fn a_missing_or_broken_master_secret_stops_create_secret_before_anything_is_stored() {
    let cases: [(Value, &str); 3] = [
        (json!({"masterarn": null, "rotation_strategy": "alternating-users"}), "field `masterarn` of secret"),
        (json!({"masterarn": "arn:aws:secretsmanager:eu-west-1:1:secret:gone"}), "cannot be read"),
        (json!({"rotation_strategy": "single-user-with-master", "host": "elsewhere.example.com"}), "is for "),
    ];
    for (extra, message) in cases {
        let f = with_master(extra.clone());
        if extra["host"].is_string() {
            // The master secret names the real host; the user's secret another one.
            let master = MemoryStore::arn_of(MASTER_NAME);
            f.store.put_value(
                &master,
                "44444444-4444-4444-8444-444444444444",
                &json!({
                    "username": MASTER_USER, "password": MASTER_PASSWORD, "host": HOST
                }),
                &[stage::CURRENT],
            );
        }
        let before = f.state();
        let err = f.step("createSecret", TOKEN).await.unwrap_err();
        assert!(err.to_string().contains(message), "{extra}: {err}");
        assert!(!err.is_retryable(), "{extra}: {err:?}");
        assert_eq!(f.state(), before, "{extra}: nothing stored");
        f.assert_reveals_no_secret(&err);
        assert!(!err.to_string().contains(MASTER_PASSWORD));
    }
}

#[tokio::test]
async fn alternating_users_refuse_a_secret_whose_current_password_fails() {
    let f = with_master(json!({}));
    f.step("createSecret", TOKEN).await.unwrap();
    f.db.set_user_password(USER, "changed-by-someone-else");
    let err = f.step("setSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.kind(), "CurrentPasswordRejected", "{err}");
    assert_eq!(f.db.password(CLONE), None, "no user was created");
}

#[tokio::test]
async fn alternating_users_refuse_a_pending_secret_for_a_third_user() {
    let f = with_master(json!({}));
    let mut forged = first_value();
    forged["username"] = json!("someone_else");
    forged["masterarn"] = json!(MemoryStore::arn_of(MASTER_NAME));
    f.store.put_value(&f.arn, TOKEN, &forged, &[stage::PENDING]);
    let err = f.step("setSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.kind(), "NotAlternating", "{err}");
    assert!(err.to_string().contains("expects orders_app_clone@"), "{err}");
    assert_eq!(f.db.password("someone_else"), None);
}

#[tokio::test]
async fn an_alternate_name_over_the_character_limit_is_refused_before_anything_is_stored() {
    let limit = |name: &str| (name == "USERNAME_CHARACTER_LIMIT").then(|| "12".to_owned());
    let mut f = with_master(json!({}));
    f.rotator = Rotator::new(
        f.store.clone(),
        DatabaseRotation::new(
            FakeTarget::with_db(f.db.clone()),
            Settings::from_lookup(&limit, &FakeTarget::ENGINE).unwrap(),
        ),
    );
    let before = f.state();
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "user name orders_app_clone of the alternate user is 16 characters long; USERNAME_CHARACTER_LIMIT allows 12"
    );
    assert_eq!(f.state(), before);
}

#[tokio::test]
async fn the_master_sets_a_single_users_password_when_no_password_of_it_works() {
    let f = with_master(json!({"rotation_strategy": "single-user-with-master"}));
    f.db.set_user_password(USER, "lost-password");
    f.rotate(TOKEN).await.unwrap();
    let current = f.value(TOKEN);
    assert_eq!(username_in(&current), USER);
    assert_eq!(f.db_password(), password_of(&current));
    assert_eq!(f.db.password(CLONE), None);
}

#[tokio::test]
async fn dual_passwords_on_a_target_without_them_fail_clearly_and_change_nothing() {
    let f = with_master(json!({"rotation_strategy": "dual-password"}));
    let before = f.state();
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.to_string(), format!("dual-password rotation on {HOST}:5432 failed: FakeSQL has no dual passwords"));
    assert_eq!(f.state(), before, "no pending version blocks the next rotation");
    assert_eq!(f.db_password(), OLD_PASSWORD);
}

#[tokio::test]
async fn an_alternating_rotation_retried_after_any_fault_ends_consistent() {
    let clean = with_master(json!({}));
    clean.rotate(TOKEN).await.unwrap();
    let clean_calls = clean.store.calls();
    let (store_calls, db_calls) = (clean_calls.len(), clean.db.calls().len());
    for when in [FailWhen::Before, FailWhen::After] {
        for k in 1..=store_calls + db_calls {
            let case = format!("call {k} fails {when:?}");
            let f = with_master(json!({}));
            if k <= store_calls {
                f.store.fail(StoreOp::Any, k, when);
            } else {
                f.db.fail(TargetOp::Any, k - store_calls, when);
            }
            if k <= store_calls && lost_write(clean_calls[k - 1], when) {
                f.rotate(TOKEN).await.unwrap_or_else(|err| panic!("{case}: the write is not verified: {err:?}"));
            } else {
                let err = f.rotate(TOKEN).await.expect_err(&case);
                assert!(err.is_retryable(), "{case}: {err:?}");
                f.assert_reveals_no_secret(&err);
            }
            if let Err(err) = f.rotate_with_retries(TOKEN, 3).await {
                panic!("{case}: the retried rotation fails: {err:?}\n{:#?}", f.state());
            }
            let current = f.value(TOKEN);
            assert_eq!(f.version_with(stage::CURRENT).as_deref(), Some(TOKEN), "{case}");
            assert_eq!(f.version_with(stage::PENDING), None, "{case}");
            assert_eq!(username_in(&current), CLONE, "{case}");
            assert_eq!(f.db.password(CLONE), Some(password_of(&current)), "{case}");
            assert_eq!(f.db_password(), OLD_PASSWORD, "{case}: the main user is untouched");
        }
    }
}

#[tokio::test]
async fn admin_api_on_a_target_without_it_fails_before_anything_is_stored() {
    let f = with_master(json!({"rotation_strategy": "admin-api"}));
    let before = f.state();
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.to_string(), format!("admin-api rotation on {HOST}:5432 failed: FakeSQL has no admin API rotation"));
    assert!(!err.is_retryable());
    assert_eq!(f.state(), before, "no pending version blocks the next rotation");
    assert_eq!(f.db_password(), OLD_PASSWORD);
}

// ---------------------------------------------------------------------------------------------
// Every input checked before anything is stored
// ---------------------------------------------------------------------------------------------

/// createSecret on a current value with `field` set to `value`: refused as `InvalidSecret`
/// naming the field, with nothing stored, no login tried and the value not echoed.
async fn assert_refused_before_storing(field: &str, value: Value, rule: &str) {
    let f = Fixture::rotating();
    let mut current = first_value();
    if value.is_null() {
        current.as_object_mut().unwrap().remove(field);
    } else {
        current[field] = value.clone();
    }
    f.store.put_value(&f.arn, "99999999-current", &current, &[stage::CURRENT]);
    let before = f.state();
    let logins = f.db.calls().len();
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.InvalidSecret", "{field}={value}: {err}");
    let text = err.to_string();
    assert!(text.contains(&format!("`{field}`")), "{field}={value}: {text}");
    assert!(text.contains(rule), "{field}={value}: {text} should say {rule:?}");
    if let Some(value) = value.as_str().filter(|v| v.len() > 3) {
        assert!(!text.contains(value), "{field}: the value is echoed: {text}");
    }
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.len() < 1000, "{text}");
    assert_eq!(f.state(), before, "{field}={value}: something was stored");
    assert_eq!(f.db.calls().len(), logins, "{field}={value}: the database was contacted");
    f.assert_reveals_no_secret(&err);
}

#[tokio::test]
async fn create_secret_checks_every_field_before_storing_anything() {
    let cases = [
        ("host", json!("postgres://orders_app:hunter2@orders.example.com:5432/orders"), "URL scheme"),
        ("host", json!("orders_app:hunter2@orders.example.com"), "`@`"),
        ("host", json!("orders.example.com/orders"), "path"),
        ("host", json!("orders.example.com:5432"), "field `port`"),
        ("host", json!("orders.example.com\nX: y"), "control character"),
        ("host", json!("orders.example.com "), "whitespace"),
        ("host", json!("оrders.example.com"), "non-ASCII"),
        ("host", json!("h".repeat(20_000)), "at most 253"),
        ("host", json!(""), "non-empty"),
        ("port", json!(0), "1 to 65535"),
        ("port", json!(65536), "1 to 65535"),
        ("port", json!("54 32"), "1 to 65535"),
        ("username", json!("u".repeat(64)), "at most 63"),
        ("username", json!("orders_app\u{0}"), "NUL"),
        ("username", json!("orders_app\nadmin"), "control character"),
        ("password", json!("hunter2\u{0}"), "NUL"),
        ("dbname", json!("orders\t"), "control character"),
    ];
    for (field, value, rule) in cases {
        assert_refused_before_storing(field, value, rule).await;
    }
}

#[tokio::test]
async fn alternating_users_refuse_a_masterarn_naming_the_secret_itself() {
    for self_id in [MemoryStore::arn_of(NAME), NAME.to_owned()] {
        let f = Fixture::rotating();
        let mut value = first_value();
        value["masterarn"] = json!(self_id);
        value["rotation_strategy"] = json!("alternating-users");
        f.store.put_value(&f.arn, "99999999-current", &value, &[stage::CURRENT]);
        let before = f.state();
        let err = f.step("createSecret", TOKEN).await.unwrap_err();
        assert_eq!(err.error_type(), "Permanent.InvalidSecret", "{err}");
        assert!(err.to_string().contains("field `masterarn` names this secret itself"), "{err}");
        assert_eq!(f.state(), before);
    }
    // The same user's secret under another name is refused too, once read.
    let f = with_master(json!({}));
    let mut master = first_value();
    master["password"] = json!(OLD_PASSWORD);
    f.store.put_value(MASTER_NAME, "99999999-master", &master, &[stage::CURRENT]);
    let before = f.state();
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.InvalidSecret", "{err}");
    assert!(err.to_string().contains("names a secret of the user being rotated"), "{err}");
    assert_eq!(f.state(), before);
}

#[tokio::test]
async fn a_master_secret_with_a_malformed_field_is_refused_before_storing() {
    let f = with_master(json!({}));
    let master = json!({"username": "rds\nadmin", "password": MASTER_PASSWORD});
    f.store.put_value(MASTER_NAME, "99999999-master", &master, &[stage::CURRENT]);
    let before = f.state();
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.InvalidMasterSecret", "{err}");
    assert!(err.to_string().contains("field `username` holds a control character"), "{err}");
    assert_eq!(f.state(), before);
}

// ---------------------------------------------------------------------------------------------
// Stale pending versions, concurrent invocations, tests without a rotation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_pending_version_copied_from_a_broken_current_one_gives_the_way_out() {
    let f = Fixture::rotating();
    // The pending version was made from a current version naming the wrong user; the operator
    // has corrected AWSCURRENT since.
    let mut stale = with_password(first_value(), "Stale-Password-1a");
    stale["username"] = json!("orders_ap");
    f.store.put_value(&f.arn, TOKEN, &stale, &[stage::PENDING]);
    let before = f.state();
    for _ in 0..2 {
        let err = f.step("setSecret", TOKEN).await.unwrap_err();
        assert_eq!(err.error_type(), "Permanent.UserMismatch", "{err}");
        let text = err.to_string();
        assert!(text.contains("its password does not log in, so nothing was changed"), "{text}");
        assert!(text.contains(&format!("--remove-from-version-id {TOKEN}")), "{text}");
        f.assert_reveals_no_secret(&err);
        assert_eq!(f.state(), before);
    }
    // The way out, as the message says, then a new rotation.
    f.store.move_label(&f.arn, stage::PENDING, None, Some(TOKEN));
    let next = "33333333-3333-4333-8333-333333333333";
    f.store.start_rotation(&f.arn, next);
    f.rotate(next).await.unwrap();
    f.assert_rotated(next, FIRST);
}

#[tokio::test]
async fn a_pending_version_no_step_can_use_gives_the_way_out() {
    let f = Fixture::rotating();
    let mut broken = first_value();
    broken["host"] = json!("postgres://orders.example.com");
    f.store.put_value(&f.arn, TOKEN, &broken, &[stage::PENDING]);
    let err = f.step("setSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.InvalidSecret", "{err}");
    assert!(err.to_string().contains("field `host` holds a URL scheme"), "{err}");
    assert!(err.to_string().contains(&format!("--remove-from-version-id {TOKEN}")), "{err}");
    assert_eq!(f.db.calls(), [], "nothing was tried on the database");
}

#[tokio::test]
async fn a_pending_version_whose_password_logs_in_gets_no_advice_to_drop_it() {
    let f = Fixture::rotating();
    let mut other = with_password(first_value(), "Other-Password-2b");
    other["username"] = json!("reporting");
    f.db.set_user_password("reporting", "Other-Password-2b");
    f.store.put_value(&f.arn, TOKEN, &other, &[stage::PENDING]);
    let err = f.step("setSecret", TOKEN).await.unwrap_err();
    assert!(matches!(err, Error::UserMismatch { .. }), "{err:?}");
    assert!(!err.to_string().contains("update-secret-version-stage"), "{err}");
}

#[tokio::test]
async fn a_set_secret_that_loses_a_race_finds_the_pending_password_working() {
    let f = Fixture::rotating();
    f.step("createSecret", TOKEN).await.unwrap();
    let pending = f.password_in(TOKEN);
    // The other invocation changes the password right after this one found the pending
    // password rejected: current is rejected too, and there is no previous version.
    f.db.change_password_after_logins(1, USER, &pending);
    f.step("setSecret", TOKEN).await.expect("the pending password is checked again");
    assert_eq!(f.db.passwords_set(), 0, "this invocation changed nothing");
    for step in ["testSecret", "finishSecret"] {
        f.step(step, TOKEN).await.unwrap();
    }
    f.assert_rotated(TOKEN, FIRST);
}

#[tokio::test]
async fn test_secret_on_a_copy_of_the_current_version_tests_the_login_only() {
    // RotateSecret with RotateImmediately=false: a copy of AWSCURRENT staged AWSPENDING, then
    // testSecret alone.
    let f = Fixture::rotating();
    f.store.put_value(&f.arn, TOKEN, &first_value(), &[stage::PENDING]);
    f.step("testSecret", TOKEN).await.expect("a copy of the working credentials passes");
    assert_eq!(f.db.login_attempts(USER, OLD_PASSWORD), 1, "one login, no rejection check");
    assert_eq!(f.db_password(), OLD_PASSWORD);
    assert_eq!(f.version_with(stage::CURRENT).as_deref(), Some(FIRST));

    f.db.set_user_password(USER, "Changed-Elsewhere-9");
    let err = f.step("testSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.kind(), "PendingPasswordRejected", "a copy that does not log in still fails");
}

/// An operator's local run (`Invoker::Operator`): no rotation configured, and `createSecret`
/// creates the token's version itself.
async fn step_as_operator(f: &Fixture, step: &str, token: &str) -> Result<(), Error> {
    let event = crate::RotationEvent::from_json(json!({"Step": step, "SecretId": f.arn, "ClientRequestToken": token}))?;
    f.rotator.run_step_as(&event, crate::Invoker::Operator).await
}

#[tokio::test]
async fn an_operator_rotates_a_secret_with_no_rotation_configured() {
    let f = Fixture::not_rotating();
    for step in STEPS {
        step_as_operator(&f, step, TOKEN).await.unwrap_or_else(|e| panic!("{step}: {e}"));
    }
    assert_eq!(f.version_with(stage::CURRENT).as_deref(), Some(TOKEN));
    assert_eq!(f.version_with(stage::PREVIOUS).as_deref(), Some(FIRST));
    assert!(f.version_with(stage::PENDING).is_none());
    assert_eq!(f.db.password(USER).as_deref(), f.value(TOKEN)["password"].as_str());
    // Secrets Manager's own invocations still need rotation enabled.
    let err = f.step("createSecret", "44444444-4444-4444-8444-444444444444").await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.RotationDisabled");
}

#[tokio::test]
async fn an_operator_run_refuses_to_start_beside_a_rotation_in_progress() {
    let f = Fixture::rotating();
    let before = f.state();
    let err = step_as_operator(&f, "createSecret", "44444444-4444-4444-8444-444444444444").await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.VersionNotPending");
    assert!(err.to_string().contains("a rotation is in progress"), "{err}");
    assert!(err.to_string().contains(TOKEN), "names the pending version: {err}");
    assert_eq!(f.state(), before);
    // The other steps need a version staged AWSPENDING, for operators too.
    let err = step_as_operator(&f, "setSecret", "44444444-4444-4444-8444-444444444444").await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.UnknownVersion");
}

// ---------------------------------------------------------------------------------------------
// The preflight check
// ---------------------------------------------------------------------------------------------

use crate::check::{Report, Status};

/// Runs the check as an operator's event does, and proves it changed nothing and revealed no
/// secret.
async fn checked(f: &Fixture) -> Report {
    let state_before = f.state();
    let db_before = f.db.password(USER);
    let mut secrets = f.secrets();
    secrets.push(MASTER_PASSWORD.to_owned());
    let answer = f.rotator.handle(json!({"Action": "check", "SecretId": f.arn})).await.unwrap();
    let text = answer.to_string();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "the report reveals a secret: {text}");
    }
    assert_eq!(f.state(), state_before, "the check changed the secret");
    assert_eq!(f.db.password(USER), db_before, "the check changed the password");
    assert_eq!(f.db.passwords_set(), 0, "the check changed a password");
    for op in f.store.calls() {
        assert!(
            !matches!(op, StoreOp::PutPending | StoreOp::MoveStage),
            "the check wrote to Secrets Manager: {:?}",
            f.store.calls()
        );
    }
    assert!(!f.db.calls().iter().any(|op| matches!(op, TargetOp::SetPassword | TargetOp::PrepareAlternate)));
    serde_json::from_value(answer).unwrap()
}

fn status(report: &Report, name: &str) -> Status {
    report.get(name).unwrap_or_else(|| panic!("no check {name}: {report:#?}")).status
}

/// The one failed check, with a fix.
fn only_failure<'a>(report: &'a Report, name: &str) -> &'a crate::check::Check {
    let failed: Vec<&str> =
        report.checks.iter().filter(|c| c.status == Status::Failed).map(|c| c.name.as_str()).collect();
    assert_eq!(failed, [name], "{report:#?}");
    assert!(!report.passed);
    let check = report.get(name).unwrap();
    assert!(check.fix.as_deref().is_some_and(|fix| !fix.is_empty()), "{check:?}");
    check
}

/// An alternating-users secret with a master, no rotation under way.
fn with_master_not_rotating(extra: Value) -> Fixture {
    let f = with_master(extra);
    f.store.move_label(&f.arn, stage::PENDING, None, Some(TOKEN));
    f
}

#[tokio::test]
async fn a_healthy_secret_passes_every_check_and_nothing_changes() {
    let f = Fixture::not_rotating();
    f.store.configure_rotation(&f.arn, "arn:aws:lambda:eu-west-1:123456789012:function:pg-rotation", "rate(30 days)");
    f.store.set_rotation_enabled(&f.arn, true);
    let report = checked(&f).await;
    assert!(report.passed, "{report:#?}");
    assert_eq!(report.engine, FakeTarget::ENGINE.label);
    for name in [
        "secret.describe",
        "rotation.enabled",
        "rotation.pending",
        "secret.readable",
        "secret.parses",
        "secret.strategy",
        "target.reachable",
        "target.tls",
        "credential.current",
        "password.policy",
    ] {
        assert_eq!(status(&report, name), Status::Passed, "{name}: {report:#?}");
    }
    assert!(report.get("rotation.enabled").unwrap().detail.contains("rate(30 days)"));
    assert!(report.get("secret.strategy").unwrap().detail.starts_with("single-user: "));
    assert!(report.get("target.reachable").unwrap().detail.contains(&format!("{HOST}:5432")));
    assert_eq!(status(&report, "secret.writable"), Status::Skipped);
    assert!(report.get("secret.writable").unwrap().detail.contains("no dry run"));
    assert_eq!(status(&report, "target.privileges"), Status::Skipped);
    assert_eq!(status(&report, "master.secret"), Status::Skipped);
}

#[tokio::test]
async fn a_secret_without_rotation_configured_says_so_without_failing() {
    let f = Fixture::not_rotating();
    let report = checked(&f).await;
    assert!(report.passed, "{report:#?}");
    let enabled = report.get("rotation.enabled").unwrap();
    assert_eq!(enabled.status, Status::Skipped);
    assert!(enabled.detail.contains("not enabled"), "{enabled:?}");
}

#[tokio::test]
async fn an_unreachable_server_fails_the_reachable_check_naming_host_and_port() {
    let f = Fixture::not_rotating();
    f.db.set_unreachable(true);
    let report = checked(&f).await;
    let check = only_failure(&report, "target.reachable");
    assert!(check.detail.contains(&format!("{HOST}:5432")) && check.detail.contains("connection refused"), "{check:?}");
    assert!(check.fix.as_deref().unwrap().contains("security group"), "{check:?}");
    assert_eq!(status(&report, "credential.current"), Status::Skipped);
}

#[tokio::test]
async fn a_tls_failure_fails_the_tls_check_with_the_way_to_trust_the_server() {
    let f = Fixture::not_rotating();
    f.db.set_tls_failure(true);
    let report = checked(&f).await;
    let check = only_failure(&report, "target.tls");
    assert!(check.detail.contains("UnknownIssuer") && check.detail.contains(HOST), "{check:?}");
    let fix = check.fix.as_deref().unwrap();
    assert!(fix.contains("CA_BUNDLE_PATH") && fix.contains("sslmode"), "{fix}");
    assert_eq!(status(&report, "target.reachable"), Status::Passed);
}

#[tokio::test]
async fn a_wrong_current_password_fails_the_current_credential_check() {
    let f = Fixture::not_rotating();
    f.db.set_user_password(USER, "Changed-By-Someone-9z");
    let report = checked(&f).await;
    let check = only_failure(&report, "credential.current");
    assert!(check.detail.contains("AWSCURRENT password of orders_app@"), "{check:?}");
    assert!(check.fix.as_deref().unwrap().contains("correct the AWSCURRENT value"), "{check:?}");
    assert!(!check.detail.contains("Changed-By-Someone-9z"));
}

#[tokio::test]
async fn a_master_whose_password_is_rejected_fails_the_master_login_check() {
    let f = with_master_not_rotating(json!({}));
    let healthy = checked(&f).await;
    assert!(healthy.passed, "{healthy:#?}");
    assert!(healthy.get("secret.strategy").unwrap().detail.contains("masterarn"));
    assert!(healthy.get("secret.alternate_name").unwrap().detail.contains(CLONE));
    assert_eq!(status(&healthy, "master.login"), Status::Passed);

    f.db.add_admin(MASTER_USER, "Master-Changed-Elsewhere-1");
    let report = checked(&f).await;
    let check = only_failure(&report, "master.login");
    assert!(check.detail.contains(&format!("master password of {MASTER_USER}@")), "{check:?}");
    assert!(check.fix.as_deref().unwrap().contains("master secret"), "{check:?}");
}

#[tokio::test]
async fn an_unreadable_master_secret_fails_the_master_secret_check() {
    let f = with_master_not_rotating(json!({"masterarn": "arn:aws:secretsmanager:eu-west-1:1:secret:gone-AbCdEf"}));
    let report = checked(&f).await;
    let check = only_failure(&report, "master.secret");
    assert!(check.detail.contains("cannot be read"), "{check:?}");
    assert_eq!(status(&report, "master.login"), Status::Skipped);
}

#[tokio::test]
async fn an_alternate_name_too_long_fails_the_alternate_name_check() {
    let f = with_master_not_rotating(json!({}));
    let long_user = "u".repeat(60);
    f.store.put_value(&f.arn, "v-long", &json!({"host": HOST, "username": long_user, "password": OLD_PASSWORD, "masterarn": MemoryStore::arn_of(MASTER_NAME)}), &[stage::CURRENT]);
    f.db.set_user_password(&long_user, OLD_PASSWORD);
    let report = checked(&f).await;
    let check = only_failure(&report, "secret.alternate_name");
    assert!(check.detail.contains("66 bytes") && check.detail.contains("allows 63"), "{check:?}");
}

#[tokio::test]
async fn a_stuck_pending_version_fails_with_the_command_that_removes_it() {
    let f = Fixture::not_rotating();
    f.store.put_value(&f.arn, TOKEN, &with_password(first_value(), "Half-Rotated-Pw-42"), &[stage::PENDING]);
    let report = checked(&f).await;
    let check = only_failure(&report, "rotation.pending");
    assert!(check.detail.contains(TOKEN), "{check:?}");
    let fix = check.fix.as_deref().unwrap();
    assert!(
        fix.contains(&format!(
            "aws secretsmanager update-secret-version-stage --secret-id {} --version-stage AWSPENDING \
             --remove-from-version-id {TOKEN}",
            f.arn
        )),
        "{fix}"
    );
    assert!(fix.contains("rotation resume") && fix.contains("rotation cancel"), "{fix}");
    assert!(!serde_json::to_string(&report).unwrap().contains("Half-Rotated-Pw-42"));
}

#[tokio::test]
async fn a_refused_get_secret_value_names_the_permission() {
    let f = Fixture::not_rotating();
    f.store.deny(StoreOp::GetValue);
    let report = checked(&f).await;
    let check = only_failure(&report, "secret.readable");
    assert!(check.detail.contains("AccessDeniedException"), "{check:?}");
    assert!(
        check
            .fix
            .as_deref()
            .unwrap()
            .contains(&format!("the role may not call secretsmanager:GetSecretValue on {}", f.arn)),
        "{check:?}"
    );
    assert_eq!(status(&report, "credential"), Status::Skipped);
    assert!(f.db.calls().is_empty(), "no login without the secret");
}

#[tokio::test]
async fn an_invalid_current_value_fails_the_parse_check_naming_the_field() {
    let f = Fixture::not_rotating();
    f.store.put_value(
        &f.arn,
        "v-bad",
        &json!({"host": "db:5432", "username": USER, "password": OLD_PASSWORD}),
        &[stage::CURRENT],
    );
    let report = checked(&f).await;
    let check = only_failure(&report, "secret.parses");
    assert!(check.detail.contains("field `host`"), "{check:?}");
}

#[tokio::test]
async fn a_malformed_check_event_is_an_invalid_event_naming_the_field() {
    let f = Fixture::not_rotating();
    let err = f.rotator.handle(json!({"Action": "check"})).await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.InvalidEvent");
    assert!(err.to_string().contains("`SecretId`"), "{err}");
    let err = f.rotator.handle(json!({"Action": "rotate", "SecretId": f.arn})).await.unwrap_err();
    assert!(err.to_string().contains("`Action`"), "{err}");
    assert!(f.store.calls().is_empty());
    let rotating = Fixture::rotating();
    for step in STEPS {
        assert_eq!(rotating.rotator.handle(rotating.event(step, TOKEN)).await.unwrap(), Value::Null, "{step}");
    }
}

#[tokio::test]
async fn a_dual_password_strategy_on_a_server_without_them_fails_its_check() {
    let f = Fixture::not_rotating();
    f.store.put_value(
        &f.arn,
        "v-dual",
        &json!({"host": HOST, "username": USER, "password": OLD_PASSWORD, "rotation_strategy": "dual-password"}),
        &[stage::CURRENT],
    );
    let report = checked(&f).await;
    let check = only_failure(&report, "target.dual_password");
    assert!(check.detail.contains("no dual passwords"), "{check:?}");
    assert!(report.get("secret.strategy").unwrap().detail.contains("rotation_strategy field"), "{report:#?}");
}

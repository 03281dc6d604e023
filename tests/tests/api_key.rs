//! The API-key function (`api-key-rotation`), end to end, against the services of a test run:
//! OpenBao tokens it asks OpenBao to issue, OpenBao userpass and RabbitMQ passwords it pushes
//! through their admin APIs, self-issued keys the consumer (`e2e::consumer`) accepts, and the
//! faults of profiles `unreachable`, `redirecting` and `slow` (xtask/src/api_key_profiles.rs).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use e2e::consumer::{SLOW_ANSWER, consumer_accepts};
use e2e::*;
use serde_json::{Value, json};

const FUNCTION: &str = "api-key-rotation";
/// The profiles of the test run name their keys with the default prefix.
const PREFIX: &str = "rotation-";

/// A secret of the API-key function on LocalStack.
struct Secret {
    env: TestEnv,
    client: Client,
    name: String,
    arn: String,
}

impl Secret {
    async fn new(prefix: &str, value: &Value) -> Self {
        let env = TestEnv::from_env();
        let client = env.secrets_client();
        let name = unique(prefix);
        let arn = create_secret(&client, &name, value).await;
        Secret { env, client, name, arn }
    }

    /// A secret whose value is `text` as it is (a plain string, not JSON).
    async fn plain(prefix: &str, text: &str) -> Self {
        let env = TestEnv::from_env();
        let client = env.secrets_client();
        let name = unique(prefix);
        let created = client.create_secret().name(&name).secret_string(text).send().await.expect("CreateSecret");
        let arn = created.arn.expect("CreateSecret returns an ARN");
        Secret { env, client, name, arn }
    }

    async fn start_rotation(&self) -> String {
        start_rotation(&self.env, &self.client, &self.name).await
    }

    async fn step(&self, step: &str, token: &str) -> Result<(), FunctionError> {
        invoke_step(&self.env, FUNCTION, step, &self.name, token).await
    }

    async fn rotate(&self, token: &str) {
        rotate(&self.env, FUNCTION, &self.name, token).await.unwrap_or_else(|(step, e)| panic!("{step}: {e:?}"));
    }

    /// Starts a rotation and runs its four steps; the new version's token.
    async fn rotate_once(&self) -> String {
        let token = self.start_rotation().await;
        self.rotate(&token).await;
        assert_eq!(self.current_version().await.as_deref(), Some(token.as_str()), "the new version is AWSCURRENT");
        token
    }

    async fn stages(&self) -> BTreeMap<String, Vec<String>> {
        stages(&self.client, &self.name).await
    }

    async fn current_version(&self) -> Option<String> {
        version_with(&self.client, &self.name, "AWSCURRENT").await
    }

    async fn value(&self, version: Option<&str>, stage: &str) -> Value {
        secret_value(&self.client, &self.name, version, stage).await
    }

    async fn current(&self) -> Value {
        self.value(None, "AWSCURRENT").await
    }

    /// The text of a version, as stored.
    async fn raw(&self, version: Option<&str>, stage: &str) -> String {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.name)
            .set_version_id(version.map(str::to_owned))
            .version_stage(stage)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetSecretValue {stage}: {e:?}"));
        out.secret_string().expect("a SecretString").to_owned()
    }

    /// Whether a value is stored for the token's version.
    async fn has_value(&self, token: &str) -> bool {
        self.client.get_secret_value().secret_id(&self.name).version_id(token).send().await.is_ok()
    }
}

fn key(value: &Value) -> String {
    value["api_key"].as_str().unwrap_or_else(|| panic!("no api_key in the secret")).to_owned()
}

/// A key of profile `self-issued`'s format: `sk_` and 37 alphanumerics.
fn self_issued_key() -> String {
    let random = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    format!("sk_{}", &random[..37])
}

fn assert_self_issued_format(key: &str) {
    assert_eq!(key.len(), 40, "a key of 40 characters");
    assert!(key.starts_with("sk_"), "the profile's prefix");
    assert!(key[3..].chars().all(|c| c.is_ascii_alphanumeric()), "alphanumerics after the prefix");
}

fn random_password() -> String {
    format!("Pw{}", uuid::Uuid::new_v4().simple())
}

/// The accessor OpenBao has for a live token.
fn openbao_accessor(env: &TestEnv, token: &str) -> String {
    let (status, answer) = env.openbao_request("GET", "auth/token/lookup-self", Some(token), None);
    assert_eq!(status, 200, "lookup-self of a token that should be live");
    answer["data"]["accessor"].as_str().expect("an accessor").to_owned()
}

/// Sorted (accessor, name) pairs of the live OpenBao tokens named for the secret.
fn named_tokens(env: &TestEnv, arn: &str) -> Vec<(String, String)> {
    let mut named = env.openbao_accessors_named(&api_key_name_stem(PREFIX, arn));
    named.sort();
    named
}

/// An OpenBao token made before any rotation (named for no secret) and the secret that holds
/// it with its accessor and a field of the application's.
async fn openbao_token_secret() -> (Secret, String, String) {
    let env = TestEnv::from_env();
    let (initial, accessor) = env.openbao_create_token(json!({ "purpose": "before any rotation" }));
    let value = json!({
        "rotation": { "profile": "openbao-token" },
        "api_key": initial,
        "api_key_id": accessor,
        "app": "billing",
    });
    (Secret::new("api-key-openbao", &value).await, initial, accessor)
}

#[tokio::test]
async fn openbao_tokens_are_issued_and_the_one_that_falls_off_previous_is_revoked() {
    let (s, initial, initial_accessor) = openbao_token_secret().await;
    let env = &s.env;

    let first = s.rotate_once().await;
    let current = s.current().await;
    let key1 = key(&current);
    assert_ne!(key1, initial, "a new token");
    assert!(env.openbao_token_valid(&key1), "the new token is live");
    assert_eq!(current["api_key_id"].as_str(), Some(openbao_accessor(env, &key1).as_str()), "its accessor is stored");
    assert_eq!(current["app"], "billing", "other fields are kept");
    assert_eq!(current["rotation"], json!({ "profile": "openbao-token" }));
    assert!(env.openbao_token_valid(&initial), "the AWSPREVIOUS token stays live");
    assert_eq!(key(&s.value(None, "AWSPREVIOUS").await), initial);

    let second = s.rotate_once().await;
    let current = s.current().await;
    let key2 = key(&current);
    assert!(key2 != key1 && key2 != initial, "another new token");
    assert!(env.openbao_token_valid(&key2), "the new token is live");
    let accessor2 = openbao_accessor(env, &key2);
    assert_eq!(current["api_key_id"].as_str(), Some(accessor2.as_str()));
    assert_eq!(current["app"], "billing");
    assert!(env.openbao_token_valid(&key1), "the AWSPREVIOUS token stays live");
    assert!(!env.openbao_token_valid(&initial), "the token that fell off AWSPREVIOUS is revoked");
    let accessor1 = openbao_accessor(env, &key1);
    assert_ne!(accessor1, initial_accessor);

    let mut expected = vec![
        (accessor1.clone(), api_key_name(PREFIX, &s.arn, &first)),
        (accessor2.clone(), api_key_name(PREFIX, &s.arn, &second)),
    ];
    expected.sort();
    assert_eq!(
        named_tokens(env, &s.arn),
        expected,
        "exactly the current and the previous token are named for the secret"
    );

    // The same rotation again: no new token, nothing revoked.
    let stages_before = s.stages().await;
    s.rotate(&second).await;
    assert_eq!(named_tokens(env, &s.arn), expected, "no token was issued or revoked");
    assert_eq!(s.stages().await, stages_before);
    assert_eq!(key(&s.current().await), key2);
    assert!(env.openbao_token_valid(&key1) && env.openbao_token_valid(&key2));

    env.assert_functions_log_hides(&[&initial, &key1, &key2]);
}

#[tokio::test]
async fn a_token_issued_for_a_version_whose_value_was_lost_is_revoked_by_create_secret() {
    let (s, initial, _) = openbao_token_secret().await;
    let env = &s.env;
    let token = s.start_rotation().await;
    // As if an earlier createSecret of this token had issued it and its PutSecretValue was lost.
    let name = api_key_name(PREFIX, &s.arn, &token);
    let (orphan, orphan_accessor) = env.openbao_create_token(json!({ "rotation_key": name }));
    // And one named for a version that holds no stage (an abandoned rotation's).
    let stale_name = api_key_name(PREFIX, &s.arn, &uuid::Uuid::new_v4().to_string());
    let (stale, stale_accessor) = env.openbao_create_token(json!({ "rotation_key": stale_name }));
    let mut before = vec![(orphan_accessor.clone(), name.clone()), (stale_accessor, stale_name)];
    before.sort();
    assert_eq!(named_tokens(env, &s.arn), before);

    s.step("createSecret", &token).await.expect("createSecret");
    assert!(!env.openbao_token_valid(&orphan), "the token issued for the lost value is revoked");
    assert!(!env.openbao_token_valid(&stale), "the token of a version with no stage is revoked");
    let pending = s.value(Some(&token), "AWSPENDING").await;
    let new_key = key(&pending);
    assert_ne!(new_key, orphan, "another token is pending");
    assert!(env.openbao_token_valid(&new_key), "the pending token is live");
    let new_accessor = openbao_accessor(env, &new_key);
    assert_eq!(pending["api_key_id"].as_str(), Some(new_accessor.as_str()));
    assert_eq!(named_tokens(env, &s.arn), vec![(new_accessor, name)], "one live token is named for this version");
    assert!(env.openbao_token_valid(&initial), "the current token is untouched");

    for step in ["setSecret", "testSecret", "finishSecret"] {
        s.step(step, &token).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
    }
    assert_eq!(key(&s.current().await), new_key);
    env.assert_functions_log_hides(&[&initial, &orphan, &stale, &new_key]);
}

#[tokio::test]
async fn an_openbao_userpass_password_is_pushed_and_the_old_one_refused() {
    let env = TestEnv::from_env();
    let user = unique("svc").to_lowercase();
    let old = random_password();
    env.openbao_create_userpass_user(&user, &old);
    let s = Secret::new(
        "api-key-userpass",
        &json!({ "rotation": { "profile": "openbao-userpass" }, "username": user, "api_key": old }),
    )
    .await;

    let token = s.rotate_once().await;
    let current = s.current().await;
    let new = key(&current);
    assert_ne!(new, old);
    assert_eq!(current["username"], user.as_str(), "other fields are kept");
    assert!(env.openbao_login_userpass(&user, &new), "the new password logs in");
    assert!(!env.openbao_login_userpass(&user, &old), "the old password is refused");

    // The same rotation again changes nothing.
    let stages_before = s.stages().await;
    s.rotate(&token).await;
    assert_eq!(s.stages().await, stages_before);
    assert_eq!(key(&s.current().await), new);
    assert!(env.openbao_login_userpass(&user, &new), "the password is still the new one");
    env.assert_functions_log_hides(&[&old, &new]);
}

#[tokio::test]
async fn a_rabbitmq_password_is_pushed_and_the_users_tags_are_kept() {
    let env = TestEnv::from_env();
    let user = unique("app");
    let old = random_password();
    env.rabbitmq_create_user(&user, &old, "monitoring");
    let s = Secret::new(
        "api-key-rabbitmq",
        &json!({ "rotation": { "profile": "rabbitmq" }, "username": user, "tags": "monitoring", "api_key": old }),
    )
    .await;

    let token = s.rotate_once().await;
    let new = key(&s.current().await);
    assert_ne!(new, old);
    assert!(env.rabbitmq_logs_in(&user, &new), "the new password logs in");
    assert!(!env.rabbitmq_logs_in(&user, &old), "the old password is refused");
    let shown = env.rabbitmq_user(&user);
    let tags: Vec<&str> = match &shown["tags"] {
        Value::Array(tags) => tags.iter().filter_map(Value::as_str).collect(),
        Value::String(tags) => tags.split(',').filter(|t| !t.is_empty()).collect(),
        other => panic!("RabbitMQ shows tags {other}"),
    };
    assert_eq!(tags, ["monitoring"], "the user's tags are kept");

    // The same rotation again pushes nothing: the stored hash (with its salt) is the same.
    let hash = shown["password_hash"].clone();
    assert!(hash.is_string());
    s.rotate(&token).await;
    assert_eq!(env.rabbitmq_user(&user)["password_hash"], hash, "no new password was pushed");
    assert!(env.rabbitmq_logs_in(&user, &new));
    env.assert_functions_log_hides(&[&old, &new]);
}

#[tokio::test]
async fn self_issued_keys_are_accepted_by_the_consumer_until_they_fall_off_previous() {
    let env = TestEnv::from_env();
    let name = unique("api-key-self-issued");
    let initial = self_issued_key();
    let value = json!({ "rotation": { "profile": "self-issued" }, "consumer_secret_id": name, "api_key": initial });
    let arn = create_secret(&env.secrets_client(), &name, &value).await;
    let s = Secret { client: env.secrets_client(), env: env.clone(), name: name.clone(), arn };
    assert!(consumer_accepts(&env, &name, &initial));

    s.rotate_once().await;
    let key1 = key(&s.current().await);
    assert_self_issued_format(&key1);
    assert_ne!(key1, initial);
    assert!(consumer_accepts(&env, &name, &key1), "the current key is accepted");
    assert!(consumer_accepts(&env, &name, &initial), "the previous key is accepted");

    s.rotate_once().await;
    let current = s.current().await;
    let key2 = key(&current);
    assert_self_issued_format(&key2);
    assert!(key2 != key1 && key2 != initial);
    assert_eq!(current["consumer_secret_id"], name.as_str(), "other fields are kept");
    assert!(consumer_accepts(&env, &name, &key2), "the current key is accepted");
    assert!(consumer_accepts(&env, &name, &key1), "the previous key is accepted");
    assert!(!consumer_accepts(&env, &name, &initial), "the key that fell off AWSPREVIOUS is refused");
    env.assert_functions_log_hides(&[&initial, &key1, &key2]);
}

#[tokio::test]
async fn a_plain_string_secret_stays_a_plain_string() {
    let initial = self_issued_key();
    let s = Secret::plain("api-key-plain", &initial).await;
    s.rotate_once().await;
    let new = s.raw(None, "AWSCURRENT").await;
    assert_ne!(new, initial);
    assert_self_issued_format(&new);
    assert!(serde_json::from_str::<Value>(&new).is_err(), "not JSON: the key itself");
    assert_eq!(s.raw(None, "AWSPREVIOUS").await, initial);
    s.env.assert_functions_log_hides(&[&initial, &new]);
}

#[tokio::test]
async fn a_test_without_rotation_passes_on_a_copy_of_the_current_value() {
    let env = TestEnv::from_env();
    let user = unique("svc").to_lowercase();
    let password = random_password();
    env.openbao_create_userpass_user(&user, &password);
    let value = json!({ "rotation": { "profile": "openbao-userpass" }, "username": user, "api_key": password });
    let s = Secret::new("api-key-test-only", &value).await;
    s.start_rotation().await; // rotation enabled, as RotateSecret with RotateImmediately=false does
    let token = uuid::Uuid::new_v4().to_string();
    s.client
        .put_secret_value()
        .secret_id(&s.name)
        .client_request_token(&token)
        .secret_string(s.raw(None, "AWSCURRENT").await)
        .version_stages("AWSPENDING")
        .send()
        .await
        .expect("PutSecretValue AWSPENDING");
    let current_version = s.current_version().await;

    s.step("testSecret", &token).await.expect("testSecret of a copy of the current value");
    assert_eq!(s.current_version().await, current_version);
    assert!(env.openbao_login_userpass(&user, &password), "the password is unchanged");
    env.assert_functions_log_hides(&[&password]);
}

/// createSecret refuses the secret as invalid, naming each of `named`, before anything is stored.
async fn assert_refused_at_create(value: Value, named: &[&str], hidden: &str) {
    let s = Secret::new("api-key-invalid", &value).await;
    let token = s.start_rotation().await;
    let before = s.stages().await;
    let error = s.step("createSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.InvalidSecret", "{error:?}");
    for name in named {
        assert!(error.message.contains(name), "the message names {name}: {error:?}");
    }
    assert!(!error.message.contains(hidden), "the message repeats a value of the secret");
    assert_eq!(s.stages().await, before, "the stages are unchanged");
    assert!(!s.has_value(&token).await, "no pending value is stored");
    assert_eq!(s.current().await, value);
}

#[tokio::test]
async fn a_secret_naming_an_unknown_profile_is_refused() {
    let hidden = self_issued_key();
    let value = json!({ "rotation": { "profile": "no-such-profile" }, "api_key": hidden });
    assert_refused_at_create(value, &["rotation.profile", "no-such-profile"], &hidden).await;
}

#[tokio::test]
async fn an_unknown_rotation_setting_is_refused() {
    let hidden = self_issued_key();
    let value = json!({ "rotation": { "profile": "self-issued-no-test", "schedule": "daily" }, "api_key": hidden });
    assert_refused_at_create(value, &["rotation", "schedule"], &hidden).await;
}

#[tokio::test]
async fn a_secret_without_its_key_field_is_refused() {
    let hidden = self_issued_key();
    let value = json!({ "rotation": { "profile": "openbao-token" }, "token": hidden });
    assert_refused_at_create(value, &["api_key", "missing"], &hidden).await;
}

/// A push profile needs `{field.username}`: the secret without it is refused, and the service
/// is not called with a half-rendered request.
#[tokio::test]
async fn a_push_secret_without_its_username_is_refused_before_anything_is_stored() {
    let hidden = random_password();
    let value = json!({ "rotation": { "profile": "openbao-userpass" }, "api_key": hidden });
    assert_refused_at_create(value, &["username", "openbao-userpass"], &hidden).await;
}

/// The same secret, through the four steps: whichever step refuses it, nothing is pushed and
/// AWSCURRENT stays.
#[tokio::test]
async fn a_push_secret_without_its_username_never_changes_the_current_value() {
    let hidden = random_password();
    let value = json!({ "rotation": { "profile": "openbao-userpass" }, "api_key": hidden });
    let s = Secret::new("api-key-invalid", &value).await;
    let current_version = s.current_version().await;
    let token = s.start_rotation().await;
    let (step, error) = rotate(&s.env, FUNCTION, &s.name, &token).await.unwrap_err();
    assert_ne!(step, "finishSecret");
    assert_eq!(error.error_type, "Permanent.InvalidSecret", "{step}: {error:?}");
    assert!(error.message.contains("username") && error.message.contains("openbao-userpass"), "{error:?}");
    assert!(!error.message.contains(&hidden));
    assert_eq!(s.current_version().await, current_version);
    assert_eq!(s.current().await, value);
}

/// Runs createSecret and setSecret of a secret of `profile` (a `test` call only), then
/// testSecret, which must fail; the error and how long testSecret took.
async fn fault(profile: &str) -> (FunctionError, Duration, Secret) {
    let initial = self_issued_key();
    let env = TestEnv::from_env();
    let name = unique("api-key-fault");
    let value = json!({ "rotation": { "profile": profile }, "consumer_secret_id": name, "api_key": initial });
    let arn = create_secret(&env.secrets_client(), &name, &value).await;
    let s = Secret { client: env.secrets_client(), env, name, arn };
    let current_version = s.current_version().await;
    let token = s.start_rotation().await;
    s.step("createSecret", &token).await.expect("createSecret makes the key without calls");
    s.step("setSecret", &token).await.expect("setSecret has nothing to push");
    let pending = key(&s.value(Some(&token), "AWSPENDING").await);
    let stages_before = s.stages().await;
    let started = Instant::now();
    let error = s.step("testSecret", &token).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(s.stages().await, stages_before, "testSecret changed no stage");
    assert_eq!(s.current_version().await, current_version);
    assert_eq!(key(&s.current().await), initial, "AWSCURRENT is unchanged");
    assert!(!error.message.contains(&pending) && !error.message.contains(&initial), "{error:?}");
    s.env.assert_functions_log_hides(&[&initial, &pending]);
    (error, took, s)
}

#[tokio::test]
async fn an_unreachable_provider_is_a_retryable_error_naming_the_call_and_url() {
    let (error, _, _) = fault("unreachable").await;
    assert_eq!(error.error_type, "Retryable.ProviderCall", "{error:?}");
    assert!(error.message.contains("`test`") && error.message.contains("unreachable"), "{error:?}");
    assert!(error.message.contains("https://localhost:9/check"), "the URL: {error:?}");
}

#[tokio::test]
async fn a_redirect_is_a_permanent_error_never_followed() {
    let (error, _, s) = fault("redirecting").await;
    assert_eq!(error.error_type, "Permanent.ProviderCall", "{error:?}");
    assert!(error.message.contains("`test`") && error.message.contains("redirecting"), "{error:?}");
    assert!(error.message.contains("302") && error.message.contains("redirect"), "{error:?}");
    assert!(error.message.contains(&format!("{}redirect", s.env.consumer_url)), "the URL: {error:?}");
}

#[tokio::test]
async fn a_slow_provider_is_cut_off_at_the_request_timeout() {
    let (error, took, _) = fault("slow").await;
    assert_eq!(error.error_type, "Retryable.ProviderCall", "{error:?}");
    assert!(error.message.contains("`test`") && error.message.contains("slow"), "{error:?}");
    // REQUEST_TIMEOUT_SECONDS is 2 in a test run; the consumer answers after SLOW_ANSWER.
    assert!(took < Duration::from_secs(5) && took < SLOW_ANSWER, "testSecret took {took:?}");
    assert!(took >= Duration::from_secs(2), "testSecret gave up before the timeout: {took:?}");
}

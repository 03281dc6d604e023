//! Unit tests of the API-key steps over Secrets Manager's in-memory double and an in-memory
//! provider, with faults injected into every call of either, before and after it takes effect.
//! Assertions are on what a user sees: which version is `AWSCURRENT`, which keys the provider
//! accepts, what the error says.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rotation::testing::{FailWhen, MemoryStore, StoreOp};
use rotation::{Error, ExposeSecret, Rotator, stage};
use serde_json::{Value, json};

use crate::http::{Request, Response};
use crate::profile::Profiles;
use crate::steps::{ApiKeyRotation, Transport};

const NAME: &str = "prod/partner-api";
const FIRST: &str = "11111111-1111-4111-8111-111111111111";
const TOKEN: &str = "22222222-2222-4222-8222-222222222222";
const SECOND_TOKEN: &str = "33333333-3333-4333-8333-333333333333";
const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

/// An HTTP service that issues keys, checks them and changes a user's password.
#[derive(Clone, Default)]
struct FakeProvider {
    state: Arc<Mutex<ProviderState>>,
}

#[derive(Default)]
struct ProviderState {
    /// id -> (name, value) of every valid issued key.
    keys: BTreeMap<String, (String, String)>,
    next_id: u32,
    /// user -> password.
    passwords: BTreeMap<String, String>,
    calls: usize,
    /// (nth call from now, when).
    fault: Option<(usize, FailWhen)>,
}

impl FakeProvider {
    fn fail(&self, nth: usize, when: FailWhen) {
        self.state.lock().unwrap().fault = Some((nth, when));
    }

    fn valid_keys(&self) -> Vec<String> {
        self.state.lock().unwrap().keys.values().map(|(_, value)| value.clone()).collect()
    }

    fn issue_key(&self, name: &str) -> (String, String) {
        let mut state = self.state.lock().unwrap();
        state.next_id += 1;
        let id = format!("id-{}", state.next_id);
        let value = format!("key-{}-{}", state.next_id, uuid_like(state.next_id));
        state.keys.insert(id.clone(), (name.to_owned(), value.clone()));
        (id, value)
    }

    fn password(&self, user: &str) -> Option<String> {
        self.state.lock().unwrap().passwords.get(user).cloned()
    }

    fn set_password(&self, user: &str, password: &str) {
        self.state.lock().unwrap().passwords.insert(user.to_owned(), password.to_owned());
    }

    fn header(request: &Request, name: &str) -> Option<String> {
        request.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.expose_secret().to_owned())
    }

    fn body(request: &Request) -> Value {
        request.body.as_ref().map(|b| serde_json::from_str(b.expose_secret()).unwrap()).unwrap_or(Value::Null)
    }

    fn answer(&self, request: &Request) -> (u16, Value) {
        let path = request.url.path().trim_start_matches("/v1/").to_owned();
        let mut state = self.state.lock().unwrap();
        let admin = Self::header(request, "X-Admin") == Some("admin-secret".to_owned());
        match (request.method.as_str(), path.as_str()) {
            ("POST", "keys") if admin => {
                let name = Self::body(request)["name"].as_str().unwrap().to_owned();
                state.next_id += 1;
                let id = format!("id-{}", state.next_id);
                let value = format!("key-{}-{}", state.next_id, uuid_like(state.next_id));
                state.keys.insert(id.clone(), (name, value.clone()));
                (200, json!({"data": {"key": value, "id": id}}))
            }
            ("GET", "keys") if admin => {
                let items: Vec<Value> =
                    state.keys.iter().map(|(id, (name, _))| json!({"id": id, "name": name})).collect();
                (200, json!({"keys": items}))
            }
            ("DELETE", p) if admin && p.starts_with("keys/") => {
                let id = p.trim_start_matches("keys/");
                if state.keys.remove(id).is_some() { (204, Value::Null) } else { (404, Value::Null) }
            }
            ("GET", "whoami") => {
                let bearer = Self::header(request, "Authorization").unwrap_or_default();
                let key = bearer.trim_start_matches("Bearer ");
                if state.keys.values().any(|(_, value)| value == key) { (200, json!({})) } else { (401, json!({})) }
            }
            ("PUT", p) if admin && p.starts_with("users/") => {
                let user = p.trim_start_matches("users/").to_owned();
                let password = Self::body(request)["password"].as_str().unwrap().to_owned();
                state.passwords.insert(user, password);
                (204, Value::Null)
            }
            ("POST", p) if p.starts_with("login/") => {
                let user = p.trim_start_matches("login/");
                let password = Self::body(request)["password"].as_str().unwrap_or_default().to_owned();
                if state.passwords.get(user) == Some(&password) { (200, json!({})) } else { (400, json!({})) }
            }
            _ => (403, json!({})),
        }
    }
}

fn uuid_like(n: u32) -> String {
    format!("{:08x}{:08x}", n.wrapping_mul(2654435761), n.wrapping_mul(40503))
}

impl Transport for FakeProvider {
    async fn send(&self, request: &Request) -> Result<Response, Error> {
        let strike = {
            let mut state = self.state.lock().unwrap();
            state.calls += 1;
            match &mut state.fault {
                Some((1, when)) => {
                    let when = *when;
                    state.fault = None;
                    Some(when)
                }
                Some((nth, _)) => {
                    *nth -= 1;
                    None
                }
                None => None,
            }
        };
        let lost = || Error::ProviderCall {
            profile: request.profile.clone(),
            call: request.call,
            url: request.url.path().to_owned(),
            detail: "connection reset (injected)".into(),
            retryable: true,
        };
        if strike == Some(FailWhen::Before) {
            return Err(lost());
        }
        let (status, body) = self.answer(request);
        if strike == Some(FailWhen::After) {
            return Err(lost());
        }
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        Ok(Response::new(status, body))
    }
}

fn profiles() -> Profiles {
    let document = json!({
        "allowed_url_prefixes": ["https://provider.test/v1/"],
        "profiles": {
            "issued": {
                "mode": "issued",
                "base_url": "https://provider.test/v1/",
                "admin_secret": "provider-admin",
                "calls": {
                    "issue": {"method": "POST", "path": "keys", "headers": {"X-Admin": "{admin.token}"},
                              "body": {"name": "{key_name}"}, "accept": [200],
                              "value_pointer": "/data/key", "id_pointer": "/data/id"},
                    "test": {"method": "GET", "path": "whoami", "headers": {"Authorization": "Bearer {value}"}},
                    "revoke": {"method": "DELETE", "path": "keys/{key_id}", "headers": {"X-Admin": "{admin.token}"},
                               "accept": [204], "gone": [404]},
                    "list": {"method": "GET", "path": "keys", "headers": {"X-Admin": "{admin.token}"},
                             "items_pointer": "/keys", "item_id_pointer": "/id", "name_pointer": "/name"}
                }
            },
            "push": {
                "mode": "generated",
                "base_url": "https://provider.test/v1/",
                "admin_secret": "provider-admin",
                "key_field": "password",
                "calls": {
                    "push": {"method": "PUT", "path": "users/{field.username}", "headers": {"X-Admin": "{admin.token}"},
                             "body": {"password": "{value}"}},
                    "test": {"method": "POST", "path": "login/{field.username}", "body": {"password": "{value}"},
                             "refuse": [400]}
                }
            },
            "self-issued": {
                "mode": "generated",
                "base_url": "https://provider.test/v1/",
                "generate": {"length": 32, "alphabet": "hex", "prefix": "sk_"}
            }
        }
    });
    let text = document.to_string();
    Profiles::from_lookup(&|name| (name == "API_KEY_PROFILES").then(|| text.clone())).unwrap()
}

struct Fixture {
    store: MemoryStore,
    provider: FakeProvider,
    rotator: Rotator<MemoryStore, ApiKeyRotation<FakeProvider>>,
    arn: String,
}

impl Fixture {
    fn new(first_value: &Value) -> Self {
        Self::with_provider(FakeProvider::default(), &first_value.to_string())
    }

    fn with_provider(provider: FakeProvider, first_text: &str) -> Self {
        let store = MemoryStore::new();
        store.create_secret("provider-admin", FIRST, &json!({"token": "admin-secret"}));
        // Created with a placeholder, then the first value as version FIRST, which may be any text.
        let arn = store.create_secret(NAME, "00000000-0000-4000-8000-000000000000", &json!({}));
        store.put_text(&arn, FIRST, first_text, &[stage::CURRENT]);
        let rotator = Rotator::new(store.clone(), ApiKeyRotation::new(profiles(), provider.clone()));
        Fixture { store, provider, rotator, arn }
    }

    /// A secret whose first key the provider issued.
    fn issued() -> Self {
        let provider = FakeProvider::default();
        let (id, value) = provider.issue_key("(made by hand)");
        let first = json!({"api_key": value, "api_key_id": id, "rotation": {"profile": "issued"}, "owner": "team-a"});
        Fixture::with_provider(provider, &first.to_string())
    }

    fn pushed() -> Self {
        let f =
            Fixture::new(&json!({"username": "svc", "password": "first-password", "rotation": {"profile": "push"}}));
        f.provider.set_password("svc", "first-password");
        f
    }

    async fn step(&self, step: &str, token: &str) -> Result<(), Error> {
        self.rotator.handle(json!({"Step": step, "SecretId": self.arn, "ClientRequestToken": token})).await.map(|_| ())
    }

    /// Runs the four steps; after a failure, runs the failed step again (Secrets Manager's retry).
    async fn rotate_with_retries(&self, token: &str) -> Vec<Error> {
        let mut errors = Vec::new();
        for step in STEPS {
            for attempt in 0.. {
                match self.step(step, token).await {
                    Ok(()) => break,
                    Err(e) => {
                        assert!(attempt < 3, "{step} keeps failing: {e}");
                        errors.push(e);
                    }
                }
            }
        }
        errors
    }

    fn current(&self) -> Value {
        let version = self.store.version_with(&self.arn, stage::CURRENT).unwrap();
        self.store.value(&self.arn, &version).unwrap()
    }

    fn staged_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for label in [stage::CURRENT, stage::PREVIOUS] {
            if let Some(version) = self.store.version_with(&self.arn, label)
                && let Some(value) = self.store.value(&self.arn, &version)
                && let Some(key) = value["api_key"].as_str()
            {
                keys.push(key.to_owned());
            }
        }
        keys.sort();
        keys
    }
}

#[tokio::test]
async fn an_issued_key_rotates_and_only_current_and_previous_stay_valid() {
    let f = Fixture::issued();
    for token in [TOKEN, SECOND_TOKEN] {
        f.store.start_rotation(&f.arn, token);
        let errors = f.rotate_with_retries(token).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(f.store.version_with(&f.arn, stage::CURRENT).as_deref(), Some(token));
    }
    let current = f.current();
    assert_eq!(current["owner"], "team-a", "other fields are kept");
    assert!(current["api_key_id"].is_string(), "the provider's id is stored");
    let mut valid = f.provider.valid_keys();
    valid.sort();
    assert_eq!(valid, f.staged_keys(), "the first key fell off AWSPREVIOUS and was revoked");
}

#[tokio::test]
async fn a_fault_on_any_provider_call_never_leaves_an_orphan_key() {
    let mut faults = 0;
    for when in [FailWhen::Before, FailWhen::After] {
        for nth in 1..=12 {
            let f = Fixture::issued();
            f.store.start_rotation(&f.arn, TOKEN);
            f.provider.fail(nth, when);
            f.rotate_with_retries(TOKEN).await;
            // The next rotation's createSecret reconciles what a lost answer left behind.
            // A fault the first rotation did not reach strikes in the second.
            f.store.start_rotation(&f.arn, SECOND_TOKEN);
            f.rotate_with_retries(SECOND_TOKEN).await;
            assert_eq!(f.store.version_with(&f.arn, stage::CURRENT).as_deref(), Some(SECOND_TOKEN));
            let mut valid = f.provider.valid_keys();
            valid.sort();
            assert_eq!(valid, f.staged_keys(), "fault {when:?} on provider call {nth}");
            faults += 1;
        }
    }
    assert_eq!(faults, 24);
}

#[tokio::test]
async fn a_fault_on_any_secrets_manager_call_converges() {
    for when in [FailWhen::Before, FailWhen::After] {
        for nth in 1..=30 {
            let f = Fixture::issued();
            f.store.start_rotation(&f.arn, TOKEN);
            f.store.fail(StoreOp::Any, nth, when);
            f.rotate_with_retries(TOKEN).await;
            assert_eq!(f.store.version_with(&f.arn, stage::CURRENT).as_deref(), Some(TOKEN), "{when:?} {nth}");
            let current_key = f.current()["api_key"].as_str().unwrap().to_owned();
            assert!(f.provider.valid_keys().contains(&current_key), "{when:?} {nth}: the current key works");
            // Orphans (a key issued whose PutSecretValue answer was lost) go at the next createSecret.
            f.store.start_rotation(&f.arn, SECOND_TOKEN);
            f.rotate_with_retries(SECOND_TOKEN).await;
            assert_eq!(f.store.version_with(&f.arn, stage::CURRENT).as_deref(), Some(SECOND_TOKEN));
            let mut valid = f.provider.valid_keys();
            valid.sort();
            assert_eq!(valid, f.staged_keys(), "{when:?} {nth}");
        }
    }
}

#[tokio::test]
async fn a_pushed_password_changes_and_the_old_one_is_refused() {
    let f = Fixture::pushed();
    f.store.start_rotation(&f.arn, TOKEN);
    assert!(f.rotate_with_retries(TOKEN).await.is_empty());
    let current = f.current();
    let new_password = current["password"].as_str().unwrap();
    assert_ne!(new_password, "first-password");
    assert_eq!(f.provider.password("svc").as_deref(), Some(new_password));
    assert_eq!(current["username"], "svc");
}

#[tokio::test]
async fn a_push_retried_after_its_answer_was_lost_converges() {
    for when in [FailWhen::Before, FailWhen::After] {
        for nth in 1..=6 {
            let f = Fixture::pushed();
            f.store.start_rotation(&f.arn, TOKEN);
            f.provider.fail(nth, when);
            f.rotate_with_retries(TOKEN).await;
            let current = f.current();
            assert_eq!(f.provider.password("svc").as_deref(), current["password"].as_str(), "{when:?} {nth}");
        }
    }
}

#[tokio::test]
async fn a_test_without_rotation_passes_on_a_copy_of_the_current_value() {
    let f = Fixture::pushed();
    f.store.start_rotation(&f.arn, TOKEN);
    let current = f.current();
    f.store.put_value(&f.arn, TOKEN, &current, &[stage::PENDING]);
    f.step("testSecret", TOKEN).await.unwrap();
}

#[tokio::test]
async fn a_self_issued_key_has_the_profiles_format_and_keeps_the_plain_shape() {
    let f = Fixture::with_provider(FakeProvider::default(), "sk_0123456789abcdef0123456789ab");
    // The plain string names no profile: three profiles and no default is a clear error.
    f.store.start_rotation(&f.arn, TOKEN);
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.InvalidSecret", "{err}");
    assert!(err.to_string().contains("rotation.profile"), "{err}");
    let f =
        Fixture::new(&json!({"api_key": "sk_0123456789abcdef0123456789ab", "rotation": {"profile": "self-issued"}}));
    f.store.start_rotation(&f.arn, TOKEN);
    assert!(f.rotate_with_retries(TOKEN).await.is_empty());
    let key = f.current()["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_") && key.len() == 32, "{}", key.len());
    assert!(key[3..].chars().all(|c| c.is_ascii_hexdigit()));
}

#[tokio::test]
async fn a_secret_missing_what_a_call_needs_is_refused_before_anything_is_stored() {
    let f = Fixture::new(&json!({"password": "first-password", "rotation": {"profile": "push"}}));
    f.store.start_rotation(&f.arn, TOKEN);
    let before = f.store.secret(&f.arn);
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.InvalidSecret");
    assert!(err.to_string().contains("field `username` is missing"), "{err}");
    assert!(err.to_string().contains("`test` call of profile push reads it"), "{err}");
    assert!(!err.to_string().contains("first-password"));
    assert_eq!(f.store.secret(&f.arn), before, "nothing is stored");
    assert!(f.provider.password("svc").is_none(), "nothing was pushed");
}

#[tokio::test]
async fn an_unknown_profile_is_named_and_nothing_is_stored() {
    let f = Fixture::new(&json!({"api_key": "k", "rotation": {"profile": "nope"}}));
    f.store.start_rotation(&f.arn, TOKEN);
    let before = f.store.secret(&f.arn);
    let err = f.step("createSecret", TOKEN).await.unwrap_err();
    assert_eq!(err.error_type(), "Permanent.InvalidSecret");
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(f.store.secret(&f.arn), before);
}

// ---------------------------------------------------------------------------------------------
// The preflight check
// ---------------------------------------------------------------------------------------------

use rotation::check::{Report, Status};

impl Fixture {
    /// The check, as an operator's event runs it; proves it changed nothing (no version, no
    /// label, no key issued or revoked, no password pushed) and revealed no key.
    async fn check(&self) -> Report {
        let before = self.store.secret(&self.arn);
        let keys_before = self.provider.valid_keys();
        let password_before = self.provider.password("svc");
        let answer = self.rotator.handle(json!({"Action": "check", "SecretId": self.arn})).await.unwrap();
        assert_eq!(self.store.secret(&self.arn), before, "the check changed the secret");
        assert_eq!(self.provider.valid_keys(), keys_before, "the check issued or revoked a key");
        assert_eq!(self.provider.password("svc"), password_before, "the check pushed a password");
        assert!(!self.store.calls().iter().any(|op| matches!(op, StoreOp::PutPending | StoreOp::MoveStage)));
        let text = answer.to_string();
        let current = self.current();
        for secret in keys_before.iter().chain(password_before.iter()).map(String::as_str).chain([
            "admin-secret",
            current["api_key"].as_str().unwrap_or("(none)"),
            current["password"].as_str().unwrap_or("(none)"),
        ]) {
            assert!(!text.contains(secret), "the report reveals a secret: {text}");
        }
        serde_json::from_value(answer).unwrap()
    }
}

fn status(report: &Report, name: &str) -> Status {
    report.get(name).unwrap_or_else(|| panic!("no check {name}: {report:#?}")).status
}

fn only_failure<'a>(report: &'a Report, name: &str) -> &'a rotation::check::Check {
    let failed: Vec<&str> =
        report.checks.iter().filter(|c| c.status == Status::Failed).map(|c| c.name.as_str()).collect();
    assert_eq!(failed, [name], "{report:#?}");
    let check = report.get(name).unwrap();
    assert!(check.fix.is_some(), "{check:?}");
    check
}

#[tokio::test]
async fn an_issued_key_passes_the_check_and_nothing_is_issued() {
    let f = Fixture::issued();
    let report = f.check().await;
    assert!(report.passed, "{report:#?}");
    assert_eq!(report.engine, "API key");
    for name in ["profile.resolves", "secret.parses", "admin.secret", "profile.urls", "credential.current"] {
        assert_eq!(status(&report, name), Status::Passed, "{name}: {report:#?}");
    }
    let profile = report.get("profile.resolves").unwrap();
    assert!(profile.detail.contains("profile issued") && profile.detail.contains("rotation.profile"), "{profile:?}");
    assert!(report.get("profile.urls").unwrap().detail.contains("https://provider.test/v1/"));
}

#[tokio::test]
async fn a_refused_current_key_fails_the_current_credential_check() {
    let f = Fixture::issued();
    let first = f.current();
    let (_, other) = f.provider.issue_key("another");
    let mut forged = first.clone();
    forged["api_key"] = json!("key-not-issued-by-anyone");
    f.store.put_value(&f.arn, "v-forged", &forged, &[stage::CURRENT]);
    let report = f.check().await;
    let check = only_failure(&report, "credential.current");
    assert!(check.detail.contains("refuses the current key"), "{check:?}");
    assert!(!serde_json::to_string(&report).unwrap().contains(&other));
    assert!(!serde_json::to_string(&report).unwrap().contains("key-not-issued-by-anyone"));
}

#[tokio::test]
async fn a_pushed_password_is_tested_and_never_pushed() {
    let f = Fixture::pushed();
    let report = f.check().await;
    assert!(report.passed, "{report:#?}");
    assert!(report.get("profile.resolves").unwrap().detail.contains("generated and pushed"));
}

#[tokio::test]
async fn a_self_issued_key_without_test_is_checked_for_the_profiles_format() {
    let good =
        Fixture::new(&json!({"api_key": "sk_0123456789abcdef0123456789abc", "rotation": {"profile": "self-issued"}}));
    let report = good.check().await;
    assert!(report.passed, "{report:#?}");
    assert_eq!(status(&report, "admin.secret"), Status::Skipped);
    let bad = Fixture::new(&json!({"api_key": "not-the-format", "rotation": {"profile": "self-issued"}}));
    let report = bad.check().await;
    only_failure(&report, "credential.current");
}

#[tokio::test]
async fn an_unknown_profile_fails_the_profile_check_naming_the_profiles() {
    let f = Fixture::new(&json!({"api_key": "k-3f9a-unknown-profile", "rotation": {"profile": "nope"}}));
    let report = f.check().await;
    let check = only_failure(&report, "profile.resolves");
    assert!(check.detail.contains("nope") && check.detail.contains("issued, push, self-issued"), "{check:?}");
}

#[tokio::test]
async fn an_unreadable_admin_secret_fails_the_admin_check() {
    let f = Fixture::issued();
    f.store.put_text("provider-admin", "v-broken", "not json", &[stage::CURRENT]);
    let report = f.check().await;
    let check = only_failure(&report, "admin.secret");
    assert!(check.detail.contains("is not a JSON object"), "{check:?}");
    assert_eq!(status(&report, "credential.current"), Status::Skipped);
}

#[tokio::test]
async fn a_secret_missing_a_field_a_call_reads_fails_the_fields_check() {
    let f = Fixture::new(&json!({"password": "first-password", "rotation": {"profile": "push"}}));
    let report = f.check().await;
    let failed: Vec<&str> =
        report.checks.iter().filter(|c| c.status == Status::Failed).map(|c| c.name.as_str()).collect();
    assert!(failed.contains(&"secret.fields"), "{report:#?}");
    let check = report.get("secret.fields").unwrap();
    assert!(check.detail.contains("`username`") && check.detail.contains("`test` call"), "{check:?}");
}

#[tokio::test]
async fn each_step_reads_only_what_it_needs() {
    let f = Fixture::issued();
    f.store.start_rotation(&f.arn, TOKEN);
    let mut reads = Vec::new();
    for step in STEPS {
        let before = f.store.calls().len();
        f.step(step, TOKEN).await.unwrap();
        let calls = f.store.calls()[before..].to_vec();
        reads.push(calls.iter().filter(|op| **op == StoreOp::GetValue).count());
    }
    // createSecret: current, admin, pending (once); setSecret and testSecret make no admin call:
    // current (and pending); finishSecret: current, admin, previous.
    assert_eq!(reads, [3, 1, 2, 3], "GetSecretValue calls per step");
}

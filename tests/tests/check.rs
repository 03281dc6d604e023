//! The preflight check end to end: `{"Action": "check", "SecretId": ...}` sent to the real
//! function binaries answers a report, proves what a rotation needs, and changes nothing.

use e2e::scenarios::{Db, Fixture};
use e2e::*;
use serde_json::{Value, json};

/// The check named `name` in a report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("a report lists its checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
}

fn failed(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "failed")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn check_of(env: &TestEnv, function: &str, secret_id: &str) -> Value {
    invoke_for_answer(env, function, &json!({"Action": "check", "SecretId": secret_id}))
        .await
        .unwrap_or_else(|e| panic!("the check answered an error: {e:?}"))
}

#[tokio::test]
async fn postgres_a_healthy_secret_passes_and_nothing_changes() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let stages_before = f.stages().await;
    let report = check_of(&f.env, "postgres-rotation", &f.secret).await;
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["engine"], "PostgreSQL");
    for name in [
        "secret.describe",
        "rotation.pending",
        "secret.readable",
        "secret.parses",
        "target.reachable",
        "target.tls",
        "credential.current",
        "password.policy",
    ] {
        assert_eq!(check(&report, name)["status"], "passed", "{name}: {report:#}");
    }
    assert!(check(&report, "secret.strategy")["detail"].as_str().unwrap().starts_with("single-user"));
    assert_eq!(check(&report, "secret.writable")["status"], "skipped");
    assert!(!report.to_string().contains(&f.password), "the report holds the password");
    assert_eq!(f.stages().await, stages_before, "the check changed the secret's stages");
    assert!(f.logs_in(&f.password).await, "the password is unchanged");
    f.env.assert_functions_log_hides(&[&f.password]);
}

#[tokio::test]
async fn postgres_a_wrong_current_password_fails_its_check_and_nothing_changes() {
    let f = Fixture::new(Db::Postgres, json!({})).await;
    let actual = format!("changed-{}", uuid::Uuid::new_v4().simple());
    f.env.set_role_password(&f.user, &actual).await;
    let stages_before = f.stages().await;
    let report = check_of(&f.env, "postgres-rotation", &f.secret).await;
    assert_eq!(report["passed"], false, "{report:#}");
    assert_eq!(failed(&report), ["credential.current"], "{report:#}");
    let current = check(&report, "credential.current");
    assert!(current["detail"].as_str().unwrap().contains("is rejected"), "{current}");
    assert!(current["fix"].as_str().unwrap().contains("AWSCURRENT"), "{current}");
    let text = report.to_string();
    assert!(!text.contains(&f.password) && !text.contains(&actual), "the report holds a password");
    assert_eq!(f.stages().await, stages_before, "the check changed the secret's stages");
    assert!(f.logs_in(&actual).await, "the password is unchanged");
    assert!(!f.logs_in(&f.password).await);
    f.env.assert_functions_log_hides(&[&f.password, &actual]);
}

#[tokio::test]
async fn a_malformed_check_event_is_an_invalid_event_naming_the_field() {
    let env = TestEnv::from_env();
    let err = invoke_for_answer(&env, "postgres-rotation", &json!({"Action": "check"})).await.unwrap_err();
    assert_eq!(err.error_type, "Permanent.InvalidEvent");
    assert!(err.message.contains("`SecretId`"), "{err:?}");
}

#[tokio::test]
async fn api_key_an_openbao_token_is_tested_and_none_is_issued() {
    let env = TestEnv::from_env();
    let client = env.secrets_client();
    let (token, accessor) = env.openbao_create_token(json!({ "purpose": "the check" }));
    let value = json!({
        "rotation": { "profile": "openbao-token" },
        "api_key": token,
        "api_key_id": accessor,
        "app": "billing",
    });
    let name = unique("api-key-check");
    let arn = create_secret(&client, &name, &value).await;
    let stages_before = stages(&client, &name).await;
    let stem = api_key_name_stem("rotation-", &arn);

    let report = check_of(&env, "api-key-rotation", &name).await;
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["engine"], "API key");
    for name in ["profile.resolves", "secret.parses", "admin.secret", "profile.urls", "credential.current"] {
        assert_eq!(check(&report, name)["status"], "passed", "{name}: {report:#}");
    }
    assert!(check(&report, "profile.resolves")["detail"].as_str().unwrap().contains("openbao-token"));
    assert!(!report.to_string().contains(&token), "the report holds the token");
    assert_eq!(stages(&client, &name).await, stages_before, "the check changed the secret's stages");
    assert!(env.openbao_accessors_named(&stem).is_empty(), "the check issued a token");
    assert!(env.openbao_token_valid(&token), "the token is still valid");

    // A token OpenBao no longer knows: the current credential check fails, nothing else.
    let (status, _) = env.openbao_request(
        "POST",
        "auth/token/revoke-accessor",
        Some(env.openbao_root_token.as_str()),
        Some(&json!({ "accessor": accessor })),
    );
    assert!((200..300).contains(&status), "revoking the token: {status}");
    let report = check_of(&env, "api-key-rotation", &name).await;
    assert_eq!(failed(&report), ["credential.current"], "{report:#}");
    assert!(env.openbao_accessors_named(&stem).is_empty(), "the check issued a token");
    env.assert_functions_log_hides(&[&token]);
}

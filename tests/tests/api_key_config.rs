//! The API-key function's configuration is checked at start: the real binary, started with a bad
//! profiles document, stops before it serves any event, naming the variable and the JSON path of
//! the problem, and never repeating a value from the document.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The binary `cargo xtask test` built for `cargo lambda watch`.
fn binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/api-key-rotation");
    assert!(path.exists(), "{} is missing: run the tests with `cargo xtask test`, which builds it", path.display());
    path
}

/// Starts the function with `variables`, as Lambda would but for the runtime API: a listener
/// that only records whether the function came to ask for an event. Returns what the function
/// printed if it stopped within two seconds, and whether it asked.
fn start_with(variables: &[(&str, String)]) -> (Option<(i32, String)>, bool) {
    let runtime_api = TcpListener::bind("127.0.0.1:0").unwrap();
    runtime_api.set_nonblocking(true).unwrap();
    let mut command = Command::new(binary());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api.local_addr().unwrap().to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "api-key-rotation")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/api-key-rotation")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in variables {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the api-key-rotation binary starts");
    let started = std::time::Instant::now();
    let mut asked = false;
    loop {
        asked |= runtime_api.accept().is_ok();
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            return (Some((status.code().unwrap_or(-1), text)), asked);
        }
        if started.elapsed() > Duration::from_secs(2) {
            let _ = child.kill();
            let _ = child.wait();
            return (None, asked);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn document(profile: Value) -> String {
    json!({
        "allowed_url_prefixes": ["https://keys.example.com/v1/"],
        "profiles": { "partner": profile }
    })
    .to_string()
}

fn issued(test_headers: Value) -> Value {
    json!({
        "mode": "issued",
        "base_url": "https://keys.example.com/v1/",
        "calls": {
            "issue": {"method": "POST", "path": "keys", "headers": {"Authorization": "Bearer literal-hunter2"},
                      "body": {"name": "{key_name}"}, "value_pointer": "/key", "id_pointer": "/id"},
            "test": {"method": "GET", "path": "whoami", "headers": test_headers},
            "revoke": {"method": "DELETE", "path": "keys/{key_id}"}
        }
    })
}

/// The function stopped at start, and what it printed names `needles` and not the literal
/// credential of the document.
fn assert_refused(variables: &[(&str, String)], needles: &[&str]) {
    let (stopped, asked) = start_with(variables);
    let (code, text) = stopped.expect("a bad configuration stops the function at start");
    assert!(!asked, "the function asked the runtime API for an event: {text}");
    assert_ne!(code, 0, "{text}");
    for needle in needles {
        assert!(text.contains(needle), "the error names {needle:?}: {text}");
    }
    assert!(!text.contains("literal-hunter2"), "a value of the document is repeated: {text}");
}

#[test]
fn no_profiles_document_names_both_variables() {
    assert_refused(&[], &["API_KEY_PROFILES is not set", "API_KEY_PROFILES_FILE"]);
}

#[test]
fn an_unknown_placeholder_is_refused_with_its_json_path() {
    let profiles = document(issued(json!({"Authorization": "Bearer {valeu}"})));
    assert_refused(&[("API_KEY_PROFILES", profiles)], &["API_KEY_PROFILES", "profiles.partner.calls.test", "{valeu}"]);
}

#[test]
fn a_base_url_outside_the_allow_list_is_refused() {
    let mut profile = issued(json!({"Authorization": "Bearer {value}"}));
    profile["base_url"] = json!("https://attacker.example.net/v1/");
    assert_refused(&[("API_KEY_PROFILES", document(profile))], &["profiles.partner.base_url", "allowed_url_prefixes"]);
}

#[test]
fn plain_http_to_another_host_is_refused() {
    let mut profiles: Value =
        serde_json::from_str(&document(issued(json!({"Authorization": "Bearer {value}"})))).unwrap();
    profiles["allowed_url_prefixes"] = json!(["http://keys.example.com/v1/"]);
    profiles["profiles"]["partner"]["base_url"] = json!("http://keys.example.com/v1/");
    assert_refused(&[("API_KEY_PROFILES", profiles.to_string())], &["allowed_url_prefixes", "http"]);
}

#[test]
fn a_key_in_a_path_is_refused() {
    let mut profile = issued(json!({}));
    profile["calls"]["test"]["path"] = json!("check/{value}");
    assert_refused(&[("API_KEY_PROFILES", document(profile))], &["profiles.partner.calls.test.path", "{value}"]);
}

#[test]
fn an_unreadable_profiles_file_is_named() {
    assert_refused(
        &[("API_KEY_PROFILES_FILE", "/nonexistent/profiles.json".to_owned())],
        &["API_KEY_PROFILES_FILE", "/nonexistent/profiles.json"],
    );
}

#[test]
fn a_good_document_is_accepted() {
    let profiles = document(issued(json!({"Authorization": "Bearer {value}"})));
    let (stopped, asked) = start_with(&[("API_KEY_PROFILES", profiles)]);
    assert!(asked, "the function started and asked the runtime API for an event: {stopped:?}");
}

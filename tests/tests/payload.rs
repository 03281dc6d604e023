//! A payload the function cannot read as a JSON value (nested deeper than 128 levels, which
//! Lambda's Invoke accepts) is answered with the project's typed `Permanent.InvalidEvent`, not
//! with the runtime's own error type; the real binary, under its own runtime API.

use e2e::TestEnv;
use e2e::runtime_api::FunctionProcess;
use serde_json::{Value, json};

#[tokio::test]
async fn a_payload_nested_too_deep_is_an_invalid_event() {
    let env = TestEnv::from_env();
    let function = FunctionProcess::start(&env, "postgres-rotation").await;
    let mut deep = json!("createSecret");
    for _ in 0..200 {
        deep = Value::Array(vec![deep]);
    }
    let event = json!({"Step": deep, "SecretId": "prod/db", "ClientRequestToken": "t"});
    match function.invoke(&event).await {
        Err((error_type, message)) => {
            assert_eq!(error_type, "Permanent.InvalidEvent", "{message}");
            assert!(message.contains("nested more than 128 levels"), "{message}");
        }
        Ok(answer) => panic!("a payload nested 200 levels deep was accepted: {answer}"),
    }
    // The process serves the next event as usual.
    let answer = function.invoke(&json!({"Step": "createSecret"})).await;
    assert_eq!(answer.unwrap_err().0, "Permanent.InvalidEvent");
}

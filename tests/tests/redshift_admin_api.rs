//! The Redshift function's `admin-api` strategy, end to end: the function calls `ModifyCluster`
//! or `UpdateNamespace` through the AWS SDK, pointed at the tests' own stand-in of those two
//! calls ([`e2e::redshift_api`]), which applies each change to the PostgreSQL stand-in
//! [`APPLY_DELAY`] later, as the real services apply it asynchronously.

use std::time::Instant;

use e2e::redshift_api::{APPLY_DELAY, RedshiftApi};
use e2e::scenarios::{Engine, Fixture};
use e2e::*;
use serde_json::json;

const DB: Engine = Engine::Redshift;

fn md5_form(password: &str, user: &str) -> String {
    postgres_protocol::password::md5(password.as_bytes(), user)
}

#[tokio::test]
async fn a_provisioned_clusters_admin_password_is_set_with_modify_cluster() {
    let cluster = unique("analytics");
    let f = Fixture::new(DB, json!({"rotation_strategy": "admin-api", "dbClusterIdentifier": cluster})).await;
    let api = RedshiftApi::get(&f.env);
    api.add_cluster(&cluster, &f.user);

    let token = f.start_rotation().await;
    f.step("createSecret", &token).await.unwrap();
    let started = Instant::now();
    f.step("setSecret", &token).await.expect("setSecret waits until the change is applied");
    assert!(started.elapsed() >= APPLY_DELAY, "setSecret returned before the change took effect");
    let pending = f.password_of(Some(&token), "AWSPENDING").await;
    assert!(f.logs_in(&pending).await, "the new password is in effect when setSecret returns");
    for step in ["testSecret", "finishSecret"] {
        f.step(step, &token).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
    }
    assert_eq!(f.current_version().await.as_deref(), Some(token.as_str()));
    assert!(!f.logs_in(&f.password).await, "the old password is rejected");

    let calls = api.calls_for(&cluster);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].operation, "ModifyCluster");
    assert!(calls[0].signed, "the request was signed");

    // Running the steps again changes nothing and calls the API no more.
    f.rotate(&token).await.expect("the same rotation again");
    assert_eq!(api.calls_for(&cluster).len(), 1);
    // The stand-in applied the md5 form; the function sent no SQL with the password.
    let log = f.env.pg_log_text();
    assert!(log.contains(&md5_form(&pending, &f.user)));
    assert!(!log.contains(&pending));
    f.env.assert_functions_log_hides(&[&pending, &f.password]);
}

#[tokio::test]
async fn a_serverless_admin_password_is_set_with_update_namespace() {
    let namespace = unique("ns");
    let extra = json!({"rotation_strategy": "admin-api", "namespaceName": namespace, "workgroupName": "wg"});
    let f = Fixture::new(DB, extra).await;
    let api = RedshiftApi::get(&f.env);
    api.add_namespace(&namespace, &f.user);

    let token = f.rotate_once().await;
    let password = f.password_of(Some(&token), "AWSCURRENT").await;
    assert!(f.logs_in(&password).await);
    assert!(!f.logs_in(&f.password).await);
    let calls = api.calls_for(&namespace);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].operation, "UpdateNamespace");
    assert_eq!(calls[0].username.as_deref(), Some(f.user.as_str()), "adminUsername is the secret's user");
    let current = secret_value(&f.client, &f.secret, None, "AWSCURRENT").await;
    assert_eq!(current["workgroupName"], "wg");
}

#[tokio::test]
async fn an_unknown_cluster_is_named_and_nothing_changes() {
    let cluster = unique("nosuch");
    let f = Fixture::new(DB, json!({"rotation_strategy": "admin-api", "dbClusterIdentifier": cluster})).await;
    RedshiftApi::get(&f.env); // listening, but the cluster is not registered
    let token = f.start_rotation().await;
    f.step("createSecret", &token).await.unwrap();
    let before = f.stages().await;
    let error = f.step("setSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.TargetCommand", "{error:?}");
    assert!(error.message.contains("ModifyCluster") && error.message.contains("ClusterNotFound"), "{error:?}");
    f.assert_unchanged(&before).await;
}

#[tokio::test]
async fn a_secret_naming_no_cluster_or_namespace_is_refused_before_anything_is_stored() {
    let f = Fixture::new(DB, json!({"rotation_strategy": "admin-api"})).await;
    let token = f.start_rotation().await;
    let before = f.stages().await;
    let error = f.step("createSecret", &token).await.unwrap_err();
    assert_eq!(error.error_type, "Permanent.TargetCommand", "{error:?}");
    assert!(error.message.contains("dbClusterIdentifier") && error.message.contains("namespaceName"), "{error:?}");
    assert_eq!(f.stages().await, before);
    assert!(!f.has_pending_value(&token).await);
}

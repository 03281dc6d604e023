//! The profiles document of the API-key function in a test run (functions/api-key/PROFILES.md),
//! written to `<services dir>/api-key-profiles.json` and given to the function as
//! `API_KEY_PROFILES_FILE`. `API_KEY_DEFAULT_PROFILE` is `self-issued-no-test`, so a secret
//! that names no profile (a plain-string secret cannot) rotates with no calls at all.
//!
//! - `openbao-token` (issued): OpenBao tokens; admin secret `rotation-test/openbao-admin`
//!   (`{"token": ...}`).
//! - `openbao-userpass` (generated, pushed): the password of the userpass user `{field.username}`.
//! - `rabbitmq` (generated, pushed): the password of the RabbitMQ user `{field.username}` (sent
//!   as a hash), its tags `{field.tags}` resent; admin secret `rotation-test/rabbitmq-admin`
//!   (`{"username": ..., "password": ...}`).
//! - `self-issued` (generated, `sk_` and 37 alphanumerics): tested on the consumer
//!   (`e2e::consumer`), which reads the secret named in the secret's own field
//!   `consumer_secret_id`.
//! - `self-issued-no-test` (generated): no calls.
//! - `unreachable`, `redirecting`, `slow` (generated, a `test` call only): faults of the provider
//!   for the tests: a closed loopback port ([`UNREACHABLE_URL`]), the consumer's `GET /redirect`
//!   (302) and its `GET /slow` (an answer after [`e2e::consumer::SLOW_ANSWER`], longer than the
//!   function's `REQUEST_TIMEOUT_SECONDS`).

use serde_json::{Value, json};

pub const OPENBAO_ADMIN_SECRET: &str = "rotation-test/openbao-admin";
pub const RABBITMQ_ADMIN_SECRET: &str = "rotation-test/rabbitmq-admin";
pub const DEFAULT_PROFILE: &str = "self-issued-no-test";
/// The base URL of profile `unreachable`: HTTPS to a loopback port nothing listens on (9, discard).
pub const UNREACHABLE_URL: &str = "https://localhost:9/";

/// `openbao_url`, `rabbitmq_url`: the services' roots (`https://localhost:PORT`);
/// `consumer_url`: the consumer's root, ending in `/`.
pub fn document(openbao_url: &str, rabbitmq_url: &str, consumer_url: &str) -> Value {
    let openbao = format!("{openbao_url}/v1/");
    let rabbitmq = format!("{rabbitmq_url}/");
    let admin_token = json!({ "X-Vault-Token": "{admin.token}" });
    json!({
        "allowed_url_prefixes": [openbao, rabbitmq, consumer_url, UNREACHABLE_URL],
        "profiles": {
            "openbao-token": {
                "mode": "issued",
                "base_url": openbao,
                "admin_secret": OPENBAO_ADMIN_SECRET,
                "calls": {
                    "issue": {
                        "method": "POST", "path": "auth/token/create",
                        "headers": admin_token,
                        "body": {
                            "display_name": "{key_name}",
                            "meta": { "rotation_key": "{key_name}" },
                            "policies": ["default"],
                            "no_parent": true,
                            "ttl": "24h"
                        },
                        "accept": [200], "value_pointer": "/auth/client_token", "id_pointer": "/auth/accessor"
                    },
                    "test": {
                        "method": "GET", "path": "auth/token/lookup-self",
                        "headers": { "X-Vault-Token": "{value}" }, "accept": [200], "refuse": [401, 403]
                    },
                    // OpenBao answers 204, or 200 with a warning for an accessor already revoked,
                    // and 400 for one it never knew.
                    "revoke": {
                        "method": "POST", "path": "auth/token/revoke-accessor",
                        "headers": admin_token, "body": { "accessor": "{key_id}" },
                        "accept": [200, 204], "gone": [400, 404]
                    },
                    "list": {
                        "method": "LIST", "path": "auth/token/accessors",
                        "headers": admin_token, "accept": [200],
                        "items_pointer": "/data/keys", "item_id_pointer": "",
                        "lookup": {
                            "method": "POST", "path": "auth/token/lookup-accessor",
                            "headers": admin_token, "body": { "accessor": "{key_id}" },
                            "accept": [200], "gone": [400, 404]
                        },
                        "name_pointer": "/data/meta/rotation_key"
                    }
                }
            },
            "openbao-userpass": {
                "mode": "generated",
                "base_url": openbao,
                "admin_secret": OPENBAO_ADMIN_SECRET,
                "calls": {
                    "push": {
                        "method": "POST", "path": "auth/userpass/users/{field.username}/password",
                        "headers": admin_token, "body": { "password": "{value}" }, "accept": [204]
                    },
                    // A wrong password: 400 "invalid username or password".
                    "test": {
                        "method": "POST", "path": "auth/userpass/login/{field.username}",
                        "body": { "password": "{value}" }, "accept": [200], "refuse": [400, 401, 403]
                    }
                }
            },
            "rabbitmq": {
                "mode": "generated",
                "base_url": rabbitmq,
                "admin_secret": RABBITMQ_ADMIN_SECRET,
                "calls": {
                    // A PUT replaces the whole user: the tags are sent again.
                    "push": {
                        "method": "PUT", "path": "api/users/{field.username}",
                        "basic_auth": { "username": "{admin.username}", "password": "{admin.password}" },
                        "body": {
                            "password_hash": "{value_rabbitmq_sha256}",
                            "hashing_algorithm": "rabbit_password_hashing_sha256",
                            "tags": "{field.tags}"
                        },
                        "accept": [201, 204]
                    },
                    "test": {
                        "method": "GET", "path": "api/whoami",
                        "basic_auth": { "username": "{field.username}", "password": "{value}" },
                        "accept": [200], "refuse": [401]
                    }
                }
            },
            "self-issued": {
                "mode": "generated",
                "base_url": consumer_url,
                "generate": { "length": 40, "alphabet": "alphanumeric", "prefix": "sk_" },
                "calls": {
                    "test": {
                        "method": "GET", "path": "check",
                        "headers": {
                            "Authorization": "Bearer {value}",
                            "X-Secret-Id": "{field.consumer_secret_id}"
                        },
                        "accept": [200], "refuse": [401]
                    }
                }
            },
            "self-issued-no-test": {
                "mode": "generated",
                "base_url": consumer_url,
                "generate": { "length": 40, "alphabet": "alphanumeric", "prefix": "sk_" },
                "calls": {}
            },
            "unreachable": fault_profile(UNREACHABLE_URL, "check"),
            "redirecting": fault_profile(consumer_url, "redirect"),
            "slow": fault_profile(consumer_url, "slow")
        }
    })
}

/// A profile of self-issued keys whose `test` call goes to `base_url` + `path`.
fn fault_profile(base_url: &str, path: &str) -> Value {
    json!({
        "mode": "generated",
        "base_url": base_url,
        "generate": { "length": 40, "alphabet": "alphanumeric", "prefix": "sk_" },
        "calls": {
            "test": {
                "method": "GET", "path": path,
                "headers": { "Authorization": "Bearer {value}", "X-Secret-Id": "{field.consumer_secret_id}" },
                "accept": [200], "refuse": [401]
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_calls_an_allowed_base_url() {
        let doc = document("https://localhost:1", "https://localhost:2", "http://127.0.0.1:3/");
        let allowed: Vec<&str> =
            doc["allowed_url_prefixes"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(
            allowed,
            ["https://localhost:1/v1/", "https://localhost:2/", "http://127.0.0.1:3/", UNREACHABLE_URL]
        );
        let profiles = doc["profiles"].as_object().unwrap();
        assert!(profiles.contains_key(DEFAULT_PROFILE));
        for (name, profile) in profiles {
            let base = profile["base_url"].as_str().unwrap();
            assert!(allowed.contains(&base), "{name}: {base}");
        }
    }
}

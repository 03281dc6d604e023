use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::{EngineInfo, SecretProblem, Strategy, TlsMode};

/// A database secret in the JSON shape AWS's rotation templates, RDS and CDK use.
///
/// The known fields are typed; every field, known or not, is kept verbatim in order
/// and written back into the next version. `Debug` shows no password.
#[derive(Clone)]
pub struct DatabaseSecret {
    fields: Map<String, Value>,
    pub engine: Option<String>,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: SecretString,
    pub dbname: Option<String>,
    pub tls: TlsMode,
    pub masterarn: Option<String>,
    /// The `rotation_strategy` field, when the secret names one.
    pub rotation_strategy: Option<Strategy>,
}

impl fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("dbname", &self.dbname)
            .field("tls", &self.tls)
            .field("masterarn", &self.masterarn)
            .field("rotation_strategy", &self.rotation_strategy)
            .finish_non_exhaustive()
    }
}

impl DatabaseSecret {
    /// Parses a `SecretString` for the given engine.
    pub fn parse(text: &SecretString, engine: &EngineInfo) -> Result<Self, SecretProblem> {
        // serde_json's syntax errors give a position, never the text around it.
        let value: Value =
            serde_json::from_str(text.expose_secret()).map_err(|e| SecretProblem::NotJson(e.to_string()))?;
        let fields = match value {
            Value::Object(fields) => fields,
            other => return Err(SecretProblem::NotAnObject(json_type(&other))),
        };

        let engine_name = optional_string(&fields, "engine")?;
        if let Some(found) = &engine_name
            && !engine.engines.contains(&found.as_str())
        {
            return Err(SecretProblem::WrongEngine {
                found: found.chars().take(64).collect(),
                expected: engine.engines.join(" or "),
            });
        }
        let host = required_string(&fields, "host")?;
        let username = required_string(&fields, "username")?;
        let password = SecretString::from(required_string(&fields, "password")?);
        let port = match fields.get("port") {
            None | Some(Value::Null) => engine.default_port,
            Some(value) => port_number(value)?,
        };
        let dbname = optional_string(&fields, "dbname")?.or_else(|| engine.default_dbname.map(str::to_owned));
        let tls = TlsMode::from_fields(fields.get("ssl"), fields.get("sslmode"))?;
        let masterarn = optional_string(&fields, "masterarn")?;
        let rotation_strategy = match optional_string(&fields, "rotation_strategy")? {
            None => None,
            Some(name) => Some(name.parse().map_err(|()| SecretProblem::InvalidField {
                field: "rotation_strategy",
                expected: "one of single-user, alternating-users, single-user-with-master, dual-password, admin-api",
            })?),
        };

        Ok(DatabaseSecret {
            engine: engine_name,
            host,
            port,
            username,
            password,
            dbname,
            tls,
            masterarn,
            rotation_strategy,
            fields,
        })
    }

    /// Parses a master secret. RDS-managed master secrets hold only `username` and
    /// `password`: the connection fields they lack come from the user's secret.
    pub fn parse_master(
        text: &SecretString,
        engine: &EngineInfo,
        user: &DatabaseSecret,
    ) -> Result<Self, SecretProblem> {
        let value: Value =
            serde_json::from_str(text.expose_secret()).map_err(|e| SecretProblem::NotJson(e.to_string()))?;
        let mut fields = match value {
            Value::Object(fields) => fields,
            other => return Err(SecretProblem::NotAnObject(json_type(&other))),
        };
        for field in ["engine", "host", "port", "dbname"] {
            if !fields.contains_key(field)
                && let Some(value) = user.fields.get(field)
            {
                fields.insert(field.to_owned(), value.clone());
            }
        }
        // `ssl` and `sslmode` are one setting: a master secret that says either keeps its own,
        // so the user's secret cannot weaken the TLS the master's asks for.
        if !fields.contains_key("ssl") && !fields.contains_key("sslmode") {
            for field in ["ssl", "sslmode"] {
                if let Some(value) = user.fields.get(field) {
                    fields.insert(field.to_owned(), value.clone());
                }
            }
        }
        let text = SecretString::from(Value::Object(fields).to_string());
        DatabaseSecret::parse(&text, engine)
    }

    /// A string field the typed fields do not cover (`dbClusterIdentifier`, say); `None` when
    /// absent or null, an error when it is not a non-empty string.
    pub fn extra_string(&self, field: &'static str) -> Result<Option<String>, SecretProblem> {
        optional_string(&self.fields, field)
    }

    /// The JSON of this secret with another username and password, every other field unchanged.
    pub fn with_credentials(&self, username: &str, password: &SecretString) -> SecretString {
        let mut fields = self.fields.clone();
        fields.insert("username".into(), Value::String(username.to_owned()));
        fields.insert("password".into(), Value::String(password.expose_secret().to_owned()));
        SecretString::from(Value::Object(fields).to_string())
    }

    /// Whether two secrets point at the same server.
    pub fn same_server(&self, other: &DatabaseSecret) -> bool {
        self.host == other.host && self.port == other.port
    }

    /// Whether two secrets name the same account on the same server.
    pub fn same_account(&self, other: &DatabaseSecret) -> bool {
        self.username == other.username && self.same_server(other)
    }

    /// `user@host:port`, for messages.
    pub fn account(&self) -> String {
        format!("{}@{}:{}", self.username, self.host, self.port)
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn required_string(fields: &Map<String, Value>, field: &'static str) -> Result<String, SecretProblem> {
    optional_string(fields, field)?.ok_or(SecretProblem::MissingField(field))
}

fn optional_string(fields: &Map<String, Value>, field: &'static str) -> Result<Option<String>, SecretProblem> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(SecretProblem::InvalidField { field, expected: "a non-empty string" })
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SecretProblem::InvalidField { field, expected: "a string" }),
    }
}

/// RDS writes the port as a number, many hand-written secrets as a string: accept both.
fn port_number(value: &Value) -> Result<u16, SecretProblem> {
    let invalid =
        SecretProblem::InvalidField { field: "port", expected: "a port number from 1 to 65535 (number or string)" };
    let port = match value {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.trim().parse::<u16>().ok(),
        _ => None,
    };
    port.filter(|&p| p != 0).ok_or(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PG: EngineInfo = EngineInfo {
        label: "PostgreSQL",
        engines: &["postgres", "aurora-postgresql"],
        default_port: 5432,
        default_dbname: Some("postgres"),
        default_excluded_characters: ":/@\"'\\",
        default_username_character_limit: None,
    };

    fn parse(value: Value) -> Result<DatabaseSecret, SecretProblem> {
        DatabaseSecret::parse(&SecretString::from(value.to_string()), &PG)
    }

    fn base() -> Value {
        json!({"engine": "postgres", "host": "db.example.com", "username": "app", "password": "pw-1"})
    }

    #[test]
    fn applies_the_engine_defaults() {
        let secret = parse(base()).unwrap();
        assert_eq!(secret.port, 5432);
        assert_eq!(secret.dbname.as_deref(), Some("postgres"));
        assert_eq!(secret.tls, TlsMode::VerifyFull);
        assert_eq!(secret.masterarn, None);
        assert_eq!(secret.password.expose_secret(), "pw-1");
    }

    #[test]
    fn reads_the_port_as_number_or_string() {
        let mut value = base();
        value["port"] = json!(6432);
        assert_eq!(parse(value.clone()).unwrap().port, 6432);
        value["port"] = json!("6433");
        assert_eq!(parse(value).unwrap().port, 6433);
    }

    #[test]
    fn rejects_a_port_that_is_not_a_port() {
        for port in [json!("abc"), json!(0), json!(70000), json!(-1), json!(5432.5), json!(true)] {
            let mut value = base();
            value["port"] = port;
            let err = parse(value).unwrap_err();
            assert_eq!(err.to_string(), "field `port` must be a port number from 1 to 65535 (number or string)");
        }
    }

    #[test]
    fn names_each_missing_required_field() {
        for field in ["host", "username", "password"] {
            let mut value = base();
            value.as_object_mut().unwrap().remove(field);
            assert_eq!(parse(value).unwrap_err(), SecretProblem::MissingField(field));
        }
    }

    #[test]
    fn engine_is_optional_but_must_match_when_present() {
        let mut value = base();
        value.as_object_mut().unwrap().remove("engine");
        assert!(parse(value.clone()).is_ok());
        value["engine"] = json!("aurora-postgresql");
        assert!(parse(value.clone()).is_ok());
        value["engine"] = json!("mysql");
        let err = parse(value).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `engine` is `mysql`, but this function rotates postgres or aurora-postgresql"
        );
    }

    #[test]
    fn reports_json_problems_without_echoing_the_text() {
        let err = DatabaseSecret::parse(&SecretString::from("password=hunter2"), &PG).unwrap_err();
        assert!(matches!(err, SecretProblem::NotJson(_)));
        assert!(!err.to_string().contains("hunter2"));
        assert_eq!(parse(json!(["a"])).unwrap_err(), SecretProblem::NotAnObject("array"));
    }

    #[test]
    fn keeps_every_other_field_verbatim_when_the_credentials_change() {
        let mut value = base();
        value["port"] = json!("5433");
        value["dbInstanceIdentifier"] = json!("prod-db");
        value["nested"] = json!({"a": [1, 2, {"b": null}]});
        let secret = parse(value.clone()).unwrap();
        let next: Value =
            serde_json::from_str(secret.with_credentials("app", &SecretString::from("pw-2")).expose_secret()).unwrap();
        value["password"] = json!("pw-2");
        assert_eq!(next, value);
        let keys: Vec<_> = next.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["engine", "host", "username", "password", "port", "dbInstanceIdentifier", "nested"]);
    }

    #[test]
    fn reads_the_rotation_strategy() {
        let mut value = base();
        value["rotation_strategy"] = json!("alternating-users");
        assert_eq!(parse(value.clone()).unwrap().rotation_strategy, Some(Strategy::AlternatingUsers));
        value["rotation_strategy"] = json!("sometimes");
        assert!(parse(value).unwrap_err().to_string().contains("`rotation_strategy`"));
    }

    #[test]
    fn a_master_secret_takes_missing_connection_fields_from_the_user_secret() {
        let mut value = base();
        value["port"] = json!(6543);
        value["dbname"] = json!("app");
        let user = parse(value).unwrap();
        let master = json!({"username": "admin", "password": "master-pw"}).to_string();
        let master = DatabaseSecret::parse_master(&SecretString::from(master), &PG, &user).unwrap();
        assert_eq!(
            (master.host.as_str(), master.port, master.dbname.as_deref()),
            ("db.example.com", 6543, Some("app"))
        );
        assert_eq!(master.username, "admin");
        let mut plain = base();
        plain["sslmode"] = json!("disable");
        let plain = parse(plain).unwrap();
        let strict = json!({"username": "admin", "password": "master-pw", "ssl": true}).to_string();
        let strict = DatabaseSecret::parse_master(&SecretString::from(strict), &PG, &plain).unwrap();
        assert_eq!(strict.tls, TlsMode::VerifyFull, "the user's sslmode does not override the master's ssl");
        let elsewhere = json!({"username": "admin", "password": "x", "host": "other.example.com"}).to_string();
        let elsewhere = DatabaseSecret::parse_master(&SecretString::from(elsewhere), &PG, &user).unwrap();
        assert!(!elsewhere.same_server(&user));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let secret = parse(base()).unwrap();
        let debug = format!("{secret:?}");
        assert!(debug.contains("db.example.com"));
        assert!(!debug.contains("pw-1"));
    }
}

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::error::shown;
use crate::{EngineInfo, SecretProblem, Strategy, TlsMode};

/// The longest host name DNS allows, in bytes.
const MAX_HOST_BYTES: usize = 253;
/// The longest label of a DNS name, in bytes.
const MAX_LABEL_BYTES: usize = 63;
/// The longest database name any of the engines keeps (MySQL's 64; PostgreSQL's is 63).
const MAX_DBNAME_BYTES: usize = 64;
/// The longest password the functions pass on (`GetRandomPassword` makes at most 4096).
const MAX_PASSWORD_BYTES: usize = 4096;

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
                found: shown(&found.chars().take(64).collect::<String>()),
                expected: engine.engines.join(" or "),
            });
        }
        let host = required_string(&fields, "host")?;
        check_host(&host)?;
        let username = required_string(&fields, "username")?;
        check_no_control("username", &username)?;
        let password = required_string(&fields, "password")?;
        check_password(&password)?;
        let password = SecretString::from(password);
        let port = match fields.get("port") {
            None | Some(Value::Null) => engine.default_port,
            Some(value) => port_number(value)?,
        };
        let dbname = optional_string(&fields, "dbname")?.or_else(|| engine.default_dbname.map(str::to_owned));
        if let Some(dbname) = &dbname {
            check_no_control("dbname", dbname)?;
            check_length("dbname", dbname, MAX_DBNAME_BYTES)?;
        }
        let tls = TlsMode::from_fields(fields.get("ssl"), fields.get("sslmode"))?;
        let masterarn = optional_string(&fields, "masterarn")?;
        if let Some(masterarn) = &masterarn {
            check_no_control("masterarn", masterarn)?;
            // A secret's ARN has at most 2048 characters, its name 512.
            check_length("masterarn", masterarn, 2048)?;
        }
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

    /// `user@host:port`, for messages (each part cut to a length a message can hold).
    pub fn account(&self) -> String {
        format!("{}@{}:{}", shown(&self.username), shown(&self.host), self.port)
    }

    /// Refuses a user name longer than the engine keeps intact: a server that truncates it
    /// would log in, or change the password of, another user.
    pub fn check_username_bytes(&self, limit: usize) -> Result<(), SecretProblem> {
        check_length("username", &self.username, limit)
    }
}

/// What `host` must be: a DNS name or an IP address, nothing around it.
fn check_host(host: &str) -> Result<(), SecretProblem> {
    let rule = |rule: &str| Err(SecretProblem::Rule { field: "host", rule: rule.to_owned() });
    check_length("host", host, MAX_HOST_BYTES)?;
    if host.chars().any(|c| c.is_control()) {
        return rule("holds a control character (a newline, a tab, NUL): give the host name alone");
    }
    if host.chars().any(char::is_whitespace) {
        return rule("holds whitespace: give the host name alone");
    }
    if !host.is_ascii() {
        return rule(
            "holds a non-ASCII character: write an internationalised name in its ASCII (xn--) form, \
             and check for look-alike letters",
        );
    }
    if host.contains("://") {
        return rule("holds a URL scheme (`…://`): give the host name alone, without scheme, user, path or port");
    }
    if host.contains('@') {
        return rule(
            "holds `@` (user or password in a URL): give the host name alone; credentials go in `username` and `password`",
        );
    }
    if host.contains(['/', '?', '#', '\\']) {
        return rule("holds a path or query (`/`, `?`, `#` or `\\`): give the host name alone");
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains(['[', ']']) {
        return rule("holds brackets: give an IPv6 address without `[` and `]`, and the port in field `port`");
    }
    if host.contains(':') {
        return rule("holds `:` but is not an IPv6 address: put the port in field `port`, not in `host`");
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|label| label.is_empty()) {
        return rule("has an empty label (`..`, or a dot at the start): it is not a DNS name");
    }
    if labels.iter().any(|label| label.len() > MAX_LABEL_BYTES) {
        return rule(&format!("has a label longer than {MAX_LABEL_BYTES} bytes: it is not a DNS name"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        let kind = match bad {
            '\'' | '"' | '`' => "a quote".to_owned(),
            other => format!("`{other}`"),
        };
        return rule(&format!("holds {kind}: a host is a DNS name (letters, digits, `-`, `.`) or an IP address"));
    }
    if labels.iter().any(|label| label.starts_with('-') || label.ends_with('-')) {
        return rule("has a label that starts or ends with `-`: it is not a DNS name");
    }
    if labels.iter().all(|label| label.bytes().all(|b| b.is_ascii_digit())) {
        return rule("is all digits and dots but not an IPv4 address");
    }
    Ok(())
}

fn check_length(field: &'static str, value: &str, limit: usize) -> Result<(), SecretProblem> {
    if value.len() > limit {
        return Err(SecretProblem::Rule {
            field,
            rule: format!("is {} bytes long; at most {limit} are allowed", value.len()),
        });
    }
    Ok(())
}

fn check_no_control(field: &'static str, value: &str) -> Result<(), SecretProblem> {
    if value.contains('\0') {
        return Err(SecretProblem::Rule { field, rule: "holds a NUL character".into() });
    }
    if value.chars().any(char::is_control) {
        return Err(SecretProblem::Rule {
            field,
            rule: "holds a control character (a newline, a tab, an escape)".into(),
        });
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), SecretProblem> {
    if password.contains('\0') {
        return Err(SecretProblem::Rule {
            field: "password",
            rule: "holds a NUL character, which no database client can send".into(),
        });
    }
    check_length("password", password, MAX_PASSWORD_BYTES)
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

    fn problem_of(field: &str, text: &str) -> SecretProblem {
        let mut value = base();
        value[field] = json!(text);
        parse(value).unwrap_err()
    }

    #[test]
    fn accepts_dns_names_and_ip_addresses_as_hosts() {
        for host in [
            "localhost",
            "db.example.com",
            "db.example.com.",
            "my_db-1.cluster-abc.eu-west-1.rds.amazonaws.com",
            "127.0.0.1",
            "::1",
            "fe80::1",
            "xn--bcher-kva.example",
        ] {
            let mut value = base();
            value["host"] = json!(host);
            assert_eq!(parse(value).unwrap().host, host);
        }
    }

    #[test]
    fn refuses_a_host_that_is_not_a_host_naming_the_rule_not_the_value() {
        let cases = [
            ("postgres://app:hunter2@db.example.com:5432/app", "URL scheme"),
            ("app:hunter2@db.example.com", "`@`"),
            ("db.example.com/app", "path"),
            ("db.example.com:5432", "put the port in field `port`"),
            ("[::1]", "brackets"),
            ("db.example.com\nX-Injected: 1", "control character"),
            ("db.example\u{0}.com", "control character"),
            ("db example.com", "whitespace"),
            (" db.example.com", "whitespace"),
            ("dЬ.example.com", "non-ASCII"),
            ("bücher.example", "xn--"),
            ("db..example.com", "empty label"),
            (".example.com", "empty label"),
            ("-db.example.com", "starts or ends with `-`"),
            ("db.example.com;drop", "`;`"),
            ("db'x.example.com", "a quote"),
            ("999.1.1.1", "not an IPv4 address"),
        ];
        for (host, rule) in cases {
            let err = problem_of("host", host);
            let text = err.to_string();
            assert!(text.starts_with("field `host` "), "{host:?}: {text}");
            assert!(text.contains(rule), "{host:?}: {text} should say {rule:?}");
            assert!(!text.contains("hunter2") && !text.contains(host), "{host:?} echoed: {text}");
        }
        let long = format!("{}.example.com", "a".repeat(64));
        assert!(problem_of("host", &long).to_string().contains("label longer than 63 bytes"));
        let huge = "a.".repeat(10_000);
        let text = problem_of("host", &huge).to_string();
        assert_eq!(text, "field `host` is 20000 bytes long; at most 253 are allowed");
    }

    #[test]
    fn refuses_control_characters_in_user_and_dbname_and_nul_in_passwords() {
        for (field, text, rule) in [
            ("username", "app\u{0}", "NUL"),
            ("username", "app\nadmin", "control character"),
            ("username", "app\u{1b}[31m", "control character"),
            ("dbname", "orders\r", "control character"),
            ("password", "pw\u{0}tail", "NUL"),
            ("masterarn", "arn:aws:secretsmanager:x\n", "control character"),
        ] {
            let err = problem_of(field, text);
            assert_eq!(
                err,
                SecretProblem::Rule {
                    field: match field {
                        "username" => "username",
                        "dbname" => "dbname",
                        "password" => "password",
                        _ => "masterarn",
                    },
                    rule: err_rule(&err)
                }
            );
            assert!(err.to_string().contains(rule), "{field}: {err}");
            assert!(!err.to_string().contains(text), "{field}: {err}");
        }
        let mut value = base();
        value["username"] = json!("Ünïcode user \"quoted\"");
        assert!(parse(value).is_ok(), "any printable name is a name");
        let secret = parse(base()).unwrap();
        assert!(secret.check_username_bytes(3).is_ok());
        assert_eq!(
            secret.check_username_bytes(2).unwrap_err().to_string(),
            "field `username` is 3 bytes long; at most 2 are allowed"
        );
        assert!(problem_of("password", &"p".repeat(4097)).to_string().contains("at most 4096"));
    }

    fn err_rule(problem: &SecretProblem) -> String {
        match problem {
            SecretProblem::Rule { rule, .. } => rule.clone(),
            other => panic!("not a rule: {other:?}"),
        }
    }

    #[test]
    fn messages_cut_long_names() {
        let mut value = base();
        value["username"] = json!("u".repeat(5000));
        let secret = parse(value).unwrap();
        assert!(secret.account().len() < 400, "{}", secret.account().len());
        assert!(secret.account().contains("(5000 characters in all)"));
    }
}

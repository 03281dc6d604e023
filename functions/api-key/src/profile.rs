//! The profiles document (see `PROFILES.md`): parsed and checked once at start, then used to
//! render each call into an [`http::Request`](crate::http::Request) and to read its answer.
//!
//! Nothing here puts a value (a key, a header, a body, a field of a secret) into an error or a
//! `Debug` form: errors name the JSON path, the placeholder, the header or the JSON Pointer.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rotation::{Error, ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::http::Request;

/// What a placeholder in a path is encoded with: everything but RFC 3986's unreserved characters,
/// so a value stays one path segment (`/`, `?`, `#`, `%` and `\` are all encoded).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// An identifier from the document or a secret, for a message: clipped, control characters escaped.
pub(crate) fn shown(text: &str) -> String {
    let clipped: String = text.chars().take(128).collect();
    let clipped = if clipped.len() < text.len() { format!("{clipped}…") } else { clipped };
    if clipped.chars().any(char::is_control) { clipped.escape_default().to_string() } else { clipped }
}

/// The longest `propagation_seconds`.
const MAX_PROPAGATION_SECONDS: u64 = 300;

/// Every profile of the document, checked.
#[derive(Debug)]
pub struct Profiles {
    allowed_url_prefixes: Vec<String>,
    profiles: BTreeMap<String, Profile>,
    default: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The function makes the value (self-issued keys, or a password it pushes).
    Generated,
    /// The service makes the key.
    Issued,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alphabet {
    Alphanumeric,
    Hex,
    Base64Url,
}

impl Alphabet {
    fn characters(self) -> &'static [u8] {
        match self {
            Alphabet::Alphanumeric => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Alphabet::Hex => b"0123456789abcdef",
            Alphabet::Base64Url => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        }
    }
}

/// How a generated key looks: `length` characters in all, `prefix` included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    pub length: usize,
    pub alphabet: Alphabet,
    pub prefix: String,
}

impl Default for KeyFormat {
    fn default() -> Self {
        KeyFormat { length: 40, alphabet: Alphabet::Alphanumeric, prefix: String::new() }
    }
}

impl KeyFormat {
    /// A new key from the OS's CSPRNG, each character drawn uniformly (rejection sampling).
    pub fn generate(&self) -> SecretString {
        let characters = self.alphabet.characters();
        let count = characters.len();
        // The largest multiple of `count` that fits in a byte: bytes at or above it are dropped.
        let limit = 256 - (256 % count);
        let wanted = self.length.saturating_sub(self.prefix.chars().count());
        let mut key = String::with_capacity(self.length);
        key.push_str(&self.prefix);
        let mut drawn = 0;
        let mut buffer = [0u8; 64];
        while drawn < wanted {
            getrandom::fill(&mut buffer).expect("the operating system's random number generator failed");
            for &byte in &buffer {
                if drawn == wanted {
                    break;
                }
                if usize::from(byte) < limit {
                    key.push(char::from(characters[usize::from(byte) % count]));
                    drawn += 1;
                }
            }
        }
        buffer.fill(0);
        SecretString::from(key)
    }

    /// Whether `value` has this format: the prefix, the length, the alphabet.
    pub fn matches(&self, value: &str) -> bool {
        let Some(rest) = value.strip_prefix(self.prefix.as_str()) else { return false };
        value.chars().count() == self.length && rest.bytes().all(|b| self.alphabet.characters().contains(&b))
    }
}

/// One profile: where the calls go and what they are.
#[derive(Debug)]
pub struct Profile {
    pub name: String,
    pub mode: Mode,
    pub base_url: Url,
    pub admin_secret: Option<String>,
    pub key_field: String,
    pub key_id_field: String,
    pub key_name_prefix: String,
    pub propagation: Duration,
    pub generate: KeyFormat,
    pub issue: Option<Call>,
    pub test: Option<Call>,
    pub revoke: Option<Call>,
    pub list: Option<ListCall>,
    pub push: Option<Call>,
}

fn sha256_hex(text: &str, characters: usize) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.truncate(characters);
    hex
}

impl Profile {
    /// `<prefix><12 hex of sha256(secret_arn)>-<16 hex of sha256(version)>`
    pub fn key_name(&self, secret_arn: &str, version: &str) -> String {
        format!("{}{}", self.key_name_stem(secret_arn), sha256_hex(version, 16))
    }

    /// The secret fields (`{field.NAME}`) any call of the profile reads, with the first call
    /// that reads each: `createSecret` checks them before anything is stored.
    pub fn fields_used(&self) -> Vec<(String, &'static str)> {
        let calls = [
            ("issue", self.issue.as_ref()),
            ("test", self.test.as_ref()),
            ("revoke", self.revoke.as_ref()),
            ("list", self.list.as_ref().map(|list| &list.call)),
            ("lookup", self.list.as_ref().and_then(|list| list.lookup.as_ref())),
            ("push", self.push.as_ref()),
        ];
        let mut fields: Vec<(String, &'static str)> = Vec::new();
        for (name, call) in calls {
            for field in call.map(Call::fields_used).unwrap_or_default() {
                if !fields.iter().any(|(f, _)| *f == field) {
                    fields.push((field, name));
                }
            }
        }
        fields
    }

    /// The part every key name of this secret starts with: `<prefix><12 hex>-`
    pub fn key_name_stem(&self, secret_arn: &str) -> String {
        format!("{}{}-", self.key_name_prefix, sha256_hex(secret_arn, 12))
    }
}

/// A placeholder of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    KeyName,
    Version,
    KeyId,
    Value,
    ValueRabbitmqSha256,
    Field(String),
    Admin(String),
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::KeyName => f.write_str("{key_name}"),
            Slot::Version => f.write_str("{version}"),
            Slot::KeyId => f.write_str("{key_id}"),
            Slot::Value => f.write_str("{value}"),
            Slot::ValueRabbitmqSha256 => f.write_str("{value_rabbitmq_sha256}"),
            Slot::Field(name) => write!(f, "{{field.{name}}}"),
            Slot::Admin(name) => write!(f, "{{admin.{name}}}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(Slot),
}

/// A string with placeholders; `{{` and `}}` are literal braces.
#[derive(Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err("a lone `}` (write `}}` for a literal brace)".into()),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err("a `{` without its `}` (write `{{` for a literal brace)".into());
                            }
                            Some(c) => name.push(c),
                        }
                    }
                    let slot = match name.as_str() {
                        "key_name" => Slot::KeyName,
                        "version" => Slot::Version,
                        "key_id" => Slot::KeyId,
                        "value" => Slot::Value,
                        "value_rabbitmq_sha256" => Slot::ValueRabbitmqSha256,
                        _ => match (name.strip_prefix("field."), name.strip_prefix("admin.")) {
                            (Some(field), _) if !field.is_empty() => Slot::Field(field.to_owned()),
                            (_, Some(field)) if !field.is_empty() => Slot::Admin(field.to_owned()),
                            _ => {
                                return Err(format!(
                                    "unknown placeholder {{{}}}",
                                    shown(&name.chars().take(64).collect::<String>())
                                ));
                            }
                        },
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Slot(slot));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.0.iter().filter_map(|piece| match piece {
            Piece::Slot(slot) => Some(slot),
            Piece::Text(_) => None,
        })
    }

    /// The text with every placeholder replaced by its value (`encode` applied to values).
    fn render(
        &self,
        context: &Context<'_>,
        encode: impl Fn(&Slot, &str) -> Result<String, RenderError>,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Slot(slot) => {
                    let value = context.value(slot)?;
                    out.push_str(&encode(slot, value.expose_secret())?);
                }
            }
        }
        Ok(out)
    }
}

/// A JSON body whose strings are templates.
#[derive(Clone, PartialEq)]
enum BodyTemplate {
    Literal(Value),
    Text(Template),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    fn parse(value: &Value, path: &str) -> Result<BodyTemplate, String> {
        Ok(match value {
            Value::String(text) => BodyTemplate::Text(Template::parse(text).map_err(|e| format!("{path}: {e}"))?),
            Value::Array(items) => BodyTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| BodyTemplate::parse(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => BodyTemplate::Object(
                fields
                    .iter()
                    .map(|(name, item)| Ok((name.clone(), BodyTemplate::parse(item, &format!("{path}.{name}"))?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => BodyTemplate::Literal(other.clone()),
        })
    }

    fn templates<'a>(&'a self, path: &str, out: &mut Vec<(String, &'a Template)>) {
        match self {
            BodyTemplate::Literal(_) => {}
            BodyTemplate::Text(template) => out.push((path.to_owned(), template)),
            BodyTemplate::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.templates(&format!("{path}[{i}]"), out);
                }
            }
            BodyTemplate::Object(fields) => {
                for (name, item) in fields {
                    item.templates(&format!("{path}.{name}"), out);
                }
            }
        }
    }

    fn render(&self, context: &Context<'_>) -> Result<Value, RenderError> {
        Ok(match self {
            BodyTemplate::Literal(value) => value.clone(),
            BodyTemplate::Text(template) => Value::String(template.render(context, |_, v| Ok(v.to_owned()))?),
            BodyTemplate::Array(items) => {
                Value::Array(items.iter().map(|i| i.render(context)).collect::<Result<_, _>>()?)
            }
            BodyTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(name, item)| Ok((name.clone(), item.render(context)?)))
                    .collect::<Result<Map<_, _>, RenderError>>()?,
            ),
        })
    }
}

/// Which call of a profile: what it may use and what its statuses default to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Issue,
    Test,
    Revoke,
    List,
    Lookup,
    Push,
}

/// One HTTP call of a profile.
#[derive(Clone)]
pub struct Call {
    method: String,
    path: Template,
    headers: Vec<(String, Template)>,
    basic_auth: Option<(Template, Template)>,
    body: Option<BodyTemplate>,
    /// `None`: any 2xx.
    accept: Option<Vec<u16>>,
    refuse: Vec<u16>,
    gone: Vec<u16>,
    value_pointer: Option<String>,
    id_pointer: Option<String>,
}

/// Method and path template only: header templates may hold literal credentials.
impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

/// The `list` call, and how to read its answer.
#[derive(Debug, Clone)]
pub struct ListCall {
    pub call: Call,
    items_pointer: String,
    item_id_pointer: String,
    name_pointer: String,
    pub lookup: Option<Call>,
}

/// What a call's placeholders take their values from.
pub struct Values<'a> {
    pub key_name: Option<&'a str>,
    pub version: &'a str,
    pub key_id: Option<&'a str>,
    pub value: Option<&'a SecretString>,
    /// The secret's fields.
    pub fields: &'a Map<String, Value>,
    pub admin: Option<&'a Map<String, Value>>,
}

/// What a status means for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
    Gone,
    Unexpected,
}

/// Why a call could not be rendered: names a placeholder or a header, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("placeholder {{field.{0}}} has no value: the secret has no string or number field `{0}`")]
    MissingField(String),
    #[error("placeholder {{admin.{0}}} has no value: the admin secret has no string or number field `{0}`")]
    MissingAdminField(String),
    #[error("placeholder {0} has no value in this call")]
    MissingValue(&'static str),
    #[error("the value of header `{0}` would hold a control character")]
    ControlCharacter(String),
    /// A placeholder in the path whose value is empty, `.` or `..` (it would not stay one path
    /// segment), or a path that would leave `base_url`.
    #[error("placeholder {0} in the path has a value that is empty, `.` or `..`, which would leave its path segment")]
    UnsafePath(String),
}

/// The values of one rendering.
struct Context<'a> {
    values: &'a Values<'a>,
    rabbitmq: std::cell::OnceCell<SecretString>,
}

impl Context<'_> {
    fn value(&self, slot: &Slot) -> Result<SecretString, RenderError> {
        let values = self.values;
        let text = |field: Option<&Value>| -> Option<String> {
            match field? {
                Value::String(text) => Some(text.clone()),
                Value::Number(number) => Some(number.to_string()),
                _ => None,
            }
        };
        Ok(SecretString::from(match slot {
            Slot::KeyName => values.key_name.ok_or(RenderError::MissingValue("{key_name}"))?.to_owned(),
            Slot::Version => values.version.to_owned(),
            Slot::KeyId => values.key_id.ok_or(RenderError::MissingValue("{key_id}"))?.to_owned(),
            Slot::Value => values.value.ok_or(RenderError::MissingValue("{value}"))?.expose_secret().to_owned(),
            Slot::ValueRabbitmqSha256 => {
                let value = values.value.ok_or(RenderError::MissingValue("{value_rabbitmq_sha256}"))?;
                self.rabbitmq.get_or_init(|| rabbitmq_sha256(value)).expose_secret().to_owned()
            }
            Slot::Field(name) => {
                text(values.fields.get(name)).ok_or_else(|| RenderError::MissingField(name.clone()))?
            }
            Slot::Admin(name) => text(values.admin.and_then(|a| a.get(name)))
                .ok_or_else(|| RenderError::MissingAdminField(name.clone()))?,
        }))
    }
}

/// RabbitMQ's `password_hash` (`rabbit_password_hashing_sha256`): base64(salt ‖ SHA-256(salt ‖ value)).
fn rabbitmq_sha256(value: &SecretString) -> SecretString {
    let mut salt = [0u8; 4];
    getrandom::fill(&mut salt).expect("the operating system's random number generator failed");
    rabbitmq_sha256_with_salt(value, salt)
}

fn rabbitmq_sha256_with_salt(value: &SecretString, salt: [u8; 4]) -> SecretString {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(value.expose_secret().as_bytes());
    let mut both = salt.to_vec();
    both.extend_from_slice(&hasher.finalize());
    SecretString::from(base64::engine::general_purpose::STANDARD.encode(both))
}

impl Call {
    /// The request of this call. `call_name` is "issue", "test", ... for errors.
    pub fn request(
        &self,
        profile: &Profile,
        call_name: &'static str,
        values: &Values<'_>,
    ) -> Result<Request, RenderError> {
        let context = Context { values, rabbitmq: std::cell::OnceCell::new() };
        let url = render_url(&profile.base_url, &self.path, &context)?;
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        for (name, template) in &self.headers {
            let value = template.render(&context, |_, v| Ok(v.to_owned()))?;
            if value.chars().any(char::is_control) {
                return Err(RenderError::ControlCharacter(name.clone()));
            }
            headers.push((name.clone(), SecretString::from(value)));
        }
        if let Some((username, password)) = &self.basic_auth {
            let mut both = SecretString::from(username.render(&context, |_, v| Ok(v.to_owned()))?);
            both = SecretString::from(format!(
                "{}:{}",
                both.expose_secret(),
                password.render(&context, |_, v| Ok(v.to_owned()))?
            ));
            let encoded = base64::engine::general_purpose::STANDARD.encode(both.expose_secret());
            headers.push(("authorization".to_owned(), SecretString::from(format!("Basic {encoded}"))));
        }
        let body = match &self.body {
            None => None,
            Some(template) => Some(SecretString::from(template.render(&context)?.to_string())),
        };
        Ok(Request { profile: profile.name.clone(), call: call_name, method: self.method.clone(), url, headers, body })
    }

    /// The HTTP method, as the profile gives it (`GET`, `LIST`…).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Whether the call reads the admin secret (`{admin.NAME}`).
    pub fn uses_admin(&self) -> bool {
        self.templates().into_iter().flat_map(Template::slots).any(|slot| matches!(slot, Slot::Admin(_)))
    }

    /// Every template of the call: path, headers, basic auth, body strings.
    fn templates(&self) -> Vec<&Template> {
        let mut templates: Vec<&Template> = vec![&self.path];
        templates.extend(self.headers.iter().map(|(_, template)| template));
        if let Some((username, password)) = &self.basic_auth {
            templates.extend([username, password]);
        }
        let mut in_body = Vec::new();
        if let Some(body) = &self.body {
            body.templates("", &mut in_body);
        }
        templates.extend(in_body.into_iter().map(|(_, template)| template));
        templates
    }

    /// The secret fields (`{field.NAME}`) this call reads.
    pub fn fields_used(&self) -> Vec<String> {
        let mut fields: Vec<String> = self
            .templates()
            .into_iter()
            .flat_map(Template::slots)
            .filter_map(|slot| match slot {
                Slot::Field(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        fields.sort();
        fields.dedup();
        fields
    }

    /// The call's URL for an error or a log line, placeholders shown by name (`{key_id}`), never
    /// a value: `scheme://host:port/path`, no query.
    pub fn url_for_errors(&self, profile: &Profile) -> String {
        let mut path = String::new();
        for piece in &self.path.0 {
            match piece {
                Piece::Text(text) => path.push_str(text),
                Piece::Slot(slot) => path.push_str(&slot.to_string()),
            }
        }
        if let Some(query) = path.find(['?', '#']) {
            path.truncate(query);
        }
        format!("{}{path}", crate::http::shown_url(&profile.base_url))
    }

    /// What `status` means for this call: `accept` (default any 2xx), `refuse` (`test`,
    /// default 401 and 403), `gone` (`revoke` and `lookup`, default 404), else unexpected.
    pub fn outcome(&self, status: u16) -> Outcome {
        let accepted = match &self.accept {
            Some(accept) => accept.contains(&status),
            None => (200..300).contains(&status),
        };
        if accepted {
            Outcome::Accepted
        } else if self.refuse.contains(&status) {
            Outcome::Refused
        } else if self.gone.contains(&status) {
            Outcome::Gone
        } else {
            Outcome::Unexpected
        }
    }

    /// The new key (at `value_pointer`) and its id (at `id_pointer`) in `issue`'s answer.
    pub fn read_issued(&self, body: &[u8]) -> Result<(SecretString, Option<String>), String> {
        let answer = parse_answer(body)?;
        let pointer = self.value_pointer.as_deref().unwrap_or("");
        let value = match answer.pointer(pointer) {
            Some(Value::String(value)) if !value.is_empty() => SecretString::from(value.clone()),
            Some(Value::String(_)) => return Err(format!("the answer has an empty string at `{pointer}`")),
            _ => return Err(format!("the answer has no string at `{pointer}`")),
        };
        let id = match &self.id_pointer {
            None => None,
            Some(pointer) => Some(
                answer
                    .pointer(pointer)
                    .and_then(id_text)
                    .ok_or_else(|| format!("the answer has no string or number id at `{pointer}`"))?,
            ),
        };
        Ok((value, id))
    }
}

fn parse_answer(body: &[u8]) -> Result<Value, String> {
    // serde_json's message names a line and a column, never the content.
    serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e})"))
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

impl ListCall {
    /// The (id, name) of each listed item. The name is `None` when it comes from `lookup` (call
    /// it and [`ListCall::read_lookup_name`] its answer). Without `lookup`, items with no string
    /// at `name_pointer` are left out: they cannot be keys this function named.
    pub fn read_items(&self, body: &[u8]) -> Result<Vec<(String, Option<String>)>, String> {
        let answer = parse_answer(body)?;
        let Some(Value::Array(items)) = answer.pointer(&self.items_pointer) else {
            return Err(format!("the answer has no array at `{}`", self.items_pointer));
        };
        let mut listed = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let id = item
                .pointer(&self.item_id_pointer)
                .and_then(id_text)
                .ok_or_else(|| format!("item {index} has no string or number id at `{}`", self.item_id_pointer))?;
            if self.lookup.is_some() {
                listed.push((id, None));
            } else if let Some(Value::String(name)) = item.pointer(&self.name_pointer) {
                listed.push((id, Some(name.clone())));
            }
        }
        Ok(listed)
    }

    /// The name at `name_pointer` in `lookup`'s answer.
    pub fn read_lookup_name(&self, body: &[u8]) -> Option<String> {
        match parse_answer(body).ok()?.pointer(&self.name_pointer) {
            Some(Value::String(name)) => Some(name.clone()),
            _ => None,
        }
    }
}

fn render_url(base_url: &Url, path: &Template, context: &Context<'_>) -> Result<Url, RenderError> {
    let rendered = path.render(context, |slot, value| {
        if value.is_empty() || value == "." || value == ".." {
            return Err(RenderError::UnsafePath(slot.to_string()));
        }
        Ok(utf8_percent_encode(value, SEGMENT).to_string())
    })?;
    join_within(base_url, &rendered).ok_or_else(|| RenderError::UnsafePath("(the path)".into()))
}

/// `path` joined to `base_url`, when the result still starts with `base_url`.
fn join_within(base_url: &Url, path: &str) -> Option<Url> {
    let url = base_url.join(path).ok()?;
    url.as_str().starts_with(base_url.as_str()).then_some(url)
}

/// Whether the URL's host is `localhost` or a loopback IP literal.
pub(crate) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `ALLOW_PLAIN_HTTP_TO_LOOPBACK`: `true` or `false` (default).
pub(crate) fn plain_http_to_loopback(lookup: &impl Fn(&str) -> Option<String>) -> Result<bool, Error> {
    match lookup("ALLOW_PLAIN_HTTP_TO_LOOPBACK").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => {
            Err(Error::Config { variable: "ALLOW_PLAIN_HTTP_TO_LOOPBACK", problem: "must be `true` or `false`".into() })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The document as written, and its checks.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    allowed_url_prefixes: Vec<String>,
    profiles: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    mode: RawMode,
    base_url: String,
    #[serde(default)]
    admin_secret: Option<String>,
    #[serde(default)]
    key_field: Option<String>,
    #[serde(default)]
    key_id_field: Option<String>,
    #[serde(default)]
    key_name_prefix: Option<String>,
    #[serde(default)]
    propagation_seconds: Option<u64>,
    #[serde(default)]
    generate: Option<RawGenerate>,
    /// None at all: a `generated` profile of self-issued keys.
    #[serde(default)]
    calls: Map<String, Value>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawMode {
    Generated,
    Issued,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenerate {
    #[serde(default)]
    length: Option<usize>,
    #[serde(default)]
    alphabet: Option<Alphabet>,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCall {
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    basic_auth: Option<RawBasicAuth>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    accept: Option<Vec<u16>>,
    #[serde(default)]
    refuse: Option<Vec<u16>>,
    #[serde(default)]
    gone: Option<Vec<u16>>,
    #[serde(default)]
    value_pointer: Option<String>,
    #[serde(default)]
    id_pointer: Option<String>,
    #[serde(default)]
    items_pointer: Option<String>,
    #[serde(default)]
    item_id_pointer: Option<String>,
    #[serde(default)]
    name_pointer: Option<String>,
    #[serde(default)]
    lookup: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password: String,
}

/// Headers a profile may not set: the client sets them, or they change how the message is framed.
const RESERVED_HEADERS: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive", "expect"];

impl Profiles {
    /// From `API_KEY_PROFILES`, else `API_KEY_PROFILES_FILE`; `API_KEY_DEFAULT_PROFILE`.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Profiles, Error> {
        let plain_http = plain_http_to_loopback(lookup)?;
        let (variable, text) = match lookup("API_KEY_PROFILES").filter(|t| !t.trim().is_empty()) {
            Some(text) => ("API_KEY_PROFILES", text),
            None => match lookup("API_KEY_PROFILES_FILE").filter(|t| !t.trim().is_empty()) {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| Error::Config {
                        variable: "API_KEY_PROFILES_FILE",
                        problem: format!("names {path}, which cannot be read: {e}"),
                    })?;
                    ("API_KEY_PROFILES_FILE", text)
                }
                None => {
                    return Err(Error::Config {
                        variable: "API_KEY_PROFILES",
                        problem: "is not set, nor is API_KEY_PROFILES_FILE: the function needs a profiles document"
                            .into(),
                    });
                }
            },
        };
        let mut profiles = Profiles::parse(&text, plain_http).map_err(|problem| Error::Config { variable, problem })?;
        match lookup("API_KEY_DEFAULT_PROFILE").filter(|t| !t.trim().is_empty()) {
            Some(name) => {
                let name = name.trim().to_owned();
                if !profiles.profiles.contains_key(&name) {
                    return Err(Error::Config {
                        variable: "API_KEY_DEFAULT_PROFILE",
                        problem: format!(
                            "names profile {}, which is not in the profiles document (profiles: {})",
                            shown(&name),
                            profiles.names()
                        ),
                    });
                }
                profiles.default = Some(name);
            }
            None if profiles.profiles.len() == 1 => profiles.default = profiles.profiles.keys().next().cloned(),
            None => {}
        }
        Ok(profiles)
    }

    pub fn allowed_url_prefixes(&self) -> &[String] {
        &self.allowed_url_prefixes
    }

    /// The profile a secret names (its `rotation.profile`), else the default.
    pub fn get(&self, name: Option<&str>) -> Result<&Profile, String> {
        match name {
            Some(name) => self.profiles.get(name).ok_or_else(|| {
                format!(
                    "the secret names profile {}, which is not in the profiles document (profiles: {})",
                    shown(name),
                    self.names()
                )
            }),
            None => match &self.default {
                Some(name) => self.profiles.get(name).ok_or_else(|| format!("the default profile {name} is missing")),
                None => Err(format!(
                    "the secret names no profile (`rotation.profile`) and API_KEY_DEFAULT_PROFILE is not set \
                     (profiles: {})",
                    self.names()
                )),
            },
        }
    }

    fn names(&self) -> String {
        self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The document, checked. Errors are `<json path>: <problem>`.
    fn parse(text: &str, plain_http: bool) -> Result<Profiles, String> {
        let document: Value = serde_json::from_str(text).map_err(|e| format!("(document): is not valid JSON ({e})"))?;
        let raw: RawDocument = serde_json::from_value(document).map_err(|e| format!("(document): {e}"))?;
        if raw.allowed_url_prefixes.is_empty() {
            return Err("allowed_url_prefixes: is empty: no call could go anywhere".into());
        }
        for (i, prefix) in raw.allowed_url_prefixes.iter().enumerate() {
            check_prefix(prefix, plain_http).map_err(|e| format!("allowed_url_prefixes[{i}]: {e}"))?;
        }
        if raw.profiles.is_empty() {
            return Err("profiles: has no profile".into());
        }
        let mut profiles = BTreeMap::new();
        for (name, value) in &raw.profiles {
            let path = format!("profiles.{name}");
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(format!("{}: a profile name is 1 to 64 letters, digits, `-`, `_` or `.`", shown(&path)));
            }
            let profile = parse_profile(name, value, &path, &raw.allowed_url_prefixes)?;
            profiles.insert(name.clone(), profile);
        }
        Ok(Profiles { allowed_url_prefixes: raw.allowed_url_prefixes, profiles, default: None })
    }
}

fn check_prefix(prefix: &str, plain_http: bool) -> Result<(), String> {
    let url = Url::parse(prefix).map_err(|e| format!("`{prefix}` is not a URL ({e})"))?;
    if url.as_str() != prefix {
        return Err(format!("`{prefix}` is not in normal form: write `{url}` (host part ended by `/`)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{prefix}` may not hold a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{prefix}` may not have a query or fragment"));
    }
    if url.host().is_none() {
        return Err(format!("`{prefix}` has no host"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if plain_http && is_loopback_host(&url) => Ok(()),
        "http" if plain_http => Err(format!("`{prefix}`: http:// is allowed only to a loopback host")),
        "http" => Err(format!(
            "`{prefix}`: http:// is allowed only to a loopback host with ALLOW_PLAIN_HTTP_TO_LOOPBACK=true"
        )),
        other => Err(format!("`{prefix}`: scheme {other} is not allowed (https only)")),
    }
}

fn parse_profile(name: &str, value: &Value, path: &str, prefixes: &[String]) -> Result<Profile, String> {
    let raw: RawProfile = serde_json::from_value(value.clone()).map_err(|e| format!("{path}: {e}"))?;
    let mode = match raw.mode {
        RawMode::Generated => Mode::Generated,
        RawMode::Issued => Mode::Issued,
    };
    let base_url = Url::parse(&raw.base_url).map_err(|e| format!("{path}.base_url: is not a URL ({e})"))?;
    if !base_url.username().is_empty() || base_url.password().is_some() {
        return Err(format!("{path}.base_url: may not hold a user name or password"));
    }
    if base_url.query().is_some() || base_url.fragment().is_some() {
        return Err(format!("{path}.base_url: may not have a query or fragment"));
    }
    if !base_url.path().ends_with('/') {
        return Err(format!("{path}.base_url: must end with `/` (paths are joined to it)"));
    }
    if !prefixes.iter().any(|p| base_url.as_str().starts_with(p.as_str())) {
        return Err(format!("{path}.base_url: {base_url} starts with none of allowed_url_prefixes"));
    }
    let admin_secret = match raw.admin_secret {
        Some(id) if id.trim().is_empty() => return Err(format!("{path}.admin_secret: is empty")),
        other => other,
    };
    let field = |value: Option<String>, default: &str, what: &str| -> Result<String, String> {
        let value = value.unwrap_or_else(|| default.to_owned());
        if value.is_empty() || value.chars().any(char::is_control) || value == "rotation" {
            return Err(format!("{path}.{what}: must be a field name (not empty, not `rotation`)"));
        }
        Ok(value)
    };
    let key_field = field(raw.key_field, "api_key", "key_field")?;
    let key_id_field = field(raw.key_id_field, "api_key_id", "key_id_field")?;
    if key_field == key_id_field {
        return Err(format!("{path}.key_id_field: is the same field as key_field"));
    }
    let key_name_prefix = raw.key_name_prefix.unwrap_or_else(|| "rotation-".into());
    if key_name_prefix.len() > 64 || !key_name_prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{path}.key_name_prefix: must be at most 64 printable ASCII characters, no spaces"));
    }
    let propagation_seconds = raw.propagation_seconds.unwrap_or(0);
    if propagation_seconds > MAX_PROPAGATION_SECONDS {
        return Err(format!("{path}.propagation_seconds: must be at most {MAX_PROPAGATION_SECONDS}"));
    }
    let generate = match (mode, raw.generate) {
        (Mode::Issued, Some(_)) => {
            return Err(format!(
                "{path}.generate: only for mode `generated` (in mode `issued` the service makes the key)"
            ));
        }
        (_, None) => KeyFormat::default(),
        (Mode::Generated, Some(raw)) => {
            let format = KeyFormat {
                length: raw.length.unwrap_or(40),
                alphabet: raw.alphabet.unwrap_or(Alphabet::Alphanumeric),
                prefix: raw.prefix.unwrap_or_default(),
            };
            if !(16..=256).contains(&format.length) {
                return Err(format!("{path}.generate.length: must be 16 to 256"));
            }
            if !format.prefix.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("{path}.generate.prefix: must be printable ASCII characters, no spaces"));
            }
            if format.length < format.prefix.len() + 16 {
                return Err(format!(
                    "{path}.generate.length: must leave at least 16 random characters after the prefix"
                ));
            }
            format
        }
    };

    let context =
        CallContext { has_admin: admin_secret.is_some(), key_field: &key_field, base_url: &base_url, prefixes };
    let mut issue = None;
    let mut test = None;
    let mut revoke = None;
    let mut list = None;
    let mut push = None;
    for (call_name, value) in &raw.calls {
        let call_path = format!("{path}.calls.{call_name}");
        match call_name.as_str() {
            "issue" => issue = Some(parse_call(value, Kind::Issue, &call_path, &context)?.0),
            "test" => test = Some(parse_call(value, Kind::Test, &call_path, &context)?.0),
            "revoke" => revoke = Some(parse_call(value, Kind::Revoke, &call_path, &context)?.0),
            "push" => push = Some(parse_call(value, Kind::Push, &call_path, &context)?.0),
            "list" => {
                let (call, raw) = parse_call(value, Kind::List, &call_path, &context)?;
                let pointer = |value: Option<String>, what: &str, default: Option<&str>| -> Result<String, String> {
                    let value = value
                        .or_else(|| default.map(str::to_owned))
                        .ok_or_else(|| format!("{call_path}.{what}: is required"))?;
                    check_pointer(&value).map_err(|e| format!("{call_path}.{what}: {e}"))?;
                    Ok(value)
                };
                let items_pointer = pointer(raw.items_pointer, "items_pointer", None)?;
                let item_id_pointer = pointer(raw.item_id_pointer, "item_id_pointer", Some(""))?;
                let name_pointer = pointer(raw.name_pointer, "name_pointer", None)?;
                let lookup = match &raw.lookup {
                    None => None,
                    Some(value) => Some(parse_call(value, Kind::Lookup, &format!("{call_path}.lookup"), &context)?.0),
                };
                list = Some(ListCall { call, items_pointer, item_id_pointer, name_pointer, lookup });
            }
            other => {
                return Err(format!(
                    "{path}.calls: unknown call `{}` (calls: issue, test, revoke, list, push)",
                    shown(other)
                ));
            }
        }
    }
    let calls = format!("{path}.calls");
    match mode {
        Mode::Issued => {
            for (present, what) in [(issue.is_some(), "issue"), (test.is_some(), "test"), (revoke.is_some(), "revoke")]
            {
                if !present {
                    return Err(format!("{calls}: mode `issued` needs the `{what}` call"));
                }
            }
            if push.is_some() {
                return Err(format!(
                    "{calls}.push: only for mode `generated` (in mode `issued` the service makes the key)"
                ));
            }
        }
        Mode::Generated => {
            for (present, what) in [(issue.is_some(), "issue"), (revoke.is_some(), "revoke"), (list.is_some(), "list")]
            {
                if present {
                    return Err(format!(
                        "{calls}.{what}: only for mode `issued` (mode `generated` may have `test` and `push`)"
                    ));
                }
            }
        }
    }
    Ok(Profile {
        name: name.to_owned(),
        mode,
        base_url,
        admin_secret,
        key_field,
        key_id_field,
        key_name_prefix,
        propagation: Duration::from_secs(propagation_seconds),
        generate,
        issue,
        test,
        revoke,
        list,
        push,
    })
}

struct CallContext<'a> {
    has_admin: bool,
    key_field: &'a str,
    base_url: &'a Url,
    prefixes: &'a [String],
}

fn check_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err("is not a JSON Pointer (`` or starting with `/`)".into());
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("is not a JSON Pointer (`~` must be followed by 0 or 1)".into());
        }
    }
    Ok(())
}

fn check_statuses(statuses: &[u16], what: &str) -> Result<(), String> {
    match statuses.iter().find(|s| !(100..=599).contains(*s)) {
        Some(status) => Err(format!("{what}: {status} is not an HTTP status")),
        None => Ok(()),
    }
}

fn parse_call(value: &Value, kind: Kind, path: &str, context: &CallContext<'_>) -> Result<(Call, RawCall), String> {
    let mut raw: RawCall = serde_json::from_value(value.clone()).map_err(|e| format!("{path}: {e}"))?;
    // Fields only some calls have.
    let only = |present: bool, field: &str, kinds: &[Kind], calls: &str| -> Result<(), String> {
        if present && !kinds.contains(&kind) {
            return Err(format!("{path}.{field}: only for {calls}"));
        }
        Ok(())
    };
    only(raw.refuse.is_some(), "refuse", &[Kind::Test], "the `test` call")?;
    only(raw.gone.is_some(), "gone", &[Kind::Revoke, Kind::Lookup], "the `revoke` and `lookup` calls")?;
    only(raw.value_pointer.is_some(), "value_pointer", &[Kind::Issue], "the `issue` call")?;
    only(raw.id_pointer.is_some(), "id_pointer", &[Kind::Issue], "the `issue` call")?;
    for (present, field) in [
        (raw.items_pointer.is_some(), "items_pointer"),
        (raw.item_id_pointer.is_some(), "item_id_pointer"),
        (raw.name_pointer.is_some(), "name_pointer"),
        (raw.lookup.is_some(), "lookup"),
    ] {
        only(present, field, &[Kind::List], "the `list` call")?;
    }

    if raw.method.is_empty() || raw.method.len() > 16 || !raw.method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("{path}.method: must be an HTTP method in capitals (GET, POST, ...)"));
    }

    // Templates, with the JSON path of each.
    let path_template = Template::parse(&raw.path).map_err(|e| format!("{path}.path: {e}"))?;
    let mut headers = Vec::new();
    let mut seen = Vec::new();
    for (name, template) in &raw.headers {
        let header_path = format!("{path}.headers.{name}");
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("{}: is not a header name", shown(&header_path)));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            return Err(format!("{header_path}: is set by the client, not by a profile"));
        }
        if lower == "authorization" && raw.basic_auth.is_some() {
            return Err(format!("{header_path}: basic_auth sets this header"));
        }
        if seen.contains(&lower) {
            return Err(format!("{header_path}: is set twice"));
        }
        seen.push(lower);
        if template.chars().any(char::is_control) {
            return Err(format!("{header_path}: holds a control character"));
        }
        headers.push((name.clone(), Template::parse(template).map_err(|e| format!("{header_path}: {e}"))?));
    }
    let basic_auth = match &raw.basic_auth {
        None => None,
        Some(auth) => Some((
            Template::parse(&auth.username).map_err(|e| format!("{path}.basic_auth.username: {e}"))?,
            Template::parse(&auth.password).map_err(|e| format!("{path}.basic_auth.password: {e}"))?,
        )),
    };
    let body = match &raw.body {
        None => None,
        Some(body) => Some(BodyTemplate::parse(body, &format!("{path}.body"))?),
    };

    let mut templates: Vec<(String, &Template)> = vec![(format!("{path}.path"), &path_template)];
    templates.extend(headers.iter().map(|(name, t)| (format!("{path}.headers.{name}"), t)));
    if let Some((username, password)) = &basic_auth {
        templates.push((format!("{path}.basic_auth.username"), username));
        templates.push((format!("{path}.basic_auth.password"), password));
    }
    if let Some(body) = &body {
        body.templates(&format!("{path}.body"), &mut templates);
    }
    let call_name = match kind {
        Kind::Issue => "issue",
        Kind::Test => "test",
        Kind::Revoke => "revoke",
        Kind::List => "list",
        Kind::Lookup => "lookup",
        Kind::Push => "push",
    };
    for (template_path, template) in &templates {
        for slot in template.slots() {
            let refused = match slot {
                Slot::Value | Slot::ValueRabbitmqSha256 if matches!(kind, Kind::Issue | Kind::List | Kind::Lookup) => {
                    Some(format!("{slot} is not available to the `{call_name}` call"))
                }
                Slot::KeyId if matches!(kind, Kind::Issue | Kind::List) => {
                    Some(format!("{slot} is not available to the `{call_name}` call"))
                }
                Slot::Admin(_) if !context.has_admin => Some(format!("{slot} needs the profile's admin_secret")),
                Slot::Field(name) if name == context.key_field => {
                    Some(format!("{slot} is the key field: use {{value}}"))
                }
                _ => None,
            };
            if let Some(problem) = refused {
                return Err(format!("{template_path}: {problem}"));
            }
        }
    }
    // A URL path is logged and shown in errors: no credential may be part of it.
    if let Some(slot) =
        path_template.slots().find(|s| matches!(s, Slot::Value | Slot::ValueRabbitmqSha256 | Slot::Admin(_)))
    {
        return Err(format!("{path}.path: {slot} may not be part of a URL (URLs are logged)"));
    }
    // Where the call goes, with a stand-in for each placeholder.
    let sample: String = path_template
        .0
        .iter()
        .map(|piece| match piece {
            Piece::Text(text) => text.as_str(),
            Piece::Slot(_) => "x",
        })
        .collect();
    match join_within(context.base_url, &sample) {
        None => return Err(format!("{path}.path: leaves base_url {}", context.base_url)),
        Some(url) if !context.prefixes.iter().any(|p| url.as_str().starts_with(p.as_str())) => {
            return Err(format!("{path}.path: {url} starts with none of allowed_url_prefixes"));
        }
        Some(_) => {}
    }

    let accept = raw.accept.take();
    if let Some(accept) = &accept {
        if accept.is_empty() {
            return Err(format!("{path}.accept: is empty (leave it out for any 2xx)"));
        }
        check_statuses(accept, &format!("{path}.accept"))?;
    }
    let refuse = match raw.refuse.take() {
        Some(refuse) => refuse,
        None if kind == Kind::Test => vec![401, 403],
        None => Vec::new(),
    };
    check_statuses(&refuse, &format!("{path}.refuse"))?;
    let gone = match raw.gone.take() {
        Some(gone) => gone,
        None if matches!(kind, Kind::Revoke | Kind::Lookup) => vec![404],
        None => Vec::new(),
    };
    check_statuses(&gone, &format!("{path}.gone"))?;
    let accepted = |s: &u16| match &accept {
        Some(accept) => accept.contains(s),
        None => (200..300).contains(s),
    };
    if let Some(status) = refuse.iter().chain(&gone).find(|s| accepted(s)) {
        return Err(format!("{path}: status {status} is both accepted and refused or gone"));
    }
    if let Some(status) = refuse.iter().find(|s| gone.contains(s)) {
        return Err(format!("{path}: status {status} is both refused and gone"));
    }
    if kind == Kind::Issue && raw.value_pointer.is_none() {
        return Err(format!("{path}.value_pointer: is required (where the new key is in the answer)"));
    }
    for (pointer, what) in [(&raw.value_pointer, "value_pointer"), (&raw.id_pointer, "id_pointer")] {
        if let Some(pointer) = pointer {
            check_pointer(pointer).map_err(|e| format!("{path}.{what}: {e}"))?;
        }
    }
    let call = Call {
        method: raw.method.clone(),
        path: path_template,
        headers,
        basic_auth,
        body,
        accept,
        refuse,
        gone,
        value_pointer: raw.value_pointer.clone(),
        id_pointer: raw.id_pointer.clone(),
    };
    Ok((call, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of PROFILES.md: the document and the code agree.
    fn example() -> Value {
        let doc = include_str!("../PROFILES.md");
        let start = doc.find("```json\n").expect("PROFILES.md has a JSON example") + "```json\n".len();
        let end = start + doc[start..].find("```").unwrap();
        serde_json::from_str(&doc[start..end]).expect("the example of PROFILES.md is JSON")
    }

    fn lookup_from(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }

    fn load(document: &Value) -> Result<Profiles, Error> {
        Profiles::from_lookup(&lookup_from(vec![("API_KEY_PROFILES", document.to_string())]))
    }

    /// The problem text of a configuration error, with its variable.
    fn problem(document: &Value) -> (String, String) {
        match load(document) {
            Err(Error::Config { variable, problem }) => (variable.to_owned(), problem),
            Err(other) => panic!("not a configuration error: {other}"),
            Ok(_) => panic!("the document was accepted"),
        }
    }

    fn with(change: impl FnOnce(&mut Value)) -> Value {
        let mut document = example();
        change(&mut document);
        document
    }

    /// The value at `pointer`; a missing last member is added (null) to its object.
    fn at<'a>(document: &'a mut Value, pointer: &str) -> &'a mut Value {
        if document.pointer(pointer).is_none() {
            let (parent, name) = pointer.rsplit_once('/').unwrap();
            let parent = document.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"));
            parent.as_object_mut().unwrap().insert(name.to_owned(), Value::Null);
        }
        document.pointer_mut(pointer).unwrap()
    }

    const VAULT: &str = "/profiles/vault-token";

    #[test]
    fn the_fields_a_profile_reads_are_listed_once_with_the_first_call_that_reads_them() {
        let mut document = generated();
        document["profiles"]["rabbit"]["calls"]["push"]["headers"] = serde_json::json!({"X-Team": "{field.team}"});
        let profiles = load(&document).unwrap();
        let profile = profiles.get(Some("rabbit")).unwrap();
        let expected = vec![("username".to_owned(), "test"), ("team".to_owned(), "push")];
        assert_eq!(profile.fields_used(), expected);
        let vault = load(&example()).unwrap();
        assert!(vault.get(Some("vault-token")).unwrap().fields_used().is_empty());
    }

    fn generated() -> Value {
        serde_json::json!({
            "allowed_url_prefixes": ["https://rabbit.example.com/api/"],
            "profiles": {
                "rabbit": {
                    "mode": "generated",
                    "base_url": "https://rabbit.example.com/api/",
                    "generate": {"length": 32, "alphabet": "hex", "prefix": "rk_"},
                    "calls": {
                        "push": {
                            "method": "PUT", "path": "users/{field.username}",
                            "basic_auth": {"username": "{admin.username}", "password": "{admin.password}"},
                            "body": {"password_hash": "{value_rabbitmq_sha256}", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["{field.username}", 1, null]}
                        },
                        "test": {"method": "GET", "path": "whoami", "basic_auth": {"username": "{field.username}", "password": "{value}"}}
                    },
                    "admin_secret": "rabbit-admin"
                }
            }
        })
    }

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn the_documented_example_is_valid() {
        let profiles = load(&example()).unwrap();
        assert_eq!(profiles.allowed_url_prefixes(), ["https://vault.example.com:8200/v1/"]);
        let profile = profiles.get(None).unwrap();
        assert_eq!(profile.name, "vault-token");
        assert_eq!(profile.mode, Mode::Issued);
        assert_eq!(profile.key_field, "api_key");
        assert_eq!(profile.key_id_field, "api_key_id");
        assert_eq!(profile.propagation, Duration::from_secs(10));
        assert!(profile.issue.is_some() && profile.test.is_some() && profile.revoke.is_some());
        assert!(profile.list.as_ref().unwrap().lookup.is_some());
        assert!(profiles.get(Some("vault-token")).is_ok());
        let unknown = profiles.get(Some("other")).unwrap_err();
        assert!(unknown.contains("other") && unknown.contains("vault-token"), "{unknown}");
    }

    #[test]
    fn every_problem_names_its_json_path() {
        let cases: Vec<(Value, &str)> = vec![
            (
                with(|d| {
                    at(d, VAULT).as_object_mut().unwrap().insert("extra".into(), 1.into()).map(drop).unwrap_or(())
                }),
                "profiles.vault-token: unknown field `extra`",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/issue/path")) = "auth/{foo}".into()),
                "profiles.vault-token.calls.issue.path: unknown placeholder {foo}",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/issue/path")) = "auth/{key_name".into()),
                "profiles.vault-token.calls.issue.path: a `{` without its `}`",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/issue/body/meta/rotation_key")) = "{value}".into()),
                "profiles.vault-token.calls.issue.body.meta.rotation_key: {value} is not available to the `issue` call",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/list/lookup/body/accessor")) = "{value}".into()),
                "profiles.vault-token.calls.list.lookup.body.accessor: {value} is not available",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/issue/body/display_name")) = "{key_id}".into()),
                "calls.issue.body.display_name: {key_id} is not available",
            ),
            (
                with(|d| drop(at(d, VAULT).as_object_mut().unwrap().remove("admin_secret"))),
                "profiles.vault-token.calls.issue.headers.X-Vault-Token: {admin.token} needs the profile's admin_secret",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/test/headers/X-Vault-Token")) = "{field.api_key}".into()),
                "calls.test.headers.X-Vault-Token: {field.api_key} is the key field",
            ),
            (
                with(|d| drop(at(d, &format!("{VAULT}/calls")).as_object_mut().unwrap().remove("revoke"))),
                "profiles.vault-token.calls: mode `issued` needs the `revoke` call",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/mode")) = "generated".into()),
                "profiles.vault-token.calls.issue: only for mode `issued`",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/mode")) = "minted".into()),
                "profiles.vault-token: unknown variant `minted`",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/base_url")) = "https://vault.example.com:8200/v2/".into()),
                "profiles.vault-token.base_url: https://vault.example.com:8200/v2/ starts with none of allowed_url_prefixes",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/base_url")) = "https://vault.example.com:8200/v1".into()),
                "profiles.vault-token.base_url: must end with `/`",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/revoke/path")) = "../../other".into()),
                "profiles.vault-token.calls.revoke.path: leaves base_url",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/revoke/path")) = "//evil.example.com/x".into()),
                "profiles.vault-token.calls.revoke.path: leaves base_url",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/revoke/path")) = "https://evil.example.com/v1/".into()),
                "profiles.vault-token.calls.revoke.path: leaves base_url",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/revoke/path")) = "keys/{admin.token}".into()),
                "profiles.vault-token.calls.revoke.path: {admin.token} may not be part of a URL",
            ),
            (
                with(|d| *at(d, "/allowed_url_prefixes/0") = "http://vault.example.com:8200/v1/".into()),
                "allowed_url_prefixes[0]: `http://vault.example.com:8200/v1/`: http:// is allowed only to a loopback host",
            ),
            (
                with(|d| *at(d, "/allowed_url_prefixes/0") = "https://vault.example.com".into()),
                "allowed_url_prefixes[0]: `https://vault.example.com` is not in normal form: write `https://vault.example.com/`",
            ),
            (with(|d| *at(d, "/allowed_url_prefixes") = serde_json::json!([])), "allowed_url_prefixes: is empty"),
            (with(|d| *at(d, "/profiles") = serde_json::json!({})), "profiles: has no profile"),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/issue/value_pointer")) = "auth/client_token".into()),
                "profiles.vault-token.calls.issue.value_pointer: is not a JSON Pointer",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/list/name_pointer")) = "/a~2b".into()),
                "profiles.vault-token.calls.list.name_pointer: is not a JSON Pointer",
            ),
            (
                with(|d| drop(at(d, &format!("{VAULT}/calls/issue")).as_object_mut().unwrap().remove("value_pointer"))),
                "profiles.vault-token.calls.issue.value_pointer: is required",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/propagation_seconds")) = 301.into()),
                "profiles.vault-token.propagation_seconds: must be at most 300",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/revoke/refuse")) = serde_json::json!([403])),
                "profiles.vault-token.calls.revoke.refuse: only for the `test` call",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/revoke/gone")) = serde_json::json!([204])),
                "profiles.vault-token.calls.revoke: status 204 is both accepted and refused or gone",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/test/accept")) = serde_json::json!([700])),
                "profiles.vault-token.calls.test.accept: 700 is not an HTTP status",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/list/lookup/extra")) = 1.into()),
                "profiles.vault-token.calls.list.lookup: unknown field `extra`",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/test/method")) = "get".into()),
                "profiles.vault-token.calls.test.method: must be an HTTP method in capitals",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/test/headers/Host")) = "x".into()),
                "profiles.vault-token.calls.test.headers.Host: is set by the client",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/test/headers/X-Vault-Token")) = "{value}\r\nX-Other: 1".into()),
                "profiles.vault-token.calls.test.headers.X-Vault-Token: holds a control character",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/calls/rotate")) = serde_json::json!({})),
                "profiles.vault-token.calls: unknown call `rotate`",
            ),
            (
                with(|d| *at(d, &format!("{VAULT}/generate")) = serde_json::json!({"length": 20})),
                "profiles.vault-token.generate: only for mode `generated`",
            ),
        ];
        for (document, expected) in cases {
            let (variable, problem) = problem(&document);
            assert_eq!(variable, "API_KEY_PROFILES", "{problem}");
            assert!(problem.contains(expected), "expected `{expected}` in `{problem}`");
        }
    }

    #[test]
    fn generate_bounds_and_generated_mode_calls() {
        let cases: Vec<(Value, &str)> = vec![
            (
                with_generated(|d| *at(d, "/profiles/rabbit/generate/length") = 10.into()),
                "profiles.rabbit.generate.length: must be 16 to 256",
            ),
            (
                with_generated(|d| *at(d, "/profiles/rabbit/generate/length") = 257.into()),
                "profiles.rabbit.generate.length: must be 16 to 256",
            ),
            (
                with_generated(|d| *at(d, "/profiles/rabbit/generate/length") = 18.into()),
                "profiles.rabbit.generate.length: must leave at least 16 random characters",
            ),
            (
                with_generated(|d| *at(d, "/profiles/rabbit/generate/alphabet") = "base32".into()),
                "profiles.rabbit: unknown variant `base32`",
            ),
            (
                with_generated(|d| *at(d, "/profiles/rabbit/calls/test/basic_auth/extra") = 1.into()),
                "profiles.rabbit.calls.test: unknown field `extra`",
            ),
            (
                with_generated(|d| {
                    *at(d, "/profiles/rabbit/calls/test/headers") = serde_json::json!({"Authorization": "x"})
                }),
                "profiles.rabbit.calls.test.headers.Authorization: basic_auth sets this header",
            ),
        ];
        for (document, expected) in cases {
            let (_, problem) = problem(&document);
            assert!(problem.contains(expected), "expected `{expected}` in `{problem}`");
        }
        assert_eq!(load(&generated()).unwrap().get(None).unwrap().mode, Mode::Generated);
        // Self-issued keys need no call at all; mode `issued` does.
        let bare = with_generated(|d| drop(at(d, "/profiles/rabbit").as_object_mut().unwrap().remove("calls")));
        let profiles = load(&bare).unwrap();
        let profile = profiles.get(None).unwrap();
        assert!(profile.test.is_none() && profile.push.is_none());
        assert_eq!(profile.generate, KeyFormat { length: 32, alphabet: Alphabet::Hex, prefix: "rk_".into() });
        let mut issued = bare.clone();
        *at(&mut issued, "/profiles/rabbit/mode") = "issued".into();
        drop(at(&mut issued, "/profiles/rabbit").as_object_mut().unwrap().remove("generate"));
        assert!(problem(&issued).1.contains("profiles.rabbit.calls: mode `issued` needs the `issue` call"));
    }

    fn with_generated(change: impl FnOnce(&mut Value)) -> Value {
        let mut document = generated();
        change(&mut document);
        document
    }

    #[test]
    fn where_the_document_comes_from_and_the_default_profile() {
        let none = Profiles::from_lookup(&lookup_from(vec![])).unwrap_err().to_string();
        assert!(none.contains("API_KEY_PROFILES") && none.contains("API_KEY_PROFILES_FILE"), "{none}");

        let path = std::env::temp_dir().join(format!("profiles-{}.json", std::process::id()));
        let mut broken = example();
        *at(&mut broken, &format!("{VAULT}/calls/test/path")) = "{oops}".into();
        std::fs::write(&path, broken.to_string()).unwrap();
        let from_file =
            Profiles::from_lookup(&lookup_from(vec![("API_KEY_PROFILES_FILE", path.display().to_string())]));
        std::fs::remove_file(&path).unwrap();
        match from_file {
            Err(Error::Config { variable, problem }) => {
                assert_eq!(variable, "API_KEY_PROFILES_FILE");
                assert!(
                    problem.starts_with("profiles.vault-token.calls.test.path: unknown placeholder {oops}"),
                    "{problem}"
                );
            }
            other => panic!("{other:?}"),
        }

        let not_json = Profiles::from_lookup(&lookup_from(vec![("API_KEY_PROFILES", "{nope".into())])).unwrap_err();
        assert!(not_json.to_string().contains("not valid JSON"), "{not_json}");

        // Two profiles: a secret must name one, unless a default is set.
        let mut two = example();
        let copy = at(&mut two, VAULT).clone();
        at(&mut two, "/profiles").as_object_mut().unwrap().insert("second".into(), copy);
        let profiles = load(&two).unwrap();
        assert!(profiles.get(None).unwrap_err().contains("API_KEY_DEFAULT_PROFILE"));
        assert_eq!(profiles.get(Some("second")).unwrap().name, "second");
        let with_default = Profiles::from_lookup(&lookup_from(vec![
            ("API_KEY_PROFILES", two.to_string()),
            ("API_KEY_DEFAULT_PROFILE", "second".into()),
        ]))
        .unwrap();
        assert_eq!(with_default.get(None).unwrap().name, "second");
        let unknown_default = Profiles::from_lookup(&lookup_from(vec![
            ("API_KEY_PROFILES", two.to_string()),
            ("API_KEY_DEFAULT_PROFILE", "third".into()),
        ]))
        .unwrap_err();
        assert!(
            matches!(&unknown_default, Error::Config { variable: "API_KEY_DEFAULT_PROFILE", .. }),
            "{unknown_default}"
        );
    }

    #[test]
    fn plain_http_prefixes_only_to_loopback_and_only_when_allowed() {
        let local = serde_json::json!({
            "allowed_url_prefixes": ["http://127.0.0.1:8080/"],
            "profiles": {"local": {"mode": "generated", "base_url": "http://127.0.0.1:8080/", "calls": {}}}
        });
        assert!(problem(&local).1.contains("ALLOW_PLAIN_HTTP_TO_LOOPBACK=true"));
        let allowed = |document: &Value| {
            Profiles::from_lookup(&lookup_from(vec![
                ("API_KEY_PROFILES", document.to_string()),
                ("ALLOW_PLAIN_HTTP_TO_LOOPBACK", "true".into()),
            ]))
        };
        assert!(allowed(&local).is_ok());
        let mut remote = local.clone();
        *at(&mut remote, "/allowed_url_prefixes/0") = "http://10.0.0.1:8080/".into();
        assert!(allowed(&remote).unwrap_err().to_string().contains("allowed_url_prefixes[0]"));
        let bad_flag = Profiles::from_lookup(&lookup_from(vec![
            ("API_KEY_PROFILES", local.to_string()),
            ("ALLOW_PLAIN_HTTP_TO_LOOPBACK", "yes".into()),
        ]))
        .unwrap_err();
        assert!(matches!(bad_flag, Error::Config { variable: "ALLOW_PLAIN_HTTP_TO_LOOPBACK", .. }));
    }

    fn vault() -> Profiles {
        load(&example()).unwrap()
    }

    #[test]
    fn a_placeholder_in_the_path_stays_one_segment_under_base_url() {
        let profiles = vault();
        let profile = profiles.get(None).unwrap();
        let mut document = example();
        *at(&mut document, &format!("{VAULT}/calls/revoke/path")) = "keys/{key_id}/revoke".into();
        let changed = load(&document).unwrap();
        let revoke = changed.get(None).unwrap().revoke.as_ref().unwrap();
        let fields = Map::new();
        let admin = map(serde_json::json!({"token": "admin-token"}));
        let values = |key_id: &'static str| Values {
            key_name: None,
            version: "v1",
            key_id: Some(key_id),
            value: None,
            fields: &fields,
            admin: Some(&admin),
        };
        let request = revoke.request(profile, "revoke", &values("../../sys/seal?x=1#f")).unwrap();
        assert_eq!(
            request.url.as_str(),
            "https://vault.example.com:8200/v1/keys/..%2F..%2Fsys%2Fseal%3Fx%3D1%23f/revoke"
        );
        assert!(request.url.as_str().starts_with(profile.base_url.as_str()));
        for unsafe_value in ["..", ".", ""] {
            let refused = revoke.request(profile, "revoke", &values(unsafe_value)).unwrap_err();
            assert_eq!(refused, RenderError::UnsafePath("{key_id}".into()));
        }
        // `%2e%2e` is a `..` segment to URL parsers: it is encoded again, not decoded.
        let encoded = revoke.request(profile, "revoke", &values("%2e%2e")).unwrap();
        assert!(encoded.url.path().starts_with("/v1/keys/%252e%252e/"), "{}", encoded.url);
    }

    #[test]
    fn rendering_the_documented_calls() {
        let profiles = vault();
        let profile = profiles.get(None).unwrap();
        let fields = map(serde_json::json!({"api_key": "old", "username": "svc", "port": 5672, "flag": true}));
        let admin = map(serde_json::json!({"token": "admin-token"}));
        let values = Values {
            key_name: Some("rotation-abc"),
            version: "v1",
            key_id: Some("acc-1"),
            value: None,
            fields: &fields,
            admin: Some(&admin),
        };
        let issue = profile.issue.as_ref().unwrap().request(profile, "issue", &values).unwrap();
        assert_eq!(issue.method, "POST");
        assert_eq!(issue.call, "issue");
        assert_eq!(issue.profile, "vault-token");
        assert_eq!(issue.url.as_str(), "https://vault.example.com:8200/v1/auth/token/create");
        assert_eq!(issue.headers.len(), 1);
        assert_eq!(issue.headers[0].0, "X-Vault-Token");
        assert_eq!(issue.headers[0].1.expose_secret(), "admin-token");
        let body: Value = serde_json::from_str(issue.body.as_ref().unwrap().expose_secret()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"display_name": "rotation-abc", "meta": {"rotation_key": "rotation-abc"}, "no_parent": true})
        );
        let test = profile.test.as_ref().unwrap();
        assert_eq!(test.request(profile, "test", &values).unwrap_err(), RenderError::MissingValue("{value}"));
        let value = SecretString::from("hvs.tested");
        let test = test.request(profile, "test", &Values { value: Some(&value), ..values }).unwrap();
        assert!(test.body.is_none());
        assert_eq!(test.headers[0].1.expose_secret(), "hvs.tested");
    }

    #[test]
    fn missing_values_name_the_placeholder_never_a_value() {
        let profiles = load(&generated()).unwrap();
        let profile = profiles.get(None).unwrap();
        let push = profile.push.as_ref().unwrap();
        let value = SecretString::from("s3cret-value");
        let empty = Map::new();
        let admin = map(serde_json::json!({"username": "admin", "password": "admin-pw"}));
        let fields = map(serde_json::json!({"username": true}));
        let render = |fields: &Map<String, Value>, admin: Option<&Map<String, Value>>, value: Option<&SecretString>| {
            push.request(profile, "push", &Values { key_name: None, version: "v1", key_id: None, value, fields, admin })
        };
        assert_eq!(
            render(&empty, Some(&admin), Some(&value)).unwrap_err(),
            RenderError::MissingField("username".into())
        );
        assert_eq!(
            render(&fields, Some(&admin), Some(&value)).unwrap_err(),
            RenderError::MissingField("username".into())
        );
        let fields = map(serde_json::json!({"username": "svc"}));
        assert_eq!(render(&fields, None, Some(&value)).unwrap_err(), RenderError::MissingAdminField("username".into()));
        let error = render(&fields, Some(&admin), None).unwrap_err();
        assert_eq!(error, RenderError::MissingValue("{value_rabbitmq_sha256}"));
        assert!(!error.to_string().contains("svc"));
    }

    #[test]
    fn a_header_value_with_cr_or_lf_is_refused() {
        let profiles = vault();
        let profile = profiles.get(None).unwrap();
        let fields = Map::new();
        for token in ["admin\r\nX-Injected: 1", "admin\n", "admin\0"] {
            let admin = map(serde_json::json!({ "token": token }));
            let values = Values {
                key_name: Some("k"),
                version: "v1",
                key_id: None,
                value: None,
                fields: &fields,
                admin: Some(&admin),
            };
            let error = profile.issue.as_ref().unwrap().request(profile, "issue", &values).unwrap_err();
            assert_eq!(error, RenderError::ControlCharacter("X-Vault-Token".into()));
            assert!(!error.to_string().contains("admin"), "{error}");
        }
    }

    #[test]
    fn the_rabbitmq_hash_verifies_and_basic_auth_is_encoded() {
        let profiles = load(&generated()).unwrap();
        let profile = profiles.get(None).unwrap();
        let value = SecretString::from("new-password");
        let fields = map(serde_json::json!({"username": "svc"}));
        let admin = map(serde_json::json!({"username": "admin", "password": "pw:1"}));
        let values = Values {
            key_name: None,
            version: "v1",
            key_id: None,
            value: Some(&value),
            fields: &fields,
            admin: Some(&admin),
        };
        let push = profile.push.as_ref().unwrap().request(profile, "push", &values).unwrap();
        assert_eq!(push.url.as_str(), "https://rabbit.example.com/api/users/svc");
        let body: Value = serde_json::from_str(push.body.as_ref().unwrap().expose_secret()).unwrap();
        assert_eq!(body["tags"], serde_json::json!(["svc", 1, null]));
        let hash = base64::engine::general_purpose::STANDARD.decode(body["password_hash"].as_str().unwrap()).unwrap();
        assert_eq!(hash.len(), 4 + 32);
        let (salt, digest) = hash.split_at(4);
        let mut hasher = Sha256::new();
        hasher.update(salt);
        hasher.update(b"new-password");
        assert_eq!(digest, hasher.finalize().as_slice());
        // A fresh salt each time.
        let again = profile.push.as_ref().unwrap().request(profile, "push", &values).unwrap();
        assert_ne!(again.body.unwrap().expose_secret(), push.body.as_ref().unwrap().expose_secret());
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("admin:pw:1"));
        let auth = push.headers.iter().find(|(n, _)| n == "authorization").unwrap();
        assert_eq!(auth.1.expose_secret(), expected);
        // A known vector: salt 908D C60A, "test12" (RabbitMQ's documentation).
        let known = rabbitmq_sha256_with_salt(&SecretString::from("test12"), [0x90, 0x8d, 0xc6, 0x0a]);
        assert_eq!(known.expose_secret(), "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR");
    }

    #[test]
    fn generated_keys_match_their_format() {
        for alphabet in [Alphabet::Alphanumeric, Alphabet::Hex, Alphabet::Base64Url] {
            let format = KeyFormat { length: 40, alphabet, prefix: "sk_".into() };
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let key = format.generate();
                assert!(format.matches(key.expose_secret()), "{alphabet:?}");
                seen.extend(key.expose_secret()[3..].bytes());
            }
            // Every character of the alphabet turns up in 7400 draws.
            assert_eq!(seen.len(), alphabet.characters().len(), "{alphabet:?}");
        }
        let format = KeyFormat { length: 20, alphabet: Alphabet::Hex, prefix: "k-".into() };
        assert!(format.matches("k-0123456789abcdef01"));
        assert!(!format.matches("k-0123456789abcdef0"), "too short");
        assert!(!format.matches("x-0123456789abcdef01"), "wrong prefix");
        assert!(!format.matches("k-0123456789abcdef0G"), "outside the alphabet");
        assert_ne!(format.generate().expose_secret(), format.generate().expose_secret());
    }

    #[test]
    fn key_names_are_stable_and_start_with_the_stem() {
        let profiles = vault();
        let profile = profiles.get(None).unwrap();
        let arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:app-key-AbCdEf";
        let name = profile.key_name(arn, "version-1");
        assert_eq!(name, profile.key_name(arn, "version-1"));
        assert_ne!(name, profile.key_name(arn, "version-2"));
        let stem = profile.key_name_stem(arn);
        assert!(name.starts_with(&stem));
        assert_eq!(stem.len(), "rotation-".len() + 12 + 1);
        assert_eq!(name.len(), stem.len() + 16);
        assert!(stem.starts_with("rotation-") && stem.ends_with('-'));
        assert_eq!(&stem["rotation-".len()..stem.len() - 1], &sha256_hex(arn, 64)[..12]);
        // SHA-256("abc") starts with ba7816bf8f01cfea.
        assert_eq!(sha256_hex("abc", 16), "ba7816bf8f01cfea");
    }

    #[test]
    fn the_url_for_errors_names_placeholders_never_values() {
        let mut document = example();
        *at(&mut document, &format!("{VAULT}/calls/revoke/path")) = "keys/{key_id}/revoke?force={version}".into();
        let profiles = load(&document).unwrap();
        let profile = profiles.get(None).unwrap();
        assert_eq!(
            profile.revoke.as_ref().unwrap().url_for_errors(profile),
            "https://vault.example.com:8200/v1/keys/{key_id}/revoke"
        );
        assert_eq!(
            profile.issue.as_ref().unwrap().url_for_errors(profile),
            "https://vault.example.com:8200/v1/auth/token/create"
        );
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let profiles = vault();
        let profile = profiles.get(None).unwrap();
        let test = profile.test.as_ref().unwrap();
        assert_eq!(test.outcome(200), Outcome::Accepted);
        assert_eq!(test.outcome(204), Outcome::Unexpected);
        assert_eq!(test.outcome(401), Outcome::Refused);
        assert_eq!(test.outcome(403), Outcome::Refused);
        assert_eq!(test.outcome(404), Outcome::Unexpected);
        let revoke = profile.revoke.as_ref().unwrap();
        assert_eq!(revoke.outcome(204), Outcome::Accepted);
        assert_eq!(revoke.outcome(200), Outcome::Unexpected);
        assert_eq!(revoke.outcome(400), Outcome::Gone);
        assert_eq!(revoke.outcome(404), Outcome::Gone);
        assert_eq!(revoke.outcome(403), Outcome::Unexpected);
        assert_eq!(revoke.outcome(302), Outcome::Unexpected);
        // Defaults: any 2xx; refuse 401 and 403 for test; gone 404 for revoke and lookup.
        let generated = load(&generated()).unwrap();
        let rabbit = generated.get(None).unwrap();
        let test = rabbit.test.as_ref().unwrap();
        for status in [200, 201, 204, 299] {
            assert_eq!(test.outcome(status), Outcome::Accepted);
        }
        assert_eq!(test.outcome(401), Outcome::Refused);
        assert_eq!(test.outcome(404), Outcome::Unexpected);
        assert_eq!(rabbit.push.as_ref().unwrap().outcome(401), Outcome::Unexpected);
    }

    #[test]
    fn the_issued_key_and_its_id_are_read_by_pointer() {
        let profiles = vault();
        let issue = profiles.get(None).unwrap().issue.as_ref().unwrap();
        let (value, id) = issue.read_issued(br#"{"auth": {"client_token": "hvs.new", "accessor": "acc-9"}}"#).unwrap();
        assert_eq!(value.expose_secret(), "hvs.new");
        assert_eq!(id.as_deref(), Some("acc-9"));
        let (_, numeric) = issue.read_issued(br#"{"auth": {"client_token": "hvs.new", "accessor": 42}}"#).unwrap();
        assert_eq!(numeric.as_deref(), Some("42"));
        let no_id = issue.read_issued(br#"{"auth": {"client_token": "hvs.secret-value"}}"#).unwrap_err();
        assert!(no_id.contains("/auth/accessor") && !no_id.contains("secret-value"), "{no_id}");
        let no_value = issue.read_issued(br#"{"auth": {"client_token": 7, "accessor": "acc"}}"#).unwrap_err();
        assert!(no_value.contains("/auth/client_token"), "{no_value}");
        assert!(issue.read_issued(br#"{"auth": {"client_token": "", "accessor": "a"}}"#).is_err());
        let not_json = issue.read_issued(b"<html>secret-value</html>").unwrap_err();
        assert!(not_json.contains("not JSON") && !not_json.contains("secret-value"), "{not_json}");
    }

    #[test]
    fn listed_items_with_and_without_lookup() {
        let profiles = vault();
        let list = profiles.get(None).unwrap().list.as_ref().unwrap();
        let items = list.read_items(br#"{"data": {"keys": ["acc-1", "acc-2"]}}"#).unwrap();
        assert_eq!(items, vec![("acc-1".into(), None), ("acc-2".into(), None)]);
        assert_eq!(
            list.read_lookup_name(br#"{"data": {"meta": {"rotation_key": "rotation-abc"}}}"#).as_deref(),
            Some("rotation-abc")
        );
        assert_eq!(list.read_lookup_name(br#"{"data": {"meta": null}}"#), None);
        assert!(list.read_items(br#"{"data": {}}"#).unwrap_err().contains("/data/keys"));
        assert!(list.read_items(br#"{"data": {"keys": ["a", {}]}}"#).unwrap_err().contains("item 1"));

        let mut document = example();
        let list_call = at(&mut document, &format!("{VAULT}/calls/list")).as_object_mut().unwrap();
        list_call.remove("lookup");
        list_call.insert("items_pointer".into(), "/keys".into());
        list_call.insert("item_id_pointer".into(), "/id".into());
        list_call.insert("name_pointer".into(), "/name".into());
        let profiles = load(&document).unwrap();
        let list = profiles.get(None).unwrap().list.as_ref().unwrap();
        let items = list
            .read_items(
                br#"{"keys": [{"id": "k1", "name": "rotation-a"}, {"id": 2, "name": "rotation-b"}, {"id": "k3"}]}"#,
            )
            .unwrap();
        assert_eq!(items, vec![("k1".into(), Some("rotation-a".into())), ("2".into(), Some("rotation-b".into()))]);
    }
}

//! The secret of an API key: a JSON object (the key in the profile's `key_field`, its id in
//! `key_id_field`, every other field kept as it is), or a plain string that is the key itself.

use rotation::{ExposeSecret, SecretProblem, SecretString};
use serde_json::{Map, Value};

use crate::profile::Profile;

/// How the secret was stored, so it is written back the same way.
#[derive(Clone)]
enum Shape {
    /// Every field of the JSON object but the key and its id.
    Json(Map<String, Value>),
    Plain,
}

/// One version of an API-key secret, parsed.
#[derive(Clone)]
pub struct KeySecret {
    shape: Shape,
    pub key: SecretString,
    pub key_id: Option<String>,
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySecret").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// The profile a secret names in its optional `{"rotation": {"profile": NAME}}`, before the
/// secret can be parsed for that profile.
pub fn profile_name(text: &SecretString) -> Result<Option<String>, SecretProblem> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text.expose_secret()) else {
        return Ok(None);
    };
    match fields.get("rotation") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(rotation)) => {
            if let Some(unknown) = rotation.keys().find(|k| k.as_str() != "profile") {
                return Err(SecretProblem::Rule {
                    field: "rotation",
                    rule: format!("may only name a `profile`; `{}` is not allowed", rotation::shown(unknown)),
                });
            }
            match rotation.get("profile") {
                None => Ok(None),
                Some(Value::String(name)) => Ok(Some(name.clone())),
                Some(_) => Err(SecretProblem::InvalidField { field: "rotation.profile", expected: "a string" }),
            }
        }
        Some(_) => Err(SecretProblem::InvalidField { field: "rotation", expected: "an object" }),
    }
}

impl KeySecret {
    /// Reads the key (and its id) where `profile` keeps them. Anything that is not a JSON object
    /// is a plain key.
    pub fn parse(text: &SecretString, profile: &Profile) -> Result<Self, SecretProblem> {
        let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(text.expose_secret()) else {
            let key = text.expose_secret();
            check_key(key, "(the plain secret string)")?;
            return Ok(KeySecret { shape: Shape::Plain, key: SecretString::from(key.to_owned()), key_id: None });
        };
        let key = match fields.remove(&profile.key_field) {
            Some(Value::String(key)) => key,
            None => return Err(missing(&profile.key_field)),
            Some(_) => return Err(not_a_string(&profile.key_field)),
        };
        check_key(&key, &profile.key_field)?;
        let key_id = match fields.remove(&profile.key_id_field) {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.is_empty() => Some(id),
            Some(_) => return Err(not_a_string(&profile.key_id_field)),
        };
        Ok(KeySecret { shape: Shape::Json(fields), key: SecretString::from(key), key_id })
    }

    pub fn is_plain(&self) -> bool {
        matches!(self.shape, Shape::Plain)
    }

    /// The fields other than the key and its id: what `{field.NAME}` placeholders read.
    pub fn fields(&self) -> Map<String, Value> {
        match &self.shape {
            Shape::Json(fields) => fields.clone(),
            Shape::Plain => Map::new(),
        }
    }

    /// This secret with another key (and id), every other field kept.
    pub fn with_key(&self, key: SecretString, key_id: Option<String>) -> Self {
        KeySecret { shape: self.shape.clone(), key, key_id }
    }

    /// The value to store, in the shape it was read in.
    pub fn to_text(&self, profile: &Profile) -> SecretString {
        match &self.shape {
            Shape::Plain => self.key.clone(),
            Shape::Json(fields) => {
                let mut object = fields.clone();
                object.insert(profile.key_field.clone(), Value::String(self.key.expose_secret().to_owned()));
                if let Some(id) = &self.key_id {
                    object.insert(profile.key_id_field.clone(), Value::String(id.clone()));
                }
                SecretString::from(Value::Object(object).to_string())
            }
        }
    }
}

fn check_key(key: &str, field: &str) -> Result<(), SecretProblem> {
    let rule = |rule: &str| SecretProblem::FieldRule { field: field.to_owned(), rule: rule.to_owned() };
    if key.is_empty() {
        return Err(rule("is empty"));
    }
    if key.chars().any(char::is_control) {
        return Err(rule("holds a control character, which no HTTP header can carry"));
    }
    Ok(())
}

fn missing(field: &str) -> SecretProblem {
    SecretProblem::FieldRule { field: field.to_owned(), rule: "is missing (it is the profile's key field)".into() }
}

fn not_a_string(field: &str) -> SecretProblem {
    SecretProblem::FieldRule { field: field.to_owned(), rule: "must be a string".into() }
}

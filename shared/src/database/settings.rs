use crate::{ConnectSettings, EngineInfo, Error, PasswordPolicy, Strategy};

/// Everything a database function reads from its environment, once per process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: PasswordPolicy,
    pub connect: ConnectSettings,
    /// `ROTATION_STRATEGY`: the strategy for secrets that do not name one.
    pub strategy: Option<Strategy>,
    /// `USERNAME_CHARACTER_LIMIT`: the longest alternate user name allowed, in characters
    /// (AWS's MySQL template reads it, default 16 there); the engine's own limit applies too.
    pub username_character_limit: Option<usize>,
}

impl Settings {
    pub fn from_env(engine: &EngineInfo) -> Result<Self, Error> {
        Self::from_lookup(&|name| std::env::var(name).ok(), engine)
    }

    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>, engine: &EngineInfo) -> Result<Self, Error> {
        let strategy = match lookup("ROTATION_STRATEGY").filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(name) => Some(name.parse().map_err(|()| Error::Config {
                variable: "ROTATION_STRATEGY",
                problem: format!("must be one of {}", Strategy::NAMES),
            })?),
        };
        let username_character_limit = match lookup("USERNAME_CHARACTER_LIMIT").filter(|s| !s.trim().is_empty()) {
            None => engine.default_username_character_limit,
            Some(text) => Some(text.trim().parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| Error::Config {
                variable: "USERNAME_CHARACTER_LIMIT",
                problem: "must be a whole number greater than 0".into(),
            })?),
        };
        Ok(Settings {
            username_character_limit,
            policy: PasswordPolicy::from_lookup(lookup, engine.default_excluded_characters)?,
            connect: ConnectSettings::from_lookup(lookup)?,
            strategy,
        })
    }
}

use crate::Error;

/// The password rules, read from the environment variables of AWS's rotation templates
/// and passed to `GetRandomPassword`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub length: i64,
    pub exclude_characters: String,
    pub exclude_numbers: bool,
    pub exclude_punctuation: bool,
    pub exclude_uppercase: bool,
    pub exclude_lowercase: bool,
    pub require_each_included_type: bool,
}

impl PasswordPolicy {
    /// Reads the policy through `lookup` (the process environment in production).
    pub fn from_lookup(
        lookup: &impl Fn(&str) -> Option<String>,
        default_excluded_characters: &str,
    ) -> Result<Self, Error> {
        let length = match lookup("PASSWORD_LENGTH") {
            None => 32,
            Some(text) => text.trim().parse::<i64>().ok().filter(|n| (1..=4096).contains(n)).ok_or_else(|| {
                Error::Config { variable: "PASSWORD_LENGTH", problem: "must be a whole number from 1 to 4096".into() }
            })?,
        };
        let policy = PasswordPolicy {
            length,
            exclude_characters: lookup("EXCLUDE_CHARACTERS").unwrap_or_else(|| default_excluded_characters.to_owned()),
            exclude_numbers: flag(lookup, "EXCLUDE_NUMBERS", false)?,
            exclude_punctuation: flag(lookup, "EXCLUDE_PUNCTUATION", false)?,
            exclude_uppercase: flag(lookup, "EXCLUDE_UPPERCASE", false)?,
            exclude_lowercase: flag(lookup, "EXCLUDE_LOWERCASE", false)?,
            require_each_included_type: flag(lookup, "REQUIRE_EACH_INCLUDED_TYPE", true)?,
        };
        if policy.exclude_numbers && policy.exclude_punctuation && policy.exclude_uppercase && policy.exclude_lowercase
        {
            return Err(Error::Config {
                variable: "EXCLUDE_NUMBERS",
                problem: "and EXCLUDE_PUNCTUATION, EXCLUDE_UPPERCASE, EXCLUDE_LOWERCASE exclude every character".into(),
            });
        }
        Ok(policy)
    }
}

/// AWS's templates read `true`, `1`, `y`, `yes` as true and anything else as false, so a
/// typo silently weakens the policy. Here a value that is neither is an error, and an empty
/// one means the default.
fn flag(lookup: &impl Fn(&str) -> Option<String>, variable: &'static str, default: bool) -> Result<bool, Error> {
    let Some(text) = lookup(variable).filter(|text| !text.trim().is_empty()) else { return Ok(default) };
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "y" | "yes" => Ok(true),
        "false" | "0" | "n" | "no" => Ok(false),
        _ => Err(Error::Config { variable, problem: "must be true or false (true/1/y/yes or false/0/n/no)".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn policy(vars: &[(&str, &str)]) -> Result<PasswordPolicy, Error> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        PasswordPolicy::from_lookup(&|name| vars.get(name).cloned(), ":/@\"'\\")
    }

    #[test]
    fn defaults_are_those_of_the_aws_templates() {
        assert_eq!(
            policy(&[]).unwrap(),
            PasswordPolicy {
                length: 32,
                exclude_characters: ":/@\"'\\".into(),
                exclude_numbers: false,
                exclude_punctuation: false,
                exclude_uppercase: false,
                exclude_lowercase: false,
                require_each_included_type: true,
            }
        );
    }

    #[test]
    fn reads_every_variable() {
        let p = policy(&[
            ("PASSWORD_LENGTH", "64"),
            ("EXCLUDE_CHARACTERS", "abc"),
            ("EXCLUDE_NUMBERS", "yes"),
            ("EXCLUDE_PUNCTUATION", "TRUE"),
            ("EXCLUDE_UPPERCASE", "1"),
            ("EXCLUDE_LOWERCASE", "n"),
            ("REQUIRE_EACH_INCLUDED_TYPE", "false"),
        ])
        .unwrap();
        assert_eq!(p.length, 64);
        assert_eq!(p.exclude_characters, "abc");
        assert!(p.exclude_numbers && p.exclude_punctuation && p.exclude_uppercase);
        assert!(!p.exclude_lowercase && !p.require_each_included_type);
    }

    #[test]
    fn an_empty_exclude_characters_excludes_nothing() {
        assert_eq!(policy(&[("EXCLUDE_CHARACTERS", "")]).unwrap().exclude_characters, "");
    }

    #[test]
    fn rejects_values_it_cannot_read_naming_the_variable() {
        let err = policy(&[("PASSWORD_LENGTH", "long")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: environment variable PASSWORD_LENGTH must be a whole number from 1 to 4096"
        );
        assert!(policy(&[("PASSWORD_LENGTH", "0")]).is_err());
        assert!(policy(&[("PASSWORD_LENGTH", "4097")]).is_err());
        let err = policy(&[("EXCLUDE_NUMBERS", "ture")]).unwrap_err();
        assert!(err.to_string().contains("EXCLUDE_NUMBERS"));
    }

    #[test]
    fn an_empty_flag_means_its_default() {
        assert!(policy(&[("REQUIRE_EACH_INCLUDED_TYPE", "")]).unwrap().require_each_included_type);
        assert!(!policy(&[("EXCLUDE_NUMBERS", " ")]).unwrap().exclude_numbers);
    }

    #[test]
    fn rejects_a_policy_that_excludes_everything() {
        let all = [
            ("EXCLUDE_NUMBERS", "1"),
            ("EXCLUDE_PUNCTUATION", "1"),
            ("EXCLUDE_UPPERCASE", "1"),
            ("EXCLUDE_LOWERCASE", "1"),
        ];
        assert!(policy(&all).is_err());
    }
}

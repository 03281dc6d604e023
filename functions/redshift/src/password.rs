//! Redshift's password rules and the md5 form in which a new password is sent.
//!
//! Redshift takes a plain-text password of 8 to 64 characters with at least one upper-case
//! letter, one lower-case letter and one digit, made of ASCII 33 to 126 except `'`, `"`, `\`,
//! `/` and `@` (so no space either). Its md5 form (`md5` followed by the hex MD5 of the password
//! and the user name) is accepted instead and carries no plain text.

use rotation::{Error, PasswordPolicy};

/// The printable ASCII characters Redshift refuses in a password.
pub const REFUSED: [char; 5] = ['\'', '"', '\\', '/', '@'];

pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 64;

/// What is wrong with `password` for Redshift, naming the rule and never a character of it.
pub fn problem(password: &str) -> Option<String> {
    let length = password.chars().count();
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Some(format!("it is {length} characters long; Redshift requires {MIN_LENGTH} to {MAX_LENGTH}"));
    }
    if password.chars().any(|c| !matches!(c, '!'..='~') || REFUSED.contains(&c)) {
        return Some("it holds a character Redshift refuses (outside ASCII 33-126, or ' \" \\ / @)".into());
    }
    let missing: Vec<&str> = [
        (password.chars().any(|c| c.is_ascii_uppercase()), "an upper-case letter"),
        (password.chars().any(|c| c.is_ascii_lowercase()), "a lower-case letter"),
        (password.chars().any(|c| c.is_ascii_digit()), "a digit"),
    ]
    .into_iter()
    .filter(|(present, _)| !present)
    .map(|(_, what)| what)
    .collect();
    (!missing.is_empty()).then(|| format!("it lacks {}, which Redshift requires", missing.join(" and ")))
}

/// Refuses a policy under which `GetRandomPassword` could return a password Redshift refuses.
pub fn check_policy(policy: &PasswordPolicy) -> Result<(), Error> {
    let refuse = |variable: &'static str, problem: String| Err(Error::Config { variable, problem });
    if !(MIN_LENGTH as i64..=MAX_LENGTH as i64).contains(&policy.length) {
        return refuse("PASSWORD_LENGTH", format!("must be {MIN_LENGTH} to {MAX_LENGTH} for Redshift"));
    }
    for (excluded, variable, what) in [
        (policy.exclude_uppercase, "EXCLUDE_UPPERCASE", "an upper-case letter"),
        (policy.exclude_lowercase, "EXCLUDE_LOWERCASE", "a lower-case letter"),
        (policy.exclude_numbers, "EXCLUDE_NUMBERS", "a digit"),
    ] {
        if excluded {
            return refuse(variable, format!("must be false: Redshift requires {what} in every password"));
        }
    }
    if !policy.require_each_included_type {
        return refuse(
            "REQUIRE_EACH_INCLUDED_TYPE",
            "must be true: Redshift requires an upper-case letter, a lower-case letter and a digit in every password"
                .into(),
        );
    }
    let excluded = &policy.exclude_characters;
    let allowed: Vec<char> = REFUSED.iter().copied().filter(|c| !excluded.contains(*c)).collect();
    if !allowed.is_empty() {
        let list: Vec<String> = allowed.iter().map(char::to_string).collect();
        return refuse(
            "EXCLUDE_CHARACTERS",
            format!("must include {}: Redshift refuses these characters in a password", list.join(" ")),
        );
    }
    for (class, what) in [
        (('A'..='Z').collect::<Vec<_>>(), "every upper-case letter"),
        (('a'..='z').collect(), "every lower-case letter"),
        (('0'..='9').collect(), "every digit"),
    ] {
        if class.iter().all(|c| excluded.contains(*c)) {
            return refuse(
                "EXCLUDE_CHARACTERS",
                format!("excludes {what}, and Redshift requires one in every password"),
            );
        }
    }
    Ok(())
}

/// The md5 form Redshift stores: `md5` and the hex MD5 of the password followed by the user name.
pub fn md5_form(password: &str, username: &str) -> String {
    postgres_protocol::password::md5(password.as_bytes(), username)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const DEFAULT_EXCLUDED: &str = "/@\"'\\:";

    fn policy(vars: &[(&str, &str)]) -> Result<PasswordPolicy, Error> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let policy = PasswordPolicy::from_lookup(&|name| vars.get(name).cloned(), DEFAULT_EXCLUDED)?;
        check_policy(&policy).map(|()| policy)
    }

    #[test]
    fn the_default_policy_is_valid_for_redshift() {
        let p = policy(&[]).unwrap();
        assert_eq!(p.length, 32);
        assert!(p.require_each_included_type);
        for c in REFUSED {
            assert!(p.exclude_characters.contains(c), "{c} is excluded by default");
        }
    }

    #[test]
    fn an_impossible_policy_is_refused_naming_the_variable() {
        for (vars, variable) in [
            (vec![("PASSWORD_LENGTH", "7")], "PASSWORD_LENGTH"),
            (vec![("PASSWORD_LENGTH", "65")], "PASSWORD_LENGTH"),
            (vec![("EXCLUDE_UPPERCASE", "true")], "EXCLUDE_UPPERCASE"),
            (vec![("EXCLUDE_LOWERCASE", "yes")], "EXCLUDE_LOWERCASE"),
            (vec![("EXCLUDE_NUMBERS", "1")], "EXCLUDE_NUMBERS"),
            (vec![("REQUIRE_EACH_INCLUDED_TYPE", "false")], "REQUIRE_EACH_INCLUDED_TYPE"),
            (vec![("EXCLUDE_CHARACTERS", ":")], "EXCLUDE_CHARACTERS"),
            (vec![("EXCLUDE_CHARACTERS", "/@\"'\\0123456789")], "EXCLUDE_CHARACTERS"),
        ] {
            let err = policy(&vars).unwrap_err();
            assert!(err.to_string().contains(variable), "{vars:?}: {err}");
            assert_eq!(err.kind(), "InvalidConfiguration");
        }
        assert!(policy(&[("PASSWORD_LENGTH", "8"), ("EXCLUDE_PUNCTUATION", "true")]).is_ok());
        assert!(policy(&[("PASSWORD_LENGTH", "64"), ("EXCLUDE_CHARACTERS", "/@\"'\\")]).is_ok());
    }

    #[test]
    fn the_rules_of_redshift() {
        assert_eq!(problem("Abcdefg1"), None);
        assert_eq!(problem(&format!("A1{}", "b".repeat(62))), None);
        assert!(problem("Abcdef1").unwrap().contains("7 characters long"));
        assert!(problem(&format!("A1{}", "b".repeat(63))).unwrap().contains("65 characters"));
        for refused in ["Abcdefg1'", "Abcdefg1\"", "Abcdefg1\\", "Abcdefg1/", "Abcdefg1@", "Abcd efg1", "Abcdéfg1"] {
            assert!(problem(refused).unwrap().contains("refuses"), "{refused}");
        }
        assert!(problem("abcdefg1").unwrap().contains("an upper-case letter"));
        assert!(problem("ABCDEFG1").unwrap().contains("a lower-case letter"));
        assert_eq!(problem("Abcdefgh").unwrap(), "it lacks a digit, which Redshift requires");
        assert!(!problem("zzzzzzzz").unwrap().contains("zzzz"), "the message holds no part of the password");
    }

    #[test]
    fn the_md5_form_salts_with_the_user_name() {
        // md5("secret" || "app"), computed independently.
        assert_eq!(md5_form("secret", "app"), "md56a422f785c9e20873908ce25d1736ae2");
        assert_ne!(md5_form("secret", "app"), md5_form("secret", "app_clone"));
    }
}

use std::fmt;
use std::str::FromStr;

/// How a secret's credentials are rotated.
///
/// The rule that picks one: the secret's `rotation_strategy` field wins; else the
/// function's `ROTATION_STRATEGY` variable; else alternating users when the secret has a
/// `masterarn` (as AWS's multi-user template expects), single user when it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The user changes its own password (AWS's single-user template).
    SingleUser,
    /// Two users take turns, `name` and `name_clone`; the master secret's user sets the
    /// password of the one that is not current (AWS's multi-user template).
    AlternatingUsers,
    /// The master secret's user sets the user's password: for users that may not change
    /// their own, or whose current and previous passwords both stopped working.
    SingleUserWithMaster,
    /// The user changes its own password and keeps the old one working until the next
    /// rotation (MySQL 8.0.14+ `RETAIN CURRENT PASSWORD`): zero downtime for one user.
    DualPassword,
    /// The password is changed through the service's management API rather than SQL (an
    /// admin user whose password only the API can set: Redshift's `ModifyCluster` and
    /// Redshift Serverless's `UpdateNamespace`). Only targets that implement
    /// [`crate::Target::set_password_by_api`] support it.
    AdminApi,
}

impl Strategy {
    pub const NAMES: &'static str =
        "single-user, alternating-users, single-user-with-master, dual-password or admin-api";

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::SingleUser => "single-user",
            Strategy::AlternatingUsers => "alternating-users",
            Strategy::SingleUserWithMaster => "single-user-with-master",
            Strategy::DualPassword => "dual-password",
            Strategy::AdminApi => "admin-api",
        }
    }

    pub fn needs_master(self) -> bool {
        matches!(self, Strategy::AlternatingUsers | Strategy::SingleUserWithMaster)
    }

    /// Applies the rule above.
    pub fn choose(from_secret: Option<Strategy>, from_environment: Option<Strategy>, has_masterarn: bool) -> Strategy {
        from_secret.or(from_environment).unwrap_or(if has_masterarn {
            Strategy::AlternatingUsers
        } else {
            Strategy::SingleUser
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "single-user" | "single" => Ok(Strategy::SingleUser),
            "alternating-users" | "alternating" | "multi-user" => Ok(Strategy::AlternatingUsers),
            "single-user-with-master" => Ok(Strategy::SingleUserWithMaster),
            "dual-password" => Ok(Strategy::DualPassword),
            "admin-api" => Ok(Strategy::AdminApi),
            _ => Err(()),
        }
    }
}

/// The other user of an alternating pair: `name` <-> `name_clone`, AWS's suffix.
pub fn alternate_username(username: &str) -> String {
    match username.strip_suffix(CLONE_SUFFIX) {
        Some(main) if !main.is_empty() => main.to_owned(),
        _ => format!("{username}{CLONE_SUFFIX}"),
    }
}

/// The user that owns the privileges of an alternating pair: the name without `_clone`.
pub fn main_username(username: &str) -> &str {
    match username.strip_suffix(CLONE_SUFFIX) {
        Some(main) if !main.is_empty() => main,
        _ => username,
    }
}

const CLONE_SUFFIX: &str = "_clone";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_wins_then_the_environment_then_masterarn() {
        use Strategy::*;
        assert_eq!(Strategy::choose(Some(SingleUser), Some(AlternatingUsers), true), SingleUser);
        assert_eq!(Strategy::choose(None, Some(SingleUserWithMaster), false), SingleUserWithMaster);
        assert_eq!(Strategy::choose(None, None, true), AlternatingUsers);
        assert_eq!(Strategy::choose(None, None, false), SingleUser);
    }

    #[test]
    fn reads_the_documented_names() {
        assert_eq!("single-user".parse(), Ok(Strategy::SingleUser));
        assert_eq!("alternating-users".parse(), Ok(Strategy::AlternatingUsers));
        assert_eq!("ALTERNATING_USERS".parse(), Ok(Strategy::AlternatingUsers));
        assert_eq!("single-user-with-master".parse(), Ok(Strategy::SingleUserWithMaster));
        assert_eq!("dual-password".parse(), Ok(Strategy::DualPassword));
        assert_eq!("admin-api".parse(), Ok(Strategy::AdminApi));
        assert_eq!("rotate-everything".parse::<Strategy>(), Err(()));
    }

    #[test]
    fn alternates_between_name_and_name_clone() {
        assert_eq!(alternate_username("app"), "app_clone");
        assert_eq!(alternate_username("app_clone"), "app");
        assert_eq!(alternate_username("_clone"), "_clone_clone");
        assert_eq!(main_username("app_clone"), "app");
        assert_eq!(main_username("app"), "app");
    }
}

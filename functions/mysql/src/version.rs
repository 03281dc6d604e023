//! What server the function talks to, read from `SELECT VERSION()`, and what it can do.

use std::fmt;

/// The server families this function rotates passwords on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    MySql,
    MariaDb,
    AuroraMySql,
}

/// A server version, parsed from `SELECT VERSION()`.
///
/// Aurora MySQL reports its own release (`8.0.mysql_aurora.3.05.2`) rather than a MySQL patch
/// level; its `patch` is then the MySQL release the Aurora line is compatible with at least
/// (5.6.10 for Aurora 1, 5.7.12 for Aurora 2, 8.0.23 for Aurora 3), which is what the feature
/// checks below need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub flavour: Flavour,
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
    /// Aurora's own release, e.g. `3.05.2`.
    pub aurora: Option<String>,
}

impl ServerVersion {
    /// Parses the text of `SELECT VERSION()` (or of the handshake): `10.11.14-MariaDB-0+deb12u2`,
    /// `5.5.5-10.6.12-MariaDB` (MariaDB's replication prefix), `8.0.36`, `5.7.44-log`,
    /// `8.0.mysql_aurora.3.05.2`, `9.1.0`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let unreadable = || format!("cannot read the server version {:?}", text.chars().take(80).collect::<String>());
        let text = text.trim();
        let is_mariadb = text.to_ascii_lowercase().contains("mariadb");
        // MariaDB prefixes its version with `5.5.5-` where old replication code expects MySQL 5.
        let text = if is_mariadb { text.strip_prefix("5.5.5-").unwrap_or(text) } else { text };

        if let Some((base, aurora)) = text.split_once(".mysql_aurora.") {
            let mut numbers = base.split('.').map(|n| n.parse::<u16>().ok());
            let (Some(Some(major)), Some(Some(minor)), None) = (numbers.next(), numbers.next(), numbers.next()) else {
                return Err(unreadable());
            };
            let patch = match (major, minor) {
                (5, 6) => 10,
                (5, 7) => 12,
                (8, 0) => 23,
                _ => 0,
            };
            let release: String = aurora.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            if release.is_empty() {
                return Err(unreadable());
            }
            return Ok(ServerVersion { flavour: Flavour::AuroraMySql, major, minor, patch, aurora: Some(release) });
        }

        let numeric: &str = &text[..text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len())];
        let parts: Vec<&str> = numeric.split('.').collect();
        let number = |i: usize| parts.get(i).and_then(|p| p.parse::<u16>().ok());
        let (Some(major), Some(minor)) = (number(0), number(1)) else {
            return Err(unreadable());
        };
        let patch = match parts.get(2) {
            None | Some(&"") => 0,
            Some(_) => number(2).ok_or_else(unreadable)?,
        };
        let flavour = if is_mariadb { Flavour::MariaDb } else { Flavour::MySql };
        Ok(ServerVersion { flavour, major, minor, patch, aurora: None })
    }

    fn at_least(&self, major: u16, minor: u16, patch: u16) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }

    /// `ALTER USER ... IDENTIFIED ...`: MySQL 5.7.6 and MariaDB 10.2. Older servers only have
    /// `SET PASSWORD` (and `CREATE USER` without `REQUIRE` or resource limits).
    pub fn has_alter_user(&self) -> bool {
        match self.flavour {
            Flavour::MariaDb => self.at_least(10, 2, 0),
            Flavour::MySql | Flavour::AuroraMySql => self.at_least(5, 7, 6),
        }
    }

    /// `CREATE USER ... ACCOUNT LOCK` / `ALTER USER ... ACCOUNT UNLOCK`: MySQL 5.7.6, MariaDB 10.4.2.
    pub fn has_account_lock(&self) -> bool {
        match self.flavour {
            Flavour::MariaDb => self.at_least(10, 4, 2),
            Flavour::MySql | Flavour::AuroraMySql => self.at_least(5, 7, 6),
        }
    }

    /// Dual passwords (`RETAIN CURRENT PASSWORD`, `DISCARD OLD PASSWORD`): MySQL 8.0.14.
    pub fn has_dual_passwords(&self) -> bool {
        match self.flavour {
            Flavour::MariaDb => false,
            Flavour::MySql | Flavour::AuroraMySql => self.at_least(8, 0, 14),
        }
    }

    /// Roles (MariaDB 10.0.5; MySQL 8.0): MariaDB lists them in `mysql.user` with `is_role`.
    pub fn has_mariadb_roles(&self) -> bool {
        self.flavour == Flavour::MariaDb && self.at_least(10, 0, 5)
    }

    /// MySQL 8.0 keeps default roles in `mysql.default_roles` (MariaDB prints them in SHOW GRANTS).
    pub fn has_mysql_default_roles(&self) -> bool {
        self.flavour != Flavour::MariaDb && self.major >= 8
    }

    /// MySQL's `max_execution_time`, which bounds SELECT statements (5.7.8; Aurora MySQL 2 and 3).
    pub fn has_max_execution_time(&self) -> bool {
        self.flavour != Flavour::MariaDb && self.at_least(5, 7, 8)
    }

    /// MariaDB's `max_statement_time` resource limit (10.1.1).
    pub fn has_max_statement_time(&self) -> bool {
        self.flavour == Flavour::MariaDb && self.at_least(10, 1, 1)
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ServerVersion { major, minor, patch, .. } = self;
        match (self.flavour, &self.aurora) {
            (Flavour::AuroraMySql, Some(release)) => write!(f, "Aurora MySQL {release} (MySQL {major}.{minor})"),
            (Flavour::AuroraMySql, None) => write!(f, "Aurora MySQL (MySQL {major}.{minor})"),
            (Flavour::MariaDb, _) => write!(f, "MariaDB {major}.{minor}.{patch}"),
            (Flavour::MySql, _) => write!(f, "MySQL {major}.{minor}.{patch}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ServerVersion {
        ServerVersion::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn triple(v: &ServerVersion) -> (Flavour, u16, u16, u16) {
        (v.flavour, v.major, v.minor, v.patch)
    }

    #[test]
    fn reads_the_versions_servers_report() {
        use Flavour::*;
        assert_eq!(triple(&parse("10.11.14-MariaDB-0+deb12u2")), (MariaDb, 10, 11, 14));
        assert_eq!(triple(&parse("10.11.14-MariaDB-0+deb12u2-log")), (MariaDb, 10, 11, 14));
        assert_eq!(triple(&parse("5.5.5-10.6.12-MariaDB")), (MariaDb, 10, 6, 12));
        assert_eq!(triple(&parse("5.5.5-10.1.48-MariaDB-1~bionic")), (MariaDb, 10, 1, 48));
        assert_eq!(triple(&parse("11.4.2-MariaDB-log")), (MariaDb, 11, 4, 2));
        assert_eq!(triple(&parse("8.0.36")), (MySql, 8, 0, 36));
        assert_eq!(triple(&parse("8.0.36-0ubuntu0.22.04.1")), (MySql, 8, 0, 36));
        assert_eq!(triple(&parse("8.0.36-28")), (MySql, 8, 0, 36));
        assert_eq!(triple(&parse("5.7.44-log")), (MySql, 5, 7, 44));
        assert_eq!(triple(&parse("5.6.51")), (MySql, 5, 6, 51));
        assert_eq!(triple(&parse("9.1.0")), (MySql, 9, 1, 0));
        assert_eq!(triple(&parse("8.4.3-commercial")), (MySql, 8, 4, 3));
        // A MySQL that really is 5.5.5 keeps its version: only MariaDB carries the prefix.
        assert_eq!(triple(&parse("5.5.5")), (MySql, 5, 5, 5));
    }

    #[test]
    fn reads_aurora_versions_with_their_mysql_baseline() {
        let v = parse("8.0.mysql_aurora.3.05.2");
        assert_eq!(triple(&v), (Flavour::AuroraMySql, 8, 0, 23));
        assert_eq!(v.aurora.as_deref(), Some("3.05.2"));
        assert_eq!(v.to_string(), "Aurora MySQL 3.05.2 (MySQL 8.0)");
        assert_eq!(triple(&parse("5.7.mysql_aurora.2.11.2")), (Flavour::AuroraMySql, 5, 7, 12));
    }

    #[test]
    fn refuses_what_is_not_a_version() {
        for text in ["", "MariaDB", "eight", "8", "x.y.z", "8.0.mysql_aurora.", "70000.1.1"] {
            assert!(ServerVersion::parse(text).is_err(), "{text:?}");
        }
        assert!(ServerVersion::parse("garbage").unwrap_err().contains("\"garbage\""));
    }

    #[test]
    fn alter_user_from_mysql_5_7_6_and_mariadb_10_2() {
        for (text, expected) in [
            ("5.7.5", false),
            ("5.7.6", true),
            ("5.7.44-log", true),
            ("5.6.51", false),
            ("8.0.36", true),
            ("9.1.0", true),
            ("10.1.48-MariaDB", false),
            ("10.2.0-MariaDB", true),
            ("5.5.5-10.6.12-MariaDB", true),
            ("5.7.mysql_aurora.2.11.2", true),
            ("5.6.mysql_aurora.1.23.4", false),
        ] {
            assert_eq!(parse(text).has_alter_user(), expected, "{text}");
        }
    }

    #[test]
    fn account_lock_from_mysql_5_7_6_and_mariadb_10_4_2() {
        for (text, expected) in
            [("5.7.6", true), ("5.7.5", false), ("10.4.2-MariaDB", true), ("10.3.39-MariaDB", false), ("9.1.0", true)]
        {
            assert_eq!(parse(text).has_account_lock(), expected, "{text}");
        }
    }

    #[test]
    fn dual_passwords_from_mysql_8_0_14_never_on_mariadb() {
        for (text, expected) in [
            ("8.0.13", false),
            ("8.0.14", true),
            ("8.4.3", true),
            ("9.1.0", true),
            ("5.7.44", false),
            ("8.0.mysql_aurora.3.05.2", true),
            ("10.11.14-MariaDB-0+deb12u2", false),
            ("11.4.2-MariaDB", false),
        ] {
            assert_eq!(parse(text).has_dual_passwords(), expected, "{text}");
        }
    }

    #[test]
    fn statement_bounds_from_mysql_5_7_8_and_mariadb_10_1_1() {
        for (text, execution, statement) in [
            ("5.7.7", false, false),
            ("5.7.8", true, false),
            ("8.0.36", true, false),
            ("5.7.mysql_aurora.2.11.2", true, false),
            ("8.0.mysql_aurora.3.05.2", true, false),
            ("5.6.mysql_aurora.1.22.0", false, false),
            ("5.5.5-10.1.0-MariaDB", false, false),
            ("10.1.1-MariaDB", false, true),
            ("10.11.14-MariaDB-0+deb12u2", false, true),
        ] {
            assert_eq!(parse(text).has_max_execution_time(), execution, "{text}");
            assert_eq!(parse(text).has_max_statement_time(), statement, "{text}");
        }
    }

    #[test]
    fn says_what_the_server_is() {
        assert_eq!(parse("10.11.14-MariaDB-0+deb12u2").to_string(), "MariaDB 10.11.14");
        assert_eq!(parse("9.1.0").to_string(), "MySQL 9.1.0");
    }
}

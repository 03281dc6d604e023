//! Reading `SHOW GRANTS` lines and writing them again for another account.
//!
//! The server prints each privilege of an account as a statement that ends with the account:
//! `GRANT SELECT ON `shop`.`orders` TO `app`@`%` WITH GRANT OPTION`. To give the same privilege
//! to a clone, the statement is read token by token up to its first unquoted `TO` (`FROM` for
//! `REVOKE`, `FOR` for `SET DEFAULT ROLE`), the quoted account after it is decoded and checked
//! to be exactly the expected one, and the statement is written again with the clone's
//! account in its place. The user name is never searched for or replaced as text.
//!
//! What follows the account is never copied: MariaDB prints the password hash
//! (`IDENTIFIED BY PASSWORD '...'`), TLS requirements and resource limits there, the latter
//! with strings it does not escape. Only a final `WITH GRANT OPTION` / `WITH ADMIN OPTION`
//! is kept; TLS requirements and limits are copied from `mysql.user` instead.

use crate::sql::SqlMode;

/// A privilege statement of `SHOW GRANTS`, without its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The statement up to and including the keyword before the account, as the server
    /// printed it: `GRANT SELECT ON `shop`.`orders` TO`.
    pub head: String,
    /// `GRANT OPTION` or `ADMIN OPTION`, when the statement ends with it.
    pub option: Option<&'static str>,
}

impl Grant {
    /// The statement for another account (an account literal such as `'app'@'%'`).
    pub fn for_account(&self, account: &str) -> String {
        match self.option {
            Some(option) => format!("{} {account} WITH {option}", self.head),
            None => format!("{} {account}", self.head),
        }
    }
}

/// What a line of `SHOW GRANTS` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A privilege, role or default role to give to the clone.
    Replay(Grant),
    /// `GRANT USAGE ON *.* TO ...`: no privilege, only the account's password, TLS and limits.
    Usage,
    /// `GRANT PROXY ON ...`: servers print these without escaping the names, so they are read
    /// from `mysql.proxies_priv` instead.
    Proxy,
}

/// Reads one line of `SHOW GRANTS FOR 'user'@'host'`. Errors never quote the line, which can
/// hold the account's password hash.
pub fn parse_line(line: &str, user: &str, host: &str, mode: SqlMode) -> Result<Line, String> {
    let line = line.trim();
    let upper = line.to_ascii_uppercase();
    let keyword = if upper.starts_with("GRANT PROXY ON ") {
        return Ok(Line::Proxy);
    } else if upper.starts_with("GRANT ") {
        "TO"
    } else if upper.starts_with("REVOKE ") {
        "FROM"
    } else if upper.starts_with("SET DEFAULT ROLE ") {
        "FOR"
    } else {
        let first_word: String = line.chars().take_while(|c| c.is_ascii_alphabetic()).take(20).collect();
        return Err(format!("a SHOW GRANTS line starting with {first_word:?} is not understood"));
    };

    let mut scanner = Scanner { text: line, position: 0, mode };
    let keyword_end = scanner.find_keyword(keyword)?;
    let head = line[..keyword_end].to_owned();
    let grantee_user = scanner.quoted()?;
    let grantee_host = if scanner.peek() == Some('@') {
        scanner.position += 1;
        Some(scanner.quoted()?)
    } else {
        None
    };
    if grantee_user != user || grantee_host.as_deref() != Some(host) {
        return Err(format!("a SHOW GRANTS line names another account than {user}@{host} after {keyword}"));
    }
    let tail = &line[scanner.position..];
    let option = match keyword {
        "TO" => final_option(tail)?,
        _ if tail.trim().is_empty() => None,
        _ => return Err(format!("a SHOW GRANTS line has unexpected text after the account following {keyword}")),
    };

    let grant = Grant { head, option };
    let usage_only = grant.head.eq_ignore_ascii_case("GRANT USAGE ON *.* TO");
    if usage_only && grant.option.is_none() { Ok(Line::Usage) } else { Ok(Line::Replay(grant)) }
}

/// The authentication plugin in the output of MySQL's `SHOW CREATE USER`:
/// `CREATE USER `app`@`%` IDENTIFIED WITH 'caching_sha2_password' AS '...' REQUIRE NONE ...`.
pub fn identified_with(statement: &str, mode: SqlMode) -> Result<String, String> {
    let mut scanner = Scanner { text: statement, position: 0, mode };
    scanner.find_keyword("IDENTIFIED")?;
    let rest = scanner.text[scanner.position..].trim_start();
    let Some(after_with) = rest.strip_prefix("WITH ").or_else(|| rest.strip_prefix("with ")) else {
        return Err("SHOW CREATE USER names no authentication plugin".into());
    };
    let after_with = after_with.trim_start();
    if after_with.starts_with(['\'', '`', '"']) {
        let mut plugin = Scanner { text: after_with, position: 0, mode };
        return plugin.quoted();
    }
    let name: String = after_with.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    if name.is_empty() { Err("SHOW CREATE USER names no authentication plugin".into()) } else { Ok(name) }
}

/// The `WITH GRANT OPTION` / `WITH ADMIN OPTION` at the end of what follows the account.
///
/// The text there is `[IDENTIFIED ...] [REQUIRE ...] [WITH <options>]`. The strings of
/// `REQUIRE` may be printed unescaped, so they are not parsed: the options clause is what
/// follows the last ` WITH `, and only when that is made of option keywords and numbers alone
/// (a string always ends with its closing quote, so a ` WITH ` inside one never qualifies).
fn final_option(tail: &str) -> Result<Option<&'static str>, String> {
    let trimmed = tail.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let first = trimmed.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
    if !["IDENTIFIED", "REQUIRE", "WITH"].contains(&first.as_str()) {
        return Err(format!("a SHOW GRANTS line has unexpected text ({first}) after the account"));
    }
    let padded = format!(" {trimmed}");
    let Some(at) = padded.to_ascii_uppercase().rfind(" WITH ") else {
        return Ok(None);
    };
    let options = &padded[at + 6..];
    let words: Vec<String> = options.split_whitespace().map(str::to_ascii_uppercase).collect();
    let mut option = None;
    let mut i = 0;
    while i < words.len() {
        match (words[i].as_str(), words.get(i + 1).map(String::as_str)) {
            ("GRANT", Some("OPTION")) => option = Some("GRANT OPTION"),
            ("ADMIN", Some("OPTION")) => option = Some("ADMIN OPTION"),
            (limit, Some(value))
                if limit.starts_with("MAX_")
                    && limit[4..].bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                    && !value.is_empty()
                    && value.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {}
            // Not an options clause: the last ` WITH ` was inside a string.
            _ => return Ok(None),
        }
        i += 2;
    }
    Ok(option)
}

/// Walks SQL text the server printed, token by token.
struct Scanner<'a> {
    text: &'a str,
    position: usize,
    mode: SqlMode,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.position..].chars().next()
    }

    /// Moves past the first unquoted word equal to `keyword`; returns where it ends.
    fn find_keyword(&mut self, keyword: &str) -> Result<usize, String> {
        while let Some(c) = self.peek() {
            if c == '`' || c == '\'' || c == '"' {
                self.quoted()?;
            } else if c.is_ascii_alphanumeric() || c == '_' || c == '$' {
                let start = self.position;
                let length = self.text[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                    .unwrap_or(self.text.len() - start);
                self.position += length;
                if self.text[start..self.position].eq_ignore_ascii_case(keyword) {
                    return Ok(self.position);
                }
            } else {
                self.position += c.len_utf8();
            }
        }
        Err(format!("no {keyword} in a SHOW GRANTS line"))
    }

    /// Reads a quoted name after optional spaces and returns its value: a backtick (or, with
    /// `ANSI_QUOTES`, double-quote) identifier, where only a doubled quote escapes; or a
    /// string, where a doubled quote and (unless `NO_BACKSLASH_ESCAPES`) a backslash escape.
    fn quoted(&mut self) -> Result<String, String> {
        while self.peek().is_some_and(char::is_whitespace) {
            self.position += 1;
        }
        let Some(quote) = self.peek().filter(|c| ['`', '\'', '"'].contains(c)) else {
            return Err("a SHOW GRANTS line has an unquoted name where a quoted one was expected".into());
        };
        let identifier = quote == '`' || (quote == '"' && self.mode.ansi_quotes);
        let backslash_escapes = !identifier && !self.mode.no_backslash_escapes;
        self.position += 1;
        let mut value = String::new();
        let mut chars = self.text[self.position..].char_indices();
        while let Some((offset, c)) = chars.next() {
            if c == quote {
                if self.text[self.position + offset + 1..].starts_with(quote) {
                    value.push(quote);
                    chars.next();
                    continue;
                }
                self.position += offset + 1;
                return Ok(value);
            }
            if c == '\\' && backslash_escapes {
                match chars.next() {
                    Some((_, escaped)) => value.push(unescape(escaped)),
                    None => break,
                }
                continue;
            }
            value.push(c);
        }
        Err("a SHOW GRANTS line has an unterminated quoted name".into())
    }
}

/// The character a backslash escape in a MySQL string stands for.
fn unescape(c: char) -> char {
    match c {
        '0' => '\0',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'b' => '\u{8}',
        'Z' => '\u{1a}',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODE: SqlMode = SqlMode { no_backslash_escapes: false, ansi_quotes: false };

    fn replay(line: &str, user: &str, host: &str) -> Grant {
        match parse_line(line, user, host, MODE) {
            Ok(Line::Replay(grant)) => grant,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn rewrites_mariadb_grants_for_the_clone() {
        let cases = [
            (
                "GRANT SELECT, INSERT ON `shop`.`orders` TO `app`@`127.0.0.1`",
                "GRANT SELECT, INSERT ON `shop`.`orders` TO 'c'@'h'",
            ),
            (
                "GRANT SELECT (`id`), UPDATE (`id`) ON `shop`.`we``ird` TO `app`@`127.0.0.1` WITH GRANT OPTION",
                "GRANT SELECT (`id`), UPDATE (`id`) ON `shop`.`we``ird` TO 'c'@'h' WITH GRANT OPTION",
            ),
            ("GRANT ALL PRIVILEGES ON `shop`.* TO `app`@`127.0.0.1`", "GRANT ALL PRIVILEGES ON `shop`.* TO 'c'@'h'"),
            (
                "GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `app`@`127.0.0.1`",
                "GRANT EXECUTE ON PROCEDURE `shop`.`p` TO 'c'@'h'",
            ),
            ("GRANT `reader` TO `app`@`127.0.0.1`", "GRANT `reader` TO 'c'@'h'"),
            ("GRANT `r2` TO `app`@`127.0.0.1` WITH ADMIN OPTION", "GRANT `r2` TO 'c'@'h' WITH ADMIN OPTION"),
            ("SET DEFAULT ROLE `reader` FOR `app`@`127.0.0.1`", "SET DEFAULT ROLE `reader` FOR 'c'@'h'"),
        ];
        for (line, expected) in cases {
            assert_eq!(replay(line, "app", "127.0.0.1").for_account("'c'@'h'"), expected);
        }
    }

    #[test]
    fn keeps_grant_option_but_never_the_password_tls_or_limits() {
        let line = "GRANT ALL PRIVILEGES ON *.* TO `m`@`%` IDENTIFIED BY PASSWORD '*EF0CE5016B6C1D5B7E7FF99B08786325140F27F1' WITH GRANT OPTION";
        let grant = replay(line, "m", "%");
        assert_eq!(grant.for_account("'c'@'%'"), "GRANT ALL PRIVILEGES ON *.* TO 'c'@'%' WITH GRANT OPTION");

        let usage = "GRANT USAGE ON *.* TO `app`@`127.0.0.1` IDENTIFIED BY PASSWORD '*2B602296A79E0A8784ACC5C88D92E46588CCA3C3' REQUIRE SSL WITH MAX_QUERIES_PER_HOUR 100 MAX_USER_CONNECTIONS 5";
        assert_eq!(parse_line(usage, "app", "127.0.0.1", MODE), Ok(Line::Usage));
        let global_grant_option = "GRANT USAGE ON *.* TO `app`@`%` WITH GRANT OPTION MAX_USER_CONNECTIONS 5";
        assert_eq!(replay(global_grant_option, "app", "%").option, Some("GRANT OPTION"));
    }

    #[test]
    fn a_with_grant_option_inside_an_unescaped_string_is_not_an_option() {
        // MariaDB prints REQUIRE strings without escaping them.
        let line = "GRANT USAGE ON *.* TO `req`@`%` IDENTIFIED BY PASSWORD '*B69027D44F6E5EDC07F1AEAD1477967B16F28227' REQUIRE ISSUER '/CN=ca' SUBJECT '/CN=a'b\\c WITH GRANT OPTION'";
        assert_eq!(parse_line(line, "req", "%", MODE), Ok(Line::Usage));
        let with_limit = format!("{line} WITH MAX_STATEMENT_TIME 1.500000");
        assert_eq!(parse_line(&with_limit, "req", "%", MODE), Ok(Line::Usage));
        let with_option = format!("{line} WITH GRANT OPTION");
        assert_eq!(replay(&with_option, "req", "%").option, Some("GRANT OPTION"));
    }

    #[test]
    fn finds_the_account_whatever_the_names_hold() {
        // Names that contain the keyword, quotes, backslashes, `@` and the user name itself.
        let user = "TO `x`@`%` o'b\\r%";
        let line = "GRANT SELECT ON `TO ``x``@``%```.`app` TO `TO ``x``@``%`` o'b\\r%`@`%`";
        let grant = replay(line, user, "%");
        assert_eq!(grant.head, "GRANT SELECT ON `TO ``x``@``%```.`app` TO");
        assert_eq!(grant.for_account("'c'@'%'"), "GRANT SELECT ON `TO ``x``@``%```.`app` TO 'c'@'%'");
        // MySQL 5.7 quotes accounts as strings.
        let grant = replay("GRANT SELECT ON `db`.* TO 'o''b\\\\r'@'10.0.%'", "o'b\\r", "10.0.%");
        assert_eq!(grant.head, "GRANT SELECT ON `db`.* TO");
    }

    #[test]
    fn reads_mysql_8_lines() {
        let grant = replay("GRANT `reader`@`%`,`writer`@`%` TO `app`@`%`", "app", "%");
        assert_eq!(grant.for_account("'c'@'%'"), "GRANT `reader`@`%`,`writer`@`%` TO 'c'@'%'");
        let grant = replay("GRANT BACKUP_ADMIN,XA_RECOVER_ADMIN ON *.* TO `app`@`%` WITH GRANT OPTION", "app", "%");
        assert_eq!(grant.option, Some("GRANT OPTION"));
        let revoke = replay("REVOKE INSERT ON `mysql`.* FROM `app`@`%`", "app", "%");
        assert_eq!(revoke.for_account("'c'@'%'"), "REVOKE INSERT ON `mysql`.* FROM 'c'@'%'");
        assert_eq!(
            parse_line("GRANT PROXY ON 'root'@'localhost' TO 'o'b\\r%'@'%'", "o'b\\r%", "%", MODE),
            Ok(Line::Proxy)
        );
    }

    #[test]
    fn reads_identifiers_in_ansi_quotes_mode() {
        let ansi = SqlMode { no_backslash_escapes: false, ansi_quotes: true };
        let line = "GRANT SELECT ON \"shop\".\"a\\\"\"b\" TO \"app\"@\"%\"";
        match parse_line(line, "app", "%", ansi) {
            Ok(Line::Replay(grant)) => assert_eq!(grant.head, "GRANT SELECT ON \"shop\".\"a\\\"\"b\" TO"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_the_plugin_of_show_create_user() {
        let mysql8 = "CREATE USER `app IDENTIFIED WITH x`@`%` IDENTIFIED WITH 'caching_sha2_password' AS '$A$005$\\'q' REQUIRE NONE PASSWORD EXPIRE DEFAULT ACCOUNT UNLOCK";
        assert_eq!(identified_with(mysql8, MODE).unwrap(), "caching_sha2_password");
        let mysql57 = "CREATE USER 'app'@'%' IDENTIFIED WITH 'mysql_native_password' AS '*2B602296A79E0A8784ACC5C88D92E46588CCA3C3' REQUIRE NONE";
        assert_eq!(identified_with(mysql57, MODE).unwrap(), "mysql_native_password");
        assert_eq!(
            identified_with("CREATE USER `a`@`%` IDENTIFIED WITH mysql_native_password", MODE).unwrap(),
            "mysql_native_password"
        );
        assert!(identified_with("CREATE USER `a`@`%` REQUIRE NONE", MODE).is_err());
    }

    #[test]
    fn refuses_lines_it_cannot_read_without_quoting_them() {
        let refuse = |line: &str| {
            let error = parse_line(line, "app", "%", MODE).unwrap_err();
            assert!(!error.contains("*2B60"), "{error}");
            error
        };
        assert!(refuse("GRANT SELECT ON `db`.* TO `other`@`%`").contains("another account"));
        assert!(refuse("GRANT SELECT ON `db`.* TO `app`@`10.%`").contains("another account"));
        assert!(refuse("GRANT SELECT ON `db`.* TO `app`").contains("another account"));
        assert!(refuse("GRANT SELECT ON `db`.* TO app@`%`").contains("unquoted"));
        assert!(refuse("GRANT SELECT ON `db`.* TO `app`@`%` AS '*2B60'").contains("unexpected"));
        assert!(refuse("DENY SELECT ON x TO `app`@`%`").contains("\"DENY\""));
        assert!(refuse("GRANT SELECT ON `db`.* TO `app`@`%").contains("unterminated"));
        assert!(refuse("GRANT SELECT ON `db`.*").contains("no TO"));
        assert!(refuse("SET DEFAULT ROLE `r` FOR `app`@`%` extra").contains("unexpected"));
    }
}

//! Keeping the alternate user (`name_clone`) a twin of the main user, on every rotation.
//!
//! Redshift has no role membership between users (PostgreSQL's `GRANT main TO clone`) and no
//! `SET ROLE`, so the clone gets what the main user has, one by one: its groups, its Redshift
//! roles, and the database, schema and table privileges the main user holds (its own objects
//! included). Only what the clone lacks is granted, so a rotation redoes nothing, and a grant
//! the main user received since the last rotation reaches the clone at this one.

use rotation::{DatabaseSecret, Error};
use tokio_postgres::types::Type;

use postgres_rotation::session::{Session, target_error};

use crate::Flavour;

const READING: &str = "reading the users' groups, roles and privileges";

/// Everything about both users the statements depend on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    pub main_exists: bool,
    pub clone_exists: bool,
    pub main_groups: Vec<String>,
    pub clone_groups: Vec<String>,
    /// Redshift roles (`svv_user_grants`); empty on PostgreSQL.
    pub main_roles: Vec<String>,
    pub clone_roles: Vec<String>,
    /// The main user's privileges, each with whether the clone holds it already.
    pub privileges: Vec<Privilege>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privilege {
    pub on: Object,
    /// `SELECT`, `USAGE`, `TEMPORARY`, ...
    pub privilege: String,
    pub clone_has: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Database(String),
    Schema(String),
    Table { schema: String, name: String },
}

/// The privileges copied, as `has_*_privilege` names them on Redshift and PostgreSQL alike.
const DATABASE_PRIVILEGES: [&str; 2] = ["CREATE", "TEMPORARY"];
const SCHEMA_PRIVILEGES: [&str; 2] = ["CREATE", "USAGE"];
const TABLE_PRIVILEGES: [&str; 5] = ["SELECT", "INSERT", "UPDATE", "DELETE", "REFERENCES"];

fn privilege_list(names: &[&str]) -> String {
    names.iter().map(|p| format!("SELECT '{p}' AS privilege")).collect::<Vec<_>>().join(" UNION ALL ")
}

/// One query for the main user's (`$1`) database, schema and table privileges, and, when the
/// clone (`$2`) exists, whether it holds each already. System schemas are left out.
pub fn privileges_sql(clone_exists: bool) -> String {
    let clone = |check: &str| if clone_exists { check.replace("$1", "$2") } else { "false".to_owned() };
    let database_check = "has_database_privilege($1, d.datname, p.privilege)";
    let schema_check = "has_schema_privilege($1, n.nspname, p.privilege)";
    let table_check =
        "has_table_privilege($1, quote_ident(t.schemaname) || '.' || quote_ident(t.tablename), p.privilege)";
    format!(
        "SELECT 'database' AS kind, '' AS schema_name, d.datname AS object_name, p.privilege, {clone_database} AS clone_has \
         FROM pg_database d, ({database_privileges}) p WHERE {database_check} \
         UNION ALL \
         SELECT 'schema', '', n.nspname, p.privilege, {clone_schema} \
         FROM pg_namespace n, ({schema_privileges}) p \
         WHERE left(n.nspname, 3) <> 'pg_' AND n.nspname <> 'information_schema' AND {schema_check} \
         UNION ALL \
         SELECT 'table', t.schemaname, t.tablename, p.privilege, {clone_table} \
         FROM (SELECT schemaname, tablename FROM pg_tables UNION ALL SELECT schemaname, viewname FROM pg_views) t, \
              ({table_privileges}) p \
         WHERE left(t.schemaname, 3) <> 'pg_' AND t.schemaname <> 'information_schema' AND {table_check}",
        clone_database = clone(database_check),
        clone_schema = clone(schema_check),
        clone_table = clone(table_check),
        database_privileges = privilege_list(&DATABASE_PRIVILEGES),
        schema_privileges = privilege_list(&SCHEMA_PRIVILEGES),
        table_privileges = privilege_list(&TABLE_PRIVILEGES),
    )
}

/// Both users and their groups (`pg_group` exists on Redshift and, for compatibility, PostgreSQL).
const USERS_AND_GROUPS_SQL: &str = "SELECT u.usename, g.groname FROM pg_user u \
     LEFT JOIN pg_group g ON u.usesysid = ANY (g.grolist) WHERE u.usename IN ($1, $2)";

/// The Redshift roles granted to both users.
pub const ROLES_SQL: &str = "SELECT user_name, role_name FROM svv_user_grants WHERE user_name IN ($1, $2)";

/// Reads the [`Facts`] as the master user.
pub async fn read_facts(
    master: &Session,
    flavour: Flavour,
    main: &str,
    alternate: &DatabaseSecret,
) -> Result<Facts, Error> {
    let clone = alternate.username.as_str();
    let unreadable = |e: tokio_postgres::Error| target_error(READING, alternate, &e);
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] = [(&main, Type::TEXT), (&clone, Type::TEXT)];
    let mut facts = Facts::default();
    for row in master.rows(READING, alternate, USERS_AND_GROUPS_SQL, &params).await? {
        let user: String = row.try_get(0).map_err(unreadable)?;
        let group: Option<String> = row.try_get(1).map_err(unreadable)?;
        let (exists, groups) = if user == main {
            (&mut facts.main_exists, &mut facts.main_groups)
        } else {
            (&mut facts.clone_exists, &mut facts.clone_groups)
        };
        *exists = true;
        groups.extend(group);
    }
    if flavour == Flavour::Redshift {
        for row in master.rows(READING, alternate, ROLES_SQL, &params).await? {
            let user: String = row.try_get(0).map_err(unreadable)?;
            let role: String = row.try_get(1).map_err(unreadable)?;
            if user == main { facts.main_roles.push(role) } else { facts.clone_roles.push(role) }
        }
    }
    if facts.main_exists && main != clone {
        let sql = privileges_sql(facts.clone_exists);
        let params = if facts.clone_exists { &params[..] } else { &params[..1] };
        for row in master.rows(READING, alternate, &sql, params).await? {
            let kind: String = row.try_get(0).map_err(unreadable)?;
            let schema: String = row.try_get(1).map_err(unreadable)?;
            let name: String = row.try_get(2).map_err(unreadable)?;
            let on = match kind.as_str() {
                "database" => Object::Database(name),
                "schema" => Object::Schema(name),
                _ => Object::Table { schema, name },
            };
            facts.privileges.push(Privilege {
                on,
                privilege: row.try_get(3).map_err(unreadable)?,
                clone_has: row.try_get(4).map_err(unreadable)?,
            });
        }
    }
    Ok(facts)
}

/// The statements that give `clone` the password (in md5 form) and make it a twin of `main`,
/// leaving out what is in place already. `quote` quotes an identifier for the server.
pub fn statements(
    flavour: Flavour,
    main: &str,
    clone: &str,
    md5_password: &str,
    facts: &Facts,
    quote: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Vec<String>, String> {
    if !facts.main_exists {
        return Err(format!("the main user {main} of the alternating pair does not exist"));
    }
    let clone_q = quote(clone)?;
    // An md5 form holds only `md5` and hex digits: nothing to escape.
    let password = format!("'{md5_password}'");
    let mut statements = vec![if facts.clone_exists || clone == main {
        format!("ALTER USER {clone_q} PASSWORD {password}")
    } else {
        format!("CREATE USER {clone_q} PASSWORD {password}")
    }];
    if clone == main {
        return Ok(statements);
    }
    for group in facts.main_groups.iter().filter(|g| !facts.clone_groups.contains(g)) {
        statements.push(format!("ALTER GROUP {} ADD USER {clone_q}", quote(group)?));
    }
    if flavour == Flavour::Redshift {
        for role in facts.main_roles.iter().filter(|r| !facts.clone_roles.contains(r)) {
            statements.push(format!("GRANT ROLE {} TO {clone_q}", quote(role)?));
        }
    }
    // One GRANT per object, its missing privileges together, in the order the server listed them.
    let mut objects: Vec<(&Object, Vec<&str>)> = Vec::new();
    for privilege in facts.privileges.iter().filter(|p| !p.clone_has) {
        match objects.iter_mut().find(|(on, _)| *on == &privilege.on) {
            Some((_, list)) => list.push(&privilege.privilege),
            None => objects.push((&privilege.on, vec![&privilege.privilege])),
        }
    }
    for (on, privileges) in objects {
        let target = match on {
            Object::Database(name) => format!("DATABASE {}", quote(name)?),
            Object::Schema(name) => format!("SCHEMA {}", quote(name)?),
            Object::Table { schema, name } => format!("TABLE {}.{}", quote(schema)?, quote(name)?),
        };
        statements.push(format!("GRANT {} ON {target} TO {clone_q}", privileges.join(", ")));
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(name: &str) -> Result<String, String> {
        postgres_rotation::quote_identifier_up_to(name, 127, "Amazon Redshift")
    }

    fn privilege(on: Object, privilege: &str, clone_has: bool) -> Privilege {
        Privilege { on, privilege: privilege.into(), clone_has }
    }

    fn facts() -> Facts {
        Facts {
            main_exists: true,
            clone_exists: false,
            main_groups: vec!["analysts".into(), "md5 users".into()],
            clone_groups: vec![],
            main_roles: vec!["sales_reader".into(), "etl\"role".into()],
            clone_roles: vec![],
            privileges: vec![
                privilege(Object::Database("dev".into()), "CREATE", false),
                privilege(Object::Database("dev".into()), "TEMPORARY", true),
                privilege(Object::Schema("sales".into()), "USAGE", false),
                privilege(Object::Table { schema: "sales".into(), name: "orders".into() }, "SELECT", false),
                privilege(Object::Schema("sales".into()), "CREATE", false),
                privilege(Object::Table { schema: "sales".into(), name: "orders".into() }, "INSERT", false),
            ],
        }
    }

    #[test]
    fn a_new_clone_on_redshift_gets_groups_roles_and_privileges() {
        let sql = statements(Flavour::Redshift, "app", "app_clone", "md5abc", &facts(), &quote).unwrap();
        assert_eq!(
            sql,
            [
                "CREATE USER \"app_clone\" PASSWORD 'md5abc'",
                "ALTER GROUP \"analysts\" ADD USER \"app_clone\"",
                "ALTER GROUP \"md5 users\" ADD USER \"app_clone\"",
                "GRANT ROLE \"sales_reader\" TO \"app_clone\"",
                "GRANT ROLE \"etl\"\"role\" TO \"app_clone\"",
                "GRANT CREATE ON DATABASE \"dev\" TO \"app_clone\"",
                "GRANT USAGE, CREATE ON SCHEMA \"sales\" TO \"app_clone\"",
                "GRANT SELECT, INSERT ON TABLE \"sales\".\"orders\" TO \"app_clone\"",
            ]
        );
    }

    #[test]
    fn roles_are_redshift_only() {
        let sql = statements(Flavour::Postgres, "app", "app_clone", "md5abc", &facts(), &quote).unwrap();
        assert!(!sql.iter().any(|s| s.contains("ROLE")), "{sql:?}");
        assert!(sql.iter().any(|s| s.starts_with("ALTER GROUP")));
    }

    #[test]
    fn what_the_clone_has_is_not_granted_again() {
        let mut f = facts();
        f.clone_exists = true;
        f.clone_groups = f.main_groups.clone();
        f.clone_roles = f.main_roles.clone();
        for p in &mut f.privileges {
            p.clone_has = true;
        }
        let sql = statements(Flavour::Redshift, "app", "app_clone", "md5abc", &f, &quote).unwrap();
        assert_eq!(sql, ["ALTER USER \"app_clone\" PASSWORD 'md5abc'"]);

        // A grant the main user received since: only that one.
        f.main_roles.push("new_role".into());
        f.privileges.push(privilege(Object::Table { schema: "s".into(), name: "t".into() }, "SELECT", false));
        let sql = statements(Flavour::Redshift, "app", "app_clone", "md5abc", &f, &quote).unwrap();
        assert_eq!(
            &sql[1..],
            ["GRANT ROLE \"new_role\" TO \"app_clone\"", "GRANT SELECT ON TABLE \"s\".\"t\" TO \"app_clone\""]
        );
    }

    #[test]
    fn back_to_the_main_user_only_sets_its_password() {
        let sql = statements(Flavour::Redshift, "app", "app", "md5abc", &facts(), &quote).unwrap();
        assert_eq!(sql, ["ALTER USER \"app\" PASSWORD 'md5abc'"]);
        let missing = Facts { main_exists: false, ..facts() };
        assert!(
            statements(Flavour::Redshift, "app", "app_clone", "md5abc", &missing, &quote)
                .unwrap_err()
                .contains("does not exist")
        );
    }

    #[test]
    fn names_are_quoted_and_length_checked() {
        let mut f = facts();
        f.main_groups = vec!["g\"; DROP USER admin; --".into()];
        let sql = statements(Flavour::Redshift, "app", "app_clone", "md5abc", &f, &quote).unwrap();
        assert!(sql.contains(&"ALTER GROUP \"g\"\"; DROP USER admin; --\" ADD USER \"app_clone\"".to_owned()));
        let long = "n".repeat(128);
        assert!(statements(Flavour::Redshift, "app", &long, "md5abc", &f, &quote).unwrap_err().contains("allows 127"));
    }

    #[test]
    fn the_privilege_query_asks_about_the_clone_only_when_it_exists() {
        let without = privileges_sql(false);
        assert!(!without.contains("$2") && without.contains("has_table_privilege($1, "));
        let with = privileges_sql(true);
        assert!(with.contains("has_table_privilege($2, ") && with.contains("has_schema_privilege($2, "));
        assert!(with.contains("'TEMPORARY'") && with.contains("'REFERENCES'"));
        assert!(ROLES_SQL.contains("svv_user_grants"));
    }
}

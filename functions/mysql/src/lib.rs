//! Rotates the password of a MySQL or MariaDB account (MySQL 5.7, 8.x, 9.x, Aurora MySQL, MariaDB).

use secrecy::SecretString;
use sqlx::mysql::MySqlConnection;

use rotation::{ConnectSettings, DatabaseSecret, EngineInfo, Error, Login, Target};

pub struct Mysql {
    settings: ConnectSettings,
}

impl Target for Mysql {
    type Connection = MySqlConnection;

    const ENGINE: EngineInfo = EngineInfo {
        label: "MySQL",
        engines: &["mysql", "aurora-mysql", "mariadb"],
        default_port: 3306,
        default_dbname: None,
        default_excluded_characters: "/@\"'\\",
        default_username_character_limit: Some(16),
    };

    fn new(settings: ConnectSettings) -> Self {
        Mysql { settings }
    }

    async fn connect(&self, secret: &DatabaseSecret) -> Result<Login<MySqlConnection>, Error> {
        let _ = &self.settings;
        Err(Error::Target {
            action: "login",
            host: secret.host.clone(),
            port: secret.port,
            detail: "not implemented yet".into(),
            retryable: false,
        })
    }

    async fn set_password(
        &self,
        _: &mut MySqlConnection,
        secret: &DatabaseSecret,
        _: &SecretString,
    ) -> Result<(), Error> {
        Err(Error::Target {
            action: "ALTER USER",
            host: secret.host.clone(),
            port: secret.port,
            detail: "not implemented yet".into(),
            retryable: false,
        })
    }

    async fn check(&self, _: &mut MySqlConnection, _: &DatabaseSecret) -> Result<(), Error> {
        Ok(())
    }

    async fn close(&self, _: MySqlConnection) {}
}

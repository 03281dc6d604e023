//! What a database rotation adds to the engine: the secret format of AWS's templates
//! ([`DatabaseSecret`]), the strategies ([`Strategy`]), the steps over a [`Target`]
//! ([`DatabaseRotation`]) and the settings database functions read. A database function crate
//! implements [`Target`] and calls [`run`].

mod check;
mod secret;
mod settings;
mod steps;
mod strategy;
mod target;

pub use secret::DatabaseSecret;
pub use settings::Settings;
pub use steps::DatabaseRotation;
pub use strategy::{Strategy, alternate_username, main_username};
pub use target::{EngineInfo, Login, Target};

/// The whole `main` of a database rotation function.
pub async fn run<T: Target>() -> Result<(), lambda_runtime::Error> {
    crate::serve(|| {
        let settings = Settings::from_env(&T::ENGINE)?;
        T::check_policy(&settings.policy)?;
        Ok(DatabaseRotation::new(T::new(settings.connect.clone()), settings))
    })
    .await
}

#[cfg(test)]
mod steps_tests;

//! Rotation of API keys and service passwords of HTTP services, configured by profiles
//! (`PROFILES.md`): keys the function generates and services read from the secret, passwords it
//! pushes through an admin API, and keys a provider issues.
//!
//! - `steps.rs`: what each mode adds to the engine's four steps ([`ApiKeyRotation`]);
//! - `secret.rs`: the secret's shape (a JSON object or a plain key);
//! - `profile.rs`: the profiles document, call rendering, answer reading;
//! - `http.rs`: the one hardened HTTP client every call goes through.

pub mod http;
pub mod profile;
pub mod secret;
mod steps;

pub use steps::{ApiKeyRotation, Transport};

#[cfg(test)]
mod steps_tests;

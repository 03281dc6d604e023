//! Rotation of API keys and service passwords of HTTP services, configured by profiles.

pub mod http;
pub mod profile;

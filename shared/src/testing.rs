//! In-memory doubles for unit tests.

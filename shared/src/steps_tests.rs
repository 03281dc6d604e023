//! Unit tests of the four steps over in-memory doubles, with injected faults.

//! End-to-end tests: broadcast.

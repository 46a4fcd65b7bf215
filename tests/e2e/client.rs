//! End-to-end tests: client.

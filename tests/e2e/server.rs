//! End-to-end tests: server.

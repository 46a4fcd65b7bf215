//! End-to-end tests: p2p.

//! End-to-end tests: real binaries over loopback. One test binary, a module per area.

mod harness;

//! End-to-end tests: real binaries over loopback. One test binary, a module per area.

mod admin;
mod backpressure;
mod broadcast;
mod client;
mod client_daily;
mod fixtures;
mod harness;
mod limits;
mod memory;
mod nat;
mod netns;
mod p2p;
mod pin;
mod resume;
mod sealed;
mod server;
mod store;
mod terminal;
mod tls;
#[path = "../support/transcript.rs"]
mod transcript;

//! peerline: a rendezvous server and a line-mode client for direct
//! peer-to-peer chat. See `docs/ARCHITECTURE.md` for the codemap.

pub mod client;
pub mod duration;
pub mod listening;
pub mod netio;
pub mod proto;
pub mod rng;
pub mod server;
pub mod signals;
pub mod tls;
pub mod udpbatch;

// The shared test support (`tests/support/`) names the library `peerline`
// in both test targets, the library's own unit tests included.
#[cfg(test)]
extern crate self as peerline;

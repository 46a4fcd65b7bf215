//! peerline: a rendezvous server and a line-mode client for direct
//! peer-to-peer chat. See `docs/ARCHITECTURE.md` for the codemap.

pub mod client;
pub mod duration;
pub mod listening;
pub mod netio;
pub mod proto;
pub mod server;
pub mod signals;
pub mod tls;
pub mod transcript;
pub mod udpbatch;

//! TLS pieces both binaries share: the server identity's fingerprint and the
//! byte-stream layer each driver puts between a socket and its line reader.
//! Server certificates live in `server/tls.rs`, pinning in `client/pin.rs`.

pub mod fingerprint;
pub mod layer;

use std::sync::Arc;

pub use fingerprint::Fingerprint;
pub use layer::Layer;

/// The one crypto provider: rustls on `ring` (aws-lc-rs would need cmake).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

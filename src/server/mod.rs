//! The rendezvous server: a pure engine and the mio driver around it.

pub mod accept;
pub mod accounts;
pub mod admin;
pub mod admin_cli;
pub mod admin_socket;
pub mod admission;
pub mod broadcast;
pub mod config;
pub mod cookie;
pub mod delivery;
pub mod dense;
pub mod driver;
pub mod engine;
pub mod fair;
pub mod flow;
pub mod give_back;
pub mod handlers;
pub mod kdf;
pub mod limits;
pub mod metrics;
pub mod persist;
pub mod presence;
pub mod punch;
pub mod records;
pub mod resume;
pub mod retransmit;
pub mod service;
pub mod sessions;
pub mod sockets;
pub mod store;
pub mod timers;
pub mod tls;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
pub mod faultfs;
#[cfg(test)]
mod tests;

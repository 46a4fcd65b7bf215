//! The wire protocol, shared by both binaries: framing, the messages of each
//! channel (control commands, server lines, UDP datagrams, peer links), the
//! field rules and the error-code table. Pure code: no I/O, no clock.

pub mod command;
pub mod datagram;
pub mod error;
pub mod framing;
pub mod link;
pub mod link_noise;
pub mod names;
pub mod sealed;
pub mod server_line;
pub mod ticket;

pub use command::{Command, WatchChange};
pub use datagram::{ClientDatagram, Cookie, ServerDatagram, UdpRequest};
pub use error::ErrorCode;
pub use framing::{Frame, LineReader, MAX_LINE};
pub use link::LinkLine;
pub use server_line::{CancelReason, CloseReason, Event, OkReply, ServerLine};
pub use ticket::Ticket;

#[cfg(test)]
mod prop_tests;

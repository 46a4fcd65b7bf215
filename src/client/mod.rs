//! The line-mode client: a pure engine ([`engine`]) under a thin mio driver
//! ([`driver`]). Typed input is parsed in [`input`], everything shown goes
//! through [`display`], direct-link state lives in [`links`], and the
//! terminal/pipe/file differences of stdin are hidden in [`stdin`].

pub mod display;
pub mod driver;
pub mod engine;
pub mod input;
pub mod lineedit;
pub mod links;
pub mod pin;
pub mod punch;
pub mod reconnect;
pub mod render;
pub mod reverse;
pub mod shared_port;
pub mod stdin;
pub mod terminal;
pub mod watch;

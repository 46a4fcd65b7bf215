//! Sockets that share one local port: the server connection, and the
//! simultaneous-open attempts made from it (`punch.rs`).
//!
//! A NAT with endpoint-independent mapping gives every connection from one
//! internal address and port the same public address and port. The server
//! sees that public mapping on our control connection; if our punch attempt
//! leaves from the same local port, it gets the same mapping, so the address
//! the server hands the other side is where our SYN comes from.
//!
//! Invariants:
//! - The server connection is made with `SO_REUSEADDR` and `SO_REUSEPORT`
//!   set, and bound to a port of its own (`bind` to port 0) before it
//!   connects, so a later socket may bind that port.
//! - A punch socket sets both too and binds our control connection's exact
//!   local address before it connects; the 4-tuple (that port, the other
//!   side) is new, so the kernel keeps the two apart.
//! - Nothing here listens: a port shared with `SO_REUSEADDR` must never be a
//!   listener, or the kernel would refuse (and it would be a hijack risk).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

fn shareable(family: &SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(*family),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    Ok(s)
}

/// Binds the server connection's port before it connects. Left to
/// `connect()`, the kernel may pick a port that another connection (to
/// another destination, without these flags, or in TIME_WAIT) already uses;
/// a later `bind()` of a punch socket to it would then fail (`EADDRINUSE`).
/// `bind()` to port 0 picks a port nobody holds.
fn bind_any_port(s: &Socket, to: &SocketAddr) -> io::Result<()> {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    s.bind(&any.into())
}

/// A blocking connect to the server (at start), bounded by `timeout`.
pub fn connect_blocking(addr: SocketAddr, timeout: Duration) -> io::Result<std::net::TcpStream> {
    let s = shareable(&addr)?;
    bind_any_port(&s, &addr)?;
    s.connect_timeout(&addr.into(), timeout)?;
    Ok(s.into())
}

/// A non-blocking connect: to the server (a reconnect), or, with `local`,
/// from that address and port (a punch attempt). The result is known when the
/// socket becomes writable.
pub fn connect_nonblocking(
    local: Option<SocketAddr>,
    addr: SocketAddr,
) -> io::Result<mio::net::TcpStream> {
    let s = shareable(&addr)?;
    match local {
        Some(local) => s.bind(&local.into())?,
        None => bind_any_port(&s, &addr)?,
    }
    s.set_nonblocking(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Two loopback sockets leaving from one local port reach two different
    /// listeners: what a punch attempt beside the server connection does.
    #[test]
    fn a_second_connection_leaves_from_the_server_connections_port() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let first = connect_blocking(a.local_addr().unwrap(), Duration::from_secs(5)).unwrap();
        let local = first.local_addr().unwrap();
        let second = connect_nonblocking(Some(local), b.local_addr().unwrap()).unwrap();
        let (mut at_b, seen) = b.accept().unwrap();
        assert_eq!(seen, local, "the punch leaves from the control port");
        let (_at_a, seen_a) = a.accept().unwrap();
        assert_eq!(seen_a, local);
        // And it carries bytes.
        let mut second = std::net::TcpStream::from(std::os::fd::OwnedFd::from(second));
        second.set_nonblocking(false).unwrap();
        second.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        at_b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
    }
}

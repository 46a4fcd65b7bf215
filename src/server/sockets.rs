//! The server's two listening sockets, TCP and UDP on one port number.
//!
//! Invariants:
//! - An IPv6 wildcard bind is dual-stack on every host (`IPV6_V6ONLY` off
//!   explicitly, whatever `net.ipv6.bindv6only` says), so IPv4 clients reach
//!   a server on the default `--bind ::`; their addresses are made canonical
//!   by the driver (`netio::canonical`) before anything else sees them.
//! - The default `::` falls back to `0.0.0.0` only when the host has no IPv6
//!   at all; an explicit `--bind` is never replaced by another address.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mio::net::{TcpListener, UdpSocket};
use socket2::{Domain, Protocol, Socket, Type};

const BACKLOG: i32 = 1024;

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

fn tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    // What std's `TcpListener::bind` does too: a restart reuses the port at once.
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(TcpListener::from_std(s.into()))
}

fn udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into()))
}

/// TCP and UDP on the same port at `ip`; with port 0, retries until a port is
/// free for both.
fn bind_at(ip: IpAddr, port: u16) -> io::Result<(TcpListener, UdpSocket)> {
    let mut last_err = None;
    for _ in 0..if port == 0 { 32 } else { 1 } {
        let listener = tcp(SocketAddr::new(ip, port))?;
        let got = listener.local_addr()?.port();
        match udp(SocketAddr::new(ip, got)) {
            Ok(udp) => return Ok((listener, udp)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no port free for both TCP and UDP")))
}

/// True when the error means "this host has no IPv6", not "the port is taken".
fn ipv6_is_off(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// Binds both sockets; `fallback` allows `0.0.0.0` when `ip` is `::` and the
/// host has IPv6 switched off.
pub fn bind(ip: IpAddr, port: u16, fallback: bool) -> io::Result<(TcpListener, UdpSocket)> {
    match bind_at(ip, port) {
        Err(e) if fallback && ip.is_ipv6() && ip.is_unspecified() && ipv6_is_off(&e) => {
            log::warn!("IPv6 is not available ({e}); listening on 0.0.0.0 (IPv4 only)");
            bind_at(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_ipv6_socket_takes_ipv4_too() {
        let (listener, udp) = match bind("::".parse().unwrap(), 0, true) {
            Ok(pair) => pair,
            Err(e) => panic!("bind :: (with fallback) failed: {e}"),
        };
        let local = listener.local_addr().unwrap();
        assert_eq!(local.port(), udp.local_addr().unwrap().port());
        // Whichever family we got, IPv4 loopback reaches it.
        let c = std::net::TcpStream::connect(("127.0.0.1", local.port()));
        assert!(c.is_ok(), "IPv4 connect to {local}: {c:?}");
    }
}

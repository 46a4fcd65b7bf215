//! The line `peerline-server` prints on stdout once its sockets are bound:
//! `listening tcp=HOST:PORT udp=HOST:PORT`. Started with `--port 0`, that line
//! is the only way a parent process (the end-to-end tests, the benchmark tool)
//! learns which ports the server got, so the format, its parser and the wait
//! for it live together here.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

/// The addresses a server announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
}

/// The line as the server prints it, without the newline.
pub fn format(tcp: SocketAddr, udp: SocketAddr) -> String {
    format!("listening tcp={tcp} udp={udp}")
}

/// Parses a line made by [`format`]; white space around it (the newline) is
/// ignored.
pub fn parse(line: &str) -> Option<Listening> {
    let (tcp, udp) = line.trim().strip_prefix("listening ")?.split_once(' ')?;
    Some(Listening {
        tcp: tcp.strip_prefix("tcp=")?.parse().ok()?,
        udp: udp.strip_prefix("udp=")?.parse().ok()?,
    })
}

/// Waits at most `within` for the first line a starting server writes to
/// `stdout` (its piped standard output) and parses it. A thread of its own
/// reads that line and then drains the rest for as long as the server lives:
/// a server blocked on a full pipe would stop answering.
pub fn wait_for(stdout: impl Read + Send + 'static, within: Duration) -> Result<Listening, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        let _ = reader.read_line(&mut first);
        let _ = tx.send(first);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = rx
        .recv_timeout(within)
        .map_err(|_| format!("printed no `listening` line within {within:?}"))?;
    parse(&line).ok_or_else(|| {
        format!(
            "printed {:?} instead of `listening tcp=… udp=…`",
            line.trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn format_and_parse_round_trip() {
        for (tcp, udp) in [
            ("127.0.0.1:4400", "127.0.0.1:4400"),
            ("0.0.0.0:1", "10.0.0.2:65535"),
            ("[::1]:4400", "[::1]:4401"),
        ] {
            let (tcp, udp) = (addr(tcp), addr(udp));
            let line = format(tcp, udp);
            assert_eq!(parse(&line), Some(Listening { tcp, udp }), "{line}");
            assert_eq!(parse(&format!("{line}\n")), Some(Listening { tcp, udp }));
        }
        assert_eq!(
            format(addr("127.0.0.1:4400"), addr("127.0.0.1:4400")),
            "listening tcp=127.0.0.1:4400 udp=127.0.0.1:4400"
        );
    }

    #[test]
    fn other_lines_are_not_parsed() {
        for line in [
            "",
            "hello",
            "listening",
            "listening tcp=127.0.0.1:4400",
            "listening udp=127.0.0.1:4400 tcp=127.0.0.1:4400",
            "listening tcp=localhost:4400 udp=127.0.0.1:4400",
            "listening on tcp=127.0.0.1:4400 udp=127.0.0.1:4400",
        ] {
            assert_eq!(parse(line), None, "{line:?}");
        }
    }

    #[test]
    fn wait_for_reads_the_first_line_only() {
        let out = b"listening tcp=127.0.0.1:4400 udp=127.0.0.1:4401\nlater output\n";
        let got = wait_for(std::io::Cursor::new(out.to_vec()), Duration::from_secs(5));
        assert_eq!(
            got,
            Ok(Listening {
                tcp: addr("127.0.0.1:4400"),
                udp: addr("127.0.0.1:4401"),
            })
        );
        let err = wait_for(
            std::io::Cursor::new(b"oops\n".to_vec()),
            Duration::from_secs(5),
        );
        assert!(err.unwrap_err().contains("\"oops\""));
    }
}

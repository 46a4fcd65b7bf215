//! The admission budget (`admission.rs`) in the real driver, one loop turn
//! at a time, over loopback: a burst of RESUMEs is taken a slice per turn,
//! and a logged-in client's PING sent with the burst is answered at once.
//! No timing: turns are counted.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream as StdStream;

use super::*;
use crate::server::admission::{ACCEPTS_PER_TURN, LOGIN_FRAMES_PER_TURN};
use crate::server::kdf::{self, PasswordHash};
use crate::server::store::AccountsFile;

/// A test client: a blocking-connected socket read without blocking.
struct Client {
    s: StdStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr, first: &str) -> Client {
        let mut s = StdStream::connect(addr).expect("connect");
        s.write_all(first.as_bytes()).expect("write");
        s.set_nonblocking(true).expect("nonblocking");
        Client { s, buf: Vec::new() }
    }

    /// Complete lines received since the last call.
    fn lines(&mut self) -> Vec<String> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            out.push(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        out
    }
}

/// One loop turn as `run` makes it, the poll's sleep capped.
fn step(d: &mut Driver, events: &mut Events) {
    let cap = Duration::from_millis(20);
    let wait = d.timeout(Instant::now()).map_or(cap, |t| t.min(cap));
    d.poll.poll(events, Some(wait)).expect("poll");
    assert!(!d.turn(events), "no signal was sent");
}

fn answers(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.starts_with("OK ") || l.starts_with("ERR "))
        .count()
}

#[test]
fn a_burst_of_resumes_is_sliced_per_turn_and_a_ping_is_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let salt = [7u8; 16];
    let iterations = 1000;
    let hash = PasswordHash {
        iterations,
        salt,
        hash: kdf::derive(b"pw", &salt, iterations),
    };
    // Dropped before the server starts: it holds the data-dir lock.
    AccountsFile::open(dir.path())
        .unwrap()
        .add_many([("pinger".to_owned(), hash, 1_800_000_000)])
        .unwrap();
    let args: Vec<OsString> = [
        "peerline-server",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--max-per-ip",
        "0",
        "--kdf-iterations",
        "1000",
        "--data-dir",
    ]
    .iter()
    .map(OsString::from)
    .chain([dir.path().as_os_str().to_owned()])
    .collect();
    let (cfg, _) = Config::parse_args(args).map_err(|_| "config").unwrap();
    let mut d = Driver::start(cfg).unwrap();
    let addr = d.listener.local_addr().unwrap();
    let mut events = Events::with_capacity(1024);

    let mut pinger = Client::connect(addr, "LOGIN pinger pw\n");
    let mut logged_in = false;
    for _ in 0..5000 {
        step(&mut d, &mut events);
        if pinger.lines().iter().any(|l| l.starts_with("OK LOGIN")) {
            logged_in = true;
            break;
        }
    }
    assert!(logged_in, "the pinger never logged in");

    // The burst: more RESUMEs than four turns' budget, all in the kernel's
    // queues before the server looks, then the PING behind them.
    let n = 4 * LOGIN_FRAMES_PER_TURN.max(ACCEPTS_PER_TURN) + 1;
    let bogus = "ab".repeat(37);
    let mut burst: Vec<Client> = (0..n)
        .map(|i| Client::connect(addr, &format!("RESUME user{i} {bogus}\n")))
        .collect();
    pinger.s.write_all(b"PING\n").unwrap();

    let mut ping_turn = None;
    let mut per_turn = Vec::new();
    let mut answered = 0;
    for turn in 1..=500 {
        step(&mut d, &mut events);
        let now: usize = burst.iter_mut().map(|c| answers(&c.lines())).sum();
        answered += now;
        per_turn.push(now);
        if ping_turn.is_none() && pinger.lines().iter().any(|l| l == "OK PING") {
            ping_turn = Some(turn);
        }
        if answered == n && ping_turn.is_some() {
            break;
        }
    }
    assert_eq!(
        answered, n,
        "every RESUME is answered (per turn: {per_turn:?})"
    );
    let ping_turn = ping_turn.expect("the PING was answered");
    assert!(
        ping_turn <= 2,
        "the PING waited {ping_turn} turns behind the burst (per turn: {per_turn:?})"
    );
    let answered_by_then: usize = per_turn[..ping_turn].iter().sum();
    assert!(
        answered_by_then < n,
        "the PING was answered only after the whole burst (per turn: {per_turn:?})"
    );
    assert!(
        per_turn.iter().all(|&k| k <= LOGIN_FRAMES_PER_TURN),
        "a turn took more than {LOGIN_FRAMES_PER_TURN} newcomers' frames: {per_turn:?}"
    );
}

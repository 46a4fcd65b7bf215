//! Memory per session (issue 18): flat as sessions come, not stepping with
//! the tables' capacity.
//!
//! The server reserves its per-connection and per-session slabs for
//! `--max-clients` connections at the start (address space, not memory), so
//! the RSS a session adds is the same at 200 sessions as at 1,200. Before,
//! each slab doubled, and a doubling that came from the heap left the old
//! block resident: the figure rose with N (0.75 KB at 5,000, 1.28 at 19,000).

use std::time::Duration;

use peerline::server::kdf::{self, PasswordHash};
use peerline::server::store::AccountsFile;

use crate::backpressure::settled;
use crate::harness::{Line, Server, WAIT};

const PASSWORD: &str = "memory-pw";

/// `count` accounts `m0..` sharing one password hash (as the bench does:
/// the server stores, loads and checks a shared hash as any other).
fn provision(dir: &std::path::Path, count: usize) {
    let salt = kdf::random_salt(&mut peerline::rng::OsRandom);
    let hash = PasswordHash {
        iterations: 1000,
        salt,
        hash: kdf::derive(PASSWORD.as_bytes(), &salt, 1000),
    };
    let mut file = AccountsFile::open(dir).expect("open users.csv");
    file.add_many((0..count).map(|i| (format!("m{i}"), hash.clone(), 0)))
        .expect("provision accounts");
}

/// Raises this process's soft open-files limit to `n` if it is lower (each
/// session here is a socket of the test process too).
fn want_fds(n: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return false;
        }
        if lim.rlim_cur >= n {
            return true;
        }
        if lim.rlim_max < n {
            return false;
        }
        lim.rlim_cur = n;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
    }
}

#[test]
fn memory_per_session_is_flat_from_200_to_1200_sessions() {
    const SMALL: usize = 200;
    const LARGE: usize = 1200;
    if !want_fds(LARGE as u64 + 256) {
        eprintln!("SKIP: needs {} open files in the test process", LARGE + 256);
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    provision(tmp.path(), LARGE);
    let server = Server::start_in(tmp.path(), &["--max-clients", "4000"]);
    let rss = || server.status_kib("VmRSS");
    let base = settled(WAIT, Duration::from_millis(500), rss);
    let mut sessions: Vec<Line> = Vec::with_capacity(LARGE);
    let log_in = |upto: usize, sessions: &mut Vec<Line>| {
        for i in sessions.len()..upto {
            let mut c = server.connect();
            c.cmd_ok(&format!("LOGIN m{i} {PASSWORD}"));
            sessions.push(c);
        }
    };
    log_in(SMALL, &mut sessions);
    let at_small = settled(WAIT, Duration::from_millis(500), rss);
    log_in(LARGE, &mut sessions);
    let at_large = settled(WAIT, Duration::from_millis(500), rss);
    // Every session is still there (none was refused or dropped).
    assert_eq!(sessions[0].cmd("PING"), "OK PING");
    assert_eq!(sessions[LARGE - 1].cmd("PING"), "OK PING");
    let whole_small = at_small.saturating_sub(base) as f64 / SMALL as f64;
    let whole_large = at_large.saturating_sub(base) as f64 / LARGE as f64;
    let marginal = at_large.saturating_sub(at_small) as f64 / (LARGE - SMALL) as f64;
    let figures = format!(
        "RSS {base} KiB before, {at_small} at {SMALL} sessions ({whole_small:.2} KiB each), \
         {at_large} at {LARGE} ({whole_large:.2} each; {marginal:.2} KiB each of the last {})",
        LARGE - SMALL
    );
    eprintln!("{figures}");
    // Real sessions were measured: each holds its records (~0.6 KiB).
    assert!(marginal >= 0.3, "sessions cost nothing? {figures}");
    // Flat: the sessions of the larger step cost no more than the first
    // ones did, within a factor of 1.5 (and a page of slack per step).
    let slack = 4.0 / SMALL as f64;
    assert!(
        marginal <= 1.5 * whole_small + slack,
        "the later sessions cost more each than the first {SMALL}: {figures}"
    );
    // And small: measured 1.07 KiB here (1.21–1.63 with slabs that double).
    assert!(whole_large <= 1.4, "over 1.4 KiB per session: {figures}");
}

//! The server's per-connection limits under abuse, end to end: a pipelining
//! client is always read again after a pause, input waiting behind a slow
//! command stays in the kernel, a client that does not read stops being read
//! (output backpressure) instead of costing the server memory, an evicted
//! slow reader gets its notice on a line boundary, memory comes back after
//! clients leave, and the listener survives `EMFILE`. Sizes are small; every
//! wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use crate::harness::{proc_net_tcp, Line, Server, WAIT};

// ---- helpers ------------------------------------------------------------------

/// Reads `n` final replies on `c`, each within the harness's bounded wait
/// (so a connection that stops being served fails the test, it never hangs).
fn expect_replies(c: &mut Line, n: usize, prefix: &str) {
    let mut got = 0;
    while got < n {
        let l = c.next(&format!("reply {} of {n} ({prefix})", got + 1));
        assert!(
            l != "<EOF>",
            "connection closed after {got} of {n} replies\n{}",
            c.dump()
        );
        if l.starts_with("OK ") || l.starts_with("ERR ") {
            assert!(l.starts_with(prefix), "reply {got}: {l:?}");
            got += 1;
        }
    }
}

/// Writes `bytes` from a thread of its own (the server may not read them all
/// before we read its replies); gives up after `limit` without data moving.
fn write_in_background(
    c: &Line,
    bytes: Vec<u8>,
    limit: Duration,
) -> std::thread::JoinHandle<std::io::Result<()>> {
    let mut w = c.stream.try_clone().unwrap();
    w.set_write_timeout(Some(limit)).unwrap();
    std::thread::spawn(move || w.write_all(&bytes))
}

/// Waits, bounded, until `f` returns the same value for `quiet`; returns it.
pub(crate) fn settled<T: PartialEq + Copy>(
    limit: Duration,
    quiet: Duration,
    mut f: impl FnMut() -> T,
) -> T {
    let deadline = Instant::now() + limit;
    let mut last = f();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = f();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

/// Signs up and logs in `n` users, pipelined per connection; returns them.
fn many_online(server: &Server, prefix: &str, n: usize) -> Vec<Line> {
    let mut conns: Vec<Line> = (0..n).map(|_| server.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send_raw(format!("SIGNUP {prefix}{i} pw pw\nLOGIN {prefix}{i} pw\n").as_bytes());
    }
    for c in &mut conns {
        expect_replies(c, 1, "OK SIGNUP");
        expect_replies(c, 1, "OK LOGIN");
    }
    conns
}

// ---- defect 11: a pipelining connection is read again after every pause -------------

#[test]
fn a_pipelining_connection_is_read_again_after_every_pause() {
    let server = Server::start(&[]);
    // Online without UDP: deliveries go out on its TCP connection.
    let (_bob, _) = server.login_new("bob");
    let (mut alice, _) = server.login_new("alice");
    // More than one read budget (64 KiB) per write, with a store write per
    // line: reading stops and starts many times. The server once lost the
    // wake-up when the budget ran out while it was paused, and this stalled
    // for good in the second round.
    let line = format!("BROADCAST {}\n", "x".repeat(100));
    for _round in 0..2 {
        let batch = line.repeat(700).into_bytes();
        let writer = write_in_background(&alice, batch, Duration::from_secs(30));
        expect_replies(&mut alice, 700, "OK BROADCAST");
        writer
            .join()
            .unwrap()
            .expect("the server read the whole batch");
    }
    assert_eq!(alice.cmd("PING"), "OK PING");
}

// ---- defect 8: input behind a slow command stays in the kernel ----------------------

#[test]
fn input_behind_a_command_in_progress_stays_in_the_kernel() {
    // A hash that takes far longer than the test: the SIGNUP stays in progress.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display().to_string();
    let args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        &dir,
        "--kdf-iterations",
        "100000000",
    ]
    .map(String::from)
    .to_vec();
    let server = Server::spawn(&args, tmp.path(), &[]);
    let mut c = server.connect();
    let mut batch = b"SIGNUP slowpoke pw pw\n".to_vec();
    batch.extend(b"PING\n".repeat(64 * 1024 / 5));
    let writer = write_in_background(&c, batch.clone(), Duration::from_secs(5));
    let ours = c.stream.local_addr().unwrap();
    let unread = settled(WAIT, Duration::from_millis(500), || {
        proc_net_tcp(server.tcp, ours).map_or(0, |r| r.rx_queue)
    });
    writer
        .join()
        .unwrap()
        .expect("the kernel took the whole batch");
    // The server read one chunk (8 KiB) and then stopped: the SIGNUP is being
    // hashed, so the PINGs behind it wait in the kernel, not in our memory.
    // It used to read a whole 64 KiB budget and queue 13,000 frames.
    assert!(
        unread as usize >= batch.len() - 2 * 8192,
        "the server took {} of {} bytes while a command was in progress",
        batch.len() - unread as usize,
        batch.len()
    );
    c.expect_silence(Duration::from_millis(200));
}

// ---- defect 13: output backpressure --------------------------------------------------

#[test]
fn a_client_that_sends_list_and_reads_nothing_stops_being_read() {
    let server = Server::start(&[]);
    let _crowd = many_online(&server, "u", 100);
    let (mut other, _) = server.login_new("other");
    let (mut flooder, _) = server.login_new("flooder");
    let peak_before = server.status_kib("VmHWM");
    // 64 KiB of LIST, each answered with ~100 lines, and nothing read. Every
    // reply for a whole read used to be queued before the output cap was
    // looked at (13,000 LISTs × 102 lines: gigabytes with 600 users).
    let batch = b"LIST\n".repeat(64 * 1024 / 5);
    let writer = write_in_background(&flooder, batch.clone(), Duration::from_secs(3));
    let ours = flooder.stream.local_addr().unwrap();
    settled(WAIT, Duration::from_millis(500), || {
        proc_net_tcp(server.tcp, ours).map_or(0, |r| r.rx_queue)
    });
    // Others are served meanwhile.
    assert_eq!(other.cmd("PING"), "OK PING");
    let grown_kib = server.status_kib("VmHWM").saturating_sub(peak_before);
    assert!(
        grown_kib < 24 * 1024,
        "the server's peak RSS grew by {grown_kib} KiB for one client's 64 KiB of LIST"
    );
    // The flooder was not dropped: it is simply read as fast as it reads.
    expect_replies(&mut flooder, 300, "OK LIST 102");
    let _ = writer.join().unwrap();
}

// ---- defect 9: the slow-reader notice goes out on a line boundary ---------------------

/// A control connection whose receive side is tiny (small buffer, small
/// segments), so the server's socket fills after a few KB and most of what
/// it sends waits in its own output buffer.
fn connect_cramped(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        unreachable!("the tests use IPv4 loopback")
    };
    // SAFETY: plain socket calls on a descriptor we own; option values are
    // live c_ints whose sizes are passed alongside; the address is a valid
    // sockaddr_in. The descriptor is handed to TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let set = |level, name, value: libc::c_int| {
            let rc = libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
        };
        set(libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
        set(libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn a_slow_reader_gets_its_notice_on_a_line_boundary_while_others_are_served() {
    let server = Server::start(&[]);
    let mut slow = connect_cramped(server.tcp);
    slow.write_all(b"SIGNUP slow pw pw\nLOGIN slow pw\n")
        .unwrap();
    // Welcome, signup, login: read a byte at a time so nothing more is taken.
    let mut byte = [0u8; 1];
    let mut newlines = 0;
    slow.set_read_timeout(Some(WAIT)).unwrap();
    while newlines < 3 {
        slow.read_exact(&mut byte).expect("slow's first lines");
        newlines += usize::from(byte[0] == b'\n');
    }
    let (mut sender, _) = server.login_new("sender");
    // Past the 3 s in which deliveries wait for a UDP endpoint: from now on
    // each broadcast goes out on TCP as it is made, so the server's socket
    // fills part-way through some line before the output cap is reached.
    std::thread::sleep(Duration::from_millis(3300));
    // ~1.3 MB of broadcasts for `slow` (no UDP: they come on TCP), which
    // reads nothing: past the 1 MiB output cap it is evicted.
    let text = "x".repeat(900);
    let n = 1400;
    let batch = format!("BROADCAST {text}\n").repeat(n).into_bytes();
    let writer = write_in_background(&sender, batch, Duration::from_secs(30));
    expect_replies(&mut sender, n, "OK BROADCAST");
    writer
        .join()
        .unwrap()
        .expect("the server read every broadcast");
    // Others are served while `slow` is stuck.
    assert_eq!(sender.cmd("PING"), "OK PING");
    let deadline = Instant::now() + WAIT;
    while !server.log_lines().iter().any(|l| l.contains("slow reader")) {
        assert!(Instant::now() < deadline, "`slow` was never evicted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Now read all of it: whole lines only, the notice last.
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "`slow` was not closed");
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
    let text_lines = String::from_utf8(got).expect("UTF-8 from the server");
    let lines: Vec<&str> = text_lines.lines().collect();
    let (last, rest) = lines.split_last().expect("some lines");
    assert!(
        last.starts_with("EVENT CLOSING slow-reader "),
        "last line: {last:?}"
    );
    let mut broadcasts = 0;
    for l in rest {
        if l.starts_with("EVENT BROADCAST ") {
            let fields: Vec<&str> = l.split(' ').collect();
            assert!(
                fields.len() == 6 && fields[5] == text,
                "a broadcast line was cut or glued: {:?}",
                &l[..l.len().min(120)]
            );
            broadcasts += 1;
        } else {
            panic!("unexpected line: {:?}", &l[..l.len().min(120)]);
        }
    }
    assert!(
        broadcasts > 0 && broadcasts < n,
        "{broadcasts} broadcasts reached `slow`"
    );
}

// ---- defect 12: the listener survives running out of descriptors ---------------------

/// Descriptors the server process holds now.
fn open_fds(server: &Server) -> u64 {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("read the server's /proc fd table")
        .count() as u64
}

/// The first line on a fresh connection, within the bounded wait.
fn first_line(server: &Server) -> (Line, String) {
    let mut c = Line::connect(server.tcp);
    let l = c.next("the first line on a new connection");
    (c, l)
}

#[test]
fn the_listener_accepts_again_after_running_out_of_descriptors() {
    let server = Server::start(&[]);
    // Leave the server room for three more connections (plus the spare it
    // keeps for refusing); its own limit-raising happened at start.
    let limit = open_fds(&server) + 3;
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit on our own child's pid with a valid rlimit; no old
    // value is asked for.
    let rc = unsafe {
        libc::prlimit(
            server.pid() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    // Served until the descriptors run out; after that each newcomer used
    // to wait in the listen queue, unanswered, for an edge that never came.
    // Now each hears why and is closed.
    let mut served: Vec<Line> = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        let (mut c, l) = first_line(&server);
        if l.starts_with("EVENT WELCOME") && refused == 0 {
            served.push(c);
        } else {
            assert!(l.starts_with("EVENT CLOSING server-full"), "{l:?}");
            assert_eq!(c.next("EOF after the refusal"), "<EOF>");
            refused += 1;
        }
    }
    assert!(
        refused >= 5 && !served.is_empty(),
        "served {}, refused {refused}",
        served.len()
    );
    // The served ones leave; a newcomer is served again, without restarting.
    for c in &mut served {
        assert_eq!(c.cmd("QUIT"), "OK QUIT");
        c.expect_closed();
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let (mut c, l) = first_line(&server);
        if l.starts_with("EVENT WELCOME") {
            assert_eq!(c.cmd("PING"), "OK PING");
            break;
        }
        // Descriptors are freed once the server has seen both sides close.
        assert!(
            Instant::now() < deadline,
            "never accepted again; last: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- defect 15: counters are reported -------------------------------------------------

#[test]
fn counters_are_logged_at_shutdown() {
    let mut server = Server::start(&[]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in ["hello", "ACK nope 1", "REGISTER 00"] {
        udp.send_to(junk.as_bytes(), server.udp).unwrap();
    }
    // The server answers nothing to junk; a PING on TCP orders us after it.
    let mut c = server.connect();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.cmd("PING"), "OK PING");
    let st = server.signal_and_wait(crate::harness::SIGTERM);
    assert_eq!(st.code(), Some(0));
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let stats = loop {
        seen.extend(server.log_lines());
        if let Some(l) = seen.iter().find(|l| l.contains("stats at shutdown:")) {
            break l.clone();
        }
        assert!(Instant::now() < deadline, "no stats line in:\n{seen:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for want in [
        "datagrams_dropped=3",
        "connections=",
        "udp_queue_dropped=0",
        "accepts_refused=0",
        "store_syncs=0",
        "tcp_fallbacks=0",
    ] {
        assert!(stats.contains(want), "{want} missing in {stats:?}");
    }
}

// ---- defect 14: parked clients cost the documented bound in RSS, and give it back ----

/// `n` clients that send `PING`s and never read, on cramped sockets (see
/// [`connect_cramped`], plus a 4 KiB send buffer), written to until the
/// server stops reading each (its writes make no progress for `quiet`). The
/// kernel's socket buffers then hold only a few KB of replies, so the rest
/// wait in the server's own output buffer, up to the high-water mark: what a
/// client that never reads costs the server in user space.
fn park_pingers(addr: SocketAddr, n: usize, quiet: Duration) -> Vec<TcpStream> {
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let s = connect_cramped(addr);
            socket2::SockRef::from(&s)
                .set_send_buffer_size(4096)
                .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let batch = b"PING\n".repeat(256);
    let deadline = Instant::now() + 3 * WAIT;
    let mut moved = vec![Instant::now(); n];
    let mut sent = vec![0usize; n];
    loop {
        let mut busy = false;
        for (i, s) in conns.iter().enumerate() {
            if moved[i].elapsed() >= quiet {
                continue;
            }
            busy = true;
            match (&*s).write(&batch) {
                Ok(k) => {
                    sent[i] += k;
                    moved[i] = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("a parked pinger was closed after {} bytes: {e}", sent[i]),
            }
        }
        if !busy {
            return conns;
        }
        assert!(
            Instant::now() < deadline,
            "the server kept reading clients that read nothing ({sent:?} bytes)"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn parked_pingers_cost_the_documented_bound_in_rss_and_give_it_back() {
    use peerline::netio::READ_CHUNK;
    use peerline::proto::MAX_LINE;
    // As documented, not imported: raising the constant must fail here.
    const OUT_HIGH_WATER: usize = 64 * 1024;
    let server = Server::start(&[]);
    let n = 60u64;
    let rss = || server.status_kib("VmRSS");
    let mut regular = server.connect();
    assert_eq!(regular.cmd("PING"), "OK PING");
    // The documented bound for a client whose own commands fill its output
    // (docs/ARCHITECTURE.md): output under OUT_HIGH_WATER plus one reply, in
    // an allocation that grows by doubling (so under twice that), the line
    // reader under one read chunk plus a partial line; plus 16 KiB for what
    // every connection has besides (engine and slab entries, the allocator's
    // headers, pages). Measured: 78–98 KiB each; 6.3 MB each before output
    // backpressure (defect 13).
    let bound_kib = ((2 * OUT_HIGH_WATER + READ_CHUNK + MAX_LINE) / 1024 + 16) as u64;
    let mut figures = Vec::new();
    let first_base = settled(WAIT, Duration::from_millis(500), rss);
    let mut newcomers = Vec::new();
    for round in 0..2 {
        let base = settled(WAIT, Duration::from_millis(500), rss);
        let parked = park_pingers(server.tcp, n as usize, Duration::from_millis(300));
        let peak = settled(WAIT, Duration::from_millis(500), rss);
        let each = peak.saturating_sub(base) / n;
        drop(parked);
        // They left without reading; the server is still serving.
        assert_eq!(regular.cmd("PING"), "OK PING");
        let after = settled(WAIT, Duration::from_millis(1500), rss);
        figures.push(format!(
            "round {round}: RSS {base} KiB, {peak} KiB with {n} parked ({each} KiB each), {after} KiB after"
        ));
        eprintln!("{}", figures.last().unwrap());
        // Each parked pinger really filled its output: the server's RSS grew
        // by at least half the high-water mark per client (a test whose
        // output stayed in the kernel would prove nothing).
        assert!(
            each >= (OUT_HIGH_WATER / 2048) as u64,
            "only {each} KiB per parked client: the output did not build up\n{figures:#?}"
        );
        assert!(
            each <= bound_kib,
            "{each} KiB per parked client, documented bound {bound_kib} KiB\n{figures:#?}"
        );
        // Memory comes back: within a quarter of what they took plus 512 KiB
        // of the RSS before the first crowd (a second crowd must not ratchet
        // it up either). glibc alone kept over half of it.
        let grown = peak.saturating_sub(base);
        assert!(
            after <= first_base + grown / 4 + 512,
            "RSS did not come back after the clients left\n{figures:#?}"
        );
        // A newcomer after them (its buffers sit above theirs in the heap,
        // as with real traffic), kept open across the next round.
        let mut late = server.connect();
        assert_eq!(late.cmd("PING"), "OK PING");
        newcomers.push(late);
    }
}

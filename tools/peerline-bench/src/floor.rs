//! `peerline-bench floor`: the kernel's floor under the server's CPU per
//! acknowledged delivery. A bare "server" thread does exactly the datagram
//! work of a fan-out and nothing else: `sendmmsg` of one datagram the size of
//! a `BCAST` to each of N UDP sockets, and `recvmmsg` of the ACK-sized
//! datagram each of them answers with. The N sockets belong to a generator
//! thread that answers every datagram, as the load generator's workers do.
//! The server thread is pinned like the bench pins the server (CPU 0), the
//! generator like the tool (CPU 1); the figure is the server thread's
//! utime + stime from `/proc/thread-self/stat` (the same clock-tick counters
//! the bench reads for the server process) divided by the deliveries.
//!
//! Then, in the same invocation, peerline's (and mosquitto's) sustained burst
//! at the same N runs through `bench::run`, so the ratios compare figures
//! taken under the same load on this shared machine.
//!
//! Invariants:
//! - The floor has no user-space work per datagram beyond filling the
//!   `recvmmsg` headers' lengths: destinations and headers are built once,
//!   one payload buffer serves every datagram. What it costs is the kernel's.
//! - Every wait is bounded: a receive waits at most [`RECV_TIMEOUT`], and a
//!   run that loses datagrams ends and says how many ACKs it missed.
//! - At most `window` rounds are unacknowledged, like the bench's burst
//!   window, so the sockets' buffers do not overflow by design.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use peerline::udpbatch::{Mmsg, RecvBatch, SendQueue, BATCH};

use crate::procfs;

/// How long a receive waits before the run counts the rest as lost.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// How the floor's server socket is set up: the kernel options under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// An IPv4 socket bound to 127.0.0.1 (the kernel's defaults).
    V4,
    /// An IPv6 socket bound to `::` with `IPV6_V6ONLY` off, sending to
    /// IPv4-mapped addresses: what peerline's default `--bind ::` does.
    DualStack,
    /// IPv4 with `IP_MTU_DISCOVER` = `IP_PMTUDISC_DO` (DF set: no IP ID is
    /// generated per datagram).
    V4PmtuDo,
    /// IPv4 with `IP_PMTUDISC_OMIT`.
    V4PmtuOmit,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::V4,
        Variant::DualStack,
        Variant::V4PmtuDo,
        Variant::V4PmtuOmit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::V4 => "IPv4 socket (127.0.0.1, as the bench binds the servers)",
            Variant::DualStack => {
                "dual-stack socket (`::`, IPv4-mapped: the server's default `--bind`)"
            }
            Variant::V4PmtuDo => "IPv4, `IP_MTU_DISCOVER` = `IP_PMTUDISC_DO`",
            Variant::V4PmtuOmit => "IPv4, `IP_MTU_DISCOVER` = `IP_PMTUDISC_OMIT`",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Args {
    /// Receiving sockets (the generator's), one datagram each per round.
    pub n: usize,
    /// Rounds (broadcasts); deliveries = n × rounds.
    pub rounds: usize,
    /// Most rounds unacknowledged.
    pub window: usize,
    /// Bytes of the server's datagram (a `BCAST` of the bench's burst).
    pub bcast_len: usize,
    /// Bytes of each answer (`ACK <32 hex digits> <id>`).
    pub ack_len: usize,
    pub server_cpu: Option<usize>,
    pub tool_cpu: Option<usize>,
    pub variants: Vec<Variant>,
    /// Broadcasts in the systems' sustained burst.
    pub burst: usize,
}

/// One floor run.
#[derive(Debug, Clone)]
pub struct Floor {
    pub variant: Variant,
    pub deliveries: u64,
    /// ACKs that never came (lost datagrams): 0 in a clean run.
    pub missing: u64,
    pub secs: f64,
    pub cpu_ms: f64,
    pub sendmmsg_calls: u64,
    pub recvmmsg_calls: u64,
}

impl Floor {
    pub fn us_per_delivery(&self) -> f64 {
        self.cpu_ms * 1000.0 / self.deliveries.max(1) as f64
    }
}

fn set_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a plain int option on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn server_socket(v: Variant) -> io::Result<UdpSocket> {
    let s = match v {
        Variant::DualStack => {
            let s = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            s.set_only_v6(false)?;
            s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).into())?;
            UdpSocket::from(s)
        }
        _ => UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?,
    };
    match v {
        Variant::V4PmtuDo => set_int(
            &s,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )?,
        Variant::V4PmtuOmit => set_int(
            &s,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_OMIT,
        )?,
        _ => {}
    }
    // As the server: a 4 MiB receive buffer so a burst of ACKs is not dropped.
    set_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20)?;
    // SAFETY: a timeval option on a socket we own.
    let tv = libc::timeval {
        tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

fn to_c(addr: &SocketAddr, v6: bool, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let addr = match (addr, v6) {
        (SocketAddr::V4(a), true) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
        (a, _) => *a,
    };
    let s: socket2::SockAddr = addr.into();
    // SAFETY: `s` holds at most a sockaddr_storage's bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            s.as_ptr().cast::<u8>(),
            (out as *mut libc::sockaddr_storage).cast::<u8>(),
            s.len() as usize,
        );
    }
    s.len()
}

/// The generator: answers every datagram on any of its sockets with one
/// `ack_len`-byte datagram to the sender, until `stop`.
fn generate(
    socks: Vec<mio::net::UdpSocket>,
    ack_len: usize,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
) -> io::Result<()> {
    if let Some(c) = cpu {
        let _ = crate::clock::pin_to_cpu(c);
    }
    let mut poll = Poll::new()?;
    let mut socks = socks;
    for (i, s) in socks.iter_mut().enumerate() {
        poll.registry().register(s, Token(i), Interest::READABLE)?;
    }
    let ack: std::rc::Rc<[u8]> = vec![b'a'; ack_len].into();
    let mut batch = RecvBatch::new(2048, 16);
    let mut events = Events::with_capacity(1024);
    let mut answer: SendQueue<std::rc::Rc<[u8]>> = SendQueue::with_caps(BATCH * 4, usize::MAX);
    let mut froms = Vec::with_capacity(16);
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let s = &socks[ev.token().0];
            loop {
                froms.clear();
                let more = batch.drain(s, 16, |from, _| froms.push(from));
                for &f in &froms {
                    answer.push(f, std::rc::Rc::clone(&ack));
                }
                // A blocked send waits briefly: the server drains its buffer.
                for _ in 0..1000 {
                    if answer.flush(&mut Mmsg(s)) == peerline::udpbatch::Flushed::Empty {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                if !more {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn thread_cpu_ms() -> io::Result<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/stat")?;
    let t = procfs::parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat"))?;
    Ok(t.total() as f64 * procfs::ms_per_tick())
}

/// One floor run of `variant`.
pub fn run_one(a: &Args, variant: Variant) -> io::Result<Floor> {
    let server = server_socket(variant)?;
    let mut dests = Vec::with_capacity(a.n);
    let mut socks = Vec::with_capacity(a.n);
    for _ in 0..a.n {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        s.set_nonblocking(true)?;
        dests.push(s.local_addr()?);
        socks.push(mio::net::UdpSocket::from_std(s));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let gen = {
        let stop = Arc::clone(&stop);
        let (ack_len, cpu) = (a.ack_len, a.tool_cpu);
        std::thread::spawn(move || generate(socks, ack_len, stop, cpu))
    };
    let out = std::thread::scope(|scope| {
        scope
            .spawn(|| serve(a, variant, &server, &dests))
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("floor server thread panicked")))
    });
    stop.store(true, Ordering::Relaxed);
    gen.join()
        .map_err(|_| io::Error::other("floor generator panicked"))??;
    out
}

/// The floor's server thread: built once, then only system calls.
fn serve(a: &Args, variant: Variant, sock: &UdpSocket, dests: &[SocketAddr]) -> io::Result<Floor> {
    if let Some(c) = a.server_cpu {
        let _ = crate::clock::pin_to_cpu(c);
    }
    let v6 = variant == Variant::DualStack;
    let n = dests.len();
    let payload = vec![b'b'; a.bcast_len];
    // SAFETY (all `zeroed` below): plain C structs, all-zero is valid.
    let mut addrs: Vec<libc::sockaddr_storage> = (0..n).map(|_| unsafe { zeroed() }).collect();
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut out_hdrs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { zeroed() }).collect();
    for i in 0..n {
        let len = to_c(&dests[i], v6, &mut addrs[i]);
        let h = &mut out_hdrs[i].msg_hdr;
        h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = len;
        h.msg_iov = &mut iov;
        h.msg_iovlen = 1;
    }
    let slot = 2048;
    let mut bufs = vec![0u8; slot * BATCH];
    let mut from: Vec<libc::sockaddr_storage> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    let mut in_iovs: Vec<libc::iovec> = (0..BATCH)
        .map(|i| libc::iovec {
            iov_base: bufs[i * slot..].as_mut_ptr().cast(),
            iov_len: slot,
        })
        .collect();
    let mut in_hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    for i in 0..BATCH {
        let h = &mut in_hdrs[i].msg_hdr;
        h.msg_name = (&mut from[i] as *mut libc::sockaddr_storage).cast();
        h.msg_iov = &mut in_iovs[i];
        h.msg_iovlen = 1;
    }
    let total = (n * a.rounds) as u64;
    let (mut sent, mut acked, mut missing) = (0u64, 0u64, 0u64);
    let (mut scalls, mut rcalls) = (0u64, 0u64);
    let fd = sock.as_raw_fd();
    let cpu0 = thread_cpu_ms()?;
    let t0 = Instant::now();
    while acked + missing < total {
        while sent < total
            && (sent - missing).saturating_sub(acked) + n as u64 <= (a.window * n) as u64
        {
            let mut at = 0;
            while at < n {
                let k = (n - at).min(BATCH);
                // SAFETY: the headers point at `addrs`, `iov` and `payload`,
                // alive for the call; the kernel only reads them.
                let rc = unsafe {
                    libc::sendmmsg(fd, out_hdrs[at..].as_mut_ptr(), k as libc::c_uint, 0)
                };
                scalls += 1;
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                at += rc as usize;
            }
            sent += n as u64;
        }
        for h in in_hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: each header points at its own slot of `bufs` and `from`.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                in_hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        rcalls += 1;
        if rc < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    // Nothing for RECV_TIMEOUT: what is outstanding is lost.
                    missing = sent.saturating_sub(acked);
                    continue;
                }
                _ => return Err(e),
            }
        }
        acked += rc as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu_ms = thread_cpu_ms()? - cpu0;
    Ok(Floor {
        variant,
        deliveries: acked,
        missing,
        secs,
        cpu_ms,
        sendmmsg_calls: scalls,
        recvmmsg_calls: rcalls,
    })
}

/// The floor for every variant asked for, each run once.
pub fn run(a: &Args) -> Vec<Result<Floor, String>> {
    a.variants
        .iter()
        .map(|&v| {
            eprintln!(
                "== floor: {} ({} sockets × {} rounds)",
                v.name(),
                a.n,
                a.rounds
            );
            let f = run_one(a, v).map_err(|e| format!("{}: {e}", v.name()));
            if let Ok(f) = &f {
                eprintln!(
                    "   {:.2} µs per delivery, {} sendmmsg and {} recvmmsg calls for {} deliveries",
                    f.us_per_delivery(),
                    f.sendmmsg_calls,
                    f.recvmmsg_calls,
                    f.deliveries
                );
            }
            f
        })
        .collect()
}

pub const BEGIN: &str = "<!-- floor:begin -->";
pub const END: &str = "<!-- floor:end -->";

/// The section carried over when `run` rewrites the report.
pub fn carry(old: &str, new: String) -> String {
    crate::scale::carry_between(old, new, BEGIN, END)
}

/// Server CPU per acknowledged delivery in µs of a bench system's burst.
pub fn bench_us(r: &crate::bench::Results) -> Option<f64> {
    r.sustained.as_ref().map(|s| s.cpu_ms_per_1000())
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The report section: the floors, and the systems measured beside them.
pub fn markdown(
    a: &Args,
    floors: &[Result<Floor, String>],
    systems: &[(&str, Option<f64>)],
    load: (&str, &str),
    when: &str,
) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "### The kernel's floor (`peerline-bench floor`)\n");
    let _ = writeln!(
        s,
        "{when}; load average {} at the start, {} at the end (2 cores shared with other work). A bare thread pinned \
         to the server's CPU sends one {}-byte datagram (a `BCAST` of the burst) to each of {} UDP sockets with \
         `sendmmsg` and reads the {}-byte answer of each (an `ACK`) with `recvmmsg`, {} rounds, at most {} \
         unanswered; a generator thread on the other CPU answers. Its CPU (utime + stime of the thread, clock \
         ticks as for the servers) over the deliveries is what the kernel alone costs per acknowledged \
         delivery; peerline and mosquitto ran their sustained burst ({} broadcasts to the same N, the bench's \
         own scenario) right after, in the same invocation.\n",
        load.0, load.1, a.bcast_len, a.n, a.ack_len, a.rounds, a.window, a.burst
    );
    let _ = writeln!(s, "| what | server CPU per acked delivery (µs) | × the IPv4 floor | deliveries | lost | wall (s) |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let base = floors
        .iter()
        .find_map(|f| f.as_ref().ok().filter(|f| f.variant == Variant::V4))
        .map(Floor::us_per_delivery);
    let ratio = |us: f64| base.map_or("–".into(), |b| format!("{:.2}", us / b.max(1e-9)));
    for f in floors {
        match f {
            Ok(f) => {
                let _ = writeln!(
                    s,
                    "| floor: {} | {:.2} | {} | {} | {} | {:.2} |",
                    f.variant.name(),
                    f.us_per_delivery(),
                    ratio(f.us_per_delivery()),
                    f.deliveries,
                    f.missing,
                    f.secs
                );
            }
            Err(e) => {
                let _ = writeln!(s, "| floor failed: {e} | – | – | – | – | – |");
            }
        }
    }
    for (name, us) in systems {
        match us {
            Some(us) => {
                let _ = writeln!(
                    s,
                    "| {name}: sustained burst | {us:.2} | {} | | | |",
                    ratio(*us)
                );
            }
            None => {
                let _ = writeln!(s, "| {name}: sustained burst | not measured | | | | |");
            }
        }
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small real run over loopback: every datagram is answered, none is
    /// lost, the batching is real (fewer calls than datagrams).
    #[test]
    fn a_small_floor_run_gets_every_answer() {
        let a = Args {
            n: 50,
            rounds: 20,
            window: 4,
            bcast_len: 117,
            ack_len: 41,
            server_cpu: None,
            tool_cpu: None,
            variants: vec![Variant::V4, Variant::DualStack],
            burst: 1,
        };
        for f in run(&a) {
            let f = f.unwrap();
            assert_eq!((f.deliveries, f.missing), (1000, 0), "{:?}", f.variant);
            assert!(f.sendmmsg_calls < 1000 && f.recvmmsg_calls < 1000);
        }
    }

    #[test]
    fn the_section_shows_each_floor_and_the_ratio() {
        let a = Args {
            n: 10,
            rounds: 1,
            window: 1,
            bcast_len: 117,
            ack_len: 41,
            server_cpu: None,
            tool_cpu: None,
            variants: vec![Variant::V4],
            burst: 1,
        };
        let f = Floor {
            variant: Variant::V4,
            deliveries: 1000,
            missing: 0,
            secs: 1.0,
            cpu_ms: 2.0,
            sendmmsg_calls: 16,
            recvmmsg_calls: 16,
        };
        let md = markdown(
            &a,
            &[Ok(f)],
            &[("peerline", Some(6.0)), ("mosquitto", None)],
            ("0.5", "0.6"),
            "today",
        );
        assert!(
            md.contains(
                "| floor: IPv4 socket (127.0.0.1, as the bench binds the servers) | 2.00 | 1.00 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| peerline: sustained burst | 6.00 | 3.00 |"),
            "{md}"
        );
        assert!(
            md.contains("mosquitto: sustained burst | not measured"),
            "{md}"
        );
    }
}

//! Batched UDP: many datagrams per system call with `recvmmsg(2)` and
//! `sendmmsg(2)`. A fan-out to thousands of users is thousands of datagrams,
//! and each `sendto`/`recvfrom` pays a system call's fixed cost; these pay it
//! once per [`BATCH`] datagrams. Used by the server's driver (fan-out and
//! ACKs) and by the benchmark's load generator.
//!
//! Invariants:
//! - [`SendQueue`] sends every datagram pushed exactly once, in push order,
//!   or counts it in `dropped` (queue full, or the kernel refused that one
//!   datagram with a hard error). A partial `sendmmsg` (the kernel took the
//!   first `n` of a batch) resumes at datagram `n`; `EAGAIN`/`ENOBUFS` keep
//!   everything queued for the next writable event. Nothing is reordered:
//!   a push while datagrams are queued goes behind them.
//! - [`RecvBatch::drain`] reads until the socket says `WouldBlock` (or the
//!   budget is spent, which it reports), so edge-triggered readiness is
//!   never lost. `recvmmsg` with `MSG_DONTWAIT` returns fewer than asked
//!   only when the next read would block (or failed), so a short batch is
//!   such a `WouldBlock`.
//! - No memory grows with traffic: receive buffers are allocated once; the
//!   send queue is bounded in datagrams and bytes and gives its memory back
//!   when drained.
//!
//! Why `libc` and not a crate: `libc` (already a dependency) has both calls
//! and their structs; `socket2` and `mio` have neither, and `nix` would add a
//! dependency for two calls. The unsafe is confined to this module.
//!
//! UDP GSO (`UDP_SEGMENT`) is not used: it splits one buffer into segments
//! for a *single* destination, and a fan-out sends one datagram to each of
//! many destinations.

use std::collections::VecDeque;
use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Datagrams per system call. The kernel allows up to `UIO_MAXIOV` (1024);
/// past a few dozen the per-call saving is already spent.
pub const BATCH: usize = 64;

/// A destination in the C form, either family: what `msg_name` points at.
#[repr(C)]
#[derive(Clone, Copy)]
union CAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// `SocketAddr` → the C form, and its length. Every byte the kernel reads
/// is written (no storage to zero first).
fn to_c(addr: &SocketAddr) -> (CAddr, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => (
            CAddr {
                v4: libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                },
            },
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ),
        SocketAddr::V6(a) => (
            CAddr {
                v6: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                },
            },
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ),
    }
}

/// The C form → `SocketAddr`; `None` for other families.
fn from_c(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Something that sends a batch of datagrams the way `sendmmsg` does: the
/// number of leading datagrams taken (at least one), or the error of the
/// first one. A trait so tests can play a kernel that sends partly.
pub trait BatchSend {
    fn send_batch<P: AsRef<[u8]>>(&mut self, msgs: &[(SocketAddr, P)]) -> io::Result<usize>;
}

/// `sendmmsg(2)` on a non-blocking UDP socket.
pub struct Mmsg<'a, S: AsRawFd>(pub &'a S);

impl<S: AsRawFd> BatchSend for Mmsg<'_, S> {
    fn send_batch<P: AsRef<[u8]>>(&mut self, msgs: &[(SocketAddr, P)]) -> io::Result<usize> {
        let n = msgs.len().min(BATCH);
        // Only the first `n` entries are written, each in full, and only
        // they are handed to the kernel: no 13 KB of zeroing per call.
        let mut addrs = [MaybeUninit::<CAddr>::uninit(); BATCH];
        let mut iovs = [MaybeUninit::<libc::iovec>::uninit(); BATCH];
        let mut hdrs = [MaybeUninit::<libc::mmsghdr>::uninit(); BATCH];
        for (i, (to, bytes)) in msgs[..n].iter().enumerate() {
            let (c, len) = to_c(to);
            let bytes = bytes.as_ref();
            let name = addrs[i].write(c) as *mut CAddr;
            let iov = iovs[i].write(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            }) as *mut libc::iovec;
            // SAFETY: all-zero is a valid msghdr (null control, no flags);
            // the fields that matter are set right after.
            let mut h: libc::msghdr = unsafe { zeroed() };
            h.msg_name = name.cast();
            h.msg_namelen = len;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            hdrs[i].write(libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            });
        }
        loop {
            // SAFETY: `hdrs[..n]` are initialised and point into `addrs` and
            // `iovs` (alive for the call) and into `msgs`' byte slices, which
            // the kernel only reads.
            let rc = unsafe {
                libc::sendmmsg(
                    self.0.as_raw_fd(),
                    hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Whether a send error means "try again when writable" rather than "this
/// datagram cannot go".
fn is_transient(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Outgoing datagrams of one socket, sent in batches, in order, each once.
/// `P` is the payload: `Rc<[u8]>` lets a fan-out queue one encoding for
/// thousands of recipients without a copy each.
#[derive(Debug)]
pub struct SendQueue<P> {
    queue: VecDeque<(SocketAddr, P)>,
    cap: usize,
    bytes: usize,
    max_bytes: usize,
    /// Datagrams not sent: the queue was full, or the kernel refused that
    /// datagram (an unreachable address, say).
    pub dropped: u64,
    /// Datagrams handed to the kernel, and the system calls that did it.
    pub sent: u64,
    pub calls: u64,
}

/// What a [`SendQueue::flush`] ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything is out.
    Empty,
    /// The socket is full: wait for it to be writable.
    Blocked,
}

impl<P: AsRef<[u8]>> SendQueue<P> {
    /// A queue of at most `cap` datagrams and `max_bytes` payload bytes.
    pub fn with_caps(cap: usize, max_bytes: usize) -> Self {
        SendQueue {
            queue: VecDeque::new(),
            cap,
            bytes: 0,
            max_bytes,
            dropped: 0,
            sent: 0,
            calls: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Queues one datagram behind the others; counts it dropped when full.
    pub fn push(&mut self, to: SocketAddr, payload: P) {
        let len = payload.as_ref().len();
        if self.queue.len() >= self.cap || self.bytes.saturating_add(len) > self.max_bytes {
            self.dropped += 1;
            return;
        }
        self.bytes += len;
        self.queue.push_back((to, payload));
    }

    /// Sends from the front, [`BATCH`] at a time, until empty or the socket
    /// is full. Each round either takes at least one datagram off the queue
    /// or returns, so this ends.
    pub fn flush(&mut self, tx: &mut impl BatchSend) -> Flushed {
        while !self.queue.is_empty() {
            // The queue's front, in place: no copy, no allocation (after a
            // wrap-around, the part before it goes first, a shorter call).
            let batch = self.queue.as_slices().0;
            let batch = &batch[..batch.len().min(BATCH)];
            let taken = match tx.send_batch(batch) {
                // Nothing taken and no error: treat as full rather than spin.
                Ok(0) => return Flushed::Blocked,
                Ok(n) => {
                    self.calls += 1;
                    self.sent += n as u64;
                    n.min(batch.len())
                }
                Err(e) if is_transient(&e) => return Flushed::Blocked,
                Err(e) => {
                    // The first datagram cannot go (EMSGSIZE, EPERM from a
                    // firewall, an address family the socket cannot reach):
                    // UDP is best effort and the retransmit schedule above
                    // covers a lost delivery; the rest still go.
                    self.calls += 1;
                    self.dropped += 1;
                    log::debug!("udp send to {} failed: {e}", batch[0].0);
                    1
                }
            };
            for _ in 0..taken {
                if let Some((_, p)) = self.queue.pop_front() {
                    self.bytes -= p.as_ref().len();
                }
            }
        }
        // Drained after a burst: do not keep its memory resident.
        self.queue = VecDeque::new();
        Flushed::Empty
    }
}

/// Receive buffers for `recvmmsg`, allocated once, with their headers: the
/// headers point into the buffers (heap memory, which stays put when the
/// `RecvBatch` moves) and are built once; each call resets only what the
/// kernel wrote into them (the address lengths).
pub struct RecvBatch {
    /// `slots × slot` bytes.
    bufs: Box<[u8]>,
    slot: usize,
    slots: usize,
    addrs: Box<[libc::sockaddr_storage]>,
    /// Never read: kept alive because `hdrs` point at them.
    _iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    lens: Vec<usize>,
    /// `recvmmsg` calls made, and datagrams they returned.
    pub calls: u64,
    pub received: u64,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slot", &self.slot)
            .field("slots", &self.slots)
            .finish()
    }
}

impl RecvBatch {
    /// Room for `slots` datagrams (at most [`BATCH`]) of up to `slot` bytes;
    /// a longer datagram arrives cut to `slot` bytes, so give one byte more
    /// than the largest valid datagram and let the parser refuse it.
    pub fn new(slot: usize, slots: usize) -> Self {
        let slots = slots.clamp(1, BATCH);
        let mut bufs = vec![0u8; slot * slots].into_boxed_slice();
        // SAFETY: all-zero is a valid sockaddr_storage, iovec and mmsghdr.
        let mut addrs: Box<[libc::sockaddr_storage]> =
            (0..slots).map(|_| unsafe { zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> = (0..slots)
            .map(|i| libc::iovec {
                iov_base: bufs[i * slot..].as_mut_ptr().cast(),
                iov_len: slot,
            })
            .collect();
        let hdrs: Box<[libc::mmsghdr]> = (0..slots)
            .map(|i| {
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_iov = &mut iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        RecvBatch {
            bufs,
            slot,
            slots,
            addrs,
            _iovs: iovs,
            hdrs,
            lens: vec![0; slots],
            calls: 0,
            received: 0,
        }
    }

    /// One `recvmmsg` without waiting: how many datagrams came (at least
    /// one), or `WouldBlock`, or the error.
    fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        // The kernel writes each header's `msg_namelen`, `msg_flags` and
        // `msg_len`; only the first is read back as an input (on one socket
        // it always writes the same length, but that is the kernel's
        // business: one store per slot keeps this independent of it).
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        loop {
            // SAFETY: every header points at a distinct `slot`-byte part of
            // `bufs` and at its own address storage, all owned by `self`.
            let rc = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    self.slots as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                let n = rc as usize;
                for (len, h) in self.lens.iter_mut().zip(&self.hdrs[..n]) {
                    *len = (h.msg_len as usize).min(self.slot);
                }
                self.calls += 1;
                self.received += n as u64;
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Reads datagrams until the socket would block or `budget` datagrams
    /// were read, handing each to `on` with its source. True when the budget
    /// ran out first: more may wait, read again without a new event.
    pub fn drain(
        &mut self,
        sock: &impl AsRawFd,
        budget: usize,
        mut on: impl FnMut(SocketAddr, &[u8]),
    ) -> bool {
        let mut taken = 0;
        while taken < budget {
            let n = match self.recv(sock) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    // A pending ICMP error and the like: reported once by
                    // the kernel, the next read goes on. Read again next
                    // turn rather than spin on a socket in trouble.
                    log::debug!("udp receive error: {e}");
                    return true;
                }
            };
            for i in 0..n {
                if let Some(from) = from_c(&self.addrs[i]) {
                    let at = i * self.slot;
                    on(from, &self.bufs[at..at + self.lens[i]]);
                }
            }
            taken += n;
            if n < self.slots {
                // Short batch: the kernel stopped at `WouldBlock` (see the
                // module invariants), so the socket is drained.
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// A kernel that takes at most `plan[k]` datagrams on call k (0 means
    /// `EAGAIN`, `usize::MAX` means "refuse the first one with `EPERM`"),
    /// then everything once the plan is spent.
    struct Choosy {
        plan: Vec<usize>,
        call: usize,
        got: Vec<(SocketAddr, Vec<u8>)>,
    }

    impl BatchSend for Choosy {
        fn send_batch<P: AsRef<[u8]>>(&mut self, msgs: &[(SocketAddr, P)]) -> io::Result<usize> {
            let limit = self.plan.get(self.call).copied().unwrap_or(usize::MAX - 1);
            self.call += 1;
            if limit == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if limit == usize::MAX {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            let n = msgs.len().min(BATCH).min(limit);
            self.got
                .extend(msgs[..n].iter().map(|(a, b)| (*a, b.as_ref().to_vec())));
            Ok(n)
        }
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, (i >> 8) as u8, i as u8], 1000 + i as u16))
    }

    #[test]
    fn partial_sends_and_eagain_lose_and_reorder_nothing() {
        let mut q: SendQueue<Rc<[u8]>> = SendQueue::with_caps(10_000, usize::MAX);
        let payload = |i: usize| -> Rc<[u8]> { format!("d{i}").into_bytes().into() };
        for i in 0..300 {
            q.push(addr(i), payload(i));
        }
        let mut k = Choosy {
            plan: vec![3, 64, 0, 1, 17, 0, 0, 63, 2],
            call: 0,
            got: Vec::new(),
        };
        assert_eq!(q.flush(&mut k), Flushed::Blocked, "EAGAIN on call 3");
        assert_eq!(k.got.len(), 3 + 64);
        assert_eq!(q.len(), 300 - 67);
        // More pushed while blocked go behind what waits.
        for i in 300..400 {
            q.push(addr(i), payload(i));
        }
        assert_eq!(q.flush(&mut k), Flushed::Blocked);
        assert_eq!(q.flush(&mut k), Flushed::Blocked);
        assert_eq!(q.flush(&mut k), Flushed::Empty);
        let want: Vec<(SocketAddr, Vec<u8>)> =
            (0..400).map(|i| (addr(i), payload(i).to_vec())).collect();
        assert_eq!(k.got, want, "each datagram once, in push order");
        assert_eq!((q.dropped, q.sent, q.bytes), (0, 400, 0));
    }

    #[test]
    fn a_refused_datagram_is_dropped_alone() {
        let mut q: SendQueue<Vec<u8>> = SendQueue::with_caps(100, usize::MAX);
        for i in 0..10 {
            q.push(addr(i), vec![i as u8]);
        }
        // Call 1 takes two; call 2 refuses datagram 2; the rest go.
        let mut k = Choosy {
            plan: vec![2, usize::MAX],
            call: 0,
            got: Vec::new(),
        };
        assert_eq!(q.flush(&mut k), Flushed::Empty);
        let sent: Vec<u8> = k.got.iter().map(|(_, b)| b[0]).collect();
        assert_eq!(sent, vec![0, 1, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(q.dropped, 1);
    }

    #[test]
    fn the_queue_is_bounded_in_datagrams_and_bytes() {
        let mut q: SendQueue<Vec<u8>> = SendQueue::with_caps(3, 250);
        q.push(addr(0), vec![0; 100]);
        q.push(addr(1), vec![0; 100]);
        q.push(addr(2), vec![0; 100]);
        assert_eq!((q.len(), q.dropped), (2, 1), "bytes bound");
        q.push(addr(3), vec![0; 10]);
        q.push(addr(4), vec![0; 10]);
        assert_eq!((q.len(), q.dropped), (3, 2), "count bound");
    }

    #[test]
    fn addresses_round_trip_through_the_c_form() {
        for a in [
            "127.0.0.1:4400",
            "[::1]:9",
            "[::ffff:10.1.2.3]:65535",
            "[fe80::1%3]:7",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut s: libc::sockaddr_storage = unsafe { zeroed() };
            let (c, len) = to_c(&a);
            // SAFETY: `len` bytes of `c` into storage larger than either form.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&c as *const CAddr).cast::<u8>(),
                    (&mut s as *mut libc::sockaddr_storage).cast::<u8>(),
                    len as usize,
                )
            };
            assert_eq!(from_c(&s), Some(a));
        }
    }

    /// Real sockets: many datagrams to many receivers through sendmmsg, read
    /// back with recvmmsg: each arrives exactly once, in order per receiver,
    /// with the right source address.
    #[test]
    fn over_loopback_every_datagram_arrives_once_in_order() {
        use std::net::UdpSocket;
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = tx.local_addr().unwrap();
        let rx: Vec<UdpSocket> = (0..40)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let per = 20;
        let mut q: SendQueue<Rc<[u8]>> = SendQueue::with_caps(100_000, usize::MAX);
        for k in 0..per {
            for (i, r) in rx.iter().enumerate() {
                let p: Rc<[u8]> = format!("{i}:{k}").into_bytes().into();
                q.push(r.local_addr().unwrap(), p);
            }
        }
        // 800 datagrams of a few bytes fit the receivers' default buffers.
        let mut sent = Flushed::Blocked;
        for _ in 0..100 {
            sent = q.flush(&mut Mmsg(&tx));
            if sent == Flushed::Empty {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(sent, Flushed::Empty);
        assert!(
            q.calls < q.sent,
            "batched: {} calls for {}",
            q.calls,
            q.sent
        );
        let mut batch = RecvBatch::new(64, 8);
        for (i, r) in rx.iter().enumerate() {
            r.set_nonblocking(true).unwrap();
            let mut got = Vec::new();
            // Budget 5 < 20 waiting: reported as "more may wait".
            let more = batch.drain(r, 5, |a, b| got.push((a, b.to_vec())));
            assert!(more);
            for _ in 0..10 {
                if !batch.drain(r, 1000, |a, b| got.push((a, b.to_vec()))) {
                    break;
                }
            }
            let want: Vec<(SocketAddr, Vec<u8>)> = (0..per)
                .map(|k| (from, format!("{i}:{k}").into_bytes()))
                .collect();
            assert_eq!(got, want, "receiver {i}");
        }
        assert!(batch.calls < batch.received);
    }

    /// The headers are built once and reused across calls: each call still
    /// reports its own sources (an IPv4-mapped one, then a native IPv6 one)
    /// and its own lengths (40 bytes, then 3 in the same slot).
    #[test]
    fn reused_headers_give_each_call_its_own_sources_and_lengths() {
        use std::net::UdpSocket;
        let Ok(rx) = UdpSocket::bind("[::]:0") else {
            println!("skipped: no IPv6 on this host");
            return;
        };
        let port = rx.local_addr().unwrap().port();
        rx.set_nonblocking(true).unwrap();
        let (Ok(v4), Ok(v6)) = (UdpSocket::bind("127.0.0.1:0"), UdpSocket::bind("[::1]:0")) else {
            println!("skipped: no IPv4 and IPv6 loopback on this host");
            return;
        };
        let mut batch = RecvBatch::new(64, 4);
        let mut got = Vec::new();
        let read = |batch: &mut RecvBatch, want: usize, got: &mut Vec<(SocketAddr, Vec<u8>)>| {
            for _ in 0..200 {
                batch.drain(&rx, 100, |a, b| got.push((a, b.to_vec())));
                if got.len() >= want {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        v4.send_to(&[1u8; 40], ("127.0.0.1", port)).unwrap();
        read(&mut batch, 1, &mut got);
        v6.send_to(&[2u8; 3], ("::1", port)).unwrap();
        read(&mut batch, 2, &mut got);
        let v4_at = SocketAddr::from((
            [0, 0, 0, 0, 0, 0xffff, 0x7f00, 1],
            v4.local_addr().unwrap().port(),
        ));
        assert_eq!(
            got,
            vec![
                (v4_at, vec![1u8; 40]),
                (v6.local_addr().unwrap(), vec![2u8; 3])
            ]
        );
    }

    #[test]
    fn a_datagram_longer_than_a_slot_arrives_cut() {
        use std::net::UdpSocket;
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        tx.send_to(&[7u8; 100], rx.local_addr().unwrap()).unwrap();
        tx.send_to(&[8u8; 3], rx.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new(10, 4);
        let mut got = Vec::new();
        for _ in 0..100 {
            batch.drain(&rx, 100, |_, b| got.push(b.to_vec()));
            if got.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, vec![vec![7u8; 10], vec![8u8; 3]]);
    }
}

//! Links across NATs, in a topology of network namespaces the tests build
//! themselves (`netns.rs`): the real server on a "public" segment, real clients
//! on it and behind Linux masquerade routers that drop unsolicited inbound
//! packets (a home router). Skipped, with a printed reason, when not root or
//! `ip`/`nft` are missing; CI runs as root and runs them.
//!
//! These tests assert correctness: a link forms, with the right peer (the line
//! that says it is up names the user, a message sent over it arrives, and a
//! bystander never links), or both users get the one clear failure line.
//! Speed is not asserted; `nat_figures` (ignored by default, run by
//! `tools/nat-figures.sh`) measures success rate and time to link.

use std::time::{Duration, Instant};

use super::harness::{Client, Server, CLIENT_BIN, SERVER_BIN};
use super::netns::{Mapping, Topology, RA_WAN};

/// Bound for one link to come up, or for the no-path line (generous: the
/// machine is shared; the clients give up after `reverse::LINK_WINDOW`, 8 s).
const LINK_WAIT: Duration = Duration::from_secs(20);

/// A topology with the server running on its public segment. Field order
/// matters: clients (declared by the caller after this) die before the
/// server, the server before the namespaces.
struct Net {
    server: Server,
    _dir: tempfile::TempDir,
    topo: Topology,
}

impl Net {
    fn build(test: &str, mapping: Mapping) -> Option<Net> {
        let topo = Topology::build(test, mapping)?;
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = topo.command(&topo.public, SERVER_BIN);
        cmd.args(["--bind", "10.99.0.1", "--port", "0", "--data-dir"])
            .arg(dir.path())
            .args(["--kdf-iterations", "1000", "--signup-rate", "0"]);
        let server = Server::spawn_cmd(cmd, dir.path());
        Some(Net {
            server,
            _dir: dir,
            topo,
        })
    }

    /// `user`, signed up and logged in with a client in namespace `ns`.
    fn user(&self, ns: &str, user: &'static str) -> User {
        let mut cmd = self.topo.command(ns, CLIENT_BIN);
        cmd.arg(self.server.tcp.ip().to_string())
            .arg(self.server.tcp.port().to_string())
            // TLS, trusting exactly this server's key (not loopback: a plaintext
            // login would get `tls-required`).
            .arg("--fingerprint")
            .arg(self.server.fingerprint())
            .stderr(std::process::Stdio::null());
        let mut c = Client::start_cmd(cmd);
        c.send(&format!("/signup {user} pw-{user} pw-{user}"));
        c.send(&format!("/login {user} pw-{user}"));
        c.expect(&format!("logged in as {user}"));
        User { c, name: user }
    }
}

/// A logged-in user: the client and its username.
struct User {
    c: Client,
    name: &'static str,
}

/// `req` asks `acc` for a link and `acc` accepts when asked; returns when
/// the `/accept` went out.
fn ask_and_accept(req: &mut User, acc: &mut User) -> Instant {
    let (rn, an) = (req.name, acc.name);
    req.c.send(&format!("/connect {an}"));
    acc.c.expect(&format!("/accept {rn}"));
    let sent = Instant::now();
    acc.c.send(&format!("/accept {rn}"));
    sent
}

/// How one attempt ended.
enum Attempt {
    /// Up on both sides with the right peer, a message each way: time from
    /// `/accept` to the requester seeing the link up.
    Linked(Duration),
    /// Both users got the no-path line.
    NoPath,
    /// Neither within [`LINK_WAIT`].
    Nothing,
}

/// One link from `req` to `acc`, then a message each way and `/bye`.
fn one_link(req: &mut User, acc: &mut User) -> Attempt {
    let (rn, an) = (req.name, acc.name);
    let t0 = ask_and_accept(req, acc);
    // Dialled by the requester (forward or punched), or dialled back by the
    // acceptor; either way the line names the peer the hello authenticated.
    let dialled = format!("direct link with {an} is up");
    let dialled_back = format!("{an} connected; direct link is up (encrypted)");
    let no_path = format!("no direct path to {an}");
    let Some(line) = req
        .c
        .expect_within(&[&dialled, &dialled_back, &no_path], LINK_WAIT)
    else {
        return Attempt::Nothing;
    };
    if line.contains(&no_path) {
        acc.c
            .expect_long(&format!("no direct path to {rn}"), LINK_WAIT);
        return Attempt::NoPath;
    }
    let took = t0.elapsed();
    let dialled = format!("{rn} connected; direct link is up (encrypted)");
    let dialled_back = format!("direct link with {rn} is up");
    acc.c
        .expect_within(&[&dialled, &dialled_back], LINK_WAIT)
        .unwrap_or_else(|| panic!("{an} never saw the link that {rn} saw: {line}"));
    req.c.send(&format!("/msg {an} ping from {rn}"));
    acc.c.expect(&format!("<{rn}> ping from {rn}"));
    acc.c.send(&format!("/msg {rn} pong from {an}"));
    req.c.expect(&format!("<{an}> pong from {an}"));
    req.c.send(&format!("/bye {an}"));
    acc.c.expect(&format!("{rn} closed the direct link"));
    Attempt::Linked(took)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What `n` attempts of one case gave.
struct Outcome {
    label: String,
    n: usize,
    times: Vec<Duration>,
    /// Attempts that ended with the no-path line on both sides.
    no_path: usize,
}

impl Outcome {
    fn linked(&self) -> usize {
        self.times.len()
    }

    /// One line for the test log, and the row of the figures table.
    fn row(&self) -> String {
        let ok = self.linked();
        let pct = 100.0 * ok as f64 / self.n as f64;
        let (label, n, np) = (&self.label, self.n, self.no_path);
        if ok == 0 {
            return format!("| {label} | {ok}/{n} ({pct:.0} %) | {np}/{n} | – | – |");
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "| {label} | {ok}/{n} ({pct:.0} %) | {np}/{n} | {:.0} ms | {:.0} ms |",
            ms(percentile(&self.times, 0.5)),
            ms(percentile(&self.times, 0.99))
        )
    }
}

/// The one per-case loop: `n` links from `req` to `acc` in a row.
fn case(label: &str, n: usize, req: &mut User, acc: &mut User) -> Outcome {
    let mut times = Vec::new();
    let mut no_path = 0;
    for _ in 0..n {
        match one_link(req, acc) {
            Attempt::Linked(t) => times.push(t),
            Attempt::NoPath => no_path += 1,
            Attempt::Nothing => {}
        }
    }
    times.sort();
    let out = Outcome {
        label: label.to_owned(),
        n,
        times,
        no_path,
    };
    println!("nat {}", out.row());
    out
}

/// `req` asks `acc`, no direct path exists: one clear line each, naming the
/// fix, and no link.
fn no_path_between(req: &mut User, acc: &mut User) {
    let (r0, a0) = (req.c.seen.len(), acc.c.seen.len());
    let (rn, an) = (req.name, acc.name);
    ask_and_accept(req, acc);
    let said_r = req
        .c
        .expect_long(&format!("no direct path to {an}"), LINK_WAIT);
    let said_a = acc
        .c
        .expect_long(&format!("no direct path to {rn}"), LINK_WAIT);
    for said in [&said_r, &said_a] {
        assert!(said.contains("--listen-port"), "{said}");
    }
    // Anything late (a link, a second line) would show within a moment.
    req.c.lines_for(Duration::from_millis(500));
    acc.c.lines_for(Duration::from_millis(500));
    let after: Vec<&String> = req.c.seen[r0..].iter().chain(&acc.c.seen[a0..]).collect();
    assert!(
        after.iter().all(|l| !l.contains("is up")),
        "a link came up where no direct path exists: {after:#?}"
    );
    assert_eq!(
        after
            .iter()
            .filter(|l| l.contains("no direct path"))
            .count(),
        2,
        "one line each: {after:#?}"
    );
}

/// Links per case in the regular tests (correctness, not figures).
const N: usize = 2;

/// The topology routes and translates: the server sees the client behind
/// NAT A at router A's public address. Then links where the acceptor is
/// reachable: public ↔ public, and a NATed requester dialling a public acceptor.
#[test]
fn nat_links_to_a_reachable_acceptor() {
    let Some(net) = Net::build(
        "nat_links_to_a_reachable_acceptor",
        Mapping::EndpointIndependent,
    ) else {
        return;
    };
    let mut pubu = net.user(&net.topo.c0, "pubu");
    let mut pub2 = net.user(&net.topo.public, "pub2");
    let mut nata = net.user(&net.topo.ca, "nata");
    nata.c.send("/list");
    nata.c.expect(&format!("{RA_WAN}"));
    let r = case("public→public", N, &mut pub2, &mut pubu);
    assert_eq!(r.linked(), N);
    let r = case("NAT→public", N, &mut nata, &mut pubu);
    assert_eq!(r.linked(), N);
}

/// A public requester and an acceptor behind NAT A, whose router drops the
/// requester's dial: the link still forms (dial-back or simultaneous open),
/// with the right peer.
#[test]
fn nat_public_requester_reaches_a_natted_acceptor() {
    let Some(net) = Net::build(
        "nat_public_requester_reaches_a_natted_acceptor",
        Mapping::EndpointIndependent,
    ) else {
        return;
    };
    let mut pubu = net.user(&net.topo.c0, "pubu");
    let mut nata = net.user(&net.topo.ca, "nata");
    let r = case("public→NAT", N, &mut pubu, &mut nata);
    assert_eq!(r.linked(), N);
}

/// Two clients behind two different NATs with endpoint-independent mapping,
/// neither forwarded: only a simultaneous open can link them (the forward
/// dial and the dial-back are both dropped by the routers). The link forms,
/// both ways round, with the right peer; a third client behind the same NAT
/// as one of them, which was never introduced, sees no link.
#[test]
fn nat_to_nat_links_by_simultaneous_open() {
    let Some(net) = Net::build(
        "nat_to_nat_links_by_simultaneous_open",
        Mapping::EndpointIndependent,
    ) else {
        return;
    };
    let mut nata = net.user(&net.topo.ca, "nata");
    let mut natb = net.user(&net.topo.cb, "natb");
    let mut bystander = net.user(&net.topo.ca, "nosy");
    let r = case("NAT→NAT (EIM)", N, &mut natb, &mut nata);
    assert_eq!(
        r.linked(),
        N,
        "simultaneous open did not link NAT B → NAT A"
    );
    let r = case("NAT→NAT (EIM), other way", 1, &mut nata, &mut natb);
    assert_eq!(r.linked(), 1);
    bystander.c.lines_for(Duration::from_millis(300));
    assert!(
        bystander.c.seen.iter().all(|l| !l.contains("is up")),
        "{:#?}",
        bystander.c.seen
    );
}

/// Symmetric NAT (a random source port per connection, `masquerade random`):
/// a public peer still links through the dial-back, and two such clients get
/// the clear failure (the port the server saw is not the one a punch leaves
/// from).
#[test]
fn symmetric_nat_links_to_public_and_says_no_path_between_nats() {
    let Some(net) = Net::build(
        "symmetric_nat_links_to_public_and_says_no_path_between_nats",
        Mapping::Symmetric,
    ) else {
        return;
    };
    let mut pubu = net.user(&net.topo.c0, "pubu");
    let mut nata = net.user(&net.topo.ca, "nata");
    let mut natb = net.user(&net.topo.cb, "natb");
    let r = case("public→symmetric NAT", 1, &mut pubu, &mut nata);
    assert_eq!(r.linked(), 1);
    no_path_between(&mut natb, &mut nata);
}

/// The figures: 20 attempts per case (`PEERLINE_NAT_ATTEMPTS` changes it),
/// success rate and time to link p50/p99, printed as a Markdown table.
/// Ignored by default (it takes minutes); `tools/nat-figures.sh` runs it.
#[test]
#[ignore = "figures, not a check: run by tools/nat-figures.sh"]
fn nat_figures() {
    let n: usize = std::env::var("PEERLINE_NAT_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut rows = Vec::new();
    if let Some(net) = Net::build("nat_figures", Mapping::EndpointIndependent) {
        let mut pubu = net.user(&net.topo.c0, "pubu");
        let mut pub2 = net.user(&net.topo.public, "pub2");
        let mut nata = net.user(&net.topo.ca, "nata");
        let mut natb = net.user(&net.topo.cb, "natb");
        rows.push(case("public → public", n, &mut pub2, &mut pubu));
        rows.push(case("public → NAT", n, &mut pubu, &mut nata));
        rows.push(case("NAT → public", n, &mut nata, &mut pubu));
        rows.push(case(
            "NAT → NAT, endpoint-independent",
            n,
            &mut natb,
            &mut nata,
        ));
    } else {
        return;
    }
    if let Some(net) = Net::build("nat_figures_symmetric", Mapping::Symmetric) {
        let mut nata = net.user(&net.topo.ca, "nata");
        let mut natb = net.user(&net.topo.cb, "natb");
        rows.push(case(
            "NAT → NAT, symmetric (no path: the clear line is the success)",
            n,
            &mut natb,
            &mut nata,
        ));
    }
    println!(
        "\n| case | linked | no-path line (both) | time to link p50 | p99 |\n\
         | --- | --- | --- | --- | --- |"
    );
    for r in &rows {
        println!("{}", r.row());
    }
}

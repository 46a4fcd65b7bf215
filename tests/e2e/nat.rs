//! Links across NATs, in a topology of network namespaces the tests build
//! themselves (`netns.rs`): the real server on a "public" segment, real clients
//! on it and behind Linux masquerade routers. Skipped, with a printed reason,
//! when not root or `ip`/`nft` are missing; CI runs as root and runs them.
//!
//! Each case makes several links in a row between the same two clients and
//! prints its success rate and time to link (from `/accept` to the requester
//! seeing the link up). A link must be with the right peer: the line that says
//! it is up names the user, and a message sent over it arrives.

use std::time::{Duration, Instant};

use super::harness::{Client, Server, CLIENT_BIN, SERVER_BIN};
use super::netns::{Mapping, Topology, RA_WAN};

/// Links per case. The figures are over 20; CI time is scarce, so the
/// default is smaller and `PEERLINE_NAT_ATTEMPTS` raises it.
fn attempts() -> usize {
    std::env::var("PEERLINE_NAT_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Bound for one link to come up (generous: the machine is shared).
const LINK_WAIT: Duration = Duration::from_secs(15);

fn server_in(topo: &Topology, dir: &std::path::Path) -> Server {
    let mut cmd = topo.command(&topo.public, SERVER_BIN);
    cmd.args(["--bind", "10.99.0.1", "--port", "0", "--data-dir"])
        .arg(dir)
        .args(["--kdf-iterations", "1000"]);
    Server::spawn_cmd(cmd, dir)
}

fn client_in(topo: &Topology, ns: &str, server: &Server, user: &str) -> Client {
    let mut cmd = topo.command(ns, CLIENT_BIN);
    cmd.arg(server.tcp.ip().to_string())
        .arg(server.tcp.port().to_string())
        // TLS, trusting exactly this server's key (not loopback: a plaintext
        // login would get `tls-required`).
        .arg("--fingerprint")
        .arg(server.fingerprint())
        .stderr(std::process::Stdio::null());
    let mut c = Client::start_cmd(cmd);
    c.send(&format!("/signup {user} pw-{user} pw-{user}"));
    c.send(&format!("/login {user} pw-{user}"));
    c.expect(&format!("logged in as {user}"));
    c
}

/// One link from `req` to `acc`, then a message each way and `/bye`.
/// Returns the time from `/accept` to the requester seeing the link up, or
/// `None` if it did not come up within [`LINK_WAIT`].
fn one_link(
    req: &mut Client,
    req_name: &str,
    acc: &mut Client,
    acc_name: &str,
) -> Option<Duration> {
    req.send(&format!("/connect {acc_name}"));
    acc.expect(&format!("/accept {req_name}"));
    let t0 = Instant::now();
    acc.send(&format!("/accept {req_name}"));
    // Dialled by the requester, or dialled back by the acceptor; either way
    // the line names the peer the encrypted hello authenticated.
    let dialled = format!("direct link with {acc_name} is up");
    let dialled_back = format!("{acc_name} connected; direct link is up (encrypted)");
    let line = req.expect_within(&[&dialled, &dialled_back], LINK_WAIT)?;
    let took = t0.elapsed();
    let dialled = format!("{req_name} connected; direct link is up (encrypted)");
    let dialled_back = format!("direct link with {req_name} is up");
    acc.expect_within(&[&dialled, &dialled_back], LINK_WAIT)
        .unwrap_or_else(|| panic!("{acc_name} never saw the link that {req_name} saw: {line}"));
    req.send(&format!("/msg {acc_name} ping from {req_name}"));
    acc.expect(&format!("<{req_name}> ping from {req_name}"));
    acc.send(&format!("/msg {req_name} pong from {acc_name}"));
    req.expect(&format!("<{acc_name}> pong from {acc_name}"));
    req.send(&format!("/bye {acc_name}"));
    acc.expect(&format!("{req_name} closed the direct link"));
    Some(took)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the case and returns how many of `n` links came up.
fn case(label: &str, n: usize, req: &mut Client, rn: &str, acc: &mut Client, an: &str) -> usize {
    let mut times = Vec::new();
    for _ in 0..n {
        match one_link(req, rn, acc, an) {
            Some(t) => times.push(t),
            None => break,
        }
    }
    times.sort();
    let ok = times.len();
    if ok > 0 {
        println!(
            "nat {label}: {ok}/{n} linked; time to link p50 {:?} p99 {:?}",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    } else {
        println!("nat {label}: 0/{n} linked");
    }
    ok
}

/// The topology routes and translates: the server sees the client behind
/// NAT A at router A's public address, and the public client at its own.
/// Then links where the acceptor is reachable: public ↔ public, and a NATed
/// requester dialling a public acceptor.
#[test]
fn nat_links_to_a_reachable_acceptor() {
    let Some(topo) = Topology::build(
        "nat_links_to_a_reachable_acceptor",
        Mapping::EndpointIndependent,
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let server = server_in(&topo, tmp.path());
    let mut pubu = client_in(&topo, &topo.c0, &server, "pubu");
    let mut pub2 = client_in(&topo, &topo.public, &server, "pub2");
    let mut nata = client_in(&topo, &topo.ca, &server, "nata");
    nata.send("/list");
    nata.expect(&format!("{RA_WAN}"));

    let n = attempts();
    assert_eq!(
        case("public→public", n, &mut pub2, "pub2", &mut pubu, "pubu"),
        n
    );
    assert_eq!(
        case("NAT→public", n, &mut nata, "nata", &mut pubu, "pubu"),
        n
    );
}

/// Reverse connection: a public requester and an acceptor behind NAT A (the
/// requester's dial is refused at the router; the acceptor dials back), and
/// the other way round. Two clients behind two NATs with no forwarded port
/// cannot link this way: both get the one "no direct path" line.
#[test]
fn nat_acceptor_dials_back_and_no_path_is_said() {
    let Some(topo) = Topology::build(
        "nat_acceptor_dials_back_and_no_path_is_said",
        Mapping::EndpointIndependent,
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let server = server_in(&topo, tmp.path());
    let mut pubu = client_in(&topo, &topo.c0, &server, "pubu");
    let mut nata = client_in(&topo, &topo.ca, &server, "nata");
    let mut natb = client_in(&topo, &topo.cb, &server, "natb");

    let n = attempts();
    assert_eq!(
        case("public→NAT", n, &mut pubu, "pubu", &mut nata, "nata"),
        n
    );
    assert_eq!(
        case("NAT→public", n, &mut nata, "nata", &mut pubu, "pubu"),
        n
    );

    no_path_between(&mut natb, "natb", &mut nata, "nata");
}

/// `req` behind one NAT asks `acc` behind another, neither forwarded: one
/// clear line each, naming the fix, and no link.
fn no_path_between(req: &mut Client, rn: &str, acc: &mut Client, an: &str) {
    let (r0, a0) = (req.seen.len(), acc.seen.len());
    req.send(&format!("/connect {an}"));
    acc.expect(&format!("/accept {rn}"));
    acc.send(&format!("/accept {rn}"));
    let said_r = req.expect(&format!("no direct path to {an}"));
    let said_a = acc.expect(&format!("no direct path to {rn}"));
    for said in [&said_r, &said_a] {
        assert!(said.contains("--listen-port"), "{said}");
    }
    let after: Vec<&String> = req.seen[r0..].iter().chain(&acc.seen[a0..]).collect();
    assert!(
        after.iter().all(|l| !l.contains("is up")),
        "a link came up between two NATs with no forwarded port: {after:#?}"
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

/// Symmetric NAT (a random source port per connection, `masquerade random`):
/// a public peer still links through the dial-back, and two such clients get
/// the clear failure.
#[test]
fn symmetric_nat_links_to_public_and_says_no_path_between_nats() {
    let Some(topo) = Topology::build(
        "symmetric_nat_links_to_public_and_says_no_path_between_nats",
        Mapping::Symmetric,
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let server = server_in(&topo, tmp.path());
    let mut pubu = client_in(&topo, &topo.c0, &server, "pubu");
    let mut nata = client_in(&topo, &topo.ca, &server, "nata");
    let mut natb = client_in(&topo, &topo.cb, &server, "natb");
    assert_eq!(
        case(
            "public→symmetric NAT",
            1,
            &mut pubu,
            "pubu",
            &mut nata,
            "nata"
        ),
        1
    );
    no_path_between(&mut natb, "natb", &mut nata, "nata");
}

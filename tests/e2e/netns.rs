//! A NAT test topology of network namespaces that the test builds itself.
//!
//! ```text
//!                 "public" 10.99.0.0/24 (bridge br0 in ns pub; the server runs there, 10.99.0.1)
//!     ┌──────────────┬─────────────────────┬──────────────────────┐
//!   c0 10.99.0.10   ra wan 10.99.0.2         rb wan 10.99.0.3
//!   (public client) │ masquerade             │ masquerade (or random ports: symmetric);
//!                   │ + drop unsolicited     │ both drop unsolicited inbound (home router)
//!                   ra lan 192.168.1.1       rb lan 192.168.2.1
//!                   ca 192.168.1.2           cb 192.168.2.2
//!                   (client behind NAT A)    (client behind NAT B)
//! ```
//!
//! Invariants:
//! - Every namespace name carries the test's PID and a per-process counter, so
//!   parallel tests and leftover runs never collide; nothing is created in the
//!   root namespace (veth pairs are made inside a namespace and their peer is
//!   moved straight into another).
//! - `Drop` deletes every namespace it created (and with them their veths and
//!   nftables rules), whether the test passed or panicked. Declare the topology
//!   before the processes that run in it, so they are killed first.
//! - `Topology::build` returns `None`, after printing why, when the test cannot
//!   run (not root, `ip`/`nft` missing, namespaces not permitted): the caller
//!   skips.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How the routers translate source ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Linux masquerade: keeps the source port when it can, one mapping per
    /// internal socket whatever the destination (endpoint-independent).
    EndpointIndependent,
    /// Random source port per connection (`masquerade random`): symmetric NAT.
    Symmetric,
}

/// The namespaces of one topology; see the module doc for the addresses.
pub struct Topology {
    /// The public segment; the server runs here.
    pub public: String,
    /// A client directly on the public segment.
    pub c0: String,
    /// NAT routers A and B.
    pub ra: String,
    pub rb: String,
    /// Clients behind NAT A and NAT B.
    pub ca: String,
    pub cb: String,
    made: Vec<String>,
}

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const C0_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
pub const RA_WAN: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const RB_WAN: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);

fn tool(name: &str, version_flag: &str) -> bool {
    Command::new(name)
        .arg(version_flag)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Why this machine cannot build the topology, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        return Some("not root (network namespaces need CAP_NET_ADMIN)".into());
    }
    if !tool("ip", "-V") {
        return Some("`ip` (iproute2) is missing".into());
    }
    if !tool("nft", "--version") {
        return Some("`nft` (Debian package nftables, ci/apt-packages.txt) is missing".into());
    }
    None
}

extern "C" {
    fn geteuid() -> u32;
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Loads an nftables ruleset into `ns` (from stdin: `nft` reads a ruleset
/// file more reliably than one command-line argument).
fn nft(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())
        .map_err(|e| format!("nft stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft -f - failed on {rules:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Topology {
    /// Builds the topology, or prints why it cannot and returns `None`.
    pub fn build(test: &str, mapping: Mapping) -> Option<Topology> {
        if let Some(why) = unavailable() {
            println!("SKIPPED {test}: {why}");
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        let tag = format!(
            "pl{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut t = Topology {
            public: format!("{tag}-pub"),
            c0: format!("{tag}-c0"),
            ra: format!("{tag}-ra"),
            rb: format!("{tag}-rb"),
            ca: format!("{tag}-ca"),
            cb: format!("{tag}-cb"),
            made: Vec::new(),
        };
        match t.setup(mapping) {
            Ok(()) => Some(t),
            // An environment that forbids namespaces (a container without
            // CAP_SYS_ADMIN) is a reason to skip; `t` is torn down on drop.
            Err(e) if t.made.is_empty() => {
                println!("SKIPPED {test}: cannot create a network namespace: {e}");
                eprintln!("SKIPPED {test}: cannot create a network namespace: {e}");
                None
            }
            Err(e) => panic!("building the NAT topology failed: {e}"),
        }
    }

    fn add_ns(&mut self, name: &str) -> Result<(), String> {
        run(&["ip", "netns", "add", name])?;
        self.made.push(name.to_owned());
        self.ip(name, &["link", "set", "lo", "up"])
    }

    fn ip(&self, ns: &str, args: &[&str]) -> Result<(), String> {
        let mut a = vec!["ip", "-n", ns];
        a.extend_from_slice(args);
        run(&a)
    }

    /// A veth pair `a` (in `ns_a`) ↔ `b` (in `ns_b`), both up.
    fn veth(&self, ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<(), String> {
        self.ip(
            ns_a,
            &[
                "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
            ],
        )?;
        self.ip(ns_a, &["link", "set", a, "up"])?;
        self.ip(ns_b, &["link", "set", b, "up"])
    }

    fn setup(&mut self, mapping: Mapping) -> Result<(), String> {
        let (public, c0, ra, rb, ca, cb) = (
            self.public.clone(),
            self.c0.clone(),
            self.ra.clone(),
            self.rb.clone(),
            self.ca.clone(),
            self.cb.clone(),
        );
        for ns in [&public, &c0, &ra, &rb, &ca, &cb] {
            self.add_ns(ns)?;
        }
        // The public segment: a bridge in `public`, which also holds the server's address.
        self.ip(&public, &["link", "add", "br0", "type", "bridge"])?;
        self.ip(&public, &["addr", "add", "10.99.0.1/24", "dev", "br0"])?;
        self.ip(&public, &["link", "set", "br0", "up"])?;
        for (ns, port, dev, addr) in [
            (&c0, "p-c0", "eth0", "10.99.0.10/24"),
            (&ra, "p-ra", "wan", "10.99.0.2/24"),
            (&rb, "p-rb", "wan", "10.99.0.3/24"),
        ] {
            self.veth(&public, port, ns, dev)?;
            self.ip(&public, &["link", "set", port, "master", "br0"])?;
            self.ip(ns, &["addr", "add", addr, "dev", dev])?;
        }
        for (router, client, lan) in [(&ra, &ca, "192.168.1"), (&rb, &cb, "192.168.2")] {
            self.veth(router, "lan", client, "eth0")?;
            self.ip(
                router,
                &["addr", "add", &format!("{lan}.1/24"), "dev", "lan"],
            )?;
            self.ip(
                client,
                &["addr", "add", &format!("{lan}.2/24"), "dev", "eth0"],
            )?;
            self.ip(
                client,
                &["route", "add", "default", "via", &format!("{lan}.1")],
            )?;
            run(&[
                "ip",
                "netns",
                "exec",
                router,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])?;
            let masq = match mapping {
                Mapping::EndpointIndependent => "masquerade",
                Mapping::Symmetric => "masquerade random",
            };
            // Masquerade, and a home router's firewall: what arrives on the
            // WAN side is let in only as part of a connection the LAN side
            // made (unsolicited SYNs are dropped, not answered with RST).
            // A SYN that crosses ours in a simultaneous open is the reply
            // direction of our own mapping, so it is let in.
            let rules = format!(
                "table ip nat {{\n chain post {{\n type nat hook postrouting priority 100;\n \
                 oifname \"wan\" {masq}\n }}\n}}\n\
                 table inet fw {{\n \
                 chain input {{\n type filter hook input priority 0;\n \
                 iifname \"wan\" ct state {{ new, invalid, untracked }} drop\n }}\n \
                 chain forward {{\n type filter hook forward priority 0;\n \
                 iifname \"wan\" ct state {{ new, invalid, untracked }} drop\n }}\n}}\n"
            );
            nft(router, &rules)?;
        }
        Ok(())
    }

    /// `ip netns exec <ns> <program>`: `ip` execs the program, so the child's
    /// PID is the program's and killing it by PID kills the program.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    pub fn server_ip() -> IpAddr {
        IpAddr::V4(SERVER_IP)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("netns teardown: {e}");
            }
        }
    }
}

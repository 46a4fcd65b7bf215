//! The scenarios, run the same way against each system: session setup and a
//! login storm on a server at its default password-hash cost, then — on a
//! server with a stated low cost — growth to 50, 1,000 and 10,000 sessions with
//! fan-out repeats at each size, sustained fan-out and an idle window at 1,000,
//! memory at the largest size, and PING round-trips during the largest fan-out.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::clock::now_ns;
use crate::fleet::{field, Fleet, Res};
use crate::procfs;
use crate::servers::Server;
use crate::stats::Summary;
use crate::worker::Proto;

#[derive(Debug, Clone)]
pub struct Plan {
    pub sizes: Vec<usize>,
    pub reps: usize,
    pub burst: usize,
    pub burst_window: usize,
    pub per_worker: usize,
    pub kdf_low: u32,
    pub default_sessions: usize,
    pub storm: usize,
    pub pingers: usize,
    pub ping_interval_ms: u64,
    pub idle_secs: u64,
    pub pad: usize,
    pub server_cpu: Option<usize>,
    pub tool_cpu: Option<usize>,
    pub growth_window: usize,
}

#[derive(Debug, Clone, Copy)]
pub enum System {
    Peerline,
    Mosquitto,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Peerline => "peerline",
            System::Mosquitto => "mosquitto",
        }
    }
    fn proto(self) -> Proto {
        match self {
            System::Peerline => Proto::Peerline,
            System::Mosquitto => Proto::Mqtt,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    pub sessions: u64,
    pub failed: u64,
    pub secs: f64,
}

impl Rate {
    pub fn per_sec(&self) -> f64 {
        self.sessions as f64 / self.secs.max(1e-9)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Pings {
    pub n: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// How long the disturbance (storm, fan-outs) lasted.
    pub during_secs: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Fan {
    pub n: usize,
    /// UDP receive-buffer drops on the host over all repeats.
    pub udp_drops: u64,
    /// Per repeat, nanoseconds: (receivers reached, first, last).
    pub samples: Vec<(u64, u64, u64)>,
    /// Per repeat, nanoseconds: when the last copy reached its receiver's
    /// socket (kernel timestamp), where `last` is when the tool read it.
    pub arrived: Vec<u64>,
}

impl Fan {
    pub fn first(&self) -> Option<Summary> {
        Summary::of(&self.samples.iter().map(|s| s.1).collect::<Vec<_>>())
    }
    pub fn last(&self) -> Option<Summary> {
        Summary::of(&self.samples.iter().map(|s| s.2).collect::<Vec<_>>())
    }
    pub fn arrived(&self) -> Option<Summary> {
        Summary::of(&self.arrived)
    }
    /// Repeats where some receiver had not got the message within the deadline.
    pub fn incomplete(&self) -> usize {
        self.samples.iter().filter(|s| s.0 < self.n as u64).count()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Sustained {
    pub n: usize,
    pub messages: usize,
    pub deliveries: u64,
    pub expected: u64,
    pub tcp_deliveries: u64,
    pub secs: f64,
    pub cpu_ms: f64,
    /// CPU the load generator used over the same span (all workers).
    pub tool_cpu_ms: f64,
    /// UDP datagrams the host dropped for want of receive-buffer room.
    pub udp_drops: u64,
}

impl Sustained {
    /// Share of its one CPU the load generator was busy: near 1.0 means the
    /// rate measured the tool, not the server.
    pub fn tool_busy(&self) -> f64 {
        self.tool_cpu_ms / (self.secs * 1000.0).max(1e-9)
    }
    pub fn per_sec(&self) -> f64 {
        self.deliveries as f64 / self.secs.max(1e-9)
    }
    pub fn cpu_ms_per_1000(&self) -> f64 {
        self.cpu_ms / (self.deliveries.max(1) as f64) * 1000.0
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Idle {
    pub sessions: usize,
    pub secs: u64,
    pub cpu_ms: f64,
    pub wakeups: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub n: usize,
    pub base: procfs::Status,
    pub at_n: procfs::Status,
    pub before_last_step: procfs::Status,
    pub before_last_step_n: usize,
}

impl Memory {
    pub fn kb_per_session(&self) -> f64 {
        (self.at_n.rss_kb as f64 - self.base.rss_kb as f64) / self.n.max(1) as f64
    }
    pub fn marginal_kb(&self) -> f64 {
        (self.at_n.rss_kb as f64 - self.before_last_step.rss_kb as f64)
            / (self.n - self.before_last_step_n).max(1) as f64
    }
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub system: String,
    pub setup_default: Option<Rate>,
    pub setup_low: Option<Rate>,
    pub storm: Option<Pings>,
    /// Sessions logging in to accounts stored before the start (for both
    /// systems, as mosquitto's password file is): the cost of a session.
    pub memory: Option<Memory>,
    /// Sessions signed up during the run: a session plus its new account.
    pub memory_with_accounts: Option<Memory>,
    pub fans: Vec<Fan>,
    pub sustained: Option<Sustained>,
    pub idle: Option<Idle>,
    pub fan_pings: Option<Pings>,
    pub closed_reasons: String,
    pub errors: Vec<String>,
    pub worker_errors: u64,
}

pub(crate) const PASSWORD: &str = "bench-pass-1";

/// Runs every scenario against one system. Failures of a scenario are recorded
/// in `errors` and the rest still runs where it can.
pub fn run(system: System, plan: &Plan, server_bin: &Path) -> Results {
    let mut r = Results {
        system: system.name().into(),
        ..Results::default()
    };
    eprintln!(
        "== {}: setup at the default password-hash cost, login storm",
        system.name()
    );
    if let Err(e) = phase_default(system, plan, server_bin, &mut r) {
        eprintln!("  {} default-cost phase failed: {e}", system.name());
        r.errors.push(format!("default-cost phase: {e}"));
    }
    eprintln!("== {}: memory per session", system.name());
    if let Err(e) = phase_memory(system, plan, server_bin, &mut r) {
        eprintln!("  {} memory phase failed: {e}", system.name());
        r.errors.push(format!("memory phase: {e}"));
    }
    eprintln!("== {}: fan-out, sustained, idle", system.name());
    if let Err(e) = phase_scale(system, plan, server_bin, &mut r) {
        eprintln!("  {} scale phase failed: {e}", system.name());
        r.errors.push(format!("scale phase: {e}"));
    }
    r
}

/// Starts the server. `accounts`: users `u0..` that exist before it starts
/// (mosquitto: its password file; peerline: its users.csv). The rest of the
/// users a scenario needs sign up through the protocol (peerline) or are in
/// the password file from the start (mosquitto, which has no signup).
fn start(
    system: System,
    plan: &Plan,
    bin: &Path,
    kdf: Option<u32>,
    accounts: usize,
    users: usize,
) -> Res<Server> {
    match system {
        System::Peerline => {
            Server::start_peerline(bin, kdf, plan.server_cpu, accounts, "u", PASSWORD)
        }
        System::Mosquitto => {
            Server::start_mosquitto(users.max(accounts), "u", PASSWORD, plan.server_cpu)
        }
    }
}

/// The server's `/proc/PID/status` figures (RSS, threads, context switches).
pub(crate) fn server_status(pid: u32) -> Res<procfs::Status> {
    procfs::status(pid).map_err(|e| format!("/proc/{pid}/status: {e}"))
}

/// The server's CPU ticks so far, from `/proc/PID/stat`.
pub(crate) fn server_cpu(pid: u32) -> Res<procfs::CpuTicks> {
    procfs::cpu(pid).map_err(|e| format!("/proc/{pid}/stat: {e}"))
}

/// The load generator for one phase: `workers` processes holding at most
/// `per_worker` sessions each, all speaking `system`'s protocol to `server`.
pub(crate) fn spawn_fleet(
    system: System,
    plan: &Plan,
    server: &Server,
    workers: usize,
    per_worker: usize,
) -> Res<Fleet> {
    Fleet::spawn(
        workers,
        per_worker,
        system.proto(),
        server.addr,
        "u",
        PASSWORD,
        plan.tool_cpu,
        system.name(),
    )
}

/// Runs `scenario` on `fleet`, then — whether it worked or not — counts the
/// workers' errors into `r` and shuts the fleet down.
pub(crate) fn with_fleet(
    mut fleet: Fleet,
    r: &mut Results,
    scenario: impl FnOnce(&mut Fleet, &mut Results) -> Res<()>,
) -> Res<()> {
    let res = scenario(&mut fleet, r);
    r.worker_errors += fleet.errors;
    fleet.shutdown();
    res
}

/// `plan.pingers` logged-in sessions on worker `w` start to PING every
/// `plan.ping_interval_ms`, staggered. `w` holds only those sessions: a
/// probe sharing a process with thousands of receivers measured that
/// process's backlog as much as the server's answer.
fn start_pings(fleet: &mut Fleet, w: usize, plan: &Plan) -> Res<()> {
    fleet.send(
        w,
        &format!("PINGSTART {} {}", plan.pingers, plan.ping_interval_ms),
    )?;
    fleet.expect(w, "PINGSTARTED", Duration::from_secs(10))?;
    Ok(())
}

/// Stops the PINGs on worker `w` and collects their round-trips;
/// `during_secs`: how long the disturbance they measured lasted.
fn stop_pings(fleet: &mut Fleet, w: usize, during_secs: f64) -> Res<Pings> {
    fleet.send(w, "PINGSTOP")?;
    let line = fleet.expect(w, "PINGS", Duration::from_secs(10))?;
    Ok(Pings {
        n: field(&line, "n"),
        p50_us: field(&line, "p50"),
        p99_us: field(&line, "p99"),
        max_us: field(&line, "max"),
        during_secs,
    })
}

fn phase_default(system: System, plan: &Plan, bin: &Path, r: &mut Results) -> Res<()> {
    let first = 100;
    let n = plan.default_sessions.max(plan.storm);
    let server = start(system, plan, bin, None, 0, first + n + 1)?;
    let out = spawn_fleet(system, plan, &server, 2, usize::MAX).and_then(|fleet| {
        with_fleet(fleet, r, |fleet, r| {
            // Logged-in users who will PING through the storm.
            let (ok, _, _) = fleet.grow(plan.pingers, plan.pingers, true, "r", 1, Some(0))?;
            if ok < plan.pingers as u64 {
                return Err(format!(
                    "only {ok} of {} pinging sessions came up",
                    plan.pingers
                ));
            }
            // Setup rate: sign up and log in, 64 at a time.
            let (ok, failed, secs) = fleet.grow(n, 64, true, "r", first, Some(1))?;
            r.setup_default = Some(Rate {
                sessions: ok,
                failed,
                secs,
            });
            eprintln!(
                "  setup at default cost: {ok} sessions in {secs:.1} s ({:.1}/s)",
                ok as f64 / secs
            );
            fleet.send(1, "DROP")?;
            fleet.expect(1, "DROPPED", Duration::from_secs(30))?;
            fleet.load[1] = 0;
            std::thread::sleep(Duration::from_millis(500));
            // The storm: `storm` logins at once while the others PING.
            start_pings(fleet, 0, plan)?;
            std::thread::sleep(Duration::from_millis(200));
            let (ok, failed, secs) =
                fleet.grow(plan.storm, plan.storm, false, "r", first, Some(1))?;
            let p = stop_pings(fleet, 0, secs)?;
            eprintln!(
                "  login storm: {ok} logins ({failed} failed) in {secs:.1} s; PING p50 {:.2} ms p99 {:.2} ms over {} pings",
                p.p50_us as f64 / 1000.0,
                p.p99_us as f64 / 1000.0,
                p.n
            );
            r.storm = Some(p);
            Ok(())
        })
    });
    server.stop();
    out
}

/// One broadcast to every receiver; returns (reached, first, last, arrived) in ns.
fn fan_once(fleet: &mut Fleet, rep: u64, pad: usize) -> Res<(u64, u64, u64, u64)> {
    fleet.all(&format!("WATCH {rep}"), "WATCHING", Duration::from_secs(10))?;
    fleet.send(0, &format!("BCAST {rep} {pad}"))?;
    let key = format!("FAN rep={rep} ");
    let (mut n, mut first, mut last, mut arrived) = (0, u64::MAX, 0, 0);
    for i in 0..fleet.len() {
        let line = match fleet.expect(i, &key, Duration::from_secs(15)) {
            Ok(l) => l,
            Err(_) => {
                fleet.send(i, &format!("STATS {rep}"))?;
                fleet.expect(i, &key, Duration::from_secs(5))?
            }
        };
        let got = field(&line, "n");
        n += got;
        if got > 0 {
            first = first.min(field(&line, "first"));
            last = last.max(field(&line, "last"));
            arrived = arrived.max(field(&line, "arrived"));
        }
    }
    fleet.expect(0, "SENT", Duration::from_secs(10))?;
    Ok((n, if n == 0 { 0 } else { first }, last, arrived))
}

pub(crate) fn fan_reps(
    fleet: &mut Fleet,
    n: usize,
    reps: usize,
    rep0: u64,
    pad: usize,
) -> Res<Fan> {
    let mut fan = Fan {
        n,
        udp_drops: 0,
        samples: Vec::new(),
        arrived: Vec::new(),
    };
    let drops0 = procfs::udp_rcvbuf_errors();
    let started = Instant::now();
    for k in 0..reps {
        let (reached, first, last, arrived) = fan_once(fleet, rep0 + k as u64, pad)?;
        fan.samples.push((reached, first, last));
        fan.arrived.push(arrived);
        // Let ACKs and any retransmits settle so repeats do not overlap.
        std::thread::sleep(Duration::from_millis(if n >= 5000 { 200 } else { 50 }));
        if (k + 1) % 5 == 0 || k + 1 == reps {
            eprintln!(
                "  fan-out N={n}: {} of {reps} repeats done ({:.0} s)",
                k + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    fan.udp_drops = procfs::udp_rcvbuf_errors().saturating_sub(drops0);
    let (f, l, a) = (
        fan.first().expect("reps > 0"),
        fan.last().expect("reps > 0"),
        fan.arrived().expect("reps > 0"),
    );
    eprintln!(
        "  fan-out N={n}: first p50 {:.2} ms, last p50 {:.2} ms p99 {:.2} ms (arrived p50 {:.2} p99 {:.2}), {} incomplete, {} UDP drops",
        f.p50 as f64 / 1e6,
        l.p50 as f64 / 1e6,
        l.p99 as f64 / 1e6,
        a.p50 as f64 / 1e6,
        a.p99 as f64 / 1e6,
        fan.incomplete(),
        fan.udp_drops
    );
    Ok(fan)
}

fn sustained(fleet: &mut Fleet, pid: u32, plan: &Plan) -> Res<Sustained> {
    let n = fleet.receivers;
    fleet.all("RESET", "RESET", Duration::from_secs(10))?;
    let cpu0 = server_cpu(pid)?;
    let tool0 = fleet.cpu_ticks();
    let drops0 = procfs::udp_rcvbuf_errors();
    let t0 = now_ns();
    fleet.send(
        0,
        &format!("BURST {} {} {}", plan.burst, plan.burst_window, plan.pad),
    )?;
    fleet.expect(0, "BURST", Duration::from_secs(300))?;
    let expected = (plan.burst * n) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut total, mut last, mut tcp) = (0, 0, 0);
    while Instant::now() < deadline {
        let counts = fleet.all("COUNT", "COUNT", Duration::from_secs(10))?;
        total = counts.iter().map(|l| field(l, "n")).sum();
        last = counts.iter().map(|l| field(l, "last")).max().unwrap_or(0);
        tcp = counts.iter().map(|l| field(l, "tcp")).sum();
        if total >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tool1 = fleet.cpu_ticks();
    // ACK processing belongs to the cost of delivery: let it finish.
    std::thread::sleep(Duration::from_millis(500));
    let cpu1 = server_cpu(pid)?;
    let s = Sustained {
        n,
        messages: plan.burst,
        deliveries: total,
        expected,
        tcp_deliveries: tcp,
        secs: last.saturating_sub(t0) as f64 / 1e9,
        cpu_ms: (cpu1.total() - cpu0.total()) as f64 * procfs::ms_per_tick(),
        tool_cpu_ms: tool1.saturating_sub(tool0) as f64 * procfs::ms_per_tick(),
        udp_drops: procfs::udp_rcvbuf_errors().saturating_sub(drops0),
    };
    eprintln!(
        "  sustained N={n}: {} of {expected} deliveries in {:.2} s = {:.0}/s, {:.1} CPU ms per 1000; \
         tool busy {:.0}%, {} UDP receive-buffer drops",
        s.deliveries,
        s.secs,
        s.per_sec(),
        s.cpu_ms_per_1000(),
        s.tool_busy() * 100.0,
        s.udp_drops
    );
    Ok(s)
}

fn idle(fleet: &Fleet, pid: u32, secs: u64) -> Res<Idle> {
    std::thread::sleep(Duration::from_secs(3));
    let (s0, c0) = (server_status(pid)?, server_cpu(pid)?);
    std::thread::sleep(Duration::from_secs(secs));
    let (s1, c1) = (server_status(pid)?, server_cpu(pid)?);
    let i = Idle {
        sessions: fleet.receivers + 1,
        secs,
        cpu_ms: (c1.total() - c0.total()) as f64 * procfs::ms_per_tick(),
        wakeups: s1.voluntary_switches - s0.voluntary_switches,
    };
    eprintln!(
        "  idle {secs} s with {} sessions: {:.0} CPU ms, {} wakeups",
        i.sessions, i.cpu_ms, i.wakeups
    );
    Ok(i)
}

/// Memory per session, measured the same way for both systems: the accounts
/// exist before the server starts, then `N + 1` sessions log in (and, for
/// peerline, register their UDP endpoint). RSS before and after.
fn phase_memory(system: System, plan: &Plan, bin: &Path, r: &mut Results) -> Res<()> {
    let n = plan.sizes.iter().copied().max().unwrap_or(50) + 1;
    let server = start(system, plan, bin, Some(plan.kdf_low), n, n)?;
    let pid = server.pid;
    let workers = n.div_ceil(plan.per_worker).max(1);
    let out = (|| {
        std::thread::sleep(Duration::from_millis(300));
        let base = server_status(pid)?;
        let fleet = spawn_fleet(system, plan, &server, workers, plan.per_worker)?;
        with_fleet(fleet, r, |fleet, r| {
            let first = n.min(1000);
            let (ok1, failed1, _) = fleet.grow(first, plan.growth_window, false, "r", 0, None)?;
            std::thread::sleep(Duration::from_millis(300));
            let before = server_status(pid)?;
            let (ok2, failed2, secs) =
                fleet.grow(n - first, plan.growth_window, false, "r", first, None)?;
            let up = (ok1 + ok2) as usize;
            eprintln!(
                "  {up} sessions logged in to stored accounts ({} failed; the last {ok2} in {secs:.1} s)",
                failed1 + failed2
            );
            if up != n {
                return Err(format!("only {up} of {n} sessions came up"));
            }
            std::thread::sleep(Duration::from_millis(500));
            let at_n = server_status(pid)?;
            let m = Memory {
                n,
                base,
                at_n,
                before_last_step: before,
                before_last_step_n: ok1 as usize,
            };
            eprintln!(
                "  RSS {} KB -> {} KB: {:.2} KB per session ({:.2} over the last {})",
                base.rss_kb,
                at_n.rss_kb,
                m.kb_per_session(),
                m.marginal_kb(),
                n - first
            );
            r.memory = Some(m);
            Ok(())
        })
    })();
    server.stop();
    out
}

fn phase_scale(system: System, plan: &Plan, bin: &Path, r: &mut Results) -> Res<()> {
    let max_n = plan.sizes.iter().copied().max().unwrap_or(50);
    let mut server = start(system, plan, bin, Some(plan.kdf_low), 0, max_n + 1)?;
    let pid = server.pid;
    // One more worker than the sessions need: it holds only the PING probes.
    let workers = (max_n + 1).div_ceil(plan.per_worker).max(1) + 1;
    let probes = workers - 1;
    let out = (|| {
        std::thread::sleep(Duration::from_millis(300));
        let base = server_status(pid)?;
        let fleet = spawn_fleet(system, plan, &server, workers, plan.per_worker)?;
        with_fleet(fleet, r, |fleet, r| {
            let (ok, _, _) = fleet.grow(1, 1, true, "s", 0, Some(0))?;
            if ok != 1 {
                return Err("the sender session did not come up".into());
            }
            // The PING probes are receivers like any other (users 1..=pingers),
            // but in a process of their own.
            let pingers = plan
                .pingers
                .min(plan.sizes.iter().copied().min().unwrap_or(1));
            let (ok, _, _) = fleet.grow(pingers, pingers, true, "r", 1, Some(probes))?;
            if ok != pingers as u64 {
                return Err(format!("only {ok} of {pingers} PING probes came up"));
            }
            fleet.receivers += pingers;
            fleet.close_to_growth(probes);
            let mut rep0 = 1;
            let mut prev = (0usize, base);
            let mut sizes = plan.sizes.clone();
            sizes.sort_unstable();
            for &n in &sizes {
                let add = n - fleet.receivers;
                let before = server_status(pid)?;
                let (ok, failed, secs) = fleet.grow(
                    add,
                    plan.growth_window,
                    true,
                    "r",
                    fleet.receivers + 1,
                    None,
                )?;
                fleet.receivers += ok as usize;
                eprintln!(
                    "  {} sessions up ({ok} new in {secs:.1} s, {:.0}/s, {failed} failed)",
                    fleet.receivers + 1,
                    ok as f64 / secs
                );
                if failed > 0 {
                    r.errors.push(format!(
                        "{failed} of {add} sessions failed to set up at N={n}"
                    ));
                }
                if n == max_n {
                    r.setup_low = Some(Rate {
                        sessions: ok,
                        failed,
                        secs,
                    });
                    std::thread::sleep(Duration::from_millis(500));
                    let at_n = server_status(pid)?;
                    r.memory_with_accounts = Some(Memory {
                        n: fleet.receivers + 1,
                        base,
                        at_n,
                        before_last_step: before,
                        before_last_step_n: prev.0 + 1,
                    });
                    eprintln!(
                        "  RSS {} KB -> {} KB, threads {} -> {}",
                        base.rss_kb, at_n.rss_kb, base.threads, at_n.threads
                    );
                }
                prev = (fleet.receivers, before);
                let n_now = fleet.receivers;
                let fan = fan_reps(fleet, n_now, plan.reps, rep0, plan.pad)?;
                rep0 += plan.reps as u64;
                r.fans.push(fan);
                if n == 1000 || (n == sizes[sizes.len() / 2] && !sizes.contains(&1000)) {
                    r.sustained = Some(sustained(fleet, pid, plan)?);
                    r.idle = Some(idle(fleet, pid, plan.idle_secs)?);
                }
                if n == max_n {
                    start_pings(fleet, probes, plan)?;
                    let t = Instant::now();
                    let reps = (plan.reps / 2).max(3);
                    let n_now = fleet.receivers;
                    let fan = fan_reps(fleet, n_now, reps, rep0, plan.pad)?;
                    rep0 += reps as u64;
                    let p = stop_pings(fleet, probes, t.elapsed().as_secs_f64())?;
                    eprintln!(
                        "  PING during {reps} fan-outs to {n}: p50 {:.2} ms p99 {:.2} ms over {} pings (last p50 {:.1} ms)",
                        p.p50_us as f64 / 1000.0,
                        p.p99_us as f64 / 1000.0,
                        p.n,
                        fan.last().map_or(0.0, |s| s.p50 as f64 / 1e6)
                    );
                    r.fan_pings = Some(p);
                }
            }
            let counts = fleet.all("COUNT", "COUNT", Duration::from_secs(10))?;
            r.closed_reasons = counts
                .iter()
                .filter_map(|l| l.split("reasons=").nth(1))
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(",");
            Ok(())
        })
    })();
    if !server.is_running() {
        r.errors
            .push(format!("{} exited during the run", system.name()));
    }
    server.stop();
    out
}

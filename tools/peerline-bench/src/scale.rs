//! `peerline-bench scale`: the server at the size of the host, along two axes,
//! with mosquitto beside peerline where the row applies.
//!
//! - **Sessions** (1,000 → 19,000 on one server thread): accounts stored
//!   before the start, sessions log in step by step; at each step the RSS per
//!   session, fan-out latency to the last receiver, and server CPU per
//!   delivery over those fan-outs. Right after the first 1,000 logins: the
//!   idle server's wakeups per second (voluntary context switches).
//! - **Accounts** (peerline only: mosquitto's password file must be hashed
//!   by `mosquitto_passwd`, minutes for a million): `users.csv` with A
//!   accounts, the server's start time and RSS, then 1,000 sessions online
//!   and the CPU of broadcasts to them. A broadcast must cost what its online
//!   receivers cost, not what the account table holds.
//!
//! Invariants: every wait is bounded (the fleet's); every server and worker
//! is our own child, stopped at the end of its step; results go into
//! `docs/BENCHMARKS.md` between `<!-- scale:begin -->` and `<!-- scale:end -->`
//! (the main `run` keeps such sections when it rewrites the file), plus one
//! SVG per axis.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peerline::server::kdf::{self, PasswordHash};
use peerline::server::store::AccountsFile;

use crate::bench::{self, fan_reps, server_cpu, server_status, spawn_fleet, with_fleet, Plan};
use crate::bench::{Results, System};
use crate::fleet::Res;
use crate::procfs;
use crate::servers::{self, Server};
use crate::svg::{self, Series};

pub struct Args {
    pub server: PathBuf,
    pub sizes: Vec<usize>,
    pub accounts: Vec<usize>,
    /// Sessions online on the accounts axis.
    pub online: usize,
    pub reps: usize,
    pub per_worker: usize,
    pub kdf_iterations: u32,
    pub idle_secs: u64,
    pub no_mosquitto: bool,
    pub pin: Option<(usize, usize)>,
    pub out_md: Option<PathBuf>,
    pub svg_dir: Option<PathBuf>,
}

/// One step of the sessions axis.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub n: usize,
    pub rss_kb: u64,
    pub kb_per_session: f64,
    /// RSS added by this step's sessions ÷ their number (from the RSS before
    /// any session for the first step): "flat" means this is flat too.
    pub kb_marginal: f64,
    /// When the worker read the last copy (p50, p99 over the fan-outs).
    pub last_p50_ms: f64,
    pub last_p99_ms: f64,
    /// When the last copy reached its socket (the kernel's receive stamp;
    /// the read time where there is none: mosquitto's TCP).
    pub arrived_p50_ms: f64,
    pub arrived_p99_ms: f64,
    pub incomplete: usize,
    pub us_per_delivery: f64,
}

#[derive(Debug, Clone, Default)]
pub struct IdleAfterBurst {
    pub logins: usize,
    pub secs: u64,
    pub wakeups: u64,
    pub cpu_ms: f64,
}

#[derive(Debug, Clone, Default)]
pub struct AccountsStep {
    pub accounts: usize,
    pub users_csv_mb: f64,
    pub start_secs: f64,
    pub rss_kb: u64,
    pub online: usize,
    pub us_per_broadcast: f64,
    pub last_p50_ms: f64,
}

#[derive(Debug, Clone, Default)]
pub struct SystemScale {
    pub system: String,
    pub base_rss_kb: u64,
    pub steps: Vec<Step>,
    pub idle: Option<IdleAfterBurst>,
    pub errors: Vec<String>,
}

/// A process's CPU time in ms, to the nanosecond (`clock_getcpuclockid`):
/// `/proc/PID/stat` counts 10 ms ticks, too coarse for a few broadcasts.
/// Falls back to the ticks.
fn cpu_ms(pid: u32) -> Res<f64> {
    let mut clk: libc::clockid_t = 0;
    // SAFETY: plain calls with out-parameters we own.
    unsafe {
        if libc::clock_getcpuclockid(pid as libc::pid_t, &mut clk) == 0 {
            let mut ts: libc::timespec = std::mem::zeroed();
            if libc::clock_gettime(clk, &mut ts) == 0 {
                return Ok(ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6);
            }
        }
    }
    Ok(server_cpu(pid)?.total() as f64 * procfs::ms_per_tick())
}

fn plan_for(a: &Args) -> Plan {
    Plan {
        sizes: a.sizes.clone(),
        reps: a.reps,
        burst: 1,
        burst_window: 1,
        per_worker: a.per_worker,
        kdf_low: a.kdf_iterations,
        default_sessions: 1,
        storm: 1,
        pingers: 1,
        ping_interval_ms: 5,
        idle_secs: a.idle_secs,
        pad: 64,
        server_cpu: a.pin.map(|p| p.0),
        tool_cpu: a.pin.map(|p| p.1),
        growth_window: 128,
    }
}

/// `count` accounts `u0..` in a fresh data dir, all sharing one password
/// hash: computing a million hashes would take the run's whole budget, and
/// the server stores, loads and checks a shared hash exactly as any other.
fn provision(dir: &Path, count: usize, iterations: u32) -> Res<()> {
    let salt = kdf::random_salt(&mut peerline::rng::OsRandom);
    let hash = PasswordHash {
        iterations,
        salt,
        hash: kdf::derive(bench::PASSWORD.as_bytes(), &salt, iterations),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut file = AccountsFile::open(dir)?;
    file.add_many((0..count).map(|i| (format!("u{i}"), hash.clone(), now)))
}

fn start(system: System, a: &Args, accounts: usize) -> Res<(Server, f64)> {
    match system {
        System::Peerline => {
            let dir = servers::temp_dir("scale")?;
            provision(&dir, accounts, a.kdf_iterations)?;
            let t = Instant::now();
            let s =
                Server::spawn_peerline(&a.server, dir, Some(a.kdf_iterations), a.pin.map(|p| p.0))?;
            Ok((s, t.elapsed().as_secs_f64()))
        }
        System::Mosquitto => {
            let s = Server::start_mosquitto(accounts, "u", bench::PASSWORD, a.pin.map(|p| p.0))?;
            Ok((s, 0.0))
        }
    }
}

/// The sessions axis for one system.
fn sessions_axis(system: System, a: &Args) -> SystemScale {
    let mut r = SystemScale {
        system: system.name().into(),
        ..SystemScale::default()
    };
    let plan = plan_for(a);
    let mut sizes = a.sizes.clone();
    sizes.sort_unstable();
    let max_n = *sizes.last().unwrap_or(&1000);
    let out = (|| -> Res<()> {
        let (server, _) = start(system, a, max_n + 1)?;
        let pid = server.pid;
        let res = (|| {
            std::thread::sleep(Duration::from_millis(300));
            let base = server_status(pid)?;
            r.base_rss_kb = base.rss_kb;
            let workers = (max_n + 1).div_ceil(a.per_worker).max(1);
            let fleet = spawn_fleet(system, &plan, &server, workers, a.per_worker)?;
            let mut scratch = Results::default();
            let res = with_fleet(fleet, &mut scratch, |fleet, _| {
                let (ok, _, _) = fleet.grow(1, 1, false, "s", 0, Some(0))?;
                if ok != 1 {
                    return Err("the sender did not come up".into());
                }
                let mut rep0 = 1;
                for (k, &n) in sizes.iter().enumerate() {
                    let add = n - fleet.receivers;
                    let (ok, failed, secs) = fleet.grow(
                        add,
                        plan.growth_window,
                        false,
                        "r",
                        fleet.receivers + 1,
                        None,
                    )?;
                    fleet.receivers += ok as usize;
                    eprintln!(
                        "  [{}] {} sessions up ({ok} in {secs:.1} s, {failed} failed)",
                        system.name(),
                        fleet.receivers + 1
                    );
                    if failed > 0 {
                        return Err(format!("{failed} of {add} sessions failed at N={n}"));
                    }
                    if k == 0 {
                        // The idle server right after a login burst: only
                        // timers that are really due may wake it.
                        std::thread::sleep(Duration::from_secs(1));
                        let (s0, c0) = (server_status(pid)?, cpu_ms(pid)?);
                        std::thread::sleep(Duration::from_secs(a.idle_secs));
                        let (s1, c1) = (server_status(pid)?, cpu_ms(pid)?);
                        let i = IdleAfterBurst {
                            logins: n + 1,
                            secs: a.idle_secs,
                            wakeups: s1.voluntary_switches - s0.voluntary_switches,
                            cpu_ms: c1 - c0,
                        };
                        eprintln!(
                            "  [{}] idle {} s after {} logins: {} wakeups, {:.0} CPU ms",
                            system.name(),
                            i.secs,
                            i.logins,
                            i.wakeups,
                            i.cpu_ms
                        );
                        r.idle = Some(i);
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    let st = server_status(pid)?;
                    let c0 = cpu_ms(pid)?;
                    let fan = fan_reps(fleet, fleet.receivers, a.reps, rep0, plan.pad)?;
                    let c1 = cpu_ms(pid)?;
                    rep0 += a.reps as u64;
                    let deliveries: u64 = fan.samples.iter().map(|s| s.0).sum();
                    let cpu_ms = c1 - c0;
                    let sessions = fleet.receivers + 1;
                    let (prev_n, prev_kb) =
                        r.steps.last().map_or((0, base.rss_kb), |p| (p.n, p.rss_kb));
                    r.steps.push(Step {
                        n: sessions,
                        rss_kb: st.rss_kb,
                        kb_per_session: (st.rss_kb as f64 - base.rss_kb as f64) / sessions as f64,
                        kb_marginal: (st.rss_kb as f64 - prev_kb as f64)
                            / sessions.saturating_sub(prev_n).max(1) as f64,
                        last_p50_ms: fan.last().map_or(0.0, |s| s.p50 as f64 / 1e6),
                        last_p99_ms: fan.last().map_or(0.0, |s| s.p99 as f64 / 1e6),
                        arrived_p50_ms: fan.arrived().map_or(0.0, |s| s.p50 as f64 / 1e6),
                        arrived_p99_ms: fan.arrived().map_or(0.0, |s| s.p99 as f64 / 1e6),
                        incomplete: fan.incomplete(),
                        us_per_delivery: cpu_ms * 1000.0 / deliveries.max(1) as f64,
                    });
                }
                Ok(())
            });
            if scratch.worker_errors > 0 {
                r.errors
                    .push(format!("{} worker errors", scratch.worker_errors));
            }
            res
        })();
        server.stop();
        res
    })();
    if let Err(e) = out {
        eprintln!("  [{}] sessions axis failed: {e}", system.name());
        r.errors.push(e);
    }
    r
}

/// The accounts axis (peerline): start time, memory, and the cost of a
/// broadcast to `online` sessions with `accounts` accounts stored.
fn accounts_axis(a: &Args, errors: &mut Vec<String>) -> Vec<AccountsStep> {
    let plan = plan_for(a);
    let mut out = Vec::new();
    for &accounts in &a.accounts {
        let accounts = accounts.max(a.online + 1);
        let res = (|| -> Res<AccountsStep> {
            eprintln!("== peerline: {accounts} accounts");
            let (server, start_secs) = start(System::Peerline, a, accounts)?;
            let pid = server.pid;
            let res = (|| {
                std::thread::sleep(Duration::from_millis(300));
                let st = server_status(pid)?;
                let workers = (a.online + 1).div_ceil(a.per_worker).max(1);
                let fleet = spawn_fleet(System::Peerline, &plan, &server, workers, a.per_worker)?;
                let mut scratch = Results::default();
                let mut got = None;
                with_fleet(fleet, &mut scratch, |fleet, _| {
                    fleet.grow(1, 1, false, "s", 0, Some(0))?;
                    let (ok, _, _) = fleet.grow(a.online, 128, false, "r", 1, None)?;
                    fleet.receivers = ok as usize;
                    std::thread::sleep(Duration::from_millis(300));
                    let c0 = cpu_ms(pid)?;
                    let fan = fan_reps(fleet, fleet.receivers, a.reps, 1, plan.pad)?;
                    let cpu_ms = cpu_ms(pid)? - c0;
                    got = Some(AccountsStep {
                        accounts,
                        users_csv_mb: 0.0,
                        start_secs,
                        rss_kb: st.rss_kb,
                        online: fleet.receivers,
                        us_per_broadcast: cpu_ms * 1000.0 / a.reps.max(1) as f64,
                        last_p50_ms: fan.last().map_or(0.0, |s| s.p50 as f64 / 1e6),
                    });
                    Ok(())
                })?;
                got.ok_or_else(|| "no result".to_string())
            })();
            server.stop();
            res
        })();
        match res {
            Ok(mut s) => {
                s.users_csv_mb = estimate_csv_mb(a, s.accounts);
                eprintln!(
                    "  {} accounts: start {:.2} s, RSS {} KB, {:.0} µs CPU per broadcast to {}",
                    s.accounts, s.start_secs, s.rss_kb, s.us_per_broadcast, s.online
                );
                out.push(s);
            }
            Err(e) => {
                eprintln!("  {accounts} accounts: {e}");
                errors.push(format!("{accounts} accounts: {e}"));
            }
        }
    }
    out
}

/// users.csv's size for `n` accounts, from a small sample written the same way.
fn estimate_csv_mb(a: &Args, n: usize) -> f64 {
    let Ok(dir) = servers::temp_dir("csv") else {
        return 0.0;
    };
    let sample = 1000;
    let size = provision(&dir, sample, a.kdf_iterations)
        .ok()
        .and_then(|_| std::fs::metadata(dir.join("users.csv")).ok())
        .map_or(0, |m| m.len());
    let _ = std::fs::remove_dir_all(&dir);
    size as f64 / sample as f64 * n as f64 / 1e6
}

pub struct Report {
    pub peer: SystemScale,
    pub mosq: Option<SystemScale>,
    pub accounts: Vec<AccountsStep>,
    pub errors: Vec<String>,
    pub load_before: String,
    pub load_after: String,
    pub secs: f64,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(a: &Args) -> Res<Report> {
    let t = Instant::now();
    let load_before = loadavg();
    let max_n = a.sizes.iter().copied().max().unwrap_or(0);
    let limit = procfs::fd_limit();
    if limit < max_n as u64 + 200 || limit < 2 * a.per_worker as u64 + 32 {
        return Err(format!(
            "open-file limit {limit} is too low for {max_n} sessions (raise `ulimit -n`)"
        ));
    }
    if let Some((_, tool)) = a.pin {
        let _ = crate::clock::pin_to_cpu(tool);
    }
    eprintln!("== peerline: sessions axis {:?}", a.sizes);
    let peer = sessions_axis(System::Peerline, a);
    let mosq = if a.no_mosquitto || servers::which("mosquitto").is_none() {
        None
    } else {
        eprintln!("== mosquitto: sessions axis {:?}", a.sizes);
        Some(sessions_axis(System::Mosquitto, a))
    };
    let mut errors = Vec::new();
    let accounts = accounts_axis(a, &mut errors);
    Ok(Report {
        peer,
        mosq,
        accounts,
        errors,
        load_before,
        load_after: loadavg(),
        secs: t.elapsed().as_secs_f64(),
    })
}

/// One SVG per axis: (file name, content).
pub fn plots(r: &Report) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let series = |f: &dyn Fn(&Step) -> f64| {
        let mut v = vec![Series {
            name: "peerline".into(),
            color: "#1f77b4",
            points: r.peer.steps.iter().map(|s| (s.n as f64, f(s))).collect(),
        }];
        if let Some(m) = &r.mosq {
            v.push(Series {
                name: "mosquitto".into(),
                color: "#d62728",
                points: m.steps.iter().map(|s| (s.n as f64, f(s))).collect(),
            });
        }
        v
    };
    out.push((
        "bench-scale-fanout.svg".into(),
        svg::plot(
            "Fan-out: last copy arrived (median) against sessions",
            "sessions (log scale)",
            "ms",
            &series(&|s| s.arrived_p50_ms),
        ),
    ));
    out.push((
        "bench-scale-memory.svg".into(),
        svg::plot(
            "Server RSS per session against sessions",
            "sessions (log scale)",
            "KB per session",
            &series(&|s| s.kb_per_session),
        ),
    ));
    out.push((
        "bench-scale-cpu.svg".into(),
        svg::plot(
            "Server CPU per delivery against sessions",
            "sessions (log scale)",
            "µs per delivery",
            &series(&|s| s.us_per_delivery),
        ),
    ));
    out.push((
        "bench-scale-accounts.svg".into(),
        svg::plot(
            "peerline: broadcast CPU to 1,000 online against accounts stored",
            "accounts in users.csv (log scale)",
            "µs of server CPU per broadcast",
            &[Series {
                name: "peerline".into(),
                color: "#1f77b4",
                points: r
                    .accounts
                    .iter()
                    .map(|s| (s.accounts as f64, s.us_per_broadcast))
                    .collect(),
            }],
        ),
    ));
    out
}

pub fn markdown(r: &Report, a: &Args, machine: &crate::report::Machine) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Scale: sessions and accounts (`peerline-bench scale`)\n"
    );
    let _ = writeln!(
        s,
        "Generated by `peerline-bench scale` (not part of `tools/bench.sh`: it needs the host's whole \
         descriptor budget and about {:.0} minutes). {}; {} cores; Linux {}; open-file limit {}; run {}. \
         Load average before / after: {} / {} (a shared machine: other work ran beside it). \
         Server pinned to CPU {}, load generator to CPU {}; {} sessions per worker process; \
         password-hash cost {} iterations for stored accounts.\n",
        (r.secs / 60.0).ceil(),
        machine.cpu,
        machine.cores,
        machine.kernel,
        machine.fd_limit,
        machine.date,
        r.load_before,
        r.load_after,
        a.pin.map_or("-".into(), |p| p.0.to_string()),
        a.pin.map_or("-".into(), |p| p.1.to_string()),
        a.per_worker,
        a.kdf_iterations,
    );
    let _ = writeln!(s, "### Sessions on one server thread\n");
    let _ = writeln!(
        s,
        "Accounts stored before the start; sessions log in (peerline: and register UDP) step by step. \
         KB per session: (RSS − RSS before any session) ÷ sessions; marginal: (RSS − the previous step's RSS) ÷ the sessions \
         added (the first step: from the RSS before any session). peerline's server gives the memory freed by loading its data dir \
         back (`malloc_trim`) before it listens, so its RSS before any session is what it holds. Fan-out: {} broadcasts to every \
         session at each step; CPU per delivery is the server's CPU over those fan-outs ÷ deliveries. The last receiver: \
         *arrived* is when the last copy reached its socket (the kernel's receive stamp, `SIOCGSTAMPNS`: the server's \
         fan-out), *read* when a load-generator process read it (its workers share one core, so past a few thousand \
         sessions this adds their own backlog); mosquitto's TCP has no stamp, so both are its read time.\n",
        a.reps
    );
    let _ = writeln!(
        s,
        "| sessions | system | RSS (KB) | KB per session | marginal KB per session | last receiver arrived p50 (ms) | p99 (ms) | read p50 (ms) | p99 (ms) | incomplete | server CPU per delivery (µs) |"
    );
    let _ = writeln!(
        s,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut rows: Vec<(&str, &Step)> = Vec::new();
    for sys in std::iter::once(&r.peer).chain(r.mosq.as_ref()) {
        rows.extend(sys.steps.iter().map(|st| (sys.system.as_str(), st)));
    }
    rows.sort_by_key(|(name, st)| (st.n, name.to_string()));
    for (name, st) in rows {
        let _ = writeln!(
            s,
            "| {} | {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} |",
            st.n,
            st.rss_kb,
            st.kb_per_session,
            st.kb_marginal,
            st.arrived_p50_ms,
            st.arrived_p99_ms,
            st.last_p50_ms,
            st.last_p99_ms,
            st.incomplete,
            st.us_per_delivery
        );
    }
    let _ = writeln!(s);
    for f in ["fanout", "memory", "cpu"] {
        let _ = writeln!(s, "![{f} against sessions](./bench-scale-{f}.svg)\n");
    }
    let _ = writeln!(s, "### Idle after a login burst\n");
    let _ = writeln!(
        s,
        "Voluntary context switches (each a sleep and a wakeup) of the server from 1 s after the first \
         step's logins completed, over the stated window, nothing else happening.\n"
    );
    let _ = writeln!(
        s,
        "| system | logins | window (s) | wakeups | per second | CPU (ms) |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for sys in std::iter::once(&r.peer).chain(r.mosq.as_ref()) {
        if let Some(i) = &sys.idle {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {:.0} |",
                sys.system,
                i.logins,
                i.secs,
                i.wakeups,
                i.wakeups as f64 / i.secs.max(1) as f64,
                i.cpu_ms
            );
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "### Accounts stored (peerline)\n");
    let _ = writeln!(
        s,
        "`users.csv` holds A accounts (all with one shared hash, written by the server's own store code); \
         start time is from spawning the server to its `listening` line; RSS right after the start; then \
         {} sessions log in and {} broadcasts go to them. mosquitto is not on this axis: its password \
         file must be hashed by `mosquitto_passwd`, which takes minutes for a million entries.\n",
        a.online, a.reps
    );
    let _ = writeln!(
        s,
        "| accounts | users.csv (MB) | start (s) | RSS after start (KB) | online | server CPU per broadcast (µs) | per delivery (µs) | last receiver p50 (ms) |"
    );
    let _ = writeln!(
        s,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for st in &r.accounts {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.2} | {} | {} | {:.0} | {:.2} | {:.2} |",
            st.accounts,
            st.users_csv_mb,
            st.start_secs,
            st.rss_kb,
            st.online,
            st.us_per_broadcast,
            st.us_per_broadcast / st.online.max(1) as f64,
            st.last_p50_ms
        );
    }
    let _ = writeln!(
        s,
        "\n![broadcast cost against accounts](./bench-scale-accounts.svg)\n"
    );
    let errs: Vec<String> = r
        .errors
        .iter()
        .cloned()
        .chain(r.peer.errors.iter().map(|e| format!("peerline: {e}")))
        .chain(
            r.mosq
                .iter()
                .flat_map(|m| m.errors.iter().map(|e| format!("mosquitto: {e}"))),
        )
        .collect();
    let _ = writeln!(
        s,
        "Errors: {}\n",
        if errs.is_empty() {
            "none".to_string()
        } else {
            errs.join("; ")
        }
    );
    s
}

const BEGIN: &str = "<!-- scale:begin -->";
const END: &str = "<!-- scale:end -->";

/// `md` with its scale section replaced by `section` (appended if absent).
pub fn splice(md: &str, section: &str) -> String {
    splice_between(md, BEGIN, END, section)
}

/// `md` with the section between the markers `begin` and `end` replaced by
/// `section` (appended if absent). Other modes (`restart.rs`) keep their own
/// sections in `docs/BENCHMARKS.md` the same way.
pub fn splice_between(md: &str, begin: &str, end: &str, section: &str) -> String {
    let block = format!("{begin}\n{section}{end}\n");
    match (md.find(begin), md.find(end)) {
        (Some(b), Some(e)) if e > b => {
            format!(
                "{}{block}{}",
                &md[..b],
                md[e + end.len()..].trim_start_matches('\n')
            )
        }
        _ => format!("{}\n{block}", md.trim_end_matches('\n').to_string() + "\n"),
    }
}

/// The scale section of `old`, if any, carried into a freshly written `new`
/// (the main `run` rewrites the whole file).
pub fn carry(old: &str, new: String) -> String {
    carry_between(old, new, BEGIN, END)
}

/// [`carry`] for the section between `begin` and `end`.
pub fn carry_between(old: &str, new: String, begin: &str, end: &str) -> String {
    match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if e > b => {
            splice_between(&new, begin, end, &old[b + begin.len() + 1..e])
        }
        _ => new,
    }
}

/// Writes the section into `md` and the plots beside it.
pub fn write(r: &Report, a: &Args, md: &Path, svg_dir: &Path) -> Res<()> {
    let machine = crate::report::Machine::probe();
    let old = std::fs::read_to_string(md).unwrap_or_default();
    let text = splice(&old, &markdown(r, a, &machine));
    std::fs::write(md, text).map_err(|e| format!("{}: {e}", md.display()))?;
    for (name, svg) in plots(r) {
        let p = svg_dir.join(name);
        std::fs::write(&p, svg).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place_and_carried_over_a_rewrite() {
        let md = "# B\n\nintro\n";
        let once = splice(md, "one\n");
        assert!(once.starts_with("# B\n\nintro\n"));
        assert!(once.contains("<!-- scale:begin -->\none\n<!-- scale:end -->"));
        let mut twice = splice(&once, "two\n");
        assert!(!twice.contains("one") && twice.contains("two"));
        twice.push_str("tail\n");
        let again = splice(&twice, "three\n");
        assert!(again.ends_with("tail\n") && again.contains("three"));
        let rewritten = carry(&again, "# B, rewritten\n".into());
        assert!(rewritten.starts_with("# B, rewritten\n"));
        assert!(rewritten.contains("<!-- scale:begin -->\nthree\n<!-- scale:end -->"));
        assert_eq!(carry("no section", "new".into()), "new");
    }

    #[test]
    fn the_sessions_table_shows_arrival_and_read_apart() {
        let step = Step {
            n: 19001,
            arrived_p50_ms: 59.35,
            arrived_p99_ms: 74.65,
            last_p50_ms: 137.12,
            last_p99_ms: 187.07,
            ..Step::default()
        };
        let r = Report {
            peer: SystemScale {
                system: "peerline".into(),
                steps: vec![step],
                ..SystemScale::default()
            },
            mosq: None,
            accounts: Vec::new(),
            errors: Vec::new(),
            load_before: String::new(),
            load_after: String::new(),
            secs: 0.0,
        };
        let a = Args {
            server: PathBuf::new(),
            sizes: vec![19000],
            accounts: Vec::new(),
            online: 0,
            reps: 10,
            per_worker: 2500,
            kdf_iterations: 1000,
            idle_secs: 0,
            no_mosquitto: true,
            pin: None,
            out_md: None,
            svg_dir: None,
        };
        let machine = crate::report::Machine {
            cpu: "cpu".into(),
            cores: 2,
            mem_gib: 1.0,
            kernel: "k".into(),
            fd_limit: 20000,
            mosquitto: None,
            date: "d".into(),
        };
        let md = markdown(&r, &a, &machine);
        let row = md
            .lines()
            .find(|l| l.starts_with("| 19001 | peerline |"))
            .expect("the step's row");
        assert!(row.contains("| 59.35 | 74.65 | 137.12 | 187.07 |"), "{row}");
    }
}

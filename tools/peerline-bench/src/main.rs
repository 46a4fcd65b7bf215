//! peerline-bench: load generator and benchmark for peerline, side by side
//! with mosquitto. `run` coordinates; `worker` is the process it spawns to
//! drive sessions (several of them, to stay under the open-file limit).

mod bench;
mod clock;
mod fleet;
mod floor;
mod links;
mod mqtt;
mod probe;
mod procfs;
mod report;
mod restart;
mod scale;
mod servers;
mod stats;
mod svg;
mod tls;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(about = "Load generator and benchmark for peerline (and mosquitto, side by side)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtoArg {
    Peerline,
    Mqtt,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scenarios and write the report.
    Run(RunArgs),
    /// Direct links: setup time and messages/s, encrypted vs plaintext, in one run.
    Links {
        /// The peerline-server binary.
        #[arg(long, default_value = "target/release/peerline-server")]
        server: PathBuf,
        /// The peerline-client binary (plays bob, the accepting side).
        #[arg(long, default_value = "target/release/peerline-client")]
        client: PathBuf,
        /// Links set up per form (p50/p90 over these).
        #[arg(long, default_value_t = 30)]
        links: usize,
        /// Messages sent for the throughput figure, per form.
        #[arg(long, default_value_t = 20000)]
        messages: usize,
        /// Padding bytes added to each message text.
        #[arg(long, default_value_t = 64)]
        pad: usize,
    },
    /// Sessions to the host's limit and accounts to a million (scale.rs).
    Scale(ScaleArgs),
    /// The restart storm: N sessions back after kill -9 and restart, with
    /// resumption tickets and by password, side by side.
    Restart(restart::Args),
    /// TLS beside plaintext (handshakes/s, memory per session, acknowledged
    /// deliveries with sealed datagrams), mosquitto over TLS beside both.
    Tls(TlsArgs),
    /// The kernel's floor per acknowledged delivery (floor.rs), then
    /// peerline's and mosquitto's sustained burst at the same N.
    Floor(FloorArgs),
    /// (internal) The restart storm's bystanders, commanded over stdin/stdout.
    #[command(hide = true)]
    RestartProbe {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        interval_ms: u64,
        #[arg(long)]
        src: std::net::IpAddr,
    },
    /// (internal) A session-driving worker, commanded over stdin/stdout.
    #[command(hide = true)]
    Worker {
        #[arg(long, value_enum)]
        proto: ProtoArg,
        #[arg(long)]
        server: std::net::SocketAddr,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        cpu: Option<usize>,
    },
}

#[derive(clap::Args)]
struct TlsArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    cpus: CpuArgs,
    /// Connections opened (and closed) for the handshake rate.
    #[arg(long, default_value_t = 1000)]
    handshakes: usize,
    /// Connections opening at once.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Receiving sessions (plus one sender).
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Broadcasts sent; each receiver acknowledges each.
    #[arg(long, default_value_t = 100)]
    broadcasts: usize,
    /// Most unanswered broadcasts.
    #[arg(long, default_value_t = 16)]
    broadcast_window: usize,
    #[arg(long, default_value_t = 64)]
    pad: usize,
    /// The command line to show in the report.
    #[arg(long, default_value = "tools/bench.sh")]
    shown_command: String,
    /// Fail (exit 1) if any phase failed.
    #[arg(long)]
    strict: bool,
}

#[derive(clap::Args)]
struct FloorArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Receiving sockets (and the bench's receivers).
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Floor rounds (each one datagram to every socket).
    #[arg(long, default_value_t = 500)]
    rounds: usize,
    /// Broadcasts in peerline's and mosquitto's sustained burst (the bench's
    /// default: longer bursts overflow receive buffers on a loaded host).
    #[arg(long, default_value_t = 200)]
    burst: usize,
    /// Most unanswered rounds in the floor (4 × 1,000 ACKs fit the 8 MiB
    /// receive buffer; more overflow it and the floor measures losses).
    #[arg(long, default_value_t = 4)]
    window: usize,
    #[arg(long, default_value_t = 117)]
    bcast_len: usize,
    #[arg(long, default_value_t = 41)]
    ack_len: usize,
    /// Only the floor with peerline's dual-stack socket and the plain IPv4 one.
    #[arg(long)]
    two_variants: bool,
    /// The floor alone.
    #[arg(long)]
    floor_only: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    cpus: CpuArgs,
    /// Receiver counts for fan-out (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "50,1000,10000")]
    sizes: Vec<usize>,
    /// Fan-out repeats per size (p50/p99 over these).
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Broadcasts in the sustained burst at 1,000 receivers.
    #[arg(long, default_value_t = 200)]
    burst: usize,
    /// Most unanswered broadcasts during the burst.
    #[arg(long, default_value_t = 32)]
    burst_window: usize,
    #[command(flatten)]
    workers: WorkerArgs,
    /// Sessions signed up at the default cost to measure the setup rate.
    #[arg(long, default_value_t = 200)]
    default_sessions: usize,
    /// Simultaneous logins in the login storm.
    #[arg(long, default_value_t = 200)]
    storm: usize,
    /// Logged-in sessions that PING during the storm and the large fan-out.
    #[arg(long, default_value_t = 20)]
    pingers: usize,
    #[arg(long, default_value_t = 5)]
    ping_interval_ms: u64,
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Padding bytes added to each broadcast text.
    #[arg(long, default_value_t = 64)]
    pad: usize,
    /// Sessions opened at once per worker while growing.
    #[arg(long, default_value_t = 128)]
    growth_window: usize,
    /// Why mosquitto is absent, for the report (set by tools/bench.sh).
    #[arg(long, default_value = "not run (--no-mosquitto)")]
    mosquitto_note: String,
    /// Where to write the SVG plot (next to the report by default).
    #[arg(long)]
    out_svg: Option<PathBuf>,
    /// Hand-written notes appended to the report.
    #[arg(long, default_value = "tools/peerline-bench/NOTES.md")]
    notes: PathBuf,
    /// The command line to show under "How to run".
    #[arg(long, default_value = "tools/bench.sh")]
    shown_command: String,
    /// Fail (exit 1) if any scenario failed or a fan-out was incomplete.
    #[arg(long)]
    strict: bool,
}

#[derive(clap::Args)]
struct ScaleArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    workers: WorkerArgs,
    /// Session counts, one server growing through them.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,19000")]
    sizes: Vec<usize>,
    /// Account counts in users.csv (peerline).
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
    accounts: Vec<usize>,
    /// Sessions online on the accounts axis.
    #[arg(long, default_value_t = 1000)]
    online: usize,
    /// Fan-outs per step.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Idle window after the first login burst.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

/// The arguments the measuring modes (`run`, `scale`, `tls`, `floor`) share.
#[derive(clap::Args)]
struct CommonArgs {
    /// The peerline-server binary.
    #[arg(long, default_value = "target/release/peerline-server")]
    server: PathBuf,
    /// Password-hash cost for the sessions the tool signs up (`run` also
    /// measures the setup rate at the server's default).
    #[arg(long, default_value_t = 1000)]
    kdf_iterations: u32,
    /// Do not pin processes to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// peerline only.
    #[arg(long)]
    no_mosquitto: bool,
    /// The report to write (`run`) or to put this mode's section into,
    /// replacing the previous one (plots go beside it); nothing written if absent.
    #[arg(long)]
    out_md: Option<PathBuf>,
}

/// Which CPUs the server under test and the tool are pinned to (`run`, `tls`).
#[derive(clap::Args)]
struct CpuArgs {
    /// CPU for the server under test; the tool takes the other one.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    #[arg(long, default_value_t = 1)]
    tool_cpu: usize,
}

impl CpuArgs {
    /// `cpu` when pinning is on: not with `--no-pin`, nor when the server and
    /// the tool were given the same CPU.
    fn pin(&self, no_pin: bool, cpu: usize) -> Option<usize> {
        (!no_pin && self.server_cpu != self.tool_cpu).then_some(cpu)
    }
}

/// How the tool spreads its sessions over worker processes (`run`, `scale`).
#[derive(clap::Args)]
struct WorkerArgs {
    /// Sessions per worker process (each peerline session uses two descriptors).
    #[arg(long, default_value_t = 2500)]
    per_worker: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Worker {
            proto,
            server,
            prefix,
            password,
            cpu,
        } => {
            if let Some(c) = cpu {
                if let Err(e) = clock::pin_to_cpu(c) {
                    eprintln!("worker: cannot pin to CPU {c}: {e}");
                }
            }
            let cfg = worker::WorkerConfig {
                proto: match proto {
                    ProtoArg::Peerline => worker::Proto::Peerline,
                    ProtoArg::Mqtt => worker::Proto::Mqtt,
                },
                server,
                password,
                prefix,
            };
            match worker::Worker::new(cfg).and_then(|w| w.run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("worker: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Links {
            server,
            client,
            links,
            messages,
            pad,
        } => {
            let args = links::Args {
                server,
                client,
                links,
                messages,
                pad,
            };
            match links::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("peerline-bench links: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Scale(a) => {
            let c = a.common;
            let args = scale::Args {
                server: c.server,
                sizes: a.sizes,
                accounts: a.accounts,
                online: a.online.max(1),
                reps: a.reps.max(1),
                per_worker: a.workers.per_worker.max(1),
                kdf_iterations: c.kdf_iterations,
                idle_secs: a.idle_secs,
                no_mosquitto: c.no_mosquitto,
                pin: (!c.no_pin).then_some((0, 1)),
                svg_dir: c
                    .out_md
                    .as_ref()
                    .and_then(|m| m.parent().map(PathBuf::from)),
                out_md: c.out_md,
            };
            let res = scale::run(&args).and_then(|r| {
                let machine = report::Machine::probe();
                println!("{}", scale::markdown(&r, &args, &machine));
                if let (Some(md), Some(dir)) = (&args.out_md, &args.svg_dir) {
                    scale::write(&r, &args, md, dir)?;
                    eprintln!("wrote {}", md.display());
                }
                Ok(r.errors.is_empty()
                    && r.peer.errors.is_empty()
                    && r.mosq.iter().all(|m| m.errors.is_empty()))
            });
            match res {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("peerline-bench scale: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::RestartProbe {
            prefix,
            password,
            count,
            interval_ms,
            src,
        } => {
            let cfg = probe::Config {
                prefix,
                password,
                count,
                interval: std::time::Duration::from_millis(interval_ms.max(1)),
                src,
            };
            match probe::main(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("restart-probe: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Restart(args) => match restart::main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peerline-bench restart: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Tls(t) => {
            let c = t.common;
            let args = tls::Args {
                server: c.server,
                handshakes: t.handshakes,
                window: t.window,
                sessions: t.sessions,
                broadcasts: t.broadcasts,
                bwindow: t.broadcast_window.max(1),
                pad: t.pad,
                kdf_iterations: c.kdf_iterations,
                server_cpu: t.cpus.pin(c.no_pin, t.cpus.server_cpu),
                tool_cpu: t.cpus.pin(c.no_pin, t.cpus.tool_cpu),
                no_mosquitto: c.no_mosquitto,
                out_md: c.out_md,
                strict: t.strict,
            };
            match tls::main(&args, &t.shown_command) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("peerline-bench tls: some phases failed (see above)");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("peerline-bench tls: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Floor(f) => match floor_cmd(f) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peerline-bench floor: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run(args) => match run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("peerline-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(a: RunArgs) -> Result<ExitCode, String> {
    let (c, per_worker) = (&a.common, a.workers.per_worker);
    let started = Instant::now();
    if a.sizes.is_empty() || a.sizes.contains(&0) {
        return Err("--sizes needs positive receiver counts".into());
    }
    let max_n = *a.sizes.iter().max().expect("non-empty");
    // Checks before anything starts: the server binary and the descriptor budget.
    if !c.server.is_file() {
        return Err(format!(
            "peerline-server not found at {} (build it with `cargo build --release`, or pass --server)",
            c.server.display()
        ));
    }
    let limit = procfs::fd_limit();
    let worker_need = 2 * per_worker.min(max_n + 1) as u64 + 32;
    let server_need = max_n as u64 + 64;
    if limit < worker_need || limit < server_need {
        return Err(format!(
            "open-file limit is {limit}: a worker with {} sessions needs {worker_need} and the server needs {server_need} \
             for N = {max_n}; lower --per-worker or --sizes, or raise `ulimit -n`",
            per_worker.min(max_n + 1)
        ));
    }
    if let Some(md) = &c.out_md {
        if let Some(dir) = md.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let pin = |cpu: usize| a.cpus.pin(c.no_pin, cpu);
    let plan = bench::Plan {
        sizes: a.sizes.clone(),
        reps: a.reps.max(1),
        burst: a.burst.max(1),
        burst_window: a.burst_window.max(1),
        per_worker: per_worker.max(1),
        kdf_low: c.kdf_iterations,
        default_sessions: a.default_sessions.max(a.storm),
        storm: a.storm.max(1),
        pingers: a.pingers.max(1),
        ping_interval_ms: a.ping_interval_ms.max(1),
        idle_secs: a.idle_secs,
        pad: a.pad,
        server_cpu: pin(a.cpus.server_cpu),
        tool_cpu: pin(a.cpus.tool_cpu),
        growth_window: a.growth_window.max(1),
    };
    if plan.tool_cpu.is_some() {
        let _ = clock::pin_to_cpu(a.cpus.tool_cpu);
    }
    eprintln!(
        "peerline-bench: sizes {:?}, {} repeats, {} per worker, open-file limit {limit}",
        plan.sizes, plan.reps, plan.per_worker
    );
    let peer = bench::run(bench::System::Peerline, &plan, &c.server);
    let mut mosquitto_note = a.mosquitto_note.clone();
    let mosq = if c.no_mosquitto {
        None
    } else if servers::which("mosquitto").is_none() {
        mosquitto_note = "not installed; peerline reported alone".into();
        eprintln!("mosquitto is not installed: reporting peerline alone");
        None
    } else {
        Some(bench::run(bench::System::Mosquitto, &plan, &c.server))
    };
    let machine = report::Machine::probe();
    let wall = started.elapsed().as_secs_f64();
    if let Some(md) = &c.out_md {
        let svg_path = a
            .out_svg
            .clone()
            .unwrap_or_else(|| md.with_file_name("bench-fanout.svg"));
        let svg_name = svg_path.file_name().map_or("bench-fanout.svg".into(), |n| {
            n.to_string_lossy().into_owned()
        });
        let notes = std::fs::read_to_string(&a.notes).unwrap_or_default();
        let text = report::markdown(
            &peer,
            mosq.as_ref(),
            &mosquitto_note,
            &plan,
            &machine,
            &a.shown_command,
            &svg_name,
            &notes,
            wall,
        );
        // Sections other modes wrote (scale.rs) survive the rewrite.
        let old = std::fs::read_to_string(md).unwrap_or_default();
        let text = scale::carry(&old, text);
        let text = restart::carry(&old, text);
        let text = floor::carry(&old, text);
        std::fs::write(md, text).map_err(|e| format!("{}: {e}", md.display()))?;
        std::fs::write(&svg_path, report::svg(&peer, mosq.as_ref()))
            .map_err(|e| format!("{}: {e}", svg_path.display()))?;
        eprintln!("wrote {} and {}", md.display(), svg_path.display());
    }
    print_summary(&peer, mosq.as_ref());
    let failed = std::iter::once(&peer)
        .chain(mosq.as_ref())
        .any(|r| !r.errors.is_empty() || r.fans.iter().any(|f| f.incomplete() > 0));
    Ok(if a.strict && failed {
        eprintln!("peerline-bench: some scenarios failed (see above)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn floor_cmd(f: FloorArgs) -> Result<(), String> {
    let c = &f.common;
    let pin = |cpu: usize| (!c.no_pin).then_some(cpu);
    let load0 = floor::loadavg();
    let a = floor::Args {
        n: f.n.max(1),
        rounds: f.rounds.max(1),
        window: f.window.max(1),
        bcast_len: f.bcast_len.clamp(1, 1200),
        ack_len: f.ack_len.clamp(1, 1200),
        server_cpu: pin(0),
        tool_cpu: pin(1),
        variants: if f.two_variants {
            vec![floor::Variant::V4, floor::Variant::DualStack]
        } else {
            floor::Variant::ALL.to_vec()
        },
        burst: f.burst.max(1),
    };
    let floors = floor::run(&a);
    let mut systems: Vec<(&str, Option<f64>)> = Vec::new();
    if !f.floor_only {
        if !c.server.is_file() {
            return Err(format!(
                "peerline-server not found at {}",
                c.server.display()
            ));
        }
        let plan = bench::Plan {
            sizes: vec![a.n],
            reps: 3,
            burst: a.burst,
            burst_window: 32,
            per_worker: 2500,
            kdf_low: c.kdf_iterations,
            default_sessions: 20,
            storm: 20,
            pingers: 20,
            ping_interval_ms: 5,
            idle_secs: 1,
            pad: 64,
            server_cpu: a.server_cpu,
            tool_cpu: a.tool_cpu,
            growth_window: 128,
        };
        let peer = bench::run(bench::System::Peerline, &plan, &c.server);
        systems.push(("peerline", floor::bench_us(&peer)));
        if !c.no_mosquitto && servers::which("mosquitto").is_some() {
            let m = bench::run(bench::System::Mosquitto, &plan, &c.server);
            systems.push(("mosquitto", floor::bench_us(&m)));
        }
    }
    let when = format!(
        "Measured {} UTC",
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    let md = floor::markdown(&a, &floors, &systems, (&load0, &floor::loadavg()), &when);
    println!("{md}");
    if let Some(path) = &c.out_md {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let text = scale::splice_between(&old, floor::BEGIN, floor::END, &md);
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn print_summary(p: &bench::Results, m: Option<&bench::Results>) {
    println!(
        "{:<62} {:>12} {:>12} {:>8}",
        "metric", "peerline", "mosquitto", "ratio"
    );
    for h in report::headlines(p, m) {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let r = match (h.peer, h.mosq) {
            (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!(
            "{:<62} {:>12} {:>12} {:>8}",
            format!("{} ({})", h.name, h.unit),
            f(h.peer),
            f(h.mosq),
            r
        );
    }
    for r in std::iter::once(p).chain(m) {
        for e in &r.errors {
            println!("{}: {e}", r.system);
        }
    }
}

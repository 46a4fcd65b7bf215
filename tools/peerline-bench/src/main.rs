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

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load generator and benchmark for peerline (and mosquitto, side by side)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scenarios and write the report.
    Run(RunArgs),
    /// Direct links: setup time and messages/s, encrypted vs plaintext, in one run.
    Links(links::Args),
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
    RestartProbe(probe::Config),
    /// (internal) A session-driving worker, commanded over stdin/stdout.
    #[command(hide = true)]
    Worker {
        #[command(flatten)]
        config: worker::WorkerConfig,
        // The process's CPU, not the worker's business: main pins it.
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

impl TlsArgs {
    /// tls.rs's arguments: pinned as `CpuArgs::pin` says, and a broadcast
    /// window of at least one (none would never send).
    fn to_args(&self) -> tls::Args {
        let c = &self.common;
        tls::Args {
            server: c.server.clone(),
            handshakes: self.handshakes,
            window: self.window,
            sessions: self.sessions,
            broadcasts: self.broadcasts,
            bwindow: self.broadcast_window.max(1),
            pad: self.pad,
            kdf_iterations: c.kdf_iterations,
            server_cpu: self.cpus.pin(c.no_pin, self.cpus.server_cpu),
            tool_cpu: self.cpus.pin(c.no_pin, self.cpus.tool_cpu),
            no_mosquitto: c.no_mosquitto,
            out_md: c.out_md.clone(),
            strict: self.strict,
        }
    }
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

impl FloorArgs {
    /// floor.rs's arguments: counts of at least one, message lengths that
    /// fit peerline's largest datagram, the server on CPU 0 and the tool on
    /// CPU 1 unless `--no-pin`.
    fn to_args(&self) -> floor::Args {
        use peerline::proto::datagram::MAX_DATAGRAM;
        let pin = |cpu: usize| (!self.common.no_pin).then_some(cpu);
        floor::Args {
            n: self.n.max(1),
            rounds: self.rounds.max(1),
            window: self.window.max(1),
            bcast_len: self.bcast_len.clamp(1, MAX_DATAGRAM),
            ack_len: self.ack_len.clamp(1, MAX_DATAGRAM),
            server_cpu: pin(0),
            tool_cpu: pin(1),
            variants: if self.two_variants {
                vec![floor::Variant::V4, floor::Variant::DualStack]
            } else {
                floor::Variant::ALL.to_vec()
            },
            burst: self.burst.max(1),
        }
    }
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

impl RunArgs {
    /// Checks before anything starts, so a run never fails an hour in for
    /// a reason known at once: positive sizes, the server binary, and the
    /// descriptor budget (a worker's sessions, the server's at the largest
    /// N); then makes the report's directory. Returns the open-file limit.
    fn preflight(&self) -> Result<u64, String> {
        let (c, per_worker) = (&self.common, self.workers.per_worker);
        if self.sizes.is_empty() || self.sizes.contains(&0) {
            return Err("--sizes needs positive receiver counts".into());
        }
        let max_n = *self.sizes.iter().max().expect("non-empty");
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
        Ok(limit)
    }

    /// bench.rs's plan: every count at least one (a zero would measure
    /// nothing), at least as many default-cost sessions as the storm logs in.
    fn plan(&self) -> bench::Plan {
        let c = &self.common;
        let pin = |cpu: usize| self.cpus.pin(c.no_pin, cpu);
        bench::Plan {
            sizes: self.sizes.clone(),
            reps: self.reps.max(1),
            burst: self.burst.max(1),
            burst_window: self.burst_window.max(1),
            per_worker: self.workers.per_worker.max(1),
            kdf_low: c.kdf_iterations,
            default_sessions: self.default_sessions.max(self.storm),
            storm: self.storm.max(1),
            pingers: self.pingers.max(1),
            ping_interval_ms: self.ping_interval_ms.max(1),
            idle_secs: self.idle_secs,
            pad: self.pad,
            server_cpu: pin(self.cpus.server_cpu),
            tool_cpu: pin(self.cpus.tool_cpu),
            growth_window: self.growth_window.max(1),
        }
    }
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

impl ScaleArgs {
    /// scale.rs's arguments: counts of at least one, the server on CPU 0
    /// and the tool on CPU 1 unless `--no-pin`, plots beside the report.
    fn into_args(self) -> scale::Args {
        let c = self.common;
        scale::Args {
            server: c.server,
            sizes: self.sizes,
            accounts: self.accounts,
            online: self.online.max(1),
            reps: self.reps.max(1),
            per_worker: self.workers.per_worker.max(1),
            kdf_iterations: c.kdf_iterations,
            idle_secs: self.idle_secs,
            no_mosquitto: c.no_mosquitto,
            pin: (!c.no_pin).then_some((0, 1)),
            svg_dir: c
                .out_md
                .as_ref()
                .and_then(|m| m.parent().map(PathBuf::from)),
            out_md: c.out_md,
        }
    }
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
    match Cli::parse().cmd {
        Cmd::Run(a) => exit_code("peerline-bench", run(a)),
        Cmd::Links(a) => exit_code("peerline-bench links", links::run(&a).map(|()| true)),
        Cmd::Scale(a) => exit_code("peerline-bench scale", scale_cmd(a.into_args())),
        Cmd::Restart(a) => exit_code("peerline-bench restart", restart::main(&a).map(|()| true)),
        Cmd::Tls(a) => exit_code("peerline-bench tls", tls_cmd(&a)),
        Cmd::Floor(a) => exit_code("peerline-bench floor", floor_cmd(&a).map(|()| true)),
        Cmd::RestartProbe(cfg) => exit_code("restart-probe", probe::main(cfg).map(|()| true)),
        Cmd::Worker { config, cpu } => exit_code("worker", worker_cmd(config, cpu).map(|()| true)),
    }
}

/// The process's exit status for a mode's outcome: `Ok(true)` passes,
/// `Ok(false)` fails without a word here (the mode said what failed), an
/// error is printed after `who`, the mode's name.
fn exit_code(who: &str, outcome: Result<bool, impl std::fmt::Display>) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{who}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `worker`: pinned before its first session, so every session it drives
/// runs on that CPU; a pin that fails is said and is not fatal (the figures
/// are then less steady, not wrong).
fn worker_cmd(config: worker::WorkerConfig, cpu: Option<usize>) -> std::io::Result<()> {
    if let Some(c) = cpu {
        if let Err(e) = clock::pin_to_cpu(c) {
            eprintln!("worker: cannot pin to CPU {c}: {e}");
        }
    }
    worker::Worker::new(config).and_then(|w| w.run())
}

/// `scale`: prints the section and, with `--out-md`, writes it and its
/// plots; passes when no step of either system reported an error.
fn scale_cmd(args: scale::Args) -> Result<bool, String> {
    let r = scale::run(&args)?;
    let machine = report::Machine::probe();
    println!("{}", scale::markdown(&r, &args, &machine));
    if let (Some(md), Some(dir)) = (&args.out_md, &args.svg_dir) {
        scale::write(&r, &args, md, dir)?;
        eprintln!("wrote {}", md.display());
    }
    Ok(r.errors.is_empty()
        && r.peer.errors.is_empty()
        && r.mosq.iter().all(|m| m.errors.is_empty()))
}

/// `tls`: passes when every phase did (tls.rs printed the ones that failed).
fn tls_cmd(t: &TlsArgs) -> Result<bool, String> {
    let passed = tls::main(&t.to_args(), &t.shown_command)?;
    if !passed {
        eprintln!("peerline-bench tls: some phases failed (see above)");
    }
    Ok(passed)
}

/// `run`: the scenarios on peerline, then on mosquitto, the report, and a
/// summary table on stdout. Fails only with `--strict`, when a scenario
/// failed or a fan-out was incomplete: without it a partial report is still
/// the run's product.
fn run(a: RunArgs) -> Result<bool, String> {
    let started = Instant::now();
    let limit = a.preflight()?;
    let plan = a.plan();
    if plan.tool_cpu.is_some() {
        let _ = clock::pin_to_cpu(a.cpus.tool_cpu);
    }
    eprintln!(
        "peerline-bench: sizes {:?}, {} repeats, {} per worker, open-file limit {limit}",
        plan.sizes, plan.reps, plan.per_worker
    );
    let peer = bench::run(bench::System::Peerline, &plan, &a.common.server);
    let (mosq, mosquitto_note) = run_mosquitto(&a, &plan);
    let machine = report::Machine::probe();
    let wall = started.elapsed().as_secs_f64();
    write_report(
        &a,
        &plan,
        &peer,
        mosq.as_ref(),
        &mosquitto_note,
        &machine,
        wall,
    )?;
    print_summary(&peer, mosq.as_ref());
    let failed = std::iter::once(&peer)
        .chain(mosq.as_ref())
        .any(|r| !r.errors.is_empty() || r.fans.iter().any(|f| f.incomplete() > 0));
    if a.strict && failed {
        eprintln!("peerline-bench: some scenarios failed (see above)");
        return Ok(false);
    }
    Ok(true)
}

/// mosquitto's results for `run`, and what the report says about them:
/// none with `--no-mosquitto` (the report gives `--mosquitto-note`), none
/// when it is not installed (and the report says so).
fn run_mosquitto(a: &RunArgs, plan: &bench::Plan) -> (Option<bench::Results>, String) {
    if a.common.no_mosquitto {
        (None, a.mosquitto_note.clone())
    } else if servers::which("mosquitto").is_none() {
        eprintln!("mosquitto is not installed: reporting peerline alone");
        (None, "not installed; peerline reported alone".into())
    } else {
        let mosq = bench::run(bench::System::Mosquitto, plan, &a.common.server);
        (Some(mosq), a.mosquitto_note.clone())
    }
}

/// `run`'s report into `--out-md` (nothing without it) and its fan-out plot
/// beside it (or at `--out-svg`).
fn write_report(
    a: &RunArgs,
    plan: &bench::Plan,
    peer: &bench::Results,
    mosq: Option<&bench::Results>,
    mosquitto_note: &str,
    machine: &report::Machine,
    wall: f64,
) -> Result<(), String> {
    let Some(md) = &a.common.out_md else {
        return Ok(());
    };
    let svg_path = a
        .out_svg
        .clone()
        .unwrap_or_else(|| md.with_file_name("bench-fanout.svg"));
    let svg_name = svg_path.file_name().map_or("bench-fanout.svg".into(), |n| {
        n.to_string_lossy().into_owned()
    });
    let notes = std::fs::read_to_string(&a.notes).unwrap_or_default();
    let text = report::markdown(
        peer,
        mosq,
        mosquitto_note,
        plan,
        machine,
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
    std::fs::write(&svg_path, report::svg(peer, mosq))
        .map_err(|e| format!("{}: {e}", svg_path.display()))?;
    eprintln!("wrote {} and {}", md.display(), svg_path.display());
    Ok(())
}

/// `floor`: the kernel's floor per acknowledged delivery, then (unless
/// `--floor-only`) the systems' sustained burst at the same N; prints the
/// section and splices it into `--out-md`.
fn floor_cmd(f: &FloorArgs) -> Result<(), String> {
    let c = &f.common;
    let load0 = floor::loadavg();
    let a = f.to_args();
    let floors = floor::run(&a);
    let systems = if f.floor_only {
        Vec::new()
    } else {
        burst_beside_floor(&a, c)?
    };
    let when = measured_at();
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

/// peerline's (and, when installed and not `--no-mosquitto`, mosquitto's)
/// CPU per delivery in a sustained burst to the floor's N receivers: the
/// bench's own burst, with the other scenarios kept small, so the floor
/// section compares like with like.
fn burst_beside_floor(
    a: &floor::Args,
    c: &CommonArgs,
) -> Result<Vec<(&'static str, Option<f64>)>, String> {
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
    let mut systems = vec![("peerline", floor::bench_us(&peer))];
    if !c.no_mosquitto && servers::which("mosquitto").is_some() {
        let m = bench::run(bench::System::Mosquitto, &plan, &c.server);
        systems.push(("mosquitto", floor::bench_us(&m)));
    }
    Ok(systems)
}

/// "Measured <date, minutes> UTC", from `date -u` (the date left empty if
/// it cannot run: the figures matter more than their stamp).
fn measured_at() -> String {
    format!(
        "Measured {} UTC",
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    )
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

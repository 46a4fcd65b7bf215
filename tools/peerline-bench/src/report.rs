//! `docs/BENCHMARKS.md` and the fan-out plot, written from one run's results.

use std::fmt::Write;

use crate::bench::{Pings, Plan, Rate, Results};
use crate::svg::{self, Series};

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_gib: f64,
    pub kernel: String,
    pub fd_limit: u64,
    pub mosquitto: Option<String>,
    pub date: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Machine {
            cpu,
            // Online CPUs, not this process's affinity (the tool pins itself).
            cores: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize,
            mem_gib: mem_kb / 1024.0 / 1024.0,
            kernel,
            fd_limit: crate::procfs::fd_limit(),
            mosquitto: crate::servers::mosquitto_version(),
            date,
        }
    }
}

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or("—".to_string(), f)
}

/// `a / b` formatted, or a dash when either is missing or b is zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

/// A setup rate cell: sessions per second to `decimals` places, with counts.
fn rate_cell(s: Rate, decimals: usize) -> String {
    format!(
        "{:.*}/s ({} sessions, {} failed)",
        decimals,
        s.per_sec(),
        s.sessions,
        s.failed
    )
}

/// A PING cell: p50 / p99 / max in milliseconds, then the sample count.
fn pings_cell(p: Pings) -> String {
    format!(
        "{:.2} / {:.2} / {:.2}, {}",
        p.p50_us as f64 / 1e3,
        p.p99_us as f64 / 1e3,
        p.max_us as f64 / 1e3,
        p.n
    )
}

/// `text`, or "none" for an empty list.
fn or_none(text: String) -> String {
    if text.is_empty() {
        "none".into()
    } else {
        text
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "—",
    }
}

pub struct Headline {
    pub name: &'static str,
    pub peer: Option<f64>,
    pub mosq: Option<f64>,
    pub unit: &'static str,
    pub target: &'static str,
    pub met: Option<bool>,
}

pub fn headlines(p: &Results, m: Option<&Results>) -> Vec<Headline> {
    let mem = |r: &Results| r.memory.map(|m| m.kb_per_session());
    let last10k = |r: &Results| {
        r.fans
            .iter()
            .max_by_key(|f| f.n)
            .and_then(|f| f.last())
            .map(|s| s.p50 as f64 / 1e6)
    };
    let dps = |r: &Results| r.sustained.map(|s| s.per_sec());
    let cpu = |r: &Results| r.sustained.map(|s| s.cpu_ms_per_1000());
    let storm = |r: &Results| r.storm.map(|s| s.p99_us as f64 / 1000.0);
    let fanp = |r: &Results| r.fan_pings.map(|s| s.p99_us as f64 / 1000.0);
    let wake = |r: &Results| r.idle.map(|i| i.wakeups as f64);
    let idle_cpu = |r: &Results| r.idle.map(|i| i.cpu_ms);
    let mo = |f: &dyn Fn(&Results) -> Option<f64>| m.and_then(f);
    let cmp = |a: Option<f64>, b: Option<f64>, f: &dyn Fn(f64, f64) -> bool| match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        _ => None,
    };
    let max_n = p.fans.iter().map(|f| f.n).max().unwrap_or(0);
    vec![
        Headline {
            name: "memory per session (RSS delta / sessions; accounts stored beforehand)",
            peer: mem(p),
            mosq: mo(&mem),
            unit: "KB",
            target: "≤ 1.0 × mosquitto",
            met: cmp(mem(p), mo(&mem), &|a, b| a <= b),
        },
        Headline {
            name: if max_n >= 10_000 {
                "fan-out to 10,000: last receiver, median"
            } else {
                "fan-out to largest N: last receiver, median"
            },
            peer: last10k(p),
            mosq: mo(&last10k),
            unit: "ms",
            target: "≤ 0.5 × mosquitto",
            met: cmp(last10k(p), mo(&last10k), &|a, b| a <= 0.5 * b),
        },
        Headline {
            name: "sustained fan-out at 1,000: deliveries per second",
            peer: dps(p),
            mosq: mo(&dps),
            unit: "/s",
            target: "≥ 1.5 × mosquitto",
            met: cmp(dps(p), mo(&dps), &|a, b| a >= 1.5 * b),
        },
        Headline {
            name: "server CPU per 1,000 deliveries",
            peer: cpu(p),
            mosq: mo(&cpu),
            unit: "ms",
            target: "≤ 0.7 × mosquitto",
            met: cmp(cpu(p), mo(&cpu), &|a, b| a <= 0.7 * b),
        },
        Headline {
            name: "PING p99 during the login storm (default cost)",
            peer: storm(p),
            mosq: mo(&storm),
            unit: "ms",
            target: "≤ 20 ms",
            met: storm(p).map(|v| v <= 20.0),
        },
        Headline {
            name: "PING p99 during fan-out to the largest N",
            peer: fanp(p),
            mosq: mo(&fanp),
            unit: "ms",
            target: "≤ 20 ms",
            met: fanp(p).map(|v| v <= 20.0),
        },
        Headline {
            name: "idle wakeups (voluntary context switches) in the idle window",
            peer: wake(p),
            mosq: mo(&wake),
            unit: "",
            target: "only timers due",
            met: None,
        },
        Headline {
            name: "idle server CPU in the idle window",
            peer: idle_cpu(p),
            mosq: mo(&idle_cpu),
            unit: "ms",
            target: "—",
            met: None,
        },
    ]
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

pub fn svg(p: &Results, m: Option<&Results>) -> String {
    let series = |r: &Results, color| Series {
        name: r.system.clone(),
        color,
        points: r
            .fans
            .iter()
            .filter_map(|f| Some((f.n as f64, f.last()?.p50 as f64 / 1e6)))
            .collect(),
    };
    let mut all = vec![series(p, "#1f77b4")];
    if let Some(m) = m {
        all.push(series(m, "#d62728"));
    }
    svg::plot(
        "Broadcast fan-out: time to the last receiver (median of repeats)",
        "receivers N (log scale)",
        "milliseconds",
        &all,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn markdown(
    p: &Results,
    m: Option<&Results>,
    mosquitto_note: &str,
    plan: &Plan,
    machine: &Machine,
    command: &str,
    svg_name: &str,
    notes: &str,
    wall_secs: f64,
) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `tools/peerline-bench` (do not edit by hand: rerun it; the notes at the end come from `tools/peerline-bench/NOTES.md`).\n"
    );
    let _ = writeln!(w, "## How to run\n\n```sh\n{command}\n```\n");
    let _ = writeln!(
        w,
        "It builds the release binaries, installs mosquitto if it is missing (Debian package), runs every scenario against \
         peerline and then mosquitto, and rewrites this file and `docs/{svg_name}`. The run took {:.0} s. \
         `ci/bench-smoke.sh` is a 50-session peerline-only smoke of the same tool.\n",
        wall_secs
    );
    let _ = writeln!(w, "## Machine and method\n");
    let _ = writeln!(
        w,
        "- {}; {} cores; {:.0} GiB RAM; Linux {}; open-file limit {}; run {}.",
        machine.cpu, machine.cores, machine.mem_gib, machine.kernel, machine.fd_limit, machine.date
    );
    let _ = writeln!(
        w,
        "- mosquitto: {}.",
        machine.mosquitto.as_deref().unwrap_or(mosquitto_note)
    );
    let _ = writeln!(
        w,
        "- Server pinned to CPU {}, every load-generator process to CPU {} (`taskset` / `sched_setaffinity`); loopback only.",
        plan.server_cpu.map_or("any".into(), |c| c.to_string()),
        plan.tool_cpu.map_or("any".into(), |c| c.to_string())
    );
    let _ = writeln!(
        w,
        "- Load generator: worker processes with one mio loop each, at most {} sessions per worker (a peerline session is a TCP \
         control connection plus its own UDP socket: two descriptors). Sessions speak the real protocol: SIGNUP, LOGIN, \
         `REGISTER` over UDP, `ACK` for every `BCAST`; mosquitto sessions CONNECT with a username and password and SUBSCRIBE \
         at QoS 1 to one topic, and PUBACK every PUBLISH. One sender session (peerline `BROADCAST`, MQTT QoS 1 PUBLISH) is not counted in N.",
        plan.per_worker
    );
    let _ = writeln!(
        w,
        "- Latency: the sender stamps CLOCK_MONOTONIC into the text; each worker computes receive − stamp. First/last receiver \
         per repeat, then p50/p99 over {} repeats per size. Message text: the stamp plus {} bytes of padding.",
        plan.reps, plan.pad
    );
    let _ = writeln!(
        w,
        "- Password-hash cost: setup rate and the login storm run against a server at its **default** cost; everything from \
         50 sessions up runs against `--kdf-iterations {}` (stated low cost, so 10,000 accounts can be made in seconds). \
         mosquitto always uses its own default password hash.",
        plan.kdf_low
    );
    let _ = writeln!(
        w,
        "- Sustained: {} broadcasts back to back (at most {} unanswered) to {} receivers; deliveries/s = deliveries ÷ (last delivery − first send); \
         CPU from `/proc/PID/stat` (utime+stime, 10 ms ticks) over the burst plus 0.5 s for trailing ACKs.",
        plan.burst, plan.burst_window,
        p.sustained.map_or(0, |s| s.n)
    );
    let _ = writeln!(
        w,
        "- Responsiveness: {} logged-in sessions each send a control-line PING (MQTT: PINGREQ) every {} ms (staggered) during \
         {} simultaneous logins at the default cost, and during back-to-back fan-outs to the largest N. The probing sessions          live in a load-generator process of their own (they are among the N receivers of the fan-outs), so a round-trip          measures the server, not a generator process busy with thousands of receivers.",
        plan.pingers, plan.ping_interval_ms, plan.storm
    );
    let _ = writeln!(
        w,
        "- Memory: the accounts exist before the server starts (peerline: `users.csv` written with the server's own store          code at the stated low cost; mosquitto: its password file), then N + 1 sessions log in (peerline sessions also          register their UDP endpoint); RSS from `/proc/PID/status` before and 0.5 s after, on a fresh server. A second          figure, from the fan-out server, counts sessions that signed up during the run: a session plus its new account."
    );
    let _ = writeln!(
        w,
        "- Idle: server CPU and voluntary context switches (each one a sleep + wakeup) from `/proc/PID/status` over {} s with 1,001 idle sessions, 3 s after the sustained burst.\n",
        plan.idle_secs
    );

    let _ = writeln!(w, "## Results\n");
    let _ = writeln!(
        w,
        "| metric | peerline | mosquitto | peerline / mosquitto | target | |"
    );
    let _ = writeln!(w, "| --- | ---: | ---: | ---: | --- | --- |");
    for h in headlines(p, m) {
        let unit = if h.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", h.unit)
        };
        let _ = writeln!(
            w,
            "| {} | {}{unit} | {}{unit} | {} | {} | {} |",
            h.name,
            num(h.peer),
            num(h.mosq),
            ratio(h.peer, h.mosq),
            h.target,
            verdict(h.met)
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "### Fan-out: one message to N receivers (ms)\n");
    let _ = writeln!(
        w,
        "| N | system | repeats | first p50 | first p99 | last p50 | last p99 | incomplete repeats | UDP drops (host) |"
    );
    let _ = writeln!(
        w,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut rows: Vec<(&Results, &crate::bench::Fan)> = Vec::new();
    for r in std::iter::once(p).chain(m) {
        for f in &r.fans {
            rows.push((r, f));
        }
    }
    rows.sort_by_key(|(r, f)| (f.n, r.system.clone()));
    for (r, f) in rows {
        let (fs, ls) = (f.first(), f.last());
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f.n,
            r.system,
            f.samples.len(),
            opt(fs, |s| ms(s.p50)),
            opt(fs, |s| ms(s.p99)),
            opt(ls, |s| ms(s.p50)),
            opt(ls, |s| ms(s.p99)),
            f.incomplete(),
            f.udp_drops
        );
    }
    let _ = writeln!(w, "\n![last-receiver latency against N](./{svg_name})\n");

    let _ = writeln!(w, "### Sessions, memory, setup\n");
    let _ = writeln!(w, "| | peerline | mosquitto |");
    let _ = writeln!(w, "| --- | ---: | ---: |");
    let row = |w: &mut String, name: &str, f: &dyn Fn(&Results) -> String| {
        let _ = writeln!(w, "| {name} | {} | {} |", f(p), m.map_or("—".into(), f));
    };
    row(
        w,
        "setup rate at the default password cost (signup + login, 64 at a time)",
        &|r| opt(r.setup_default, |s| rate_cell(s, 1)),
    );
    row(
        w,
        &format!(
            "setup rate at `--kdf-iterations {}` (growth to the largest N)",
            plan.kdf_low
        ),
        &|r| opt(r.setup_low, |s| rate_cell(s, 0)),
    );
    row(w, "login storm duration (all logins answered)", &|r| {
        opt(r.storm, |s| format!("{:.2} s", s.during_secs))
    });
    row(
        w,
        "PING during the storm: p50 / p99 / max (ms), samples",
        &|r| opt(r.storm, pings_cell),
    );
    row(
        w,
        "PING during fan-outs to the largest N: p50 / p99 / max (ms), samples",
        &|r| opt(r.fan_pings, pings_cell),
    );
    row(
        w,
        "server RSS before sessions → at the largest N (KB), accounts stored beforehand",
        &|r| {
            opt(r.memory, |m| {
                format!("{} → {} ({} sessions)", m.base.rss_kb, m.at_n.rss_kb, m.n)
            })
        },
    );
    row(
        w,
        "KB per session (whole) / marginal over the last step",
        &|r| {
            opt(r.memory, |m| {
                format!("{:.2} / {:.2}", m.kb_per_session(), m.marginal_kb())
            })
        },
    );
    row(
        w,
        "KB per session signed up during the run (session + its new account; after the fan-outs at smaller N), whole / marginal",
        &|r| {
            opt(r.memory_with_accounts, |m| {
                format!("{:.2} / {:.2}", m.kb_per_session(), m.marginal_kb())
            })
        },
    );
    row(w, "server threads before → after", &|r| {
        opt(r.memory, |m| {
            format!("{} → {}", m.base.threads, m.at_n.threads)
        })
    });
    row(
        w,
        "sustained: messages × receivers, deliveries (expected), over TCP fallback, seconds",
        &|r| {
            opt(r.sustained, |s| {
                format!(
                    "{} × {}: {} ({}), {}, {:.2} s",
                    s.messages, s.n, s.deliveries, s.expected, s.tcp_deliveries, s.secs
                )
            })
        },
    );
    row(w, "sustained: server CPU ms", &|r| {
        opt(r.sustained, |s| format!("{:.0}", s.cpu_ms))
    });
    row(
        w,
        "sustained: load-generator CPU ms (busy share of its core)",
        &|r| {
            opt(r.sustained, |s| {
                format!("{:.0} ({:.0}%)", s.tool_cpu_ms, s.tool_busy() * 100.0)
            })
        },
    );
    row(w, "sustained: UDP receive-buffer drops (host)", &|r| {
        opt(r.sustained, |s| s.udp_drops.to_string())
    });
    row(w, "idle window: CPU ms, wakeups", &|r| {
        opt(r.idle, |i| {
            format!("{:.0} ms, {} in {} s", i.cpu_ms, i.wakeups, i.secs)
        })
    });
    row(w, "sessions closed by the server", &|r| {
        or_none(r.closed_reasons.clone())
    });
    row(w, "scenario errors", &|r| or_none(r.errors.join("; ")));
    let _ = writeln!(w);
    if m.is_none() {
        let _ = writeln!(w, "mosquitto: {mosquitto_note}\n");
    }
    if !notes.trim().is_empty() {
        let _ = writeln!(w, "## Notes\n\n{}", notes.trim());
    }
    s
}

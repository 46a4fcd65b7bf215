//! The coordinator's side of the workers: spawning them (pinned to the tool's
//! CPU), sending commands, and waiting — always with a deadline — for answers.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::worker::Proto;

pub struct Fleet {
    workers: Vec<(Child, ChildStdin)>,
    /// Sessions each worker holds (sender included).
    pub load: Vec<usize>,
    pub per_worker: usize,
    rx: Receiver<(usize, String)>,
    held: VecDeque<(usize, String)>,
    pub errors: u64,
    /// Receivers created so far (user indices 1..=receivers); the sender is index 0.
    pub receivers: usize,
    label: &'static str,
}

/// A worker line, split into `key=value` fields after the verb.
pub fn field(line: &str, key: &str) -> u64 {
    line.split(' ')
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub type Res<T> = Result<T, String>;

impl Fleet {
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        count: usize,
        per_worker: usize,
        proto: Proto,
        server: SocketAddr,
        prefix: &str,
        password: &str,
        cpu: Option<usize>,
        label: &'static str,
    ) -> Res<Fleet> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let mut workers = Vec::new();
        for i in 0..count {
            let mut cmd = Command::new(&exe);
            cmd.arg("worker")
                .arg("--proto")
                .arg(match proto {
                    Proto::Peerline => "peerline",
                    Proto::Mqtt => "mqtt",
                })
                .arg("--server")
                .arg(server.to_string())
                .arg("--prefix")
                .arg(prefix)
                .arg("--password")
                .arg(password);
            if let Some(c) = cpu {
                cmd.arg("--cpu").arg(c.to_string());
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("spawn worker: {e}"))?;
            let stdout = child.stdout.take().expect("piped stdout");
            let stdin = child.stdin.take().expect("piped stdin");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if tx.send((i, line)).is_err() {
                        break;
                    }
                }
            });
            workers.push((child, stdin));
        }
        let mut fleet = Fleet {
            workers,
            load: vec![0; count],
            per_worker,
            rx,
            held: VecDeque::new(),
            errors: 0,
            receivers: 0,
            label,
        };
        for i in 0..count {
            fleet.expect(i, "READY", Duration::from_secs(10))?;
        }
        Ok(fleet)
    }

    /// CPU ticks used so far by all worker processes.
    pub fn cpu_ticks(&self) -> u64 {
        self.workers
            .iter()
            .filter_map(|(c, _)| crate::procfs::cpu(c.id()).ok())
            .map(|t| t.total())
            .sum()
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn send(&mut self, i: usize, line: &str) -> Res<()> {
        let stdin = &mut self.workers[i].1;
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("worker {i} gone: {e}"))
    }

    fn note(&mut self, i: usize, line: &str) {
        if line.starts_with("ERROR") {
            self.errors += 1;
            if self.errors <= 10 {
                eprintln!("  [{} worker {i}] {line}", self.label);
            } else if self.errors == 11 {
                eprintln!(
                    "  [{}] (further worker errors counted, not shown)",
                    self.label
                );
            }
        }
    }

    /// Next line from any worker, or `None` at the deadline.
    fn next(&mut self, deadline: Instant) -> Res<Option<(usize, String)>> {
        if let Some(l) = self.held.pop_front() {
            return Ok(Some(l));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok((i, l)) => {
                self.note(i, &l);
                Ok(Some((i, l)))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err("all workers exited".into()),
        }
    }

    /// Waits for the next line of worker `i` starting with `prefix`; other lines
    /// are kept for later calls (progress lines are dropped).
    pub fn expect(&mut self, i: usize, prefix: &str, within: Duration) -> Res<String> {
        let deadline = Instant::now() + within;
        let mut kept = Vec::new();
        let found = loop {
            match self.next(deadline)? {
                None => break None,
                Some((j, l)) if j == i && l.starts_with(prefix) => break Some(l),
                Some((_, l)) if l.starts_with("PROGRESS") || l.starts_with("ERROR") => {}
                Some(other) => kept.push(other),
            }
        };
        for k in kept.into_iter().rev() {
            self.held.push_front(k);
        }
        found.ok_or_else(|| format!("worker {i}: no `{prefix}` within {within:?}"))
    }

    /// Opens `count` sessions spread over workers with room; `role` "s" or "r".
    /// Returns (ok, failed, seconds). Shows progress on stderr.
    /// Keeps worker `i` out of later `grow` calls that do not name it: its
    /// sessions stay the ones it has (the PING probes get a process of their own).
    pub fn close_to_growth(&mut self, i: usize) {
        self.load[i] = self.per_worker;
    }

    pub fn grow(
        &mut self,
        count: usize,
        window: usize,
        signup: bool,
        role: &str,
        first_index: usize,
        only: Option<usize>,
    ) -> Res<(u64, u64, f64)> {
        let started = Instant::now();
        let mut plan = Vec::new();
        let mut left = count;
        let mut next_index = first_index;
        for i in 0..self.len() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let room = self.per_worker.saturating_sub(self.load[i]);
            let n = room.min(left);
            if n == 0 {
                continue;
            }
            self.send(
                i,
                &format!("UP {n} {window} {} {next_index} {role}", signup as u8),
            )?;
            self.load[i] += n;
            plan.push((i, n));
            next_index += n;
            left -= n;
            if left == 0 {
                break;
            }
        }
        if left > 0 {
            return Err(format!(
                "no room for {left} more sessions ({} workers × {})",
                self.len(),
                self.per_worker
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(900);
        let mut progress = vec![0u64; self.len()];
        let mut done = vec![false; self.len()];
        let (mut ok, mut failed) = (0, 0);
        let mut last_shown = Instant::now();
        while plan.iter().any(|&(i, _)| !done[i]) {
            let Some((i, l)) = self.next(deadline)? else {
                return Err(format!("sessions not up within 900 s ({ok} ok)"));
            };
            if l.starts_with("PROGRESS") {
                progress[i] = field(&l, "ok");
            } else if l.starts_with("UP ") {
                done[i] = true;
                progress[i] = field(&l, "ok");
                ok += field(&l, "ok");
                failed += field(&l, "failed");
            } else if !l.starts_with("ERROR") {
                self.held.push_back((i, l));
            }
            if last_shown.elapsed() >= Duration::from_secs(2) {
                last_shown = Instant::now();
                eprintln!(
                    "  [{}] {} of {count} sessions up ({:.0} s)",
                    self.label,
                    progress.iter().sum::<u64>(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Ok((ok, failed, started.elapsed().as_secs_f64()))
    }

    /// Sends `line` to every worker and collects one answer starting with `prefix` from each.
    pub fn all(&mut self, line: &str, prefix: &str, within: Duration) -> Res<Vec<String>> {
        for i in 0..self.len() {
            self.send(i, line)?;
        }
        (0..self.len())
            .map(|i| self.expect(i, prefix, within))
            .collect()
    }

    /// Ends every worker: QUIT, then a bounded wait, then a kill of our own child.
    pub fn shutdown(mut self) {
        for i in 0..self.len() {
            let _ = self.send(i, "QUIT");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (child, _) in self.workers.iter_mut() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

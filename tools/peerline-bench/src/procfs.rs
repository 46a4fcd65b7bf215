//! Readers of `/proc/PID/status` and `/proc/PID/stat`: memory, threads,
//! context switches and CPU time of a server under test. Parsing is pure.

use std::io;

/// The fields of `/proc/PID/status` the benchmark uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub rss_kb: u64,
    pub threads: u64,
    /// Voluntary context switches: each is the process going to sleep and
    /// being woken again, i.e. one wakeup.
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

/// Parses the text of `/proc/PID/status`. `None` if a field is missing.
pub fn parse_status(text: &str) -> Option<Status> {
    let mut rss = None;
    let mut threads = None;
    let mut vol = None;
    let mut nonvol = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let first = || value.split_whitespace().next()?.parse::<u64>().ok();
        match key {
            "VmRSS" => rss = first(),
            "Threads" => threads = first(),
            "voluntary_ctxt_switches" => vol = first(),
            "nonvoluntary_ctxt_switches" => nonvol = first(),
            _ => {}
        }
    }
    Some(Status {
        rss_kb: rss?,
        threads: threads?,
        voluntary_switches: vol?,
        involuntary_switches: nonvol?,
    })
}

/// CPU time from `/proc/PID/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    pub utime: u64,
    pub stime: u64,
}

impl CpuTicks {
    pub fn total(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Parses `/proc/PID/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<CpuTicks> {
    let after = &text[text.rfind(')')? + 1..];
    // After ")": field 3 (state) is index 0, so utime (14) is 11, stime (15) is 12.
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(CpuTicks {
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

fn read(pid: u32, file: &str) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
}

pub fn status(pid: u32) -> io::Result<Status> {
    parse_status(&read(pid, "status")?)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc status"))
}

pub fn cpu(pid: u32) -> io::Result<CpuTicks> {
    parse_stat(&read(pid, "stat")?)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat"))
}

/// Milliseconds per clock tick (`sysconf(_SC_CLK_TCK)`, 100 Hz on Linux).
pub fn ms_per_tick() -> f64 {
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1000.0 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// UDP counters of the host's network namespace (`/proc/net/snmp`):
/// (datagrams dropped for want of receive-buffer room, all receive errors).
pub fn parse_snmp_udp(text: &str) -> Option<(u64, u64)> {
    let mut rows = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = rows.next()?.split_whitespace().collect();
    let values: Vec<&str> = rows.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("RcvbufErrors")?, get("InErrors")?))
}

/// Receive-buffer drops of UDP so far (0 if unreadable).
pub fn udp_rcvbuf_errors() -> u64 {
    std::fs::read_to_string("/proc/net/snmp")
        .ok()
        .and_then(|t| parse_snmp_udp(&t))
        .map_or(0, |c| c.0)
}

/// The soft limit on open files of this process.
pub fn fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpeerline-server\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t   12000 kB\nVmRSS:\t    4321 kB\nRssAnon:\t 1000 kB\nThreads:\t1\n\
        voluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t3\n";

    #[test]
    fn status_fields() {
        assert_eq!(
            parse_status(STATUS),
            Some(Status {
                rss_kb: 4321,
                threads: 1,
                voluntary_switches: 17,
                involuntary_switches: 3
            })
        );
        assert_eq!(parse_status("Name:\tx\nVmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn stat_with_awkward_command_name() {
        let text = "1234 (we ird) (name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    57 13 0 0 20 0 1 0 100 1000 200 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(CpuTicks {
                utime: 57,
                stime: 13
            })
        );
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn snmp_udp_counters_by_name() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            Udp: 1523339 2712 553541 2079599 553540 0\n\
            UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            UdpLite: 0 0 0 0 0 0\n";
        assert_eq!(parse_snmp_udp(text), Some((553540, 553541)));
        assert_eq!(parse_snmp_udp("Udp: InDatagrams\nUdp: 1\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let s = status(me).unwrap();
        assert!(s.rss_kb > 0 && s.threads >= 1);
        cpu(me).unwrap();
        assert!(fd_limit() > 0);
        assert!(ms_per_tick() > 0.0);
    }
}

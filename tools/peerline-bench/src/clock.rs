//! CLOCK_MONOTONIC in nanoseconds: comparable across the processes of one
//! machine, so a sender can stamp a message and a worker can time its arrival.

pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Cannot fail for CLOCK_MONOTONIC with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins the calling process to one CPU (what `taskset -c CPU` does).
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The stamp carried in a broadcast text or MQTT payload: `r=<rep> t=<ns>`.
pub fn stamp(rep: u64, t_ns: u64) -> String {
    format!("r={rep} t={t_ns}")
}

/// Reads `(rep, t_ns)` back from the start of a text; `None` for foreign text.
pub fn parse_stamp(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split(' ');
    let rep = it.next()?.strip_prefix("r=")?.parse().ok()?;
    let t = it.next()?.strip_prefix("t=")?.parse().ok()?;
    Some((rep, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_with_padding() {
        let s = format!("{} {}", stamp(7, 123456789), "x".repeat(40));
        assert_eq!(parse_stamp(&s), Some((7, 123456789)));
        assert_eq!(parse_stamp("hello world"), None);
        assert_eq!(parse_stamp("r=1"), None);
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
    }
}

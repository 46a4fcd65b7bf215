//! Human durations for flags: `90s`, `30m`, `2h`, `1d`, `500ms`, or plain seconds.

use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 90s, 30m, 2h or plain seconds)"))?;
    let scale = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ))
        }
    };
    // Overflow is an error, not a silent cap: the caller range-checks.
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// [`parse_duration`] for waits that must be able to end in time: zero is
/// refused (`--timeout 0` would end a run before anything could arrive).
pub fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_refuses_zero_in_every_unit() {
        for z in ["0", "0s", "0ms", "0m", "0h", "0d"] {
            let e = parse_nonzero_duration(z).unwrap_err();
            assert!(e.contains("longer than zero"), "{z}: {e}");
        }
        assert_eq!(parse_nonzero_duration("1ms"), Ok(Duration::from_millis(1)));
        assert!(parse_nonzero_duration("x").is_err());
    }

    #[test]
    fn forms() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }
}

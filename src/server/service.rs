//! Living under a service manager: systemd readiness notifications and
//! journald-friendly logs.
//!
//! Invariants:
//! - Without `NOTIFY_SOCKET` nothing is sent and nothing fails; a failed
//!   notification is logged, never fatal (the server works unsupervised).
//! - `READY=1` is sent only once both sockets listen and the `listening` line
//!   is out; `RELOADING=1` … `READY=1` bracket every SIGHUP reload;
//!   `STOPPING=1` starts shutdown.
//! - Log lines carry a timestamp unless stderr is the journal (`JOURNAL_STREAM`
//!   names our stderr), which stamps them itself and reads the `<N>` syslog
//!   level prefix instead.

use std::io::Write;

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("cannot notify the service manager: {e}");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// systemd's `Type=notify-reload` wants the monotonic time with `RELOADING=1`.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(t) => notify(&[NotifyState::Reloading, t]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// True when `JOURNAL_STREAM` (`<device>:<inode>`) names our stderr: output
/// redirected elsewhere by hand must keep its timestamps.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on fd 2 into a zeroed, correctly sized stat buffer.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// env_logger on stderr, `RUST_LOG` controlling it (else `default_level`).
pub fn init_logging(default_level: &str) {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if stderr_is_journal() {
        b.format(|buf, record| {
            writeln!(
                buf,
                "<{}>{}: {}",
                syslog_priority(record.level()),
                record.target(),
                record.args()
            )
        });
    }
    b.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(syslog_priority(log::Level::Error), 3);
        assert_eq!(syslog_priority(log::Level::Warn), 4);
        assert_eq!(syslog_priority(log::Level::Info), 6);
        assert_eq!(syslog_priority(log::Level::Debug), 7);
    }
}

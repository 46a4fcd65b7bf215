//! Signals as a poll source, so the single loop learns of them like any other
//! event. `signal-hook-mio` does what the hand-written self-pipe did (an
//! async-signal-safe handler that only wakes the loop), with the handler
//! chaining, `SA_RESTART` and multi-signal bookkeeping done once, well.
//!
//! Invariant: no work happens in a signal handler; the loop reads which
//! signals arrived with [`SignalPipe::take`] and acts in its own time.

use std::io;

use signal_hook_mio::v1_0::Signals;

/// What arrived since the last look.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Caught {
    /// SIGINT or SIGTERM: stop (cleanly).
    pub stop: bool,
    /// SIGHUP: reload the configuration (only when installed with reload).
    pub reload: bool,
}

/// Register [`SignalPipe::receiver`] with the poll under its own token.
pub struct SignalPipe {
    signals: Signals,
}

impl SignalPipe {
    /// Catches SIGINT and SIGTERM. SIGHUP keeps its default (the client is a
    /// terminal program: a hang-up ends it).
    pub fn install() -> io::Result<SignalPipe> {
        Ok(SignalPipe {
            signals: Signals::new([libc::SIGINT, libc::SIGTERM])?,
        })
    }

    /// Catches SIGHUP as well, for a daemon that reloads on it (a dropped ssh
    /// session or `systemctl reload` must never stop the server).
    pub fn install_with_reload() -> io::Result<SignalPipe> {
        Ok(SignalPipe {
            signals: Signals::new([libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?,
        })
    }

    pub fn receiver(&mut self) -> &mut Signals {
        &mut self.signals
    }

    /// Empties the queue of arrived signals.
    pub fn take(&mut self) -> Caught {
        let mut caught = Caught::default();
        for sig in self.signals.pending() {
            match sig {
                libc::SIGHUP => caught.reload = true,
                _ => caught.stop = true,
            }
        }
        caught
    }

    /// Empties the queue; true if a stop signal arrived.
    pub fn drain(&mut self) -> bool {
        self.take().stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Interest, Poll, Token};
    use std::time::Duration;

    /// One test owns the process's signal dispositions (others do not touch them).
    #[test]
    fn signals_wake_the_poll_and_are_told_apart() {
        let mut poll = Poll::new().unwrap();
        let mut pipe = SignalPipe::install_with_reload().unwrap();
        poll.registry()
            .register(pipe.receiver(), Token(1), Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(4);
        for (sig, want) in [
            (
                libc::SIGHUP,
                Caught {
                    stop: false,
                    reload: true,
                },
            ),
            (
                libc::SIGTERM,
                Caught {
                    stop: true,
                    reload: false,
                },
            ),
        ] {
            // SAFETY: raising a signal we handle, in our own process.
            unsafe { libc::raise(sig) };
            let mut got = Caught::default();
            for _ in 0..50 {
                poll.poll(&mut events, Some(Duration::from_millis(100)))
                    .unwrap();
                got = pipe.take();
                if got != Caught::default() {
                    break;
                }
            }
            assert_eq!(got, want, "signal {sig}");
        }
    }
}

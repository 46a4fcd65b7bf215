//! SIGINT/SIGTERM as a readable pipe, so the single poll loop learns of them
//! like any other event (the self-pipe trick; the handler only writes a byte).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use mio::unix::pipe;

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // Async-signal-safe; a full pipe already carries the news.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// Readable end of the signal pipe; register it with the poll under its own token.
pub struct SignalPipe {
    receiver: pipe::Receiver,
    _sender: pipe::Sender,
}

impl SignalPipe {
    /// Installs handlers for SIGINT and SIGTERM. Call once per process.
    pub fn install() -> io::Result<SignalPipe> {
        let (sender, receiver) = pipe::new()?;
        WRITE_FD.store(sender.as_raw_fd(), Ordering::Relaxed);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            if unsafe { libc::signal(sig, handler) } == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(SignalPipe {
            receiver,
            _sender: sender,
        })
    }

    pub fn receiver(&mut self) -> &mut pipe::Receiver {
        &mut self.receiver
    }

    /// Empties the pipe; true if any signal arrived.
    pub fn drain(&mut self) -> bool {
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match self.receiver.read(&mut buf) {
                Ok(0) => return got,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return got,
            }
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.receiver.as_raw_fd()
    }
}

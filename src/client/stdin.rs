//! stdin as a line source, whatever it is. A terminal or a pipe is made
//! non-blocking and registered with the poll; a regular file (and anything
//! else epoll refuses, like `/dev/null`) is read directly, a budget per turn,
//! since such reads never block. The original file-status flags and terminal
//! settings are restored on drop: `O_NONBLOCK` lives on the open file
//! description, which a terminal's stdin shares with stdout and the shell.

use std::io::{self, Read};
use std::os::fd::RawFd;

use crate::netio::{read_frames, ReadStatus};
use crate::proto::{Frame, LineReader};

const FD: RawFd = libc::STDIN_FILENO;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Terminal,
    Pipe,
    /// Read without the poll: a regular file, or a device epoll refuses.
    Direct,
}

pub struct Stdin {
    kind: Kind,
    reader: LineReader,
    /// File-status flags before we added `O_NONBLOCK`, to put back.
    saved_flags: Option<libc::c_int>,
    /// Terminal settings at start, to put back if echo was turned off.
    saved_termios: Option<libc::termios>,
    echo_off: bool,
    ended: bool,
}

/// `read(2)` on fd 0, for `read_frames`.
struct Fd0;

impl Read for Fd0 {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = unsafe { libc::read(FD, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl Stdin {
    /// Looks at what fd 0 is and prepares it. A closed fd 0 reads as ended.
    pub fn open() -> Stdin {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let mut s = Stdin {
            kind: Kind::Direct,
            reader: LineReader::new(),
            saved_flags: None,
            saved_termios: None,
            echo_off: false,
            ended: false,
        };
        if unsafe { libc::fstat(FD, &mut st) } != 0 {
            s.ended = true;
            return s;
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            return s;
        }
        s.kind = if unsafe { libc::isatty(FD) } == 1 {
            Kind::Terminal
        } else {
            Kind::Pipe
        };
        if s.kind == Kind::Terminal {
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            if unsafe { libc::tcgetattr(FD, &mut t) } == 0 {
                s.saved_termios = Some(t);
            }
        }
        let flags = unsafe { libc::fcntl(FD, libc::F_GETFL) };
        if flags >= 0 && unsafe { libc::fcntl(FD, libc::F_SETFL, flags | libc::O_NONBLOCK) } == 0 {
            s.saved_flags = Some(flags);
        }
        s
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn is_terminal(&self) -> bool {
        self.kind == Kind::Terminal
    }

    pub fn fd(&self) -> RawFd {
        FD
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Called when the poll refuses fd 0: read it directly from now on.
    pub fn fall_back_to_direct(&mut self) {
        self.restore_flags();
        self.kind = Kind::Direct;
    }

    /// Reads one budget's worth, handing out frames. At end of input a last
    /// line without `\n` still counts.
    pub fn read(&mut self, mut on_frame: impl FnMut(Frame)) -> ReadStatus {
        if self.ended {
            return ReadStatus::Closed;
        }
        let status = read_frames(&mut Fd0, &mut self.reader, &mut on_frame);
        if status == ReadStatus::Closed {
            self.ended = true;
            if self.reader.buffered() > 0 && !self.reader.is_discarding() {
                self.reader.push(b"\n");
            }
            while let Some(f) = self.reader.next_frame() {
                on_frame(f);
            }
        }
        status
    }

    /// Reads raw bytes (terminal mode: keys, not lines), one budget's worth.
    pub fn read_raw(&mut self, mut on_bytes: impl FnMut(&[u8])) -> ReadStatus {
        if self.ended {
            return ReadStatus::Closed;
        }
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match Fd0.read(&mut buf) {
                Ok(0) => {
                    self.ended = true;
                    return ReadStatus::Closed;
                }
                Ok(n) => on_bytes(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadStatus::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.ended = true;
                    return ReadStatus::Closed;
                }
            }
        }
        ReadStatus::MoreWaiting
    }

    /// Turns terminal echo off (for a password) or back on. No-op elsewhere.
    pub fn set_echo(&mut self, on: bool) {
        let Some(saved) = self.saved_termios else {
            return;
        };
        let mut t = saved;
        if !on {
            // The engine prints the newline the user's Enter no longer echoes.
            t.c_lflag &= !libc::ECHO;
        }
        if unsafe { libc::tcsetattr(FD, libc::TCSANOW, &t) } == 0 {
            self.echo_off = !on;
        }
    }

    fn restore_flags(&mut self) {
        if let Some(flags) = self.saved_flags.take() {
            unsafe { libc::fcntl(FD, libc::F_SETFL, flags) };
        }
    }
}

impl Drop for Stdin {
    fn drop(&mut self) {
        if self.echo_off {
            self.set_echo(true);
        }
        self.restore_flags();
    }
}

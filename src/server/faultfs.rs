//! A simulated disk for tests: an [`Fs`] whose every write, fsync, truncate,
//! rename and directory fsync can fail, write short or tear, and which can
//! crash at any operation. After a crash, [`Disk::crashed`] gives what a
//! machine would find on restart: for each file its durable bytes plus any
//! prefix of what was written after the last fsync (the kernel may have
//! flushed some of it), and the directory as of its last fsync.
//!
//! Used with the engine's virtual clock (`crash_tests.rs`): the code under
//! test is the real `Store` and `Persist`, only the disk is simulated.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::rc::Rc;

use super::store::{Fs, LogFile};

/// What an operation does instead of succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with EIO; nothing happens (a failed fsync may still have
    /// flushed part of the data: see `fsync_flushes`).
    Fail,
    /// A write stores only this many bytes and reports it (a short write).
    Short(usize),
    /// A write stores this many bytes and then fails (torn: ENOSPC mid-way).
    Torn(usize),
    /// The machine stops here: this and every later operation fails.
    Crash,
}

/// Which call a one-shot fault is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Write,
    Sync,
    /// A directory fsync (the file name is ignored).
    SyncDir,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Truncated below what is durable and not synced since.
    cut_pending: bool,
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    names: HashMap<String, usize>,
    durable_names: HashMap<String, usize>,
    /// Operation number → fault. Operations are counted from 0.
    faults: BTreeMap<u64, Fault>,
    /// One-shot faults for the next write or sync of a named file.
    next: Vec<(String, Op, Fault)>,
    ops: u64,
    crashed: bool,
    /// How many bytes of unsynced data a failed fsync still made durable
    /// (Linux may have written some pages before the error).
    fsync_flushes: usize,
    /// A truncate (or the fsync making it durable) failed: rows that were
    /// answered `ERR internal` may survive a crash.
    cut_failed: bool,
    syncs: u64,
}

/// A shared handle on one simulated disk.
#[derive(Clone, Default)]
pub struct Disk(Rc<RefCell<State>>);

impl Disk {
    pub fn new() -> Disk {
        Disk::default()
    }

    /// Injects `fault` at operation number `op` (0 is the next one made
    /// after the disk was created or crashed).
    pub fn fault_at(&self, op: u64, fault: Fault) {
        self.0.borrow_mut().faults.insert(op, fault);
    }

    /// Injects `fault` into the next `op` on file `name`.
    pub fn on_next(&self, name: &str, op: Op, fault: Fault) {
        self.0.borrow_mut().next.push((name.to_owned(), op, fault));
    }

    pub fn set_fsync_flushes(&self, bytes: usize) {
        self.0.borrow_mut().fsync_flushes = bytes;
    }

    pub fn ops(&self) -> u64 {
        self.0.borrow().ops
    }

    pub fn is_crashed(&self) -> bool {
        self.0.borrow().crashed
    }

    pub fn cut_failed(&self) -> bool {
        self.0.borrow().cut_failed
    }

    pub fn syncs(&self) -> u64 {
        self.0.borrow().syncs
    }

    /// A file's current bytes (what a read would see now).
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let s = self.0.borrow();
        s.names.get(name).map(|&i| s.inodes[i].data.clone())
    }

    /// The disk as found after a power cut now. `keep(unsynced_len)` picks
    /// how many unsynced bytes of each file made it anyway.
    pub fn crashed(&self, mut keep: impl FnMut(usize) -> usize) -> Disk {
        let s = self.0.borrow();
        let mut inodes = Vec::new();
        let mut names = HashMap::new();
        for (name, &i) in &s.durable_names {
            let ino = &s.inodes[i];
            let mut data = ino.durable.clone();
            if ino.data.starts_with(&ino.durable) && !ino.cut_pending {
                let extra = &ino.data[ino.durable.len()..];
                data.extend_from_slice(&extra[..keep(extra.len()).min(extra.len())]);
            }
            names.insert(name.clone(), inodes.len());
            inodes.push(Inode {
                durable: data.clone(),
                data,
                cut_pending: false,
            });
        }
        Disk(Rc::new(RefCell::new(State {
            inodes,
            durable_names: names.clone(),
            names,
            ..Default::default()
        })))
    }

    /// The `Fs` the store is opened on.
    pub fn fs(&self) -> Box<dyn Fs> {
        Box::new(self.clone())
    }

    /// Counts an operation and returns its fault, if any.
    fn op(&self) -> Option<Fault> {
        self.op_on(None)
    }

    fn op_on(&self, file: Option<(&str, Op)>) -> Option<Fault> {
        let mut s = self.0.borrow_mut();
        if s.crashed {
            return Some(Fault::Crash);
        }
        let n = s.ops;
        s.ops += 1;
        let mut f = s.faults.remove(&n);
        if let Some((name, op)) = file {
            let hit =
                |(n, o, _): &(String, Op, Fault)| *o == op && (n == name || op == Op::SyncDir);
            if let Some(i) = s.next.iter().position(hit) {
                f = f.or(Some(s.next.remove(i).2));
            }
        }
        if f == Some(Fault::Crash) {
            s.crashed = true;
        }
        f
    }
}

fn eio() -> io::Error {
    io::Error::other("injected I/O error")
}

fn crash() -> io::Error {
    io::Error::other("crashed")
}

fn plain(f: Option<Fault>) -> io::Result<()> {
    match f {
        None | Some(Fault::Short(_)) => Ok(()),
        Some(Fault::Crash) => Err(crash()),
        Some(Fault::Fail) | Some(Fault::Torn(_)) => Err(eio()),
    }
}

struct SimFile {
    disk: Disk,
    inode: usize,
    name: String,
}

impl LogFile for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self.disk.op_on(Some((&self.name, Op::Write)));
        let mut s = self.disk.0.borrow_mut();
        let data = &mut s.inodes[self.inode].data;
        match f {
            None => {
                data.extend_from_slice(buf);
                Ok(buf.len())
            }
            Some(Fault::Short(n)) => {
                let n = n.min(buf.len().saturating_sub(1)).max(1).min(buf.len());
                data.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Some(Fault::Torn(n)) => {
                data.extend_from_slice(&buf[..n.min(buf.len())]);
                Err(eio())
            }
            Some(Fault::Fail) => Err(eio()),
            Some(Fault::Crash) => Err(crash()),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        let f = self.disk.op_on(Some((&self.name, Op::Sync)));
        let mut s = self.disk.0.borrow_mut();
        s.syncs += 1;
        let flush = s.fsync_flushes;
        let ino = &mut s.inodes[self.inode];
        match plain(f) {
            Ok(()) => {
                ino.durable = ino.data.clone();
                ino.cut_pending = false;
                Ok(())
            }
            Err(e) => {
                let partial = !matches!(f, Some(Fault::Crash));
                let was_cut = ino.cut_pending;
                if partial && !was_cut && ino.data.starts_with(&ino.durable) {
                    let upto = (ino.durable.len() + flush).min(ino.data.len());
                    ino.durable = ino.data[..upto].to_vec();
                }
                if was_cut {
                    s.cut_failed = true;
                }
                Err(e)
            }
        }
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let f = self.disk.op();
        let mut s = self.disk.0.borrow_mut();
        match plain(f) {
            Ok(()) => {
                let ino = &mut s.inodes[self.inode];
                ino.data.truncate(len as usize);
                if ino.durable.len() > ino.data.len() || !ino.data.starts_with(&ino.durable) {
                    ino.cut_pending = true;
                }
                Ok(())
            }
            Err(e) => {
                s.cut_failed = true;
                Err(e)
            }
        }
    }
}

impl Fs for Disk {
    fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        plain(self.op())?;
        Ok(self.contents(name))
    }

    fn open_append(&mut self, name: &str) -> io::Result<Box<dyn LogFile>> {
        plain(self.op())?;
        let mut s = self.0.borrow_mut();
        let inode = match s.names.get(name) {
            Some(&i) => i,
            None => {
                s.inodes.push(Inode::default());
                let i = s.inodes.len() - 1;
                s.names.insert(name.to_owned(), i);
                i
            }
        };
        Ok(Box::new(SimFile {
            disk: self.clone(),
            inode,
            name: name.to_owned(),
        }))
    }

    fn write_synced(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        plain(self.op())?;
        let mut s = self.0.borrow_mut();
        s.inodes.push(Inode {
            data: bytes.to_vec(),
            durable: bytes.to_vec(),
            cut_pending: false,
        });
        let i = s.inodes.len() - 1;
        s.names.insert(name.to_owned(), i);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        plain(self.op())?;
        let mut s = self.0.borrow_mut();
        let i = s
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.names.insert(to.to_owned(), i);
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        plain(self.op_on(Some((".", Op::SyncDir))))?;
        let mut s = self.0.borrow_mut();
        s.durable_names = s.names.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_durable_bytes_and_maybe_some_unsynced_ones() {
        let mut d = Disk::new();
        let mut f = d.open_append("a").unwrap();
        f.write(b"one\n").unwrap();
        f.sync().unwrap();
        f.write(b"two\n").unwrap();
        assert_eq!(d.contents("a").unwrap(), b"one\ntwo\n");
        assert_eq!(d.crashed(|_| 0).contents("a"), None, "dir never synced");
        d.sync_dir().unwrap();
        assert_eq!(d.crashed(|_| 0).contents("a").unwrap(), b"one\n");
        assert_eq!(d.crashed(|n| n / 2).contents("a").unwrap(), b"one\ntw");
    }

    #[test]
    fn faults_hit_the_numbered_operation() {
        let mut d = Disk::new();
        let mut f = d.open_append("a").unwrap(); // op 0
        d.fault_at(1, Fault::Short(2));
        d.fault_at(2, Fault::Torn(1));
        d.fault_at(3, Fault::Crash);
        assert_eq!(f.write(b"abcd").unwrap(), 2);
        assert!(f.write(b"xyz").is_err());
        assert_eq!(d.contents("a").unwrap(), b"abx");
        assert!(f.sync().is_err());
        assert!(d.is_crashed());
        assert!(f.write(b"more").is_err(), "nothing after a crash");
    }
}

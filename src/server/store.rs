//! The only server code that touches files. Three line files in `--data-dir`
//! (formats in `records.rs` and `docs/PROTOCOL.md`, "Data files"):
//!
//! - `users.csv`: one line per account change (signup, password, disable,
//!   enable, delete); appended and fsynced before the reply that confirms it.
//! - `broadcasts.csv`: appended and fsynced before `OK BROADCAST`; compacted
//!   (expired ones dropped, the id high-water mark kept).
//! - `deliveries.csv`: who has which broadcast. Written once per loop turn,
//!   fsynced at most once a second and at shutdown (losing its tail to a crash
//!   means a duplicate delivery, never a loss).
//!
//! Invariants:
//! - The data dir is locked (`flock` on `peerline.lock`, holding our PID) for
//!   as long as a [`Store`] lives: one process writes it at a time.
//! - Files are created 0600 and the dir is made 0700: they hold password hashes.
//! - A write or fsync that fails (or writes short) is cut back to the file's
//!   last durable length and that cut is fsynced, so the next row never lands
//!   after torn bytes. Until the cut succeeds every write to that file fails.
//! - Writes are grouped: [`Store::write_user`] / [`Store::write_broadcast`]
//!   append without fsync, [`Store::sync_users`] / [`Store::sync_broadcasts`]
//!   make everything written so far durable with one fsync. Nothing may be
//!   confirmed to anyone before the sync that covers it returned Ok.
//! - Compaction writes a temp file, fsyncs it, renames it over the old one
//!   and fsyncs the dir: a crash leaves the old file or the new one.
//! - All file access goes through [`Fs`], so tests can inject failures, short
//!   and torn writes, and crashes at every step (`faultfs.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::accounts::{AccountError, Accounts, UserIdx, UserRecord, UserRow};
use super::broadcast::{BroadcastRecord, DeliveryRow};
use super::records::{self, BroadcastFile, Skipped};

pub const USERS: &str = "users.csv";
pub const BROADCASTS: &str = "broadcasts.csv";
pub const DELIVERIES: &str = "deliveries.csv";
/// The key that signs session resumption tickets (`resume.rs`).
pub const RESUME_KEY: &str = "resume.key";
pub const LOCK: &str = "peerline.lock";
/// Longest the delivery log goes without an fsync while deliveries come in.
const DELIVERY_SYNC_EVERY: Duration = Duration::from_secs(1);

// ---- the file system, as the store uses it ---------------------------------------

/// A file opened for appending.
pub trait LogFile {
    /// Appends up to `buf.len()` bytes (may be short, like `write(2)`).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    fn sync(&mut self) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// The few file-system calls the store makes; all names are inside the data dir.
pub trait Fs {
    /// The whole file, or `None` if it does not exist.
    fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Opens for appending, creating it (0600) if missing.
    fn open_append(&mut self, name: &str) -> io::Result<Box<dyn LogFile>>;
    /// Creates or truncates `name` (0600) and writes `bytes`, fsynced.
    fn write_synced(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    fn sync_dir(&mut self) -> io::Result<()>;
}

/// The real file system under one directory.
pub struct DiskFs {
    dir: PathBuf,
}

impl DiskFs {
    pub fn new(dir: &Path) -> DiskFs {
        DiskFs {
            dir: dir.to_path_buf(),
        }
    }
}

fn open_private(path: &Path, append: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).create(true).mode(0o600);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    o.open(path)
}

struct DiskFile(File);

impl LogFile for DiskFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Fs for DiskFs {
    fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match File::open(self.dir.join(name)) {
            Ok(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v)?;
                Ok(Some(v))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn open_append(&mut self, name: &str) -> io::Result<Box<dyn LogFile>> {
        let path = self.dir.join(name);
        let f = open_private(&path, true)?;
        tighten(&path, &f)?;
        Ok(Box::new(DiskFile(f)))
    }
    fn write_synced(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut f = open_private(&self.dir.join(name), false)?;
        f.write_all(bytes)?;
        f.sync_all()
    }
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }
    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

/// Files written by an older version may be world-readable: make them 0600.
fn tighten(path: &Path, f: &File) -> io::Result<()> {
    let mode = f.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        log::warn!(
            "{}: was mode {mode:o}, now 0600 (it holds password hashes)",
            path.display()
        );
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

// ---- the data dir lock -----------------------------------------------------------

/// An exclusive `flock` on `<dir>/peerline.lock`, held until dropped (or the
/// process dies: the kernel releases it, so a crash never leaves it stale).
/// The file holds the holder's PID, for the message a second process prints.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why the data dir could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it (its PID, if the lock file says).
    Held {
        dir: PathBuf,
        pid: Option<u32>,
    },
    Io(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held {
                dir,
                pid: Some(pid),
            } => write!(
                f,
                "data dir {} is in use by process {pid} (it holds {LOCK}); \
                 one server per data dir",
                dir.display()
            ),
            LockError::Held { dir, pid: None } => write!(
                f,
                "data dir {} is in use by another process (it holds {LOCK}); \
                 one server per data dir",
                dir.display()
            ),
            LockError::Io(e) => f.write_str(e),
        }
    }
}

impl DirLock {
    /// Creates `dir` (0700) if needed, makes it 0700, and locks it without waiting.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let io_err = |what: &str, e: io::Error| LockError::Io(format!("{what}: {e}"));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_err(&format!("cannot create data dir {}", dir.display()), e))?;
        let mode = fs::metadata(dir)
            .map_err(|e| io_err(&dir.display().to_string(), e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| io_err(&format!("cannot make {} 0700", dir.display()), e))?;
        }
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err(&path.display().to_string(), e))?;
        // SAFETY: flock on an fd we own for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: s.trim().parse().ok(),
                });
            }
            return Err(io_err(&format!("cannot lock {}", path.display()), e));
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|e| io_err(&path.display().to_string(), e))?;
        Ok(DirLock { _file: file })
    }

    /// The PID written in `dir`'s lock file if some process holds the lock now.
    pub fn holder(dir: &Path) -> Option<u32> {
        match DirLock::acquire(dir) {
            Err(LockError::Held { pid, .. }) => pid,
            _ => None,
        }
    }
}

// ---- one append-only file ----------------------------------------------------------

/// An append-only file that knows its last durable length, so any failure
/// can be cut back to it.
struct AppendLog {
    name: &'static str,
    file: Box<dyn LogFile>,
    /// Bytes written (all of them; a failed write is cut back at once).
    len: u64,
    /// Bytes known durable.
    synced: u64,
    /// A failure could not be cut back: the file may end in torn bytes.
    torn: bool,
}

impl AppendLog {
    fn new(name: &'static str, file: Box<dyn LogFile>, len: u64) -> AppendLog {
        AppendLog {
            name,
            file,
            len,
            synced: len,
            torn: false,
        }
    }

    /// Cuts the file back to its durable length and makes the cut durable.
    fn cut_back(&mut self) -> io::Result<()> {
        let r = self
            .file
            .set_len(self.synced)
            .and_then(|()| self.file.sync());
        match &r {
            Ok(()) => {
                if self.torn {
                    log::info!("{}: cut back to {} bytes", self.name, self.synced);
                }
                self.torn = false;
                self.len = self.synced;
            }
            Err(e) => {
                self.torn = true;
                log::error!(
                    "{}: cannot cut a failed write back to {} bytes: {e}",
                    self.name,
                    self.synced
                );
            }
        }
        r
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        let _ = self.cut_back();
        e
    }

    /// Appends `bytes` without fsync. On any failure the file is cut back to
    /// its durable length: every unsynced write is gone, not just this one.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.torn {
            self.cut_back()?;
        }
        let mut done = 0;
        while done < bytes.len() {
            match self.file.write(&bytes[done..]) {
                Ok(0) => return Err(self.fail(io::Error::from(io::ErrorKind::WriteZero))),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Makes everything written durable (one fsync), or cuts it all back.
    fn sync(&mut self) -> io::Result<()> {
        if self.torn {
            self.cut_back()?;
        }
        if self.synced == self.len {
            return Ok(());
        }
        match self.file.sync() {
            Ok(()) => {
                self.synced = self.len;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn unsynced(&self) -> bool {
        self.len != self.synced
    }
}

// ---- the store -------------------------------------------------------------------

/// What the data dir held at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub users: Vec<UserRow>,
    pub broadcasts: BroadcastFile,
    pub deliveries: Vec<DeliveryRow>,
    /// Lines not used, as `file:line: why` (also logged at `warn`).
    pub skipped: Vec<String>,
}

/// A compacted picture of the broadcast state, from the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub broadcasts: Vec<BroadcastRecord>,
    pub next_id: u64,
    pub deliveries: Vec<DeliveryRow>,
}

pub struct Store {
    fs: Box<dyn Fs>,
    users: AppendLog,
    broadcasts: AppendLog,
    deliveries: AppendLog,
    /// Delivery rows formatted this turn, written by `flush_deliveries`.
    delivery_buf: Vec<u8>,
    delivery_dirty_since: Option<Instant>,
    /// A rename's directory fsync failed: until one succeeds, the renamed
    /// file (and what is appended to it) may vanish in a crash, so no
    /// append may be confirmed (found by the crash property test).
    dir_unsynced: bool,
    /// Held for the store's life; `None` on a test file system.
    _lock: Option<DirLock>,
}

impl Store {
    /// Locks the data dir (creating it 0700), reads every file, migrates
    /// version 1 files. A second process on the same dir gets an error naming
    /// the holder's PID.
    pub fn open(dir: &Path) -> Result<(Store, Loaded), String> {
        let lock = DirLock::acquire(dir).map_err(|e| e.to_string())?;
        let (mut store, loaded) = Store::open_fs(Box::new(DiskFs::new(dir)))
            .map_err(|e| format!("cannot open data dir {}: {e}", dir.display()))?;
        store._lock = Some(lock);
        Ok((store, loaded))
    }

    /// Opens the store on any file system (tests inject faults through it).
    pub fn open_fs(mut fs: Box<dyn Fs>) -> io::Result<(Store, Loaded)> {
        let mut loaded = Loaded::default();
        let mut skip = |file: &str, s: &[Skipped]| {
            for s in s {
                let msg = format!("{file}:{}: {}", s.line, s.why);
                log::warn!("skipping {msg}");
                loaded.skipped.push(msg);
            }
        };
        let ubytes = read_or_empty(fs.as_mut(), USERS)?;
        let users = records::parse_users(&ubytes);
        skip(USERS, &users.skipped);
        let accounts = Accounts::load(users.records.iter().cloned());
        let bbytes = read_or_empty(fs.as_mut(), BROADCASTS)?;
        let (bfile, bmeta) = records::parse_broadcasts(&bbytes);
        skip(BROADCASTS, &bmeta.skipped);
        let dbytes = read_or_empty(fs.as_mut(), DELIVERIES)?;
        let deliveries = records::parse_deliveries(&dbytes, |n| accounts.find(n));
        skip(DELIVERIES, &deliveries.skipped);

        let users_log = open_log(
            fs.as_mut(),
            USERS,
            records::USERS_V2,
            &ubytes,
            users.whole_len,
            users
                .v1
                .then(|| users.records.iter().map(records::format_user).collect()),
        )?;
        let broadcasts_log = open_log(
            fs.as_mut(),
            BROADCASTS,
            records::BROADCASTS_V2,
            &bbytes,
            bmeta.whole_len,
            bmeta.v1.then(|| {
                let mut s = records::format_next_id(bfile.next_id);
                bfile
                    .records
                    .iter()
                    .for_each(|b| s.push_str(&records::format_broadcast(b)));
                s
            }),
        )?;
        let deliveries_log = open_log(
            fs.as_mut(),
            DELIVERIES,
            records::DELIVERIES_V2,
            &dbytes,
            deliveries.whole_len,
            deliveries.v1.then(|| {
                deliveries
                    .records
                    .iter()
                    .map(records::format_delivery)
                    .collect()
            }),
        )?;
        fs.sync_dir()?;
        loaded.users = users.records;
        loaded.broadcasts = bfile;
        loaded.deliveries = deliveries.records;
        let store = Store {
            fs,
            users: users_log,
            broadcasts: broadcasts_log,
            deliveries: deliveries_log,
            delivery_buf: Vec::new(),
            delivery_dirty_since: None,
            dir_unsynced: false,
            _lock: None,
        };
        Ok((store, loaded))
    }

    /// Appends an account row without fsync (see [`Store::sync_users`]).
    pub fn write_user(&mut self, row: &UserRow) -> io::Result<()> {
        self.users.write(records::format_user(row).as_bytes())
    }

    /// One fsync for every account row written since the last one.
    pub fn sync_users(&mut self) -> io::Result<()> {
        if let Err(e) = self.sync_dir_if_needed() {
            return Err(self.users.fail(e));
        }
        self.users.sync()
    }

    fn sync_dir_if_needed(&mut self) -> io::Result<()> {
        if self.dir_unsynced {
            self.fs.sync_dir()?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// Appends and fsyncs one account row: when this returns Ok it survives a crash.
    pub fn append_user(&mut self, row: &UserRow) -> io::Result<()> {
        self.write_user(row)?;
        self.sync_users()
    }

    /// Appends a broadcast without fsync (see [`Store::sync_broadcasts`]).
    pub fn write_broadcast(&mut self, b: &BroadcastRecord) -> io::Result<()> {
        self.broadcasts
            .write(records::format_broadcast(b).as_bytes())
    }

    pub fn sync_broadcasts(&mut self) -> io::Result<()> {
        if let Err(e) = self.sync_dir_if_needed() {
            return Err(self.broadcasts.fail(e));
        }
        self.broadcasts.sync()
    }

    /// True while a written row waits for its fsync.
    pub fn has_unsynced(&self) -> bool {
        self.users.unsynced() || self.broadcasts.unsynced()
    }

    /// Queues a delivery row for this turn's write.
    pub fn record_delivery(&mut self, row: &DeliveryRow) {
        records::push_delivery(&mut self.delivery_buf, row);
    }

    /// The resume key, created once (0600, fsynced, renamed into place) by
    /// the process holding the data dir lock. A damaged key file is replaced:
    /// that only makes the tickets issued so far unusable (their holders log
    /// in with the password), which beats refusing to start.
    pub fn resume_key(&mut self) -> io::Result<super::resume::ResumeKey> {
        use super::resume::ResumeKey;
        if let Some(bytes) = self.fs.read(RESUME_KEY)? {
            match ResumeKey::from_file_text(&bytes) {
                Some(k) => return Ok(k),
                None => log::warn!("{RESUME_KEY} is damaged: making a new one (tickets issued so far stop working)"),
            }
        }
        // The key file's secret comes from the OS, whatever the engine uses.
        let key = ResumeKey::random(&mut crate::rng::OsRandom);
        let tmp = format!("{RESUME_KEY}.tmp");
        self.fs.write_synced(&tmp, key.to_file_text().as_bytes())?;
        self.fs.rename(&tmp, RESUME_KEY)?;
        self.fs.sync_dir()?;
        Ok(key)
    }

    /// Writes this turn's delivery rows; fsyncs if the last fsync is a second old.
    /// Returns when the next fsync is due, if rows are unsynced.
    pub fn flush_deliveries(
        &mut self,
        now: Instant,
        force_sync: bool,
    ) -> io::Result<Option<Instant>> {
        if !self.delivery_buf.is_empty() {
            let buf = std::mem::take(&mut self.delivery_buf);
            self.deliveries.write(&buf)?;
            self.delivery_dirty_since.get_or_insert(now);
        }
        match self.delivery_dirty_since {
            Some(since) if force_sync || now >= since + DELIVERY_SYNC_EVERY => {
                self.sync_dir_if_needed()?;
                self.deliveries.sync()?;
                self.delivery_dirty_since = None;
                Ok(None)
            }
            Some(since) => Ok(Some(since + DELIVERY_SYNC_EVERY)),
            None => Ok(None),
        }
    }

    /// Replaces broadcasts and deliveries with a compacted snapshot, atomically
    /// (temp file, fsync, rename, fsync the directory). The caller must have
    /// synced (or failed) every broadcast written before the snapshot was
    /// taken: rows written but not in the snapshot are gone afterwards.
    pub fn compact(&mut self, s: &Snapshot) -> io::Result<()> {
        self.flush_deliveries(Instant::now(), true)?;
        let mut b = format!("{}\n", records::BROADCASTS_V2);
        b.push_str(&records::format_next_id(s.next_id));
        s.broadcasts
            .iter()
            .for_each(|r| b.push_str(&records::format_broadcast(r)));
        self.replace(BROADCASTS, b.as_bytes())?;
        let mut d = format!("{}\n", records::DELIVERIES_V2);
        s.deliveries
            .iter()
            .for_each(|r| d.push_str(&records::format_delivery(r)));
        self.replace(DELIVERIES, d.as_bytes())
    }

    /// Once the rename is done the name is the new file: appends must go to
    /// it even if the directory fsync then fails (an append to the old,
    /// unlinked file would be lost), and if it cannot be reopened every
    /// append must fail rather than go to the old file.
    fn replace(&mut self, name: &'static str, contents: &[u8]) -> io::Result<()> {
        let tmp = format!("{name}.tmp");
        self.fs.write_synced(&tmp, contents)?;
        self.fs.rename(&tmp, name)?;
        self.dir_unsynced = true;
        let (log, result) = match self.fs.open_append(name) {
            Ok(file) => (
                AppendLog::new(name, file, contents.len() as u64),
                self.sync_dir_if_needed(),
            ),
            Err(e) => (AppendLog::new(name, Box::new(Unwritable), 0), Err(e)),
        };
        match name {
            BROADCASTS => self.broadcasts = log,
            DELIVERIES => self.deliveries = log,
            _ => self.users = log,
        }
        result
    }
}

/// Stands in for a file that could not be reopened: every write fails.
struct Unwritable;

impl LogFile for Unwritable {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other(
            "the file could not be reopened after compaction",
        ))
    }
    fn sync(&mut self) -> io::Result<()> {
        self.write(&[]).map(drop)
    }
    fn set_len(&mut self, _: u64) -> io::Result<()> {
        self.write(&[]).map(drop)
    }
}

fn read_or_empty(fs: &mut dyn Fs, name: &str) -> io::Result<Vec<u8>> {
    Ok(fs.read(name)?.unwrap_or_default())
}

fn replace_file(fs: &mut dyn Fs, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    fs.write_synced(&tmp, contents)?;
    fs.rename(&tmp, name)?;
    fs.sync_dir()
}

/// Opens a data file for appending: a new or empty file gets its version
/// line; a version 1 file is kept as `<name>.v1` and replaced by `migrated`;
/// a torn last line (a crash mid-write; never confirmed) is cut off.
fn open_log(
    fs: &mut dyn Fs,
    name: &'static str,
    version: &str,
    bytes: &[u8],
    whole_len: usize,
    migrated: Option<String>,
) -> io::Result<AppendLog> {
    if let Some(rows) = migrated {
        let v1 = format!("{name}.v1");
        fs.write_synced(&v1, bytes)?;
        let contents = format!("{version}\n{rows}");
        replace_file(fs, name, contents.as_bytes())?;
        log::warn!("{name}: migrated to format v2 (the old file is kept as {v1})");
        let file = fs.open_append(name)?;
        return Ok(AppendLog::new(name, file, contents.len() as u64));
    }
    let mut file = fs.open_append(name)?;
    let mut len = bytes.len();
    if whole_len < len {
        log::warn!(
            "{name}: skipping a torn last line ({} bytes, never confirmed) left by a crash",
            len - whole_len
        );
        file.set_len(whole_len as u64)?;
        file.sync()?;
        len = whole_len;
    }
    let mut log = AppendLog::new(name, file, len as u64);
    if len == 0 {
        log.write(format!("{version}\n").as_bytes())?;
        log.sync()?;
    }
    Ok(log)
}

// ---- accounts without a server: the `user` subcommands -------------------------------

/// The account table of a data dir no server is running on, under the same
/// lock a server takes. Each change is appended and fsynced before the call
/// returns; the rules are the engine's ([`Accounts`]).
pub struct AccountsFile {
    store: Store,
    accounts: Accounts,
}

impl AccountsFile {
    /// Fails (naming the PID) if a server or another admin holds the dir.
    pub fn open(dir: &Path) -> Result<AccountsFile, String> {
        let (store, loaded) = Store::open(dir)?;
        Ok(AccountsFile {
            store,
            accounts: Accounts::load(loaded.users),
        })
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Live accounts in signup order.
    pub fn list(&self) -> Vec<UserRecord> {
        self.accounts.iter().cloned().collect()
    }

    fn persist(&mut self, row: UserRow) -> Result<UserIdx, String> {
        let seq = row.seq();
        self.store
            .append_user(&row)
            .map_err(|e| format!("cannot write {USERS}: {e}"))?;
        self.accounts.apply(row);
        Ok(seq)
    }

    fn change(
        &mut self,
        row: Result<UserRow, AccountError>,
        name: &str,
    ) -> Result<UserIdx, String> {
        let row = row.map_err(|e| format!("{name}: {e}"))?;
        self.persist(row)
    }

    pub fn add(
        &mut self,
        name: &str,
        hash: super::kdf::PasswordHash,
        created_unix: u64,
    ) -> Result<UserIdx, String> {
        if !crate::proto::names::is_valid_username(name) {
            return Err(format!("{name:?}: not a valid username"));
        }
        let row = self.accounts.signup_row(name, hash, created_unix);
        self.change(row, name)
    }

    pub fn passwd(&mut self, name: &str, hash: super::kdf::PasswordHash) -> Result<(), String> {
        let row = self.accounts.password_row(name, hash);
        self.change(row, name).map(drop)
    }

    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<(), String> {
        let row = self.accounts.enabled_row(name, enabled);
        self.change(row, name).map(drop)
    }

    pub fn delete(&mut self, name: &str) -> Result<(), String> {
        let row = self.accounts.delete_row(name);
        self.change(row, name).map(drop)
    }

    /// Adds many accounts with one fsync (provisioning: the bench tool).
    pub fn add_many(
        &mut self,
        accounts: impl IntoIterator<Item = (String, super::kdf::PasswordHash, u64)>,
    ) -> Result<(), String> {
        let mut rows = Vec::new();
        for (name, hash, created) in accounts {
            let row = self
                .accounts
                .signup_row(&name, hash, created)
                .map_err(|e| format!("{name}: {e}"))?;
            self.store
                .write_user(&row)
                .map_err(|e| format!("cannot write {USERS}: {e}"))?;
            rows.push(row);
        }
        self.store
            .sync_users()
            .map_err(|e| format!("cannot write {USERS}: {e}"))?;
        rows.into_iter().for_each(|r| self.accounts.apply(r));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::kdf::PasswordHash;

    fn hash(n: u8) -> PasswordHash {
        PasswordHash {
            iterations: 7,
            salt: [n; 16],
            hash: [n; 32],
        }
    }

    fn put(seq: u32, name: &str) -> UserRow {
        UserRow::Put(UserRecord {
            seq: UserIdx(seq),
            username: name.into(),
            password_hash: hash(1),
            created_unix: 1_700_000_000,
            enabled: true,
        })
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn users_survive_reopen_with_version_line_and_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (mut s, l) = Store::open(&data).unwrap();
        assert!(l.users.is_empty());
        s.append_user(&put(1, "alice")).unwrap();
        s.append_user(&put(2, "bob")).unwrap();
        drop(s);
        let text = fs::read_to_string(data.join(USERS)).unwrap();
        assert!(
            text.starts_with("#peerline users v2\n1,alice,1700000000,enabled,$pbkdf2-sha256$i=7$"),
            "{text}"
        );
        let (_, l) = Store::open(&data).unwrap();
        assert_eq!(l.users, vec![put(1, "alice"), put(2, "bob")]);
        assert_eq!(mode(&data), 0o700);
        for f in [USERS, BROADCASTS, DELIVERIES, LOCK] {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
    }

    /// Defect 4: two servers on one dir both confirmed the same name.
    #[test]
    fn a_second_store_on_the_same_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().expect("locked");
        assert!(
            err.contains(&format!("in use by process {}", std::process::id())),
            "{err}"
        );
        assert_eq!(DirLock::holder(dir.path()), Some(std::process::id()));
        drop(s);
        assert!(Store::open(dir.path()).is_ok(), "released on drop");
    }

    #[test]
    fn old_world_readable_files_and_dir_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(USERS), "").unwrap();
        fs::set_permissions(dir.path().join(USERS), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let _s = Store::open(dir.path()).unwrap();
        assert_eq!(mode(&dir.path().join(USERS)), 0o600);
        assert_eq!(mode(dir.path()), 0o700);
    }

    #[test]
    fn torn_last_line_is_cut_and_appends_continue_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path()).unwrap();
        s.append_user(&put(1, "alice")).unwrap();
        drop(s);
        let path = dir.path().join(USERS);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"2,bob,1,enabled,$pbkdf2-sha256$i=7$0101")
            .unwrap();
        drop(f);
        let (mut s, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.users, vec![put(1, "alice")]);
        s.append_user(&put(3, "carol")).unwrap();
        drop(s);
        let (_, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.users, vec![put(1, "alice"), put(3, "carol")]);
    }

    /// Defect 3 through the store: the skipped lines are reported as file:line.
    #[test]
    fn damaged_lines_are_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(USERS),
            format!(
                "#peerline users v2\n\"1,alice,1,enabled,x\n{}",
                records::format_user(&put(2, "bob"))
            ),
        )
        .unwrap();
        let (_, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.users, vec![put(2, "bob")]);
        assert_eq!(l.skipped.len(), 1);
        assert!(l.skipped[0].starts_with("users.csv:2: "), "{:?}", l.skipped);
    }

    #[test]
    fn v1_files_are_migrated_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let h = hash(1).to_phc();
        let v1_users = format!(
            "username,password_hash,created_unix\nalice,{h},1700000000\nbob,{h},1700000000\n"
        );
        fs::write(dir.path().join(USERS), &v1_users).unwrap();
        fs::write(
            dir.path().join(BROADCASTS),
            "id,from,created_unix,expires_unix,audience,text\n4,alice,1,9999999999,2,\"a, b\"\n",
        )
        .unwrap();
        fs::write(dir.path().join(DELIVERIES), "user,kind,id\nbob,got,4\n").unwrap();
        let (s, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.users, vec![put(1, "alice"), put(2, "bob")]);
        assert_eq!(l.broadcasts.records[0].audience, 3);
        assert_eq!(l.broadcasts.next_id, 5);
        assert_eq!(
            l.deliveries,
            vec![DeliveryRow::Got {
                user: UserIdx(2),
                id: 4
            }]
        );
        drop(s);
        assert_eq!(
            fs::read_to_string(dir.path().join("users.csv.v1")).unwrap(),
            v1_users
        );
        let (_, again) = Store::open(dir.path()).unwrap();
        assert_eq!(again.users, l.users);
        assert_eq!(again.broadcasts, l.broadcasts);
        assert_eq!(again.deliveries, l.deliveries);
        assert!(again.skipped.is_empty());
    }

    #[test]
    fn compaction_keeps_the_id_high_water_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path()).unwrap();
        let b = BroadcastRecord {
            id: 3,
            from: "alice".into(),
            created_unix: 10,
            expires_unix: 20,
            audience: 2,
            text: "hi, \"all\" of you".into(),
        };
        s.write_broadcast(&b).unwrap();
        s.sync_broadcasts().unwrap();
        s.record_delivery(&DeliveryRow::Got {
            user: UserIdx(2),
            id: 3,
        });
        s.flush_deliveries(Instant::now(), false).unwrap();
        drop(s);
        let (mut s, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.broadcasts.records, vec![b.clone()]);
        s.compact(&Snapshot {
            broadcasts: vec![],
            next_id: 4,
            deliveries: vec![DeliveryRow::Upto {
                user: UserIdx(2),
                id: 3,
            }],
        })
        .unwrap();
        s.record_delivery(&DeliveryRow::Got {
            user: UserIdx(3),
            id: 4,
        });
        s.flush_deliveries(Instant::now(), true).unwrap();
        drop(s);
        let (_, l) = Store::open(dir.path()).unwrap();
        assert!(l.broadcasts.records.is_empty());
        assert_eq!(l.broadcasts.next_id, 4);
        assert_eq!(l.deliveries.len(), 2);
    }

    #[test]
    fn accounts_file_does_every_admin_change_durably() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = AccountsFile::open(dir.path()).unwrap();
        assert_eq!(a.add("alice", hash(1), 5), Ok(UserIdx(1)));
        assert_eq!(a.add("bob", hash(1), 6), Ok(UserIdx(2)));
        assert!(a.add("ALICE", hash(1), 7).unwrap_err().contains("exists"));
        assert!(a.add("1x", hash(1), 7).is_err());
        a.passwd("bob", hash(2)).unwrap();
        a.set_enabled("alice", false).unwrap();
        a.delete("bob").unwrap();
        assert!(a.delete("bob").unwrap_err().contains("no such account"));
        assert!(
            AccountsFile::open(dir.path()).is_err(),
            "one at a time, like a server"
        );
        drop(a);
        let mut a = AccountsFile::open(dir.path()).unwrap();
        let list = a.list();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].username.as_str(), list[0].enabled),
            ("alice", false)
        );
        assert_eq!(
            a.add("bob", hash(3), 8),
            Ok(UserIdx(3)),
            "seq 2 never again"
        );
        a.add_many((0..3).map(|i| (format!("u{i}"), hash(4), 9)))
            .unwrap();
        assert_eq!(a.accounts().find("u2"), Some(UserIdx(6)));
    }
}

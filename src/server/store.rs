//! The only server code that touches files. Three CSV files in `--data-dir`,
//! each with a header and hand-readable:
//!
//! - `users.csv` (`username,password_hash,created_unix`): append-only; each
//!   signup is written and fsynced before `OK SIGNUP` is sent.
//! - `broadcasts.csv` (`id,from,created_unix,expires_unix,audience,text`):
//!   appended and fsynced before `OK BROADCAST`.
//! - `deliveries.csv` (`user,kind,id`, kind `got` or `upto`): who has which
//!   broadcast. Appended once per loop turn (a `write`, so it survives the
//!   process being killed) and fsynced at most once a second and at shutdown.
//!
//! A crash can leave a torn last line; at start it is cut off with a warning
//! (it was never confirmed), and no other row is touched. Broadcasts and
//! deliveries are compacted (rewritten to a temp file, fsynced, renamed) at
//! start and after broadcasts expire, so they do not grow without bound.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::accounts::UserRecord;
use super::broadcast::{BroadcastRecord, DeliveryRow};
use super::kdf::PasswordHash;

const USERS: &str = "users.csv";
const BROADCASTS: &str = "broadcasts.csv";
const DELIVERIES: &str = "deliveries.csv";
const USERS_HEADER: &[&str] = &["username", "password_hash", "created_unix"];
const BROADCASTS_HEADER: &[&str] = &[
    "id",
    "from",
    "created_unix",
    "expires_unix",
    "audience",
    "text",
];
const DELIVERIES_HEADER: &[&str] = &["user", "kind", "id"];
/// Longest the delivery log goes without an fsync while deliveries come in.
const DELIVERY_SYNC_EVERY: Duration = Duration::from_secs(1);

/// Everything read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub users: Vec<UserRecord>,
    pub broadcasts: Vec<BroadcastRecord>,
    pub deliveries: Vec<DeliveryRow>,
}

pub struct Store {
    dir: PathBuf,
    users: File,
    broadcasts: File,
    deliveries: File,
    /// Delivery rows formatted this turn, written by `flush_deliveries`.
    delivery_buf: Vec<u8>,
    delivery_dirty_since: Option<Instant>,
}

impl Store {
    /// Opens (creating if needed) the data dir and reads every file.
    pub fn open(dir: &Path) -> io::Result<(Store, Loaded)> {
        fs::create_dir_all(dir)?;
        let mut loaded = Loaded::default();
        let (users, rows) = open_csv(dir, USERS, USERS_HEADER)?;
        loaded.users = rows.iter().filter_map(|r| parse_user(r, USERS)).collect();
        let (broadcasts, rows) = open_csv(dir, BROADCASTS, BROADCASTS_HEADER)?;
        loaded.broadcasts = rows
            .iter()
            .filter_map(|r| parse_broadcast(r, BROADCASTS))
            .collect();
        let (deliveries, rows) = open_csv(dir, DELIVERIES, DELIVERIES_HEADER)?;
        loaded.deliveries = rows
            .iter()
            .filter_map(|r| parse_delivery(r, DELIVERIES))
            .collect();
        sync_dir(dir)?;
        let store = Store {
            dir: dir.to_path_buf(),
            users,
            broadcasts,
            deliveries,
            delivery_buf: Vec::new(),
            delivery_dirty_since: None,
        };
        Ok((store, loaded))
    }

    /// Appends a user and fsyncs: when this returns Ok the signup survives a crash.
    pub fn append_user(&mut self, u: &UserRecord) -> io::Result<()> {
        let row = csv_row(&[
            &u.username,
            &u.password_hash.to_phc(),
            &u.created_unix.to_string(),
        ]);
        append_durably(&mut self.users, &row)
    }

    /// Appends a broadcast and fsyncs.
    pub fn append_broadcast(&mut self, b: &BroadcastRecord) -> io::Result<()> {
        append_durably(&mut self.broadcasts, &broadcast_row(b))
    }

    /// Queues a delivery row for this turn's write.
    pub fn record_delivery(&mut self, row: &DeliveryRow) {
        self.delivery_buf.extend_from_slice(&delivery_row(row));
    }

    /// Writes this turn's delivery rows; fsyncs if the last fsync is a second old.
    /// Returns when the next fsync is due, if rows are unsynced.
    pub fn flush_deliveries(
        &mut self,
        now: Instant,
        force_sync: bool,
    ) -> io::Result<Option<Instant>> {
        if !self.delivery_buf.is_empty() {
            self.deliveries.write_all(&self.delivery_buf)?;
            self.delivery_buf.clear();
            self.delivery_dirty_since.get_or_insert(now);
        }
        match self.delivery_dirty_since {
            Some(since) if force_sync || now >= since + DELIVERY_SYNC_EVERY => {
                self.deliveries.sync_data()?;
                self.delivery_dirty_since = None;
                Ok(None)
            }
            Some(since) => Ok(Some(since + DELIVERY_SYNC_EVERY)),
            None => Ok(None),
        }
    }

    /// Replaces broadcasts and deliveries with a compacted snapshot, atomically
    /// (temp file, fsync, rename, fsync the directory).
    pub fn compact(&mut self, records: &[BroadcastRecord], rows: &[DeliveryRow]) -> io::Result<()> {
        self.flush_deliveries(Instant::now(), true)?;
        let mut b = csv_row(BROADCASTS_HEADER);
        records
            .iter()
            .for_each(|r| b.extend_from_slice(&broadcast_row(r)));
        self.broadcasts = replace_file(&self.dir, BROADCASTS, &b)?;
        let mut d = csv_row(DELIVERIES_HEADER);
        rows.iter()
            .for_each(|r| d.extend_from_slice(&delivery_row(r)));
        self.deliveries = replace_file(&self.dir, DELIVERIES, &d)?;
        sync_dir(&self.dir)
    }
}

fn csv_row<S: AsRef<[u8]>>(fields: &[S]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(fields)
        .expect("writing to a Vec cannot fail");
    w.into_inner().expect("flushing a Vec cannot fail")
}

fn broadcast_row(b: &BroadcastRecord) -> Vec<u8> {
    csv_row(&[
        b.id.to_string(),
        b.from.clone(),
        b.created_unix.to_string(),
        b.expires_unix.to_string(),
        b.audience.to_string(),
        b.text.clone(),
    ])
}

fn delivery_row(r: &DeliveryRow) -> Vec<u8> {
    match r {
        DeliveryRow::Got { user, id } => csv_row(&[user.as_str(), "got", &id.to_string()]),
        DeliveryRow::Upto { user, id } => csv_row(&[user.as_str(), "upto", &id.to_string()]),
    }
}

fn append_durably(f: &mut File, row: &[u8]) -> io::Result<()> {
    f.write_all(row)?;
    f.sync_data()
}

/// Opens `name` for appending, writing the header if the file is new or empty,
/// cutting a torn last line off, and returns the data rows read.
fn open_csv(dir: &Path, name: &str, header: &[&str]) -> io::Result<(File, Vec<csv::StringRecord>)> {
    let path = dir.join(name);
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        log::warn!(
            "{}: skipping a torn last line ({} bytes, never confirmed) left by a crash",
            path.display(),
            bytes.len() - keep
        );
        f.set_len(keep as u64)?;
        f.seek(SeekFrom::End(0))?;
        bytes.truncate(keep);
    }
    if bytes.is_empty() {
        append_durably(&mut f, &csv_row(header))?;
        return Ok((f, Vec::new()));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(&bytes[..]);
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        match rec {
            Ok(r) => rows.push(r),
            Err(e) => log::warn!("{}: skipping unreadable row {}: {e}", path.display(), i + 2),
        }
    }
    Ok((f, rows))
}

fn bad_row(file: &str, r: &csv::StringRecord, why: &str) {
    let line = r.position().map_or(0, |p| p.line());
    log::warn!("{file}: skipping row at line {line}: {why}");
}

fn parse_user(r: &csv::StringRecord, file: &str) -> Option<UserRecord> {
    let parsed = (|| {
        if r.len() != 3 {
            return None;
        }
        let username = r.get(0)?;
        if !crate::proto::names::is_valid_username(username) {
            return None;
        }
        Some(UserRecord {
            username: username.to_owned(),
            password_hash: PasswordHash::parse(r.get(1)?)?,
            created_unix: r.get(2)?.parse().ok()?,
        })
    })();
    if parsed.is_none() {
        bad_row(file, r, "not username,password_hash,created_unix");
    }
    parsed
}

fn parse_broadcast(r: &csv::StringRecord, file: &str) -> Option<BroadcastRecord> {
    let parsed = (|| {
        if r.len() != 6 {
            return None;
        }
        Some(BroadcastRecord {
            id: r.get(0)?.parse().ok()?,
            from: r.get(1)?.to_owned(),
            created_unix: r.get(2)?.parse().ok()?,
            expires_unix: r.get(3)?.parse().ok()?,
            audience: r.get(4)?.parse().ok()?,
            text: r.get(5)?.to_owned(),
        })
    })();
    if parsed.is_none() {
        bad_row(file, r, "not a broadcast row");
    }
    parsed
}

fn parse_delivery(r: &csv::StringRecord, file: &str) -> Option<DeliveryRow> {
    let parsed = (|| {
        if r.len() != 3 {
            return None;
        }
        let user = r.get(0)?.to_owned();
        let id = r.get(2)?.parse().ok()?;
        match r.get(1)? {
            "got" => Some(DeliveryRow::Got { user, id }),
            "upto" => Some(DeliveryRow::Upto { user, id }),
            _ => None,
        }
    })();
    if parsed.is_none() {
        bad_row(file, r, "not user,got|upto,id");
    }
    parsed
}

fn replace_file(dir: &Path, name: &str, contents: &[u8]) -> io::Result<File> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    OpenOptions::new().append(true).open(dir.join(name))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserRecord {
        UserRecord {
            username: name.into(),
            password_hash: PasswordHash {
                iterations: 7,
                salt: [1; 16],
                hash: [2; 32],
            },
            created_unix: 1_700_000_000,
        }
    }

    #[test]
    fn users_survive_reopen_with_header() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, l) = Store::open(dir.path()).unwrap();
        assert!(l.users.is_empty());
        s.append_user(&user("alice")).unwrap();
        s.append_user(&user("bob")).unwrap();
        drop(s);
        let text = fs::read_to_string(dir.path().join(USERS)).unwrap();
        assert!(text.starts_with("username,password_hash,created_unix\nalice,$pbkdf2-sha256$i=7$"));
        let (_, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.users, vec![user("alice"), user("bob")]);
    }

    #[test]
    fn torn_last_line_is_cut_and_appends_continue_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(dir.path()).unwrap();
        s.append_user(&user("alice")).unwrap();
        drop(s);
        let path = dir.path().join(USERS);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"bob,$pbkdf2-sha256$i=7$0101").unwrap();
        drop(f);
        let (mut s, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.users, vec![user("alice")]);
        s.append_user(&user("carol")).unwrap();
        drop(s);
        let (_, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.users, vec![user("alice"), user("carol")]);
    }

    #[test]
    fn bad_rows_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(USERS),
            "username,password_hash,created_unix\nalice,garbage,1\n\"unterminated,x\n",
        )
        .unwrap();
        let (_, l) = Store::open(dir.path()).unwrap();
        assert!(l.users.is_empty());
    }

    #[test]
    fn broadcast_text_with_commas_and_quotes_round_trips_and_compacts() {
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
        s.append_broadcast(&b).unwrap();
        s.record_delivery(&DeliveryRow::Got {
            user: "bob".into(),
            id: 3,
        });
        s.flush_deliveries(Instant::now(), false).unwrap();
        drop(s);
        let (mut s, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.broadcasts, vec![b.clone()]);
        assert_eq!(
            l.deliveries,
            vec![DeliveryRow::Got {
                user: "bob".into(),
                id: 3
            }]
        );
        s.compact(
            &[],
            &[DeliveryRow::Upto {
                user: "bob".into(),
                id: 3,
            }],
        )
        .unwrap();
        s.record_delivery(&DeliveryRow::Got {
            user: "carol".into(),
            id: 4,
        });
        s.flush_deliveries(Instant::now(), true).unwrap();
        drop(s);
        let (_, l) = Store::open(dir.path()).unwrap();
        assert!(l.broadcasts.is_empty());
        assert_eq!(
            l.deliveries,
            vec![
                DeliveryRow::Upto {
                    user: "bob".into(),
                    id: 3
                },
                DeliveryRow::Got {
                    user: "carol".into(),
                    id: 4
                }
            ]
        );
    }
}

//! The account table, pure: who exists, under which stable sequence number,
//! with which password hash, enabled or not. Loading and appending rows is
//! the store's job; this module says what a row means and builds the rows
//! for every change (signup, password change, disable/enable, delete), so
//! the running engine and the offline `user` subcommands apply the same rules.
//!
//! Invariants:
//! - A sequence number is handed out once, in signup order, and never again
//!   (not after a delete, not after a failed store write): broadcast audiences
//!   and delivery records refer to it, so deleting or hand-editing one account
//!   changes nothing for the others.
//! - Names are unique case-insensitively among live accounts.

use std::collections::HashMap;

use super::kdf::PasswordHash;

/// An account's sequence number (1, 2, 3 … in signup order; never reused).
/// Small and dense, so per-account tables index by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserIdx(pub u32);

impl super::dense::DenseKey for UserIdx {
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// A live account: one `users.csv` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub seq: UserIdx,
    pub username: String,
    pub password_hash: PasswordHash,
    pub created_unix: u64,
    /// A disabled account cannot log in (`ERR account-disabled`).
    pub enabled: bool,
}

/// One `users.csv` line: the whole state of one account. The last line for a
/// sequence number wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRow {
    Put(UserRecord),
    Deleted {
        seq: UserIdx,
        username: String,
        created_unix: u64,
    },
}

impl UserRow {
    pub fn seq(&self) -> UserIdx {
        match self {
            UserRow::Put(u) => u.seq,
            UserRow::Deleted { seq, .. } => *seq,
        }
    }

    pub fn username(&self) -> &str {
        match self {
            UserRow::Put(u) => &u.username,
            UserRow::Deleted { username, .. } => username,
        }
    }
}

/// Why an account change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountError {
    Exists,
    NoSuchUser,
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccountError::Exists => "the account exists already",
            AccountError::NoSuchUser => "no such account",
        })
    }
}

#[derive(Debug, Default)]
pub struct Accounts {
    /// Indexed by sequence number; `None` for deleted (or never stored) ones.
    list: Vec<Option<UserRecord>>,
    /// Lower-cased name → seq: `Alice` and `alice` are one account, so nobody
    /// can pose as another by case alone. The stored spelling is kept for display.
    by_name: HashMap<String, UserIdx>,
    live: usize,
    /// The next sequence number to hand out; above every one ever seen.
    next_seq: u32,
}

impl Accounts {
    pub fn new() -> Self {
        Accounts {
            next_seq: 1,
            ..Default::default()
        }
    }

    /// Builds the table from `users.csv` rows, in file order.
    pub fn load(rows: impl IntoIterator<Item = UserRow>) -> Accounts {
        let mut a = Accounts::new();
        for row in rows {
            a.apply(row);
        }
        a
    }

    /// Number of live accounts.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every account with a smaller sequence number existed before this one:
    /// the audience bound of a broadcast made now.
    pub fn next_seq(&self) -> UserIdx {
        UserIdx(self.next_seq)
    }

    /// Hands out a sequence number for an account about to be stored. It is
    /// used up even if the store write fails.
    pub fn reserve_seq(&mut self) -> UserIdx {
        let s = UserIdx(self.next_seq);
        self.next_seq += 1;
        s
    }

    pub fn find(&self, name: &str) -> Option<UserIdx> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    pub fn try_get(&self, idx: UserIdx) -> Option<&UserRecord> {
        self.list.get(idx.0 as usize)?.as_ref()
    }

    /// A live account. Panics on a deleted one: callers hold live indexes only.
    pub fn get(&self, idx: UserIdx) -> &UserRecord {
        self.try_get(idx).expect("a live account")
    }

    pub fn name(&self, idx: UserIdx) -> &str {
        &self.get(idx).username
    }

    /// Live accounts with a sequence number below `bound`, counted from the
    /// top: it costs the accounts made since `bound` was taken (a broadcast's
    /// audience bound is taken just before), not every account ever made.
    pub fn count_below(&self, bound: UserIdx) -> usize {
        let from = (bound.0 as usize).min(self.list.len());
        self.live - self.list[from..].iter().flatten().count()
    }

    /// Live accounts in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = &UserRecord> {
        self.list.iter().flatten()
    }

    /// Applies a stored row. A `Put` for a new seq whose name another live
    /// account holds replaces that account: the later line is the one that
    /// was confirmed (an earlier one can only be left by a write that failed
    /// and could not be cut back), so a retried signup's password wins.
    pub fn apply(&mut self, row: UserRow) {
        let seq = row.seq();
        self.next_seq = self.next_seq.max(seq.0.saturating_add(1));
        let i = seq.0 as usize;
        if self.list.len() <= i {
            self.list.resize_with(i + 1, || None);
        }
        if let Some(old) = self.list[i].take() {
            self.by_name.remove(&old.username.to_ascii_lowercase());
            self.live -= 1;
        }
        if let UserRow::Put(u) = row {
            let key = u.username.to_ascii_lowercase();
            if let Some(other) = self.by_name.insert(key, seq) {
                log::warn!(
                    "users.csv: account {} ({:?}) is replaced by the later account {}",
                    other.0,
                    u.username,
                    seq.0
                );
                self.list[other.0 as usize] = None;
                self.live -= 1;
            }
            self.list[i] = Some(u);
            self.live += 1;
        }
    }

    // ---- the rows for each change; nothing changes until they are applied ----

    /// A new account (reserves its sequence number).
    pub fn signup_row(
        &mut self,
        username: &str,
        password_hash: PasswordHash,
        created_unix: u64,
    ) -> Result<UserRow, AccountError> {
        if self.find(username).is_some() {
            return Err(AccountError::Exists);
        }
        Ok(UserRow::Put(UserRecord {
            seq: self.reserve_seq(),
            username: username.to_owned(),
            password_hash,
            created_unix,
            enabled: true,
        }))
    }

    fn changed(
        &self,
        username: &str,
        f: impl FnOnce(&mut UserRecord),
    ) -> Result<UserRow, AccountError> {
        let idx = self.find(username).ok_or(AccountError::NoSuchUser)?;
        let mut u = self.get(idx).clone();
        f(&mut u);
        Ok(UserRow::Put(u))
    }

    pub fn password_row(
        &self,
        username: &str,
        hash: PasswordHash,
    ) -> Result<UserRow, AccountError> {
        self.changed(username, |u| u.password_hash = hash)
    }

    pub fn enabled_row(&self, username: &str, enabled: bool) -> Result<UserRow, AccountError> {
        self.changed(username, |u| u.enabled = enabled)
    }

    pub fn delete_row(&self, username: &str) -> Result<UserRow, AccountError> {
        let idx = self.find(username).ok_or(AccountError::NoSuchUser)?;
        let u = self.get(idx);
        Ok(UserRow::Deleted {
            seq: u.seq,
            username: u.username.clone(),
            created_unix: u.created_unix,
        })
    }

    /// The rows a compacted `users.csv` needs: every live account, plus a
    /// tombstone that keeps the highest sequence number ever handed out
    /// when that account is gone (so it is never handed out again).
    pub fn snapshot(&self) -> Vec<UserRow> {
        let mut rows: Vec<UserRow> = self.iter().cloned().map(UserRow::Put).collect();
        let top = self.next_seq - 1;
        if top > 0 && self.try_get(UserIdx(top)).is_none() {
            rows.push(UserRow::Deleted {
                seq: UserIdx(top),
                username: "deleted".into(),
                created_unix: 0,
            });
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> PasswordHash {
        PasswordHash {
            iterations: 1,
            salt: [n; 16],
            hash: [n; 32],
        }
    }

    fn add(a: &mut Accounts, name: &str) -> UserIdx {
        let row = a.signup_row(name, hash(0), 0).unwrap();
        let seq = row.seq();
        a.apply(row);
        seq
    }

    #[test]
    fn names_are_unique_case_insensitively_and_seqs_start_at_one() {
        let mut a = Accounts::new();
        assert_eq!(add(&mut a, "Alice"), UserIdx(1));
        assert_eq!(add(&mut a, "bob"), UserIdx(2));
        assert_eq!(a.signup_row("alice", hash(0), 0), Err(AccountError::Exists));
        assert_eq!(a.find("ALICE"), Some(UserIdx(1)));
        assert_eq!(a.name(UserIdx(1)), "Alice");
        assert_eq!(a.len(), 2);
        assert_eq!(a.next_seq(), UserIdx(3));
    }

    #[test]
    fn seqs_are_never_reused_after_delete_or_failed_write() {
        let mut a = Accounts::new();
        add(&mut a, "alice");
        let failed = a.signup_row("bob", hash(0), 0).unwrap();
        assert_eq!(failed.seq(), UserIdx(2), "reserved, never applied");
        assert_eq!(add(&mut a, "bob"), UserIdx(3));
        let del = a.delete_row("bob").unwrap();
        a.apply(del);
        assert_eq!(a.find("bob"), None);
        assert_eq!(add(&mut a, "bob"), UserIdx(4));
        assert_eq!(a.len(), 2);
        // Reloading the compacted rows keeps the high-water mark.
        let d = a.delete_row("bob").unwrap();
        a.apply(d);
        let again = Accounts::load(a.snapshot());
        assert_eq!(again.next_seq(), UserIdx(5));
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn password_disable_enable_rows_change_only_that_account() {
        let mut a = Accounts::new();
        add(&mut a, "alice");
        add(&mut a, "bob");
        let row = a.password_row("bob", hash(9)).unwrap();
        a.apply(row);
        assert_eq!(a.get(UserIdx(2)).password_hash, hash(9));
        let row = a.enabled_row("BOB", false).unwrap();
        a.apply(row);
        assert!(!a.get(UserIdx(2)).enabled);
        assert!(a.get(UserIdx(1)).enabled);
        assert_eq!(a.enabled_row("zed", true), Err(AccountError::NoSuchUser));
    }

    #[test]
    fn a_later_account_of_the_same_name_wins() {
        let row = |seq, h| {
            UserRow::Put(UserRecord {
                seq: UserIdx(seq),
                username: "dfafter0".into(),
                password_hash: hash(h),
                created_unix: 0,
                enabled: true,
            })
        };
        let a = Accounts::load([row(1, 1), row(2, 2)]);
        assert_eq!(a.find("dfafter0"), Some(UserIdx(2)));
        assert_eq!(a.get(UserIdx(2)).password_hash, hash(2));
        assert_eq!(a.len(), 1);
    }
}

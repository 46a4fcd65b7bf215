//! The account table: who exists, in signup order, with their password hash.
//! Pure: loading and appending rows is the store's job.

use std::collections::HashMap;

use super::kdf::PasswordHash;

/// Index of an account in signup order. Accounts are never deleted, so an
/// index is stable for the life of the data dir (broadcast audiences rely on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserIdx(pub u32);

impl super::dense::DenseKey for UserIdx {
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// One row of `users.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub username: String,
    pub password_hash: PasswordHash,
    pub created_unix: u64,
}

#[derive(Debug, Default)]
pub struct Accounts {
    list: Vec<UserRecord>,
    /// Lower-cased name → index: `Alice` and `alice` are one account, so nobody
    /// can pose as another by case alone. The stored spelling is kept for display.
    by_name: HashMap<String, UserIdx>,
}

impl Accounts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of accounts; also the next index.
    pub fn len(&self) -> u32 {
        self.list.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn find(&self, name: &str) -> Option<UserIdx> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    pub fn get(&self, idx: UserIdx) -> &UserRecord {
        &self.list[idx.0 as usize]
    }

    pub fn name(&self, idx: UserIdx) -> &str {
        &self.get(idx).username
    }

    /// Adds an account; `None` if the name (case-insensitively) is taken.
    pub fn insert(&mut self, record: UserRecord) -> Option<UserIdx> {
        let key = record.username.to_ascii_lowercase();
        if self.by_name.contains_key(&key) {
            return None;
        }
        let idx = UserIdx(self.list.len() as u32);
        self.by_name.insert(key, idx);
        self.list.push(record);
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> UserRecord {
        UserRecord {
            username: name.into(),
            password_hash: PasswordHash {
                iterations: 1,
                salt: [0; 16],
                hash: [0; 32],
            },
            created_unix: 0,
        }
    }

    #[test]
    fn names_are_unique_case_insensitively_and_indexes_are_dense() {
        let mut a = Accounts::new();
        assert_eq!(a.insert(rec("Alice")), Some(UserIdx(0)));
        assert_eq!(a.insert(rec("bob")), Some(UserIdx(1)));
        assert_eq!(a.insert(rec("alice")), None);
        assert_eq!(a.find("ALICE"), Some(UserIdx(0)));
        assert_eq!(a.name(UserIdx(0)), "Alice");
        assert_eq!(a.len(), 2);
    }
}

//! Group commit: executes the engine's store outputs against the [`Store`]
//! and reports each write back to the engine only once an fsync covers it.
//! The driver uses it; so do the engine tests, with a fault-injecting file
//! system, so the code under test is the code that runs.
//!
//! Invariants:
//! - No `OK SIGNUP` / `OK BROADCAST` before the fsync that covers its row:
//!   `Input::UserStored` / `Input::BroadcastStored` are fed only by [`Persist::commit`],
//!   after `sync_users` / `sync_broadcasts` returned.
//! - Several rows written in one loop turn share one fsync per file.
//! - A failed write or fsync fails every row of that file's batch (the store
//!   has cut the file back to its last durable length, which removed them
//!   all), and each gets `ERR internal`. A retried signup then writes the
//!   only row of that account.
//! - Compaction runs only with nothing in flight: it commits first, then
//!   takes the engine's snapshot, so every confirmed broadcast is in it.

use std::time::Instant;

use super::accounts::UserRow;
use super::broadcast::BroadcastRecord;
use super::engine::{ConnId, Engine, Input, Output};
use super::store::Store;

/// Rows written to one file since its last fsync.
struct Batch<T> {
    rows: Vec<(ConnId, T)>,
    /// A write failed: the file was cut back and the whole batch fails.
    failed: bool,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            rows: Vec::new(),
            failed: false,
        }
    }
}

pub struct Persist {
    store: Store,
    users: Batch<UserRow>,
    broadcasts: Batch<BroadcastRecord>,
    /// fsyncs of users.csv and broadcasts.csv made by commits (for tests and stats).
    pub syncs: u64,
}

impl Persist {
    pub fn new(store: Store) -> Persist {
        Persist {
            store,
            users: Batch::default(),
            broadcasts: Batch::default(),
            syncs: 0,
        }
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Rows written and not yet reported: commit before sleeping.
    pub fn has_pending(&self) -> bool {
        !self.users.rows.is_empty() || !self.broadcasts.rows.is_empty()
    }

    /// Executes `out` if it is a store output; hands it back otherwise.
    pub fn take(&mut self, now: Instant, engine: &mut Engine, out: Output) -> Option<Output> {
        match out {
            Output::StoreUser { conn, row } => {
                if !self.users.failed {
                    if let Err(e) = self.store.write_user(&row) {
                        log::error!("cannot save an account change: {e}");
                        self.users.failed = true;
                    }
                }
                self.users.rows.push((conn, row));
            }
            Output::StoreBroadcast { conn, record } => {
                if !self.broadcasts.failed {
                    if let Err(e) = self.store.write_broadcast(&record) {
                        log::error!("cannot save a broadcast: {e}");
                        self.broadcasts.failed = true;
                    }
                }
                self.broadcasts.rows.push((conn, record));
            }
            Output::StoreDelivery(row) => self.store.record_delivery(&row),
            Output::Compact => {
                self.commit(now, engine);
                let snapshot = engine.store_snapshot();
                if let Err(e) = self.store.compact(&snapshot) {
                    log::error!("cannot compact the broadcast store: {e}");
                }
            }
            other => return Some(other),
        }
        None
    }

    /// One fsync per file for everything written since the last commit, then
    /// the results, in the order the writes were made.
    pub fn commit(&mut self, now: Instant, engine: &mut Engine) {
        if !self.users.rows.is_empty() {
            let batch = std::mem::take(&mut self.users);
            let ok = !batch.failed && self.sync_users();
            for (conn, row) in batch.rows {
                engine.handle(now, Input::UserStored { conn, row, ok });
            }
        }
        if !self.broadcasts.rows.is_empty() {
            let batch = std::mem::take(&mut self.broadcasts);
            let ok = !batch.failed && self.sync_broadcasts();
            for (conn, record) in batch.rows {
                engine.handle(now, Input::BroadcastStored { conn, record, ok });
            }
        }
    }

    fn sync_users(&mut self) -> bool {
        self.syncs += 1;
        self.store
            .sync_users()
            .map_err(|e| log::error!("cannot save account changes (fsync): {e}"))
            .is_ok()
    }

    fn sync_broadcasts(&mut self) -> bool {
        self.syncs += 1;
        self.store
            .sync_broadcasts()
            .map_err(|e| log::error!("cannot save broadcasts (fsync): {e}"))
            .is_ok()
    }
}

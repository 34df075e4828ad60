//! In-memory procedure locks: catalog and schema shared, table and region exclusive.
//!
//! Locks are not persisted: after a restart every resumed procedure takes its locks again
//! before its next step (the model asks for them first).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use uuid::Uuid;

use crate::migration::LockMode;

/// Whether a lock key is held shared, from the mode it names.
fn is_shared(key: &str) -> bool {
    LockMode::of_key(key) == LockMode::Shared
}

#[derive(Default)]
struct LockEntry {
    shared: BTreeSet<Uuid>,
    exclusive: Option<Uuid>,
    released: Arc<Notify>,
}

/// A set of named locks held by procedures.
#[derive(Default)]
pub struct LockTable {
    // A std Mutex: held only for map updates, never across an await.
    entries: Mutex<BTreeMap<String, LockEntry>>,
}

/// The first key another procedure holds.
pub struct Contended {
    /// The key.
    pub key: String,
    released: Arc<Notify>,
}

impl LockTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LockEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes every key for `owner`, or none of them.
    pub fn try_acquire(&self, owner: Uuid, keys: &[String]) -> Result<(), Contended> {
        let mut entries = self.lock();
        for key in keys {
            if let Some(entry) = entries.get(key) {
                let free = if is_shared(key) {
                    entry.exclusive.is_none_or(|holder| holder == owner)
                } else {
                    entry.exclusive.is_none_or(|holder| holder == owner)
                        && entry.shared.iter().all(|holder| *holder == owner)
                };
                if !free {
                    return Err(Contended {
                        key: key.clone(),
                        released: entry.released.clone(),
                    });
                }
            }
        }
        for key in keys {
            let entry = entries.entry(key.clone()).or_default();
            if is_shared(key) {
                entry.shared.insert(owner);
            } else {
                entry.exclusive = Some(owner);
            }
        }
        Ok(())
    }

    /// Waits until every key is taken. `on_wait` is called once, with the first contended
    /// key, when the procedure has to wait.
    pub async fn acquire(&self, owner: Uuid, keys: &[String], mut on_wait: impl FnMut(&str)) {
        let mut waited = false;
        loop {
            let contended = match self.try_acquire(owner, keys) {
                Ok(()) => return,
                Err(contended) => contended,
            };
            let notified = contended.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Checked again after registering, so a release in between is not missed.
            if self.try_acquire(owner, keys).is_ok() {
                return;
            }
            if !waited {
                waited = true;
                on_wait(&contended.key);
            }
            notified.await;
        }
    }

    /// Releases every key `owner` holds.
    pub fn release_all(&self, owner: Uuid) {
        let mut entries = self.lock();
        entries.retain(|_, entry| {
            let held = entry.shared.remove(&owner) | (entry.exclusive == Some(owner));
            if entry.exclusive == Some(owner) {
                entry.exclusive = None;
            }
            if held {
                entry.released.notify_waiters();
            }
            // Keep an entry while someone may wait on its Notify.
            !(entry.shared.is_empty() && entry.exclusive.is_none())
                || Arc::strong_count(&entry.released) > 1
        });
    }

    /// Releases `keys` held by `owner` (the others it holds stay held).
    pub fn release(&self, owner: Uuid, keys: &[String]) {
        let mut entries = self.lock();
        for key in keys {
            let Some(entry) = entries.get_mut(key) else {
                continue;
            };
            let held = entry.shared.remove(&owner) | (entry.exclusive == Some(owner));
            if entry.exclusive == Some(owner) {
                entry.exclusive = None;
            }
            if held {
                entry.released.notify_waiters();
            }
            let unused = entry.shared.is_empty()
                && entry.exclusive.is_none()
                && Arc::strong_count(&entry.released) == 1;
            if unused {
                entries.remove(key);
            }
        }
    }

    /// How many keys are held (for tests and memory checks).
    pub fn held_keys(&self) -> usize {
        self.lock()
            .values()
            .filter(|entry| !entry.shared.is_empty() || entry.exclusive.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(table: u32, region: u32) -> Vec<String> {
        vec![
            "catalog/greptime:shared".to_string(),
            "schema/greptime.public:shared".to_string(),
            format!("table/{table}:exclusive"),
            format!("region/{table}:{region}:exclusive"),
        ]
    }

    #[test]
    fn regions_of_one_table_serialize_and_tables_run_in_parallel() {
        let locks = LockTable::new();
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        assert!(locks.try_acquire(a, &keys(1, 1)).is_ok());
        let contended = locks.try_acquire(b, &keys(1, 2)).err().map(|c| c.key);
        assert_eq!(contended.as_deref(), Some("table/1:exclusive"));
        assert!(locks.try_acquire(c, &keys(2, 1)).is_ok());
        locks.release_all(a);
        assert!(locks.try_acquire(b, &keys(1, 2)).is_ok());
    }

    #[test]
    fn a_table_lock_taken_and_released_alone_leaves_the_region_lock_held() {
        let locks = LockTable::new();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let region_a = vec!["region/1:1:exclusive".to_string()];
        let table = vec!["table/1:exclusive".to_string()];
        assert!(locks.try_acquire(a, &region_a).is_ok());
        assert!(locks.try_acquire(a, &table).is_ok());
        assert_eq!(
            locks.try_acquire(b, &table).err().map(|c| c.key).as_deref(),
            Some("table/1:exclusive")
        );
        locks.release(a, &table);
        assert!(locks.try_acquire(b, &table).is_ok());
        assert_eq!(
            locks
                .try_acquire(b, &region_a)
                .err()
                .map(|c| c.key)
                .as_deref(),
            Some("region/1:1:exclusive")
        );
        assert_eq!(locks.held_keys(), 2);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_lock_when_it_is_released() {
        let locks = Arc::new(LockTable::new());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        locks.acquire(a, &keys(1, 1), |_| {}).await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let mut contended = Vec::new();
                locks
                    .acquire(b, &keys(1, 1), |key| contended.push(key.to_string()))
                    .await;
                contended
            })
        };
        tokio::task::yield_now().await;
        locks.release_all(a);
        let contended = waiter.await.expect("waiter");
        assert_eq!(contended, vec!["table/1:exclusive".to_string()]);
        assert_eq!(locks.held_keys(), 4);
    }
}

//! The retention hook: after a migration finishes, the engine applies the embedder's
//! [`Retention`] setting (off by default), at most once every `check_every_ms` and never
//! two runs at a time. The archive itself is [`crate::archive::apply_retention`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use super::{AppendMode, Inner};
use crate::archive::{apply_retention, Retention};

/// Whether a retention run is going on, and when the last one started.
#[derive(Default)]
pub(crate) struct RetentionState {
    running: AtomicBool,
    last_check_ms: Mutex<Option<u64>>,
}

impl RetentionState {
    /// Claims the next run at `now_ms`: false when the setting is off, a run is going on,
    /// or the last one started less than `check_every_ms` ago.
    fn claim(&self, retention: &Retention, now_ms: u64) -> bool {
        if !retention.is_on() {
            return false;
        }
        let mut last = self
            .last_check_ms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|last_ms| now_ms < last_ms.saturating_add(retention.check_every_ms)) {
            return false;
        }
        if self
            .running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        *last = Some(now_ms);
        true
    }
}

/// Called by a procedure's task once its migration finished (its closing event durable),
/// before its waiters hear of it.
pub(crate) async fn after_finish(inner: &Arc<Inner>) {
    let now_ms = inner.ports.clock.now_ms();
    if inner.halted() || !inner.retention.claim(&inner.config.retention, now_ms) {
        return;
    }
    let run = {
        let inner = inner.clone();
        move || {
            let result = apply_retention(&inner.log, &inner.config.retention, now_ms);
            inner.retention.running.store(false, Ordering::SeqCst);
            result
        }
    };
    // The simulator's inline mode keeps every write on the calling task.
    let result = match inner.config.append_mode {
        AppendMode::Inline => run(),
        AppendMode::GroupCommit => match tokio::task::spawn_blocking(run).await {
            Ok(result) => result,
            Err(error) => {
                inner.retention.running.store(false, Ordering::SeqCst);
                warn!(%error, "the retention run did not finish");
                return;
            }
        },
    };
    match result {
        Ok(Some(report)) if report.migrations > 0 => info!(
            migrations = report.migrations,
            events = report.events,
            manifest = ?report.manifest,
            "retention archived finished migrations"
        ),
        Ok(_) => {}
        Err(error) => warn!(%error, "the retention run failed; the live log is unchanged"),
    }
}

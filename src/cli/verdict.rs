//! The operator's answers, derived from a migration's [`Detail`]: is the region writable
//! now (as the log last saw its route) and what to do next; which limit ended a failed or
//! aborted migration and whether a longer timeout would have changed it; the retry policy
//! it ran under. `show` opens with these lines and `regmig region` reuses the verdict.

use serde::Serialize;

use super::common::{counted, format_duration, plural};
use super::summary::{Detail, InstructionView};
use regmig::migration::RetryPolicy;

/// Whether the region takes writes, as the migration's latest route says, and what next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// True: writable; false: not; null: the migration never read the route.
    pub writable: Option<bool>,
    /// One line: "region 1024:2: writable, leader 1" or "region 1024:2: NOT WRITABLE — …".
    pub line: String,
    /// What the operator should do next.
    pub next: String,
}

/// The verdict of a migration on its region.
pub fn verdict(detail: &Detail) -> Verdict {
    let summary = &detail.summary;
    let region = &summary.region;
    let id = &summary.procedure_id;
    if let Some(missing_from_seq) = summary.history_missing_from_seq {
        return Verdict {
            writable: None,
            line: format!(
                "region {region}: unknown — this migration's history is missing from event {missing_from_seq} on (cut by `regmig log salvage`, which closed it)"
            ),
            next: format!(
                "read the region's route in the metadata store and the datanodes' roles: the migration may have moved it, rolled back, or left its leader Downgrading; `regmig region {region}` shows what other migrations saw"
            ),
        };
    }
    let Some(route) = &detail.route_after else {
        return Verdict {
            writable: None,
            line: format!("region {region}: unknown — this migration never read its route"),
            next: format!("`regmig region {region}` shows what other migrations saw"),
        };
    };
    let Some(leader) = route.leader_peer else {
        return Verdict {
            writable: Some(false),
            line: format!(
                "region {region}: NOT WRITABLE — the route has no leader (version {})",
                route.version
            ),
            next: "give the region a leader in the metadata store".to_string(),
        };
    };
    let downgrading = route.leader_state == Some("downgrading");
    if downgrading {
        let (line, next) = match (summary.outcome, summary.status) {
            (None, "rolling_back") => (
                format!(
                    "region {region}: NOT WRITABLE — leader {leader} still Downgrading (rollback retrying, {}{})",
                    counted(u64::from(summary.rollback_attempts), "attempt"),
                    summary
                        .rollback_last_error
                        .as_ref()
                        .map_or_else(String::new, |error| format!(", last error: {error}"))
                ),
                "the engine retries the rollback until it clears Downgrading: keep it running \
                 and fix what the last error names; `regmig show` again to follow it"
                    .to_string(),
            ),
            (None, _) => (
                format!(
                    "region {region}: NOT WRITABLE — leader {leader} Downgrading while the migration runs (state {})",
                    summary.state
                ),
                "writes resume when the new route is written or a rollback clears Downgrading; \
                 keep the engine running"
                    .to_string(),
            ),
            (Some(outcome), _) => (
                format!(
                    "region {region}: NOT WRITABLE — leader {leader} left Downgrading (migration {outcome}, rollback {})",
                    match detail.rollback.as_ref().and_then(|rollback| rollback.succeeded) {
                        Some(false) => "FAILED",
                        Some(true) => "succeeded",
                        None => "not run",
                    }
                ),
                format!(
                    "clear the leader's Downgrading state of {region} in the metadata store; \
                     nothing will retry it (see `rolling back` below)"
                ),
            ),
        };
        return Verdict {
            writable: Some(false),
            line,
            next,
        };
    }
    let (line, next) = match summary.outcome {
        Some("completed") => (
            format!(
                "region {region}: writable, leader {leader} (moved from peer {})",
                summary.from_peer
            ),
            "nothing to do".to_string(),
        ),
        Some(outcome) if detail.cancelled_by.is_some() => (
            format!(
                "region {region}: writable, leader {leader} (migration {outcome}: cancelled by {}, rolled back)",
                detail.cancelled_by.as_deref().unwrap_or_default()
            ),
            "nothing is broken; submit the migration again when it is wanted".to_string(),
        ),
        Some(outcome) => (
            format!(
                "region {region}: writable, leader {leader} (migration {outcome}, rolled back)"
            ),
            format!(
                "nothing is broken; to move it, fix the cause (the `why` line of `regmig show {id}`) and submit again{}",
                if timeout_might_help(detail) {
                    format!("; `regmig replay {id} --with timeout=…` tries a longer timeout")
                } else {
                    String::new()
                }
            ),
        ),
        None => (
            match &summary.waiting_for_lock {
                Some(queued) => format!(
                    "region {region}: writable, leader {leader} (migration queued for lock {}{})",
                    queued.lock_key,
                    if summary.lock_held_by.is_empty() {
                        String::new()
                    } else {
                        format!(", held by {}", summary.lock_held_by.join(" and "))
                    }
                ),
                None => format!(
                    "region {region}: writable, leader {leader} (migration {}, state {})",
                    summary.status, summary.state
                ),
            },
            format!("nothing to do yet; `regmig show {id}` again to follow it"),
        ),
    };
    Verdict {
        writable: Some(true),
        line,
        next,
    }
}

/// Which limit ended a migration that did not complete, in one line; `None` when it
/// completed or still runs without a rollback.
pub fn why(detail: &Detail, policy: &RetryPolicy) -> Option<String> {
    let summary = &detail.summary;
    if summary.outcome == Some("completed") {
        return None;
    }
    let rollback = detail.rollback.as_ref()?;
    if let Some(cancelled_by) = &detail.cancelled_by {
        return Some(format!(
            "cancelled by {cancelled_by}; no limit ran out, a longer timeout would not have changed it"
        ));
    }
    let mut parts = Vec::new();
    let failing: Vec<&InstructionView> = detail
        .instructions
        .iter()
        .filter(|sent| sent.seq < rollback.seq && sent.instruction != "close_region")
        .collect();
    if let Some(last) = failing.last() {
        // The last visit's run of this instruction to this peer.
        let run: Vec<&&InstructionView> = failing
            .iter()
            .rev()
            .take_while(|sent| sent.instruction == last.instruction && sent.peer == last.peer)
            .collect();
        let answers: Vec<&str> = run
            .iter()
            .rev()
            .map(|sent| sent.answer.as_ref().map_or("none", |answer| answer.result))
            .collect();
        let cap = budgeted(last.instruction).then_some(policy.in_state_attempts_max);
        let attempts = match cap {
            Some(cap) => format!("{} of {cap} attempts", last.attempt),
            None => counted(u64::from(last.attempt), "attempt"),
        };
        let ran_out = if cap.is_some_and(|cap| last.attempt >= cap) {
            " (its attempts ran out)"
        } else {
            ""
        };
        parts.push(format!(
            "{} to peer {}: {attempts}, answered {}{ran_out}",
            last.instruction,
            last.peer,
            answers.join(", ")
        ));
    }
    // The retries before the rollback: those of the rollback's own steps came after.
    let retries_before = detail
        .retries_scheduled
        .iter()
        .filter(|retry| !retry.rollback && retry.seq < rollback.seq)
        .count();
    parts.push(format!(
        "framework retries {retries_before} of {} used{}",
        policy.retries_max,
        // An abort or a spent budget is itself the limit, said elsewhere on the line.
        if !rollback.retryable
            && !matches!(
                rollback.error_kind.as_str(),
                "migration_aborted" | "retry_budget_exhausted"
            )
        {
            format!(" (its failure, {}, is not retryable)", rollback.error_kind)
        } else if retries_before >= policy.retries_max as usize {
            " (ran out)".to_string()
        } else {
            String::new()
        }
    ));
    parts.push(format!(
        "budget {} used of {}{}",
        format_duration(summary.budget_used_ms),
        format_duration(summary.timeout_ms),
        if summary.budget_left_ms == 0 {
            " (ran out)"
        } else {
            ""
        }
    ));
    parts.push(if timeout_might_help(detail) {
        format!(
            "a longer timeout might have changed it (`regmig replay {} --with timeout=…`)",
            summary.procedure_id
        )
    } else {
        "a longer timeout would not have changed it".to_string()
    });
    Some(parts.join("; "))
}

/// Whether time ran out: the budget is spent, or an instruction went unanswered within its
/// mailbox timeout before the rollback.
fn timeout_might_help(detail: &Detail) -> bool {
    if detail.summary.budget_left_ms == 0 && detail.summary.timeout_ms > 0 {
        return true;
    }
    let rollback_seq = detail.rollback.as_ref().map_or(u64::MAX, |r| r.seq);
    detail.instructions.iter().any(|sent| {
        sent.seq < rollback_seq
            && sent.instruction != "close_region"
            && sent
                .answer
                .as_ref()
                .is_some_and(|answer| answer.result == "timeout")
    })
}

/// The retry policy in one line.
pub fn policy_line(policy: &RetryPolicy) -> String {
    format!(
        "{} framework {} (backoff {} doubling, jitter up to {}%); {} {} per downgrade or upgrade, {} apart; rollback {}{}",
        policy.retries_max,
        if policy.retries_max == 1 {
            "retry"
        } else {
            "retries"
        },
        format_duration(policy.initial_backoff_ms),
        policy.jitter_percent_max,
        policy.in_state_attempts_max,
        plural(u64::from(policy.in_state_attempts_max), "attempt"),
        format_duration(policy.in_state_retry_interval_ms),
        if policy.revision_two() {
            "retried without limit".to_string()
        } else {
            format!("retried {} times", policy.rollback_retries_max)
        },
        if policy.require_ready {
            "; upgrade needs ready"
        } else {
            ""
        }
    )
}

/// Attempts of each downgrade and upgrade (peer and instruction), of the policy's cap; the
/// consistent account beside the framework retries.
pub fn attempts_line(detail: &Detail, policy: &RetryPolicy) -> String {
    let mut seen: Vec<(&str, u64, u32)> = Vec::new();
    for sent in &detail.instructions {
        if !budgeted(sent.instruction) {
            continue;
        }
        match seen
            .iter_mut()
            .find(|(name, peer, _)| *name == sent.instruction && *peer == sent.peer)
        {
            Some(entry) => entry.2 = entry.2.max(sent.attempt),
            None => seen.push((sent.instruction, sent.peer, sent.attempt)),
        }
    }
    if seen.is_empty() {
        return "none".to_string();
    }
    seen.iter()
        .map(|(name, peer, attempts)| {
            format!(
                "{name} to peer {peer}: {attempts} of {}",
                policy.in_state_attempts_max
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Framework retries of the forward steps (the policy's `retries_max` caps these; rollback
/// retries are counted apart).
pub fn forward_retries(detail: &Detail) -> usize {
    detail
        .retries_scheduled
        .iter()
        .filter(|retry| !retry.rollback)
        .count()
}

/// Whether an instruction's attempts are capped by `in_state_attempts_max`.
fn budgeted(instruction: &str) -> bool {
    matches!(instruction, "downgrade_region" | "upgrade_region")
}

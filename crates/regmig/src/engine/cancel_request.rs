//! An operator's cancel request made outside the engine's process, and the engine's answer
//! (issue 18): one shape for every place a request is recorded: a JSON file in a data
//! directory (`regmig cancel` against sled, served by the tools) and a row of the PostgreSQL
//! store (`regmig cancel --store`, served by the leading engine itself: see the module
//! `pg::cancel`, feature `postgres`, which a link here would break without that feature).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::EngineError;

/// A cancel request, as recorded for the engine to honour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// The migration to cancel.
    pub procedure_id: Uuid,
    /// Who cancels (recorded in the log with the cancel).
    pub actor: String,
    /// Why (recorded in the log with the cancel).
    pub reason: String,
    /// When the request was recorded, ms since the Unix epoch.
    pub requested_at_ms: u64,
    /// Whether a command waits for the answer; false for a request recorded while no engine
    /// ran (the file store writes no answer file then; the database keeps every answer).
    pub awaited: bool,
}

/// What the engine made of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The migration took the cancel: it rolls back and ends aborted.
    Cancelled,
    /// The cancel was refused; the answer's `reason` says why.
    Refused,
    /// The engine's log has no migration with this id.
    UnknownMigration,
}

impl CancelOutcome {
    /// The name written in answers and shown by the CLI: `cancelled`, `refused`,
    /// `unknown_migration`.
    pub fn name(self) -> &'static str {
        match self {
            CancelOutcome::Cancelled => "cancelled",
            CancelOutcome::Refused => "refused",
            CancelOutcome::UnknownMigration => "unknown_migration",
        }
    }

    /// The outcome a [`CancelOutcome::name`] names.
    pub fn from_name(name: &str) -> Option<CancelOutcome> {
        [
            CancelOutcome::Cancelled,
            CancelOutcome::Refused,
            CancelOutcome::UnknownMigration,
        ]
        .into_iter()
        .find(|outcome| outcome.name() == name)
    }
}

/// The engine's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelAnswer {
    /// The migration.
    pub procedure_id: Uuid,
    /// What became of the request.
    pub outcome: CancelOutcome,
    /// Why it was refused, or that the id is unknown (empty when it was taken).
    pub reason: String,
}

impl CancelAnswer {
    /// The answer to a request, from what [`Engine::cancel`](super::Engine::cancel)
    /// returned for it. Any error but an unknown id is a refusal naming the error.
    pub fn of(procedure_id: Uuid, result: &Result<(), EngineError>) -> CancelAnswer {
        let (outcome, reason) = match result {
            Ok(()) => (CancelOutcome::Cancelled, String::new()),
            Err(error @ EngineError::UnknownProcedure { .. }) => {
                (CancelOutcome::UnknownMigration, error.to_string())
            }
            Err(EngineError::CancelRefused { reason, .. }) => {
                (CancelOutcome::Refused, reason.clone())
            }
            Err(other) => (CancelOutcome::Refused, other.to_string()),
        };
        CancelAnswer {
            procedure_id,
            outcome,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip_and_match_the_json_spelling() {
        for outcome in [
            CancelOutcome::Cancelled,
            CancelOutcome::Refused,
            CancelOutcome::UnknownMigration,
        ] {
            assert_eq!(CancelOutcome::from_name(outcome.name()), Some(outcome));
            assert_eq!(
                serde_json::to_string(&outcome).unwrap(),
                format!("\"{}\"", outcome.name())
            );
        }
        assert_eq!(CancelOutcome::from_name("taken"), None);
    }

    #[test]
    fn an_unknown_id_is_answered_with_its_own_outcome_and_the_error() {
        let id = Uuid::from_u128(7);
        let answer = CancelAnswer::of(id, &Err(EngineError::UnknownProcedure { procedure_id: id }));
        assert_eq!(answer.outcome, CancelOutcome::UnknownMigration);
        assert_eq!(answer.reason, format!("no migration with id {id}"));
        let refused = CancelAnswer::of(
            id,
            &Err(EngineError::CancelRefused {
                procedure_id: id,
                reason: "the migration already finished (completed)".to_string(),
            }),
        );
        assert_eq!(refused.outcome, CancelOutcome::Refused);
        assert_eq!(refused.reason, "the migration already finished (completed)");
    }
}

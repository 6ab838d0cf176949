//! The events [`crate::CommitGraphs`] writes into the change feed (one JSON payload each), and
//! who makes a write ([`Writer`]).
//!
//! Every payload is a JSON object whose top-level fields include `kind`, `time_us`, `actor`
//! and `repo` (the repository's name) and, for branch events, `branch`, so a feed shared with
//! other stores can be decoded as plain JSON and filtered on top-level fields:
//!
//! ```json
//! {"kind": "branch.set", "time_us": 1764930000000000, "actor": "alice", "repo": "launchpad",
//!  "repo_id": "8731...", "branch": "main", "before": "5a5a...", "after": "77aa...",
//!  "changes": [{"branch": "topic", "target": "main", "merged": true}]}
//! ```

use serde::{Deserialize, Serialize};

use crate::{CommitId, MergedChange, NewCommit, RepoId};

/// Every `kind` of repository event.
pub const EVENT_KINDS: &[&str] = &[
    "commits.pushed",
    "branch.set",
    "branch.deleted",
    "import.repo",
];

/// Who makes a write, and the name of the repository it is made to, as its events record
/// them. The library knows repositories by [`RepoId`]; the name is the caller's (the directory
/// derives the id from it) and is what the feed's `repo` field shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writer<'a> {
    /// The person (or tool) making the write: the authenticated user, the person a trusted
    /// caller acts for, `anonymous`.
    pub actor: &'a str,
    /// The repository's name.
    pub repo: &'a str,
}

impl<'a> Writer<'a> {
    /// `actor` writing to the repository named `repo`.
    pub fn new(actor: &'a str, repo: &'a str) -> Self {
        Writer { actor, repo }
    }
}

/// One event of a repository, as written into the change feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoEvent {
    /// When the write was made, in microseconds since the Unix epoch (the writer's clock).
    pub time_us: u64,
    /// Who made it ([`Writer::actor`]).
    pub actor: String,
    /// The repository's name ([`Writer::repo`]).
    pub repo: String,
    /// The repository's id, as a decimal string (JSON numbers lose precision above 2^53).
    #[serde(with = "decimal")]
    pub repo_id: u64,
    /// What happened; its `kind` and fields are top-level fields of the JSON object.
    #[serde(flatten)]
    pub change: RepoChange,
}

/// What a [`RepoEvent`] records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
#[non_exhaustive]
pub enum RepoChange {
    /// `commits.pushed`: the commits a push added (not those already stored), parents before
    /// children, so that replaying the feed rebuilds the graph.
    #[serde(rename = "commits.pushed")]
    CommitsPushed {
        /// How many commits were added.
        count: usize,
        /// The commits, with their parents, first parent first.
        commits: Vec<NewCommit>,
    },
    /// `branch.set`: a branch created (`before` absent) or moved.
    #[serde(rename = "branch.set")]
    BranchSet {
        /// The branch.
        branch: String,
        /// Its tip before, or `None` when it was created.
        before: Option<CommitId>,
        /// Its tip after.
        after: CommitId,
        /// The merged-status pairs involving this branch that the push changed (for a push
        /// that moves one branch twice, in the event of its last move).
        changes: Vec<MergedChange>,
    },
    /// `branch.deleted`: a branch deleted.
    #[serde(rename = "branch.deleted")]
    BranchDeleted {
        /// The branch.
        branch: String,
        /// Its tip before.
        before: CommitId,
        /// The merged-status pairs involving this branch that the push changed.
        changes: Vec<MergedChange>,
    },
    /// `import.repo`: one event per import, with counts only (an import can be millions of
    /// commits). Replaying the feed cannot redo it: see [`crate::CommitGraphs::replay`].
    #[serde(rename = "import.repo")]
    ImportRepo {
        /// Commits added.
        added: usize,
        /// Commits already stored.
        known: usize,
        /// Branches set (`refs/heads/*`).
        branches: usize,
        /// Other refs, ignored.
        other_refs: usize,
    },
}

impl RepoChange {
    /// The event's `kind`, one of [`EVENT_KINDS`].
    pub fn kind(&self) -> &'static str {
        match self {
            RepoChange::CommitsPushed { .. } => "commits.pushed",
            RepoChange::BranchSet { .. } => "branch.set",
            RepoChange::BranchDeleted { .. } => "branch.deleted",
            RepoChange::ImportRepo { .. } => "import.repo",
        }
    }
}

impl RepoEvent {
    /// The repository's id.
    pub fn repo_id(&self) -> RepoId {
        RepoId(self.repo_id)
    }

    /// The JSON payload.
    pub fn encode(&self) -> Vec<u8> {
        // Cannot fail: every map key is a string and every value serialisable.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a payload of the change feed: `Ok(None)` when it is another store's event (its
    /// `kind` is not one of [`EVENT_KINDS`]).
    ///
    /// # Errors
    /// The JSON error when the payload is not JSON, or is a repository event with wrong
    /// fields.
    pub fn decode(payload: &[u8]) -> Result<Option<RepoEvent>, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(payload)?;
        let ours = value
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|kind| EVENT_KINDS.contains(&kind));
        if !ours {
            return Ok(None);
        }
        serde_json::from_value(value).map(Some)
    }
}

/// A `u64` as a decimal string in JSON.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_flat_json_with_the_shared_top_level_fields() {
        let id = |n: u8| CommitId::from_bytes(&[n; 20]).unwrap();
        let event = RepoEvent {
            time_us: 7,
            actor: "alice".into(),
            repo: "launchpad".into(),
            repo_id: u64::MAX,
            change: RepoChange::BranchSet {
                branch: "main".into(),
                before: None,
                after: id(1),
                changes: vec![MergedChange {
                    branch: "topic".into(),
                    target: "main".into(),
                    merged: true,
                }],
            },
        };
        let payload = event.encode();
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(value["kind"], "branch.set");
        assert_eq!(value["actor"], "alice");
        assert_eq!(value["repo"], "launchpad");
        assert_eq!(value["repo_id"], u64::MAX.to_string());
        assert_eq!(value["branch"], "main");
        assert_eq!(value["time_us"], 7);
        assert_eq!(value["after"], id(1).to_string());
        assert!(value["before"].is_null());
        assert_eq!(RepoEvent::decode(&payload).unwrap(), Some(event));
        assert_eq!(
            RepoEvent::decode(br#"{"kind": "membership.added", "team": "t"}"#).unwrap(),
            None
        );
        assert!(RepoEvent::decode(br#"{"kind": "branch.set"}"#).is_err());
        assert!(RepoEvent::decode(b"not json").is_err());
    }
}

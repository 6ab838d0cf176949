//! The events [`crate::CommitGraphs`] writes into the change feed (one payload each), and
//! who makes a write ([`Writer`]).
//!
//! Every event shows as a JSON object whose top-level fields include `kind`, `time_us`,
//! `actor` and `repo` (the repository's name) and, for branch events, `branch`, so a feed
//! shared with other stores can be filtered on top-level fields:
//!
//! ```json
//! {"kind": "branch.set", "time_us": 1764930000000000, "actor": "alice", "repo": "launchpad",
//!  "repo_id": "8731...", "branch": "main", "before": "5a5a...", "after": "77aa...",
//!  "changes": [{"branch": "topic", "target": "main", "merged": true}]}
//! ```
//!
//! Branch and import events are stored as that JSON. A `commits.pushed` event, which lists
//! every commit of the push, is stored binary since 2026-12-05 (22 bytes for a SHA-1 commit
//! whose parent is the commit before it in the push, against about 100 as JSON hex; a
//! 1,000-commit push writes its event in the push's batch):
//!
//! ```text
//! 0x81  time_us: u64  actor: str  repo: str  repo_id: u64  count: u32
//!       count x (id  parents)
//! ```
//!
//! integers big-endian, `str` a `u32` length and UTF-8 ([`engine::codec`]), `id` its length
//! (20 or 32) as one byte and the raw bytes, `parents` one byte: `0xFF` for one parent, the
//! commit before it in the event; `0xFE` then a `u32` count and the ids; otherwise the count
//! (0 to 253) and the ids. The first byte tells the forms apart (`{` for
//! JSON, which earlier builds also used for pushes and which is still read); the time is at
//! the same place as in the directory's own binary events, for pruning by age.
use engine::codec::{put_string, ByteReader};
use serde::{Deserialize, Serialize};

use crate::{CommitId, MergedChange, NewCommit, RepoId};

/// The first byte of a `commits.pushed` event stored binary (see the module's docs).
pub const PUSHED_V1: u8 = 0x81;

/// A commit's parents byte: one parent, the commit before it in the event.
const PREVIOUS: u8 = 0xFF;
/// A commit's parents byte: a `u32` count follows.
const COUNTED: u8 = 0xFE;

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

    /// The stored payload: binary for `commits.pushed`, JSON for the others.
    pub fn encode(&self) -> Vec<u8> {
        if let RepoChange::CommitsPushed { commits, .. } = &self.change {
            return self.encode_pushed(commits);
        }
        // Cannot fail: every map key is a string and every value serialisable.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn encode_pushed(&self, commits: &[NewCommit]) -> Vec<u8> {
        let parents: usize = commits.iter().map(|c| c.parents.len()).sum();
        let by = Writer::new(&self.actor, &self.repo);
        let mut encoder =
            PushedEncoder::new(self.time_us, by, self.repo_id(), commits.len(), parents);
        for commit in commits {
            encoder.commit(
                commit.id.as_bytes(),
                commit.parents.iter().map(CommitId::as_bytes),
            );
        }
        encoder.finish()
    }

    fn decode_pushed(payload: &[u8]) -> Option<RepoEvent> {
        let mut r = ByteReader::new(payload.get(1..)?);
        let time_us = r.u64()?;
        let actor = r.string()?;
        let repo = r.string()?;
        let repo_id = r.u64()?;
        let u32_of = |r: &mut ByteReader<'_>| usize::try_from(u32::from_be_bytes(r.array()?)).ok();
        let id = |r: &mut ByteReader<'_>| {
            let len = usize::from(r.u8()?);
            CommitId::from_bytes(r.take(len)?)
        };
        let count = u32_of(&mut r)?;
        // Each commit takes at least 22 bytes: a count larger than that is malformed.
        let mut commits: Vec<NewCommit> = Vec::with_capacity(count.min(payload.len() / 22));
        for _ in 0..count {
            let commit = id(&mut r)?;
            let parents = match r.u8()? {
                PREVIOUS => vec![commits.last()?.id],
                COUNTED => {
                    let n = u32_of(&mut r)?;
                    (0..n)
                        .map(|_| id(&mut r))
                        .collect::<Option<Vec<CommitId>>>()?
                }
                n => (0..n)
                    .map(|_| id(&mut r))
                    .collect::<Option<Vec<CommitId>>>()?,
            };
            commits.push(NewCommit {
                id: commit,
                parents,
            });
        }
        r.is_empty().then_some(RepoEvent {
            time_us,
            actor,
            repo,
            repo_id,
            change: RepoChange::CommitsPushed {
                count: commits.len(),
                commits,
            },
        })
    }

    /// Decodes a payload of the change feed, in either form: `Ok(None)` when it is another
    /// store's JSON event (its `kind` is not one of [`EVENT_KINDS`]).
    ///
    /// # Errors
    /// The JSON error when the payload is not JSON, or is a repository event with wrong
    /// fields; an error too for a malformed binary `commits.pushed`.
    pub fn decode(payload: &[u8]) -> Result<Option<RepoEvent>, serde_json::Error> {
        if payload.first() == Some(&PUSHED_V1) {
            return Self::decode_pushed(payload).map(Some).ok_or_else(|| {
                <serde_json::Error as serde::de::Error>::custom("malformed binary commits.pushed")
            });
        }
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

/// Writes a binary `commits.pushed` payload (see the module's docs) commit by commit, from
/// raw ids: a push encodes its event straight from its plan, without first building a list
/// of [`NewCommit`]s (an allocation per commit: that list and its encoding were about half of
/// the feed's cost to a 1,000-commit push, commitgraph/DESIGN.md "Encoded from the plan").
pub(crate) struct PushedEncoder {
    out: Vec<u8>,
    /// Where the previous commit's id starts in `out`, and its length.
    previous: Option<(usize, usize)>,
}

impl PushedEncoder {
    /// A payload for `count` commits with `parents` parents in all, written at `time_us` by
    /// `by` to the repository `repo_id`.
    pub(crate) fn new(
        time_us: u64,
        by: Writer<'_>,
        repo_id: RepoId,
        count: usize,
        parents: usize,
    ) -> Self {
        let ids = count + parents;
        let mut out = Vec::with_capacity(32 + by.actor.len() + by.repo.len() + ids * 33);
        out.push(PUSHED_V1);
        out.extend_from_slice(&time_us.to_be_bytes());
        put_string(&mut out, by.actor);
        put_string(&mut out, by.repo);
        out.extend_from_slice(&repo_id.0.to_be_bytes());
        out.extend_from_slice(&Self::count(count));
        PushedEncoder {
            out,
            previous: None,
        }
    }

    fn count(n: usize) -> [u8; 4] {
        u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes()
    }

    /// Appends one commit: its id and its parents' ids (raw bytes, 20 or 32 each).
    pub(crate) fn commit<'a>(
        &mut self,
        id: &[u8],
        parents: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
    ) {
        let start = self.out.len();
        self.put_id(id);
        let previous = self
            .previous
            .map(|(at, len)| &self.out[at + 1..at + 1 + len]);
        let mut first = parents.clone();
        if parents.len() == 1 && first.next() == previous {
            self.out.push(PREVIOUS);
        } else {
            match u8::try_from(parents.len()) {
                Ok(n) if n < COUNTED => self.out.push(n),
                _ => {
                    self.out.push(COUNTED);
                    self.out.extend_from_slice(&Self::count(parents.len()));
                }
            }
            for parent in parents {
                self.put_id(parent);
            }
        }
        self.previous = Some((start, id.len()));
    }

    fn put_id(&mut self, bytes: &[u8]) {
        // 20 or 32: a commit id is nothing else.
        self.out.push(bytes.len() as u8);
        self.out.extend_from_slice(bytes);
    }

    /// The payload.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
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

    #[test]
    fn pushes_are_stored_binary_and_their_json_form_is_still_read() {
        let sha1 = |n: u8| CommitId::from_bytes(&[n; 20]).unwrap();
        let sha256 = CommitId::from_bytes(&[9; 32]).unwrap();
        let commits = vec![
            NewCommit {
                id: sha1(1),
                parents: vec![],
            },
            NewCommit {
                id: sha1(2),
                parents: vec![sha1(1)],
            },
            NewCommit {
                id: sha256,
                parents: vec![sha1(1), sha1(2)],
            },
        ];
        let event = RepoEvent {
            time_us: 1_764_930_000_000_000,
            actor: "alice".into(),
            repo: "launchpad".into(),
            repo_id: u64::MAX,
            change: RepoChange::CommitsPushed { count: 3, commits },
        };
        let stored = event.encode();
        assert_eq!(stored[0], PUSHED_V1);
        assert_eq!(stored[1..9], event.time_us.to_be_bytes());
        assert_eq!(RepoEvent::decode(&stored).unwrap(), Some(event.clone()));
        let json = serde_json::to_vec(&event).unwrap();
        assert!(
            stored.len() * 2 < json.len(),
            "{} vs {}",
            stored.len(),
            json.len()
        );
        // What builds before 2026-12-05 stored.
        assert_eq!(RepoEvent::decode(&json).unwrap(), Some(event));
        // Cut short or padded: refused, never misread.
        assert!(RepoEvent::decode(&stored[..stored.len() - 1]).is_err());
        let mut padded = stored.clone();
        padded.push(0);
        assert!(RepoEvent::decode(&padded).is_err());
        let first_id = 1 + 8 + 4 + 5 + 4 + 9 + 8 + 4;
        // The second commit's parent is the first: one byte, not its id.
        assert_eq!(stored[first_id + 22 + 21], PREVIOUS);
        assert_eq!(stored.len(), first_id + (21 + 1) * 2 + (33 + 1 + 2 * 21));
        let mut bad_id = stored;
        assert_eq!(bad_id[first_id], 20);
        bad_id[first_id] = 21;
        assert!(RepoEvent::decode(&bad_id).is_err());

        // An octopus merge past a byte's count, and a first commit with one parent.
        let octopus = RepoEvent {
            change: RepoChange::CommitsPushed {
                count: 2,
                commits: vec![
                    NewCommit {
                        id: sha1(3),
                        parents: vec![sha1(1)],
                    },
                    NewCommit {
                        id: sha1(4),
                        parents: (0..300).map(|n| sha1((n % 250) as u8)).collect(),
                    },
                ],
            },
            ..event_base()
        };
        let stored = octopus.encode();
        assert_eq!(RepoEvent::decode(&stored).unwrap(), Some(octopus));
    }

    fn event_base() -> RepoEvent {
        RepoEvent {
            time_us: 1,
            actor: "a".into(),
            repo: "r".into(),
            repo_id: 2,
            change: RepoChange::ImportRepo {
                added: 0,
                known: 0,
                branches: 0,
                other_refs: 0,
            },
        }
    }
}

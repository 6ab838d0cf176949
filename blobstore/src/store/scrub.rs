//! The online scrub: every blob rehashed against its address while the store serves, its
//! position and findings kept durably in `bs.meta` (see `DESIGN.md`, "Online scrub").

use engine::{Direction, ScanRange, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::changes::{ChangeKind, Origin};
use crate::error::{Error, Result};
use crate::keys;
use crate::types::{Blake3Hash, Digest, FileId, Timestamp};

use super::audit::blob_problem;
use super::{BlobProblem, Store, Visibility};

/// The actor the scrub records its changes under.
pub const SCRUB_ACTOR: &str = "scrub";

/// The version byte of the scrub's records in `bs.meta`.
const RECORD_VERSION: u8 = 1;

impl BlobProblem {
    /// The blob concerned.
    pub fn hash(&self) -> Blake3Hash {
        match self {
            BlobProblem::Missing { hash } | BlobProblem::Corrupt { hash, .. } => *hash,
        }
    }

    /// `"missing"` or `"corrupt"`.
    pub fn kind(&self) -> &'static str {
        match self {
            BlobProblem::Missing { .. } => "missing",
            BlobProblem::Corrupt { .. } => "corrupt",
        }
    }
}

/// A pass of the scrub: every blob record, in hash order, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubPass {
    /// Its number: 1 for the store's first pass.
    pub pass: u64,
    /// When it started.
    pub started: Timestamp,
    /// When it ended (`None` while it runs).
    pub finished: Option<Timestamp>,
    /// Blobs checked so far.
    pub blobs: u64,
    /// Bytes read so far.
    pub bytes: u64,
    /// The last blob checked: the pass resumes after it (`None` before the first).
    #[serde(with = "opt_hash")]
    pub position: Option<Blake3Hash>,
}

/// The scrub's durable state: the pass in progress and the last complete one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubState {
    /// The pass in progress, if one is.
    pub current: Option<ScrubPass>,
    /// The last pass that checked every blob.
    pub last_complete: Option<ScrubPass>,
}

/// A blob the scrub found damaged and that has not checked good since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrubFinding {
    /// What is wrong.
    pub problem: BlobProblem,
    /// The size its record says it has.
    pub size: u64,
    /// When the scrub found it.
    pub found: Timestamp,
    /// The files whose content it is (public and restricted), at most the number asked.
    pub files: Vec<FileId>,
}

/// What [`Store::scrub_report`] answers: the state and the outstanding findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Progress and the last complete pass.
    pub state: ScrubState,
    /// Damaged blobs, in hash order.
    pub findings: Vec<ScrubFinding>,
    /// Whether there are more findings than listed.
    pub more: bool,
}

/// The result of one [`Store::scrub_step`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubStep {
    /// Blobs checked by this step.
    pub checked: u64,
    /// Bytes read by this step.
    pub bytes: u64,
    /// Problems found that were not recorded before.
    pub found: Vec<BlobProblem>,
    /// Blobs recorded as damaged that now check good (restored from a copy).
    pub repaired: Vec<Blake3Hash>,
    /// The pass this step completed, if it did.
    pub completed: Option<ScrubPass>,
}

/// A finding as stored: version byte, then this JSON.
#[derive(Serialize, Deserialize)]
struct StoredFinding {
    kind: String,
    size: u64,
    found_size: Option<u64>,
    #[serde(with = "opt_hash")]
    actual: Option<Blake3Hash>,
    found: Timestamp,
}

/// A hash in a stored record: hex, or null.
mod opt_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::types::Blake3Hash;

    pub(super) fn serialize<S: Serializer>(
        hash: &Option<Blake3Hash>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match hash {
            Some(hash) => serializer.serialize_some(&hash.to_hex()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Blake3Hash>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|hex| hex.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn finding_key(hash: &Blake3Hash) -> Vec<u8> {
    let mut key = keys::META_SCRUB_FINDING.to_vec();
    key.extend_from_slice(&hash.0);
    key
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Plain structs of integers, strings and hashes: serialising cannot fail.
    out.extend(serde_json::to_vec(value).unwrap_or_default());
    out
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T> {
    let corrupt = || Error::CorruptRecord {
        what: "scrub record",
        key: key.to_vec(),
    };
    match bytes.split_first() {
        Some((&RECORD_VERSION, json)) => serde_json::from_slice(json).map_err(|_| corrupt()),
        _ => Err(corrupt()),
    }
}

impl StoredFinding {
    fn problem(&self, hash: Blake3Hash) -> BlobProblem {
        match (self.kind.as_str(), self.found_size, self.actual) {
            ("corrupt", Some(size), Some(actual)) => BlobProblem::Corrupt { hash, size, actual },
            _ => BlobProblem::Missing { hash },
        }
    }
}

impl Store {
    /// The scrub's durable state.
    ///
    /// # Errors
    /// The engine's error, or [`Error::CorruptRecord`].
    pub fn scrub_state(&self) -> Result<ScrubState> {
        let key = keys::META_SCRUB_STATE;
        match self.inner.engine.get(self.inner.ks.meta, key)? {
            Some(bytes) => decode(key, &bytes),
            None => Ok(ScrubState::default()),
        }
    }

    /// Checks up to `limit` blobs after the scrub's durable position, rehashing each (inline
    /// content from the engine, other blobs through the [`crate::BlobBackend`]) against its
    /// address, and records the outcome in one durable batch: the new position, the problems
    /// found (and a `blob.damaged` event for each new one), the findings of blobs that now
    /// check good removed (`blob.repaired`), and, after the last blob, the complete pass. The
    /// next call after a complete pass starts a new one. `pace` is called with the bytes read
    /// after every piece of a blob: the caller holds its rate there (sleeping).
    ///
    /// A blob found damaged is refused by [`Store::read`] from then on ([`Error::Corrupt`]),
    /// as the read path's own check refuses damaged inline content. Only one step runs at a
    /// time; GC's removal of a blob also removes its finding.
    ///
    /// # Errors
    /// [`Error::Poisoned`], the engine's error, or an I/O error other than a missing or short
    /// blob (nothing is recorded then).
    pub fn scrub_step(&self, limit: usize, pace: &mut dyn FnMut(u64)) -> Result<ScrubStep> {
        self.check_writable()?;
        let _scrubbing = self.inner.scrub.lock().unwrap_or_else(|e| e.into_inner());
        let ks = self.inner.ks;
        let now = self.now();
        let mut state = self.scrub_state()?;
        let mut pass = state.current.unwrap_or(ScrubPass {
            pass: state.last_complete.map_or(1, |last| last.pass + 1),
            started: now,
            finished: None,
            blobs: 0,
            bytes: 0,
            position: None,
        });
        let (report, bytes) = self.verify_paced(pass.position, limit.max(1), pace)?;
        let mut step = ScrubStep {
            checked: report.checked,
            bytes,
            ..ScrubStep::default()
        };
        // The hashes checked: those between the old position and the new one.
        let end = report.next;
        let damaged: std::collections::HashMap<Blake3Hash, BlobProblem> = report
            .problems
            .into_iter()
            .map(|problem| (problem.hash(), problem))
            .collect();
        let mut batch = WriteBatch::new();
        let mut events = Vec::new();
        let origin = Origin {
            actor: SCRUB_ACTOR,
            time: now,
        };
        // Findings recorded in the range just checked (after the old position, up to and
        // including the new one): cleared unless still damaged.
        let start = match pass.position {
            Some(hash) => engine::keys::successor(&finding_key(&hash)),
            None => keys::META_SCRUB_FINDING.to_vec(),
        };
        let range = match end {
            Some(hash) => ScanRange::between(&start, &engine::keys::successor(&finding_key(&hash))),
            None => ScanRange {
                start,
                end: engine::keys::prefix_successor(keys::META_SCRUB_FINDING),
                read_once: false,
            },
        };
        let mut recorded = std::collections::HashMap::new();
        for kv in self.inner.engine.scan(ks.meta, range, Direction::Forward)? {
            let (key, value) = kv?;
            let Some(hash) = key
                .get(keys::META_SCRUB_FINDING.len()..)
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
            else {
                continue;
            };
            recorded.insert(Blake3Hash(hash), (key, value));
        }
        for (hash, (key, value)) in &recorded {
            if damaged.contains_key(hash) {
                continue;
            }
            decode::<StoredFinding>(key, value)?;
            batch.delete(ks.meta, key.clone());
            step.repaired.push(*hash);
            events.push(origin.change(ChangeKind::BlobRepaired {
                blake3: hash.to_hex(),
            }));
        }
        let mut hashes: Vec<&Blake3Hash> = damaged.keys().collect();
        hashes.sort();
        for hash in hashes {
            let problem = &damaged[hash];
            // Re-checked under the blob lock, which GC holds from a blob's removal to the
            // deletion of its bytes: a blob collected since the scan is no finding.
            let _guard = self.inner.blob_locks.lock(&hash.0);
            let Some(meta) = self.blob_meta(hash)? else {
                continue;
            };
            let problem = match problem {
                BlobProblem::Missing { .. } => {
                    match blob_problem(hash, meta.size, self.hash_stored(hash, &meta, pace)?) {
                        Some(problem) => problem,
                        None => continue,
                    }
                }
                corrupt => corrupt.clone(),
            };
            if recorded.contains_key(hash) {
                continue;
            }
            let (found_size, actual) = match &problem {
                BlobProblem::Corrupt { size, actual, .. } => (Some(*size), Some(*actual)),
                BlobProblem::Missing { .. } => (None, None),
            };
            let stored = StoredFinding {
                kind: problem.kind().to_owned(),
                size: meta.size,
                found_size,
                actual,
                found: now,
            };
            batch.put(ks.meta, finding_key(hash), encode(&stored));
            events.push(origin.change(ChangeKind::BlobDamaged {
                blake3: hash.to_hex(),
                problem: problem.kind().to_owned(),
                size: meta.size,
                found_size,
            }));
            step.found.push(problem);
        }
        pass.blobs += step.checked;
        pass.bytes += step.bytes;
        match end {
            Some(hash) => {
                pass.position = Some(hash);
                state.current = Some(pass);
            }
            None => {
                pass.position = None;
                pass.finished = Some(now);
                state.current = None;
                state.last_complete = Some(pass);
                step.completed = Some(pass);
            }
        }
        batch.put(ks.meta, keys::META_SCRUB_STATE, encode(&state));
        let appended = self.append(batch, &events)?;
        self.sync(appended)?;
        Ok(step)
    }

    /// The scrub's state and up to `limit` findings (in hash order), each with up to
    /// `files_per_finding` of the files whose content the blob is: what `GET /scrub` shows.
    ///
    /// # Errors
    /// The engine's error, or [`Error::CorruptRecord`].
    pub fn scrub_report(&self, limit: usize, files_per_finding: usize) -> Result<ScrubReport> {
        let mut report = ScrubReport {
            state: self.scrub_state()?,
            ..ScrubReport::default()
        };
        for kv in self.inner.engine.scan(
            self.inner.ks.meta,
            ScanRange::prefix(keys::META_SCRUB_FINDING),
            Direction::Forward,
        )? {
            let (key, value) = kv?;
            if report.findings.len() == limit {
                report.more = true;
                break;
            }
            let hash = key
                .get(keys::META_SCRUB_FINDING.len()..)
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .map(Blake3Hash)
                .ok_or_else(|| Error::CorruptRecord {
                    what: "scrub finding",
                    key: key.clone(),
                })?;
            let stored: StoredFinding = decode(&key, &value)?;
            let mut files =
                self.files_by_digest(&Digest::Blake3(hash), Visibility::Public, files_per_finding)?;
            let left = files_per_finding.saturating_sub(files.len());
            files.extend(self.files_by_digest(
                &Digest::Blake3(hash),
                Visibility::Restricted,
                left,
            )?);
            files.sort();
            report.findings.push(ScrubFinding {
                problem: stored.problem(hash),
                size: stored.size,
                found: stored.found,
                files,
            });
        }
        Ok(report)
    }

    /// Refuses blob `hash` when the scrub found it damaged: what keeps [`Store::read`] (and a
    /// server's `HEAD`) from serving it as good.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the finding, or the engine's error.
    pub fn check_scrubbed(&self, hash: &Blake3Hash) -> Result<()> {
        let key = finding_key(hash);
        match self.inner.engine.get(self.inner.ks.meta, &key)? {
            None => Ok(()),
            Some(bytes) => {
                let stored: StoredFinding = decode(&key, &bytes)?;
                Err(Error::Corrupt {
                    hash: *hash,
                    detail: format!(
                        "the scrub found it {} at {} ms",
                        stored.kind,
                        stored.found.as_unix_millis()
                    ),
                })
            }
        }
    }

    /// Removes the finding of blob `hash` in `batch` (GC collecting the blob).
    pub(super) fn forget_finding(&self, batch: &mut WriteBatch, hash: &Blake3Hash) {
        batch.delete(self.inner.ks.meta, finding_key(hash));
    }
}

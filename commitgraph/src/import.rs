//! Parsers for `git rev-list --all --parents` and
//! `git for-each-ref --format='%(refname) %(objectname)'`, and the ordering of their commits
//! for [`super::CommitGraphs::push`]. Pure functions over text: they never panic, and report the
//! first problem with its 1-based line number.

use super::error::{CommitError, ImportInput, LineError};
use super::id::{CommitId, IdMap};
use super::index::NewCommit;
use super::BranchUpdate;

/// One line of `git rev-list --parents`: a commit and its parents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevListEntry {
    /// The 1-based line number.
    pub line: usize,
    /// The commit.
    pub commit: CommitId,
    /// Its parents, first parent first.
    pub parents: Vec<CommitId>,
}

/// One line of `git for-each-ref --format='%(refname) %(objectname)'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefEntry {
    /// The 1-based line number.
    pub line: usize,
    /// The full ref name, such as `refs/heads/main`.
    pub name: String,
    /// The object it points to.
    pub target: CommitId,
}

fn error(input: ImportInput, line: usize, error: LineError) -> CommitError {
    CommitError::Import { input, line, error }
}

/// The non-empty lines of `text` with their 1-based numbers (a trailing `\r` is dropped).
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.trim().is_empty())
}

/// Parses ids; every id must be as long as the first id of the input (`expected`).
fn parse_id(
    input: ImportInput,
    line: usize,
    token: usize,
    text: &str,
    expected: &mut Option<usize>,
) -> Result<CommitId, CommitError> {
    let id = CommitId::parse_hex(text)
        .map_err(|source| error(input, line, LineError::BadId { token, source }))?;
    let found = text.len();
    match *expected {
        None => *expected = Some(found),
        Some(len) if len != found => {
            return Err(error(
                input,
                line,
                LineError::MixedIdLength {
                    token,
                    expected: len,
                    found,
                },
            ))
        }
        Some(_) => {}
    }
    Ok(id)
}

/// Parses `git rev-list --parents` output: per line a commit id, then its parents' ids,
/// separated by whitespace. Blank lines are skipped.
///
/// # Errors
/// [`CommitError::Import`] with [`LineError::BadId`] or [`LineError::MixedIdLength`].
pub fn parse_rev_list(text: &str) -> Result<Vec<RevListEntry>, CommitError> {
    let mut expected = None;
    let mut entries = Vec::new();
    for (line, content) in lines(text) {
        let mut ids = Vec::new();
        for (token, word) in content.split_ascii_whitespace().enumerate() {
            ids.push(parse_id(
                ImportInput::RevList,
                line,
                token + 1,
                word,
                &mut expected,
            )?);
        }
        // `lines` dropped blank lines, so there is a first token.
        let Some((&commit, parents)) = ids.split_first() else {
            continue;
        };
        entries.push(RevListEntry {
            line,
            commit,
            parents: parents.to_vec(),
        });
    }
    Ok(entries)
}

/// Parses `git for-each-ref --format='%(refname) %(objectname)'` output. Blank lines are
/// skipped.
///
/// # Errors
/// [`CommitError::Import`] with [`LineError::RefFields`], [`LineError::BadId`] or
/// [`LineError::MixedIdLength`].
pub fn parse_refs(text: &str) -> Result<Vec<RefEntry>, CommitError> {
    let mut expected = None;
    let mut entries = Vec::new();
    for (line, content) in lines(text) {
        let fields: Vec<&str> = content.split_ascii_whitespace().collect();
        let [name, target] = fields[..] else {
            return Err(error(
                ImportInput::Refs,
                line,
                LineError::RefFields {
                    fields: fields.len(),
                },
            ));
        };
        let target = parse_id(ImportInput::Refs, line, 2, target, &mut expected)?;
        entries.push(RefEntry {
            line,
            name: name.to_string(),
            target,
        });
    }
    Ok(entries)
}

/// Orders the commits of a rev-list parents first (rev-list prints children first, and its
/// date order is not topological under clock skew), dropping repeated lines. `known` says
/// whether a commit is already stored; a parent must be in the input or known.
///
/// The order is a depth-first post-order over parents, first parents first, started from
/// `starts` (branch tips, most important first) and then from the remaining lines, oldest
/// first. So the first-parent history of `starts[0]` comes out before any branch forked from
/// it, and keeps one long first-parent chain in the index.
///
/// # Errors
/// [`CommitError::Import`] with [`LineError::ConflictingDuplicate`],
/// [`LineError::UnknownParent`] or [`LineError::Cycle`].
pub fn order_commits(
    entries: &[RevListEntry],
    known: impl Fn(&CommitId) -> bool,
    starts: &[CommitId],
) -> Result<Vec<NewCommit>, CommitError> {
    let fail = |line, e| error(ImportInput::RevList, line, e);
    let mut index_of: IdMap<usize> =
        IdMap::with_capacity_and_hasher(entries.len(), Default::default());
    let mut unique = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        match index_of.get(&entry.commit) {
            Some(&first) if entries[first].parents == entry.parents => {}
            Some(&first) => {
                return Err(fail(
                    entry.line,
                    LineError::ConflictingDuplicate {
                        commit: entry.commit,
                        first_line: entries[first].line,
                    },
                ))
            }
            None => {
                index_of.insert(entry.commit, i);
                unique.push(i);
            }
        }
    }
    for &i in &unique {
        let entry = &entries[i];
        if let Some(parent) = entry
            .parents
            .iter()
            .find(|p| !index_of.contains_key(*p) && !known(p))
        {
            return Err(fail(
                entry.line,
                LineError::UnknownParent {
                    commit: entry.commit,
                    parent: *parent,
                },
            ));
        }
    }
    // Depth-first post-order over parents, starting from the oldest lines.
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; entries.len()];
    let mut order = Vec::with_capacity(unique.len());
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let roots = starts
        .iter()
        .filter_map(|id| index_of.get(id).copied())
        .chain(unique.iter().rev().copied());
    for root in roots {
        if state[root] != NEW {
            continue;
        }
        state[root] = OPEN;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (i, next) = *top;
            let entry = &entries[i];
            if let Some(parent) = entry.parents.get(next) {
                top.1 += 1;
                if let Some(&p) = index_of.get(parent) {
                    match state[p] {
                        NEW => {
                            state[p] = OPEN;
                            stack.push((p, 0));
                        }
                        OPEN => {
                            return Err(fail(
                                entry.line,
                                LineError::Cycle {
                                    commit: entry.commit,
                                },
                            ))
                        }
                        _ => {}
                    }
                }
            } else {
                state[i] = DONE;
                order.push(NewCommit {
                    id: entry.commit,
                    parents: entry.parents.clone(),
                });
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// The branch updates of a ref listing: `refs/heads/NAME` becomes branch `NAME`; other refs
/// are counted and skipped. A branch must point to a commit of `entries` or a `known` one.
/// The updates come out with `main`, then `master`, first, then by name: the order in which
/// [`order_commits`] should start from their tips.
///
/// # Errors
/// [`CommitError::Import`] with [`LineError::UnknownTarget`] or [`LineError::BadBranchName`].
pub fn branch_updates(
    refs: &[RefEntry],
    entries: &[RevListEntry],
    known: impl Fn(&CommitId) -> bool,
) -> Result<(Vec<BranchUpdate>, usize), CommitError> {
    let listed: std::collections::HashSet<CommitId> = entries.iter().map(|e| e.commit).collect();
    let mut updates = Vec::new();
    let mut other = 0;
    for entry in refs {
        let Some(name) = entry.name.strip_prefix("refs/heads/") else {
            other += 1;
            continue;
        };
        if name.is_empty() {
            return Err(error(
                ImportInput::Refs,
                entry.line,
                LineError::BadBranchName {
                    name: entry.name.clone(),
                },
            ));
        }
        if !listed.contains(&entry.target) && !known(&entry.target) {
            return Err(error(
                ImportInput::Refs,
                entry.line,
                LineError::UnknownTarget {
                    branch: name.to_string(),
                    commit: entry.target,
                },
            ));
        }
        updates.push(BranchUpdate::set(name, entry.target));
    }
    updates.sort_by_key(|u| (u.name != "main", u.name != "master", u.name.clone()));
    Ok((updates, other))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    fn line_of(err: CommitError) -> (usize, LineError) {
        match err {
            CommitError::Import { line, error, .. } => (line, error),
            other => panic!("not an import error: {other}"),
        }
    }

    #[test]
    fn rev_list_is_ordered_parents_first() {
        let text = format!("{C} {B} {A}\n{B} {A}\n\n{A}\n");
        let entries = parse_rev_list(&text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].line, 4);
        let order = order_commits(&entries, |_| false, &[]).unwrap();
        let ids: Vec<String> = order.iter().map(|c| c.id.to_string()).collect();
        assert_eq!(ids, vec![A, B, C]);
    }

    #[test]
    fn bad_lines_are_named() {
        let (line, e) = line_of(parse_rev_list(&format!("{A}\n{B} xyz\n")).unwrap_err());
        assert_eq!(line, 2);
        assert!(matches!(e, LineError::BadId { token: 2, .. }));
        let long = "d".repeat(64);
        let (line, e) = line_of(parse_rev_list(&format!("{A}\n{long} {A}\n")).unwrap_err());
        assert_eq!(line, 2);
        assert!(matches!(e, LineError::MixedIdLength { token: 1, .. }));
        let entries = parse_rev_list(&format!("{B} {C}\n")).unwrap();
        let (line, e) = line_of(order_commits(&entries, |_| false, &[]).unwrap_err());
        assert_eq!(line, 1);
        assert!(matches!(e, LineError::UnknownParent { .. }));
        let entries = parse_rev_list(&format!("{B} {A}\n{A} {B}\n")).unwrap();
        let (_, e) = line_of(order_commits(&entries, |_| false, &[]).unwrap_err());
        assert!(matches!(e, LineError::Cycle { .. }));
        let entries = parse_rev_list(&format!("{B}\n{B} {A}\n{A}\n")).unwrap();
        let (line, e) = line_of(order_commits(&entries, |_| false, &[]).unwrap_err());
        assert_eq!(line, 2);
        assert!(matches!(
            e,
            LineError::ConflictingDuplicate { first_line: 1, .. }
        ));
        let (line, e) =
            line_of(parse_refs(&format!("refs/heads/x {A}\nrefs/heads/y\n")).unwrap_err());
        assert_eq!(line, 2);
        assert_eq!(e, LineError::RefFields { fields: 1 });
    }

    #[test]
    fn refs_become_branches() {
        let entries = parse_rev_list(&format!("{B} {A}\n{A}\n")).unwrap();
        let refs = parse_refs(&format!(
            "refs/heads/main {B}\r\nrefs/tags/v1 {C}\nrefs/heads/old {A}\n"
        ))
        .unwrap();
        let (updates, other) = branch_updates(&refs, &entries, |_| false).unwrap();
        assert_eq!(other, 1);
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].name, "main");
        let refs = parse_refs(&format!("refs/heads/gone {C}\n")).unwrap();
        let (line, e) = line_of(branch_updates(&refs, &entries, |_| false).unwrap_err());
        assert_eq!(line, 1);
        assert!(matches!(e, LineError::UnknownTarget { .. }));
    }
}

//! The on-disk records of the commit graph (see `commitgraph/DESIGN.md`).
//!
//! - `commits.nodes`: per repository a format record (key `repo (u64 BE)`, value
//!   `format (2) ++ id_len`) and the commits in dense-id order, [`BLOCK`] to a record: key
//!   `repo (u64 BE) ++ block (u32 BE)`, value the commits' records ([`encode_commit`]) back to
//!   back. A push rewrites the last, partial block with its new commits, in its one batch.
//! - `commits.branches`: key `repo (u64 BE) ++ name (UTF-8, raw)`, value `node (u32 BE)`.

use super::id::{CommitId, RepoId};

pub(crate) fn repo_prefix(repo: RepoId) -> [u8; 8] {
    repo.0.to_be_bytes()
}

/// The stored format this build writes and reads (1 was one key per commit with its labels).
pub(crate) const FORMAT: u8 = 2;

/// Commits per record of `commits.nodes`.
pub(crate) const BLOCK: u32 = 256;

/// A parent count of this or more is followed by the count as a varint.
const MANY_PARENTS: u8 = 0x7f;
/// The flag byte's bit for a commit that starts a first-parent chain.
const STARTS_CHAIN: u8 = 0x80;

/// The key of a repository's format record: `repo u64 BE` alone, so it sorts before the blocks.
pub(crate) fn header_key(repo: RepoId) -> [u8; 8] {
    repo_prefix(repo)
}

/// The format record's value: the format and the byte length of the repository's ids.
pub(crate) fn encode_header(id_len: usize) -> [u8; 2] {
    [FORMAT, id_len as u8]
}

/// The id length of a format record, or the format found when it is not [`FORMAT`].
pub(crate) fn decode_header(value: &[u8]) -> Result<usize, u8> {
    match value {
        [FORMAT, len @ (20 | 32)] => Ok(usize::from(*len)),
        [format, ..] => Err(*format),
        [] => Err(0),
    }
}

pub(crate) fn block_key(repo: RepoId, block: u32) -> [u8; 12] {
    let mut key = [0; 12];
    key[..8].copy_from_slice(&repo.0.to_be_bytes());
    key[8..].copy_from_slice(&block.to_be_bytes());
    key
}

pub(crate) fn block_of_key(key: &[u8]) -> Option<u32> {
    let tail: [u8; 4] = key.get(8..)?.try_into().ok()?;
    Some(u32::from_be_bytes(tail))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(input: &mut &[u8]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or("truncated varint")?;
        *input = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long")
}

/// Appends commit `node`'s record: a flag byte (starts a chain; parent count), the raw id, each
/// parent as `node - parent` and the rank as `rank - node` (zigzag), varints: the parents are
/// usually just below, and the rank near the node, so most commits take 1 + id + 2-3 bytes.
pub(crate) fn encode_commit(
    out: &mut Vec<u8>,
    node: u32,
    id: &[u8],
    parents: &[u32],
    starts_chain: bool,
    rank: u32,
) {
    let count = parents.len().min(usize::from(MANY_PARENTS)) as u8;
    out.push(count | if starts_chain { STARTS_CHAIN } else { 0 });
    if count == MANY_PARENTS {
        put_varint(out, parents.len() as u64);
    }
    out.extend_from_slice(id);
    for &p in parents {
        put_varint(out, u64::from(node - p));
    }
    let delta = i64::from(rank) - i64::from(node);
    put_varint(out, ((delta << 1) ^ (delta >> 63)) as u64);
}

/// One decoded commit record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StoredCommit {
    pub(crate) id: CommitId,
    pub(crate) parents: Vec<u32>,
    pub(crate) starts_chain: bool,
    pub(crate) rank: u32,
}

/// Decodes the records of a block whose first commit is `node`, calling `each` in order.
pub(crate) fn decode_block(
    mut value: &[u8],
    mut node: u32,
    id_len: usize,
    mut each: impl FnMut(StoredCommit) -> Result<(), &'static str>,
) -> Result<(), &'static str> {
    while let Some((&flags, rest)) = value.split_first() {
        value = rest;
        let mut count = usize::from(flags & MANY_PARENTS);
        if count == usize::from(MANY_PARENTS) {
            count = usize::try_from(get_varint(&mut value)?).map_err(|_| "bad parent count")?;
        }
        let id = value
            .get(..id_len)
            .and_then(CommitId::from_bytes)
            .ok_or("truncated commit id")?;
        value = &value[id_len..];
        let mut parents = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let delta = get_varint(&mut value)?;
            let parent = u64::from(node)
                .checked_sub(delta)
                .filter(|_| delta > 0)
                .ok_or("parent not below its commit")?;
            parents.push(parent as u32);
        }
        let zigzag = get_varint(&mut value)?;
        let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        let rank = u32::try_from(i64::from(node) + delta).map_err(|_| "rank out of range")?;
        each(StoredCommit {
            id,
            parents,
            starts_chain: flags & STARTS_CHAIN != 0,
            rank,
        })?;
        node = node.checked_add(1).ok_or("too many commits")?;
    }
    Ok(())
}

pub(crate) fn branch_key(repo: RepoId, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + name.len());
    key.extend_from_slice(&repo.0.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// The history-index prefix of every event of a repository in `commits.history`:
/// `b'r' ++ repo u64 BE` (fixed length, so no repository's prefix starts another's).
pub(crate) fn history_repo_prefix(repo: RepoId) -> Vec<u8> {
    engine::keys::KeyBuilder::new()
        .u8(b'r')
        .u64(repo.0)
        .finish()
}

/// The history-index prefix of a branch's events: `b'b' ++ repo u64 BE ++ name` with the name
/// escaped and terminated ([`engine::keys`]), so no branch's prefix starts another's.
pub(crate) fn history_branch_prefix(repo: RepoId, name: &str) -> Vec<u8> {
    engine::keys::KeyBuilder::new()
        .u8(b'b')
        .u64(repo.0)
        .str(name)
        .finish()
}

/// The history-index prefix of an actor's events (every repository's):
/// `b'a' ++ actor` with the actor escaped and terminated ([`engine::keys`]), so no actor's
/// prefix starts another's.
pub(crate) fn history_actor_prefix(actor: &str) -> Vec<u8> {
    engine::keys::KeyBuilder::new().u8(b'a').str(actor).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trip() {
        let id = CommitId::from_bytes(&[7; 32]).unwrap();
        let parents: Vec<u32> = (0..200).collect();
        let mut value = Vec::new();
        encode_commit(&mut value, 300, id.as_bytes(), &[299, 4], false, 290);
        encode_commit(&mut value, 301, id.as_bytes(), &parents, true, 400);
        encode_commit(&mut value, 302, id.as_bytes(), &[], true, 0);
        let mut got = Vec::new();
        decode_block(&value, 300, 32, |c| {
            got.push((c.parents, c.starts_chain, c.rank));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (vec![299, 4], false, 290),
                (parents, true, 400),
                (vec![], true, 0)
            ]
        );
        let ok = |_| Ok(());
        assert!(decode_block(&value[..value.len() - 1], 300, 32, ok).is_err());
        assert!(decode_block(&value, 0, 32, ok).is_err());
        assert!(decode_block(&[1, 2, 3], 5, 20, ok).is_err());
        assert_eq!(decode_header(&encode_header(20)), Ok(20));
        assert_eq!(decode_header(&[1, 20]), Err(1));
        assert_eq!(block_of_key(&block_key(RepoId(5), 77)), Some(77));
    }
}

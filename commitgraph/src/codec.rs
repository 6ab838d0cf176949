//! The on-disk records of the commit graph (see `commitgraph/DESIGN.md`).
//!
//! - `commits.nodes`: key `repo (u64 BE) ++ node (u32 BE)`, value
//!   `id_len (u8) ++ id ++ generation ++ chain ++ position ++ rank ++ parents*` (all `u32 BE`;
//!   the parent count is what remains of the value divided by 4).
//! - `commits.branches`: key `repo (u64 BE) ++ name (UTF-8, raw)`, value `node (u32 BE)`.

use super::id::{CommitId, RepoId};
use super::index::Labels;

pub(crate) fn repo_prefix(repo: RepoId) -> [u8; 8] {
    repo.0.to_be_bytes()
}

pub(crate) fn node_key(repo: RepoId, node: u32) -> [u8; 12] {
    let mut key = [0; 12];
    key[..8].copy_from_slice(&repo.0.to_be_bytes());
    key[8..].copy_from_slice(&node.to_be_bytes());
    key
}

pub(crate) fn node_of_key(key: &[u8]) -> Option<u32> {
    let tail: [u8; 4] = key.get(8..)?.try_into().ok()?;
    Some(u32::from_be_bytes(tail))
}

pub(crate) fn encode_node(id: &CommitId, parents: &[u32], labels: Labels) -> Vec<u8> {
    let bytes = id.as_bytes();
    let mut value = Vec::with_capacity(1 + bytes.len() + 16 + 4 * parents.len());
    value.push(bytes.len() as u8);
    value.extend_from_slice(bytes);
    for field in [
        labels.generation,
        labels.chain,
        labels.position,
        labels.rank,
    ] {
        value.extend_from_slice(&field.to_be_bytes());
    }
    for parent in parents {
        value.extend_from_slice(&parent.to_be_bytes());
    }
    value
}

pub(crate) fn decode_node(value: &[u8]) -> Result<(CommitId, Labels, Vec<u32>), &'static str> {
    let (&len, rest) = value.split_first().ok_or("empty value")?;
    let len = usize::from(len);
    let id = rest
        .get(..len)
        .and_then(CommitId::from_bytes)
        .ok_or("bad commit id")?;
    let rest = &rest[len..];
    if rest.len() < 16 || rest.len() % 4 != 0 {
        return Err("bad label or parent length");
    }
    let mut words = rest
        .chunks_exact(4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    let mut next = || words.next().unwrap_or_default();
    let labels = Labels {
        generation: next(),
        chain: next(),
        position: next(),
        rank: next(),
    };
    let parents = rest[16..]
        .chunks_exact(4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    Ok((id, labels, parents))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_round_trip() {
        let id = CommitId::from_bytes(&[7; 32]).unwrap();
        let labels = Labels {
            generation: 3,
            chain: 1,
            position: 2,
            rank: 9,
        };
        let value = encode_node(&id, &[4, 5, 6], labels);
        assert_eq!(decode_node(&value), Ok((id, labels, vec![4, 5, 6])));
        assert!(decode_node(&value[..value.len() - 1]).is_err());
        assert!(decode_node(&[]).is_err());
        assert!(decode_node(&[20, 1, 2]).is_err());
        assert_eq!(node_of_key(&node_key(RepoId(5), 77)), Some(77));
    }
}

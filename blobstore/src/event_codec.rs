//! The stored form of a change-feed event: a compact binary layout, versioned by its first
//! byte, and the JSON that builds before it wrote, still read.
//!
//! Until 2026-12-05 an event was stored as the JSON of its [`Change`] (first byte `{`,
//! 0x7B). Encoding and storing that JSON cost a measurable share of a small upload (see
//! `DESIGN.md`, "Change feed"), so new events are written as version 1 of this layout:
//!
//! ```text
//! 0x01  time_us: i64  actor: str  kind: u8  fields of the kind, in ChangeKind's order
//! ```
//!
//! with integers big-endian, `str` a `u32` length and UTF-8 bytes, an `Option` a byte 0 or 1
//! and then the value, a `blake3` the 32 raw bytes of the hash (written so only when its hex
//! is the canonical lowercase form, which every event the store makes has; any other event is
//! stored as JSON, so the layout is lossless), and flags in one byte. Both forms are read;
//! any other first byte is refused as an event of an unknown encoding (a newer build's), never
//! guessed at.

use engine::codec::{put_string, ByteReader};

use crate::changes::{Change, ChangeKind};
use crate::types::Blake3Hash;

/// The first byte of an event in this layout.
const VERSION_1: u8 = 1;

/// How an event's payload was read.
#[derive(Debug)]
pub(crate) enum Decoded {
    Change(Change),
    /// Neither JSON nor a layout this build knows: written by a newer build.
    UnknownVersion(u8),
    Malformed,
}

/// The stored payload of `change` (its revision is the log's key, not part of it).
pub(crate) fn encode(change: &Change) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.push(VERSION_1);
    out.extend_from_slice(&change.time_us.to_be_bytes());
    put_string(&mut out, &change.actor);
    let encoded = match &change.kind {
        ChangeKind::FileCreated {
            bucket,
            file,
            filename,
            content_type,
            size,
            blake3,
            expires,
            restricted,
            deduplicated,
        } => {
            out.push(1);
            put_string(&mut out, bucket);
            out.extend_from_slice(&file.to_be_bytes());
            put_string(&mut out, filename);
            put_string(&mut out, content_type);
            out.extend_from_slice(&size.to_be_bytes());
            let hashed = put_hash(&mut out, blake3);
            put_option(&mut out, expires.map(i64::to_be_bytes));
            out.push(u8::from(*restricted) | (u8::from(*deduplicated) << 1));
            hashed
        }
        ChangeKind::ContentDeleted {
            bucket,
            file,
            size,
            blake3,
        } => {
            out.push(2);
            put_string(&mut out, bucket);
            out.extend_from_slice(&file.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            put_hash(&mut out, blake3)
        }
        ChangeKind::FileDeleted {
            bucket,
            file,
            size,
            blake3,
            had_content,
        } => {
            out.push(3);
            put_string(&mut out, bucket);
            out.extend_from_slice(&file.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            let hashed = put_hash(&mut out, blake3);
            out.push(u8::from(*had_content));
            hashed
        }
        ChangeKind::ExpiryChanged {
            bucket,
            file,
            before,
            after,
        } => {
            out.push(4);
            put_string(&mut out, bucket);
            out.extend_from_slice(&file.to_be_bytes());
            put_option(&mut out, before.map(i64::to_be_bytes));
            put_option(&mut out, after.map(i64::to_be_bytes));
            true
        }
        ChangeKind::RestrictedChanged {
            bucket,
            file,
            before,
            after,
        } => {
            out.push(5);
            put_string(&mut out, bucket);
            out.extend_from_slice(&file.to_be_bytes());
            out.push(u8::from(*before));
            out.push(u8::from(*after));
            true
        }
        ChangeKind::QuotaSet {
            bucket,
            before,
            after,
        } => {
            out.push(6);
            put_string(&mut out, bucket);
            put_option(&mut out, before.map(u64::to_be_bytes));
            put_option(&mut out, after.map(u64::to_be_bytes));
            true
        }
        ChangeKind::FileCollected {
            bucket,
            file,
            size,
            blake3,
        } => {
            out.push(7);
            put_string(&mut out, bucket);
            out.extend_from_slice(&file.to_be_bytes());
            out.extend_from_slice(&size.to_be_bytes());
            put_hash(&mut out, blake3)
        }
        ChangeKind::BlobCollected { blake3, size } => {
            out.push(8);
            let hashed = put_hash(&mut out, blake3);
            out.extend_from_slice(&size.to_be_bytes());
            hashed
        }
        ChangeKind::BlobDamaged {
            blake3,
            problem,
            size,
            found_size,
        } => {
            out.push(9);
            let hashed = put_hash(&mut out, blake3);
            put_string(&mut out, problem);
            out.extend_from_slice(&size.to_be_bytes());
            put_option(&mut out, found_size.map(u64::to_be_bytes));
            hashed
        }
        ChangeKind::BlobRepaired { blake3 } => {
            out.push(10);
            put_hash(&mut out, blake3)
        }
    };
    if encoded {
        out
    } else {
        // A hash that is not canonical hex (never made by the store itself): JSON keeps it
        // exactly. A `Change` has only strings, integers and booleans: serialising cannot fail.
        serde_json::to_vec(change).unwrap_or_default()
    }
}

/// Reads a stored payload, in either form. The revision is left 0 for the caller to set.
pub(crate) fn decode(payload: &[u8]) -> Decoded {
    match payload.first() {
        Some(b'{') => serde_json::from_slice(payload).map_or(Decoded::Malformed, Decoded::Change),
        Some(&VERSION_1) => {
            let mut reader = ByteReader::new(payload.get(1..).unwrap_or_default());
            match change(&mut reader) {
                Some(change) if reader.is_empty() => Decoded::Change(change),
                _ => Decoded::Malformed,
            }
        }
        Some(&version) => Decoded::UnknownVersion(version),
        None => Decoded::Malformed,
    }
}

fn put_option<const N: usize>(out: &mut Vec<u8>, value: Option<[u8; N]>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&bytes);
        }
    }
}

/// Writes the raw hash; false when `hex` is not the canonical form of a hash.
fn put_hash(out: &mut Vec<u8>, hex: &str) -> bool {
    match hex.parse::<Blake3Hash>() {
        Ok(hash) if hash.to_hex() == hex => {
            out.extend_from_slice(&hash.0);
            true
        }
        _ => false,
    }
}

fn hash(r: &mut ByteReader<'_>) -> Option<String> {
    Some(Blake3Hash(r.array()?).to_hex())
}

fn change(r: &mut ByteReader<'_>) -> Option<Change> {
    let time_us = r.i64()?;
    let actor = r.string()?;
    let kind = match r.u8()? {
        1 => {
            let bucket = r.string()?;
            let file = r.u64()?;
            let filename = r.string()?;
            let content_type = r.string()?;
            let size = r.u64()?;
            let blake3 = hash(r)?;
            let expires = r.option(ByteReader::i64)?;
            let flags = r.u8()?;
            if flags > 3 {
                return None;
            }
            ChangeKind::FileCreated {
                bucket,
                file,
                filename,
                content_type,
                size,
                blake3,
                expires,
                restricted: flags & 1 != 0,
                deduplicated: flags & 2 != 0,
            }
        }
        2 => ChangeKind::ContentDeleted {
            bucket: r.string()?,
            file: r.u64()?,
            size: r.u64()?,
            blake3: hash(r)?,
        },
        3 => ChangeKind::FileDeleted {
            bucket: r.string()?,
            file: r.u64()?,
            size: r.u64()?,
            blake3: hash(r)?,
            had_content: r.bool()?,
        },
        4 => ChangeKind::ExpiryChanged {
            bucket: r.string()?,
            file: r.u64()?,
            before: r.option(ByteReader::i64)?,
            after: r.option(ByteReader::i64)?,
        },
        5 => ChangeKind::RestrictedChanged {
            bucket: r.string()?,
            file: r.u64()?,
            before: r.bool()?,
            after: r.bool()?,
        },
        6 => ChangeKind::QuotaSet {
            bucket: r.string()?,
            before: r.option(ByteReader::u64)?,
            after: r.option(ByteReader::u64)?,
        },
        7 => ChangeKind::FileCollected {
            bucket: r.string()?,
            file: r.u64()?,
            size: r.u64()?,
            blake3: hash(r)?,
        },
        8 => ChangeKind::BlobCollected {
            blake3: hash(r)?,
            size: r.u64()?,
        },
        9 => ChangeKind::BlobDamaged {
            blake3: hash(r)?,
            problem: r.string()?,
            size: r.u64()?,
            found_size: r.option(ByteReader::u64)?,
        },
        10 => ChangeKind::BlobRepaired { blake3: hash(r)? },
        _ => return None,
    };
    Some(Change {
        revision: 0,
        time_us,
        actor,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_hex(byte: u8) -> String {
        Blake3Hash([byte; 32]).to_hex()
    }

    /// One change of every kind, with every optional field both ways.
    fn every_kind() -> Vec<Change> {
        let kinds = vec![
            ChangeKind::FileCreated {
                bucket: "logs".into(),
                file: 7,
                filename: "a b.txt".into(),
                content_type: "text/plain; charset=utf-8".into(),
                size: 4096,
                blake3: hash_hex(1),
                expires: Some(-5),
                restricted: true,
                deduplicated: false,
            },
            ChangeKind::FileCreated {
                bucket: "é".into(),
                file: u64::MAX,
                filename: String::new(),
                content_type: String::new(),
                size: 0,
                blake3: hash_hex(2),
                expires: None,
                restricted: false,
                deduplicated: true,
            },
            ChangeKind::ContentDeleted {
                bucket: "b".into(),
                file: 1,
                size: 2,
                blake3: hash_hex(3),
            },
            ChangeKind::FileDeleted {
                bucket: "b".into(),
                file: 1,
                size: 2,
                blake3: hash_hex(4),
                had_content: true,
            },
            ChangeKind::ExpiryChanged {
                bucket: "b".into(),
                file: 1,
                before: None,
                after: Some(i64::MIN),
            },
            ChangeKind::RestrictedChanged {
                bucket: "b".into(),
                file: 9,
                before: false,
                after: true,
            },
            ChangeKind::QuotaSet {
                bucket: "b".into(),
                before: Some(u64::MAX),
                after: None,
            },
            ChangeKind::FileCollected {
                bucket: "b".into(),
                file: 3,
                size: 4,
                blake3: hash_hex(5),
            },
            ChangeKind::BlobCollected {
                blake3: hash_hex(6),
                size: 5,
            },
            ChangeKind::BlobDamaged {
                blake3: hash_hex(7),
                problem: "corrupt".into(),
                size: 6,
                found_size: Some(5),
            },
            ChangeKind::BlobDamaged {
                blake3: hash_hex(8),
                problem: "missing".into(),
                size: 6,
                found_size: None,
            },
            ChangeKind::BlobRepaired {
                blake3: hash_hex(9),
            },
        ];
        kinds
            .into_iter()
            .map(|kind| Change {
                revision: 0,
                time_us: 1_700_000_000_000_123,
                actor: "alice".into(),
                kind,
            })
            .collect()
    }

    #[test]
    fn every_kind_round_trips_in_the_binary_layout() {
        for change in every_kind() {
            let payload = encode(&change);
            assert_eq!(payload[0], VERSION_1, "{change:?}");
            assert!(payload.len() < serde_json::to_vec(&change).unwrap().len());
            match decode(&payload) {
                Decoded::Change(decoded) => assert_eq!(decoded, change),
                other => panic!("{other:?} for {change:?}"),
            }
            // Every shorter prefix and any trailing byte is refused, never misread.
            for len in 1..payload.len() {
                assert!(
                    matches!(decode(&payload[..len]), Decoded::Malformed),
                    "{len}"
                );
            }
            let mut longer = payload.clone();
            longer.push(0);
            assert!(matches!(decode(&longer), Decoded::Malformed));
        }
    }

    #[test]
    fn events_older_builds_wrote_as_json_are_still_read() {
        // As the store wrote them before the binary layout (serde_json of a `Change`).
        let stored = br#"{"time_us":1700000000000000,"actor":"bob","kind":"file.created","bucket":"logs","file":3,"filename":"f","content_type":"application/octet-stream","size":12,"blake3":"0101010101010101010101010101010101010101010101010101010101010101","expires":null,"restricted":false,"deduplicated":true}"#;
        let Decoded::Change(change) = decode(stored) else {
            panic!("the JSON event was not read");
        };
        assert_eq!(change.actor, "bob");
        assert_eq!(change.kind.name(), "file.created");
        assert_eq!(change.kind.file().map(|f| f.0), Some(3));
        for change in every_kind() {
            let json = serde_json::to_vec(&change).unwrap();
            assert!(matches!(decode(&json), Decoded::Change(c) if c == change));
        }
    }

    #[test]
    fn a_hash_not_in_canonical_hex_is_kept_as_json_and_unknown_versions_are_refused() {
        let mut change = every_kind().remove(0);
        if let ChangeKind::FileCreated { blake3, .. } = &mut change.kind {
            *blake3 = hash_hex(0xab).to_uppercase();
        }
        let payload = encode(&change);
        assert_eq!(payload[0], b'{');
        assert!(matches!(decode(&payload), Decoded::Change(c) if c == change));
        assert!(matches!(decode(&[2, 0, 0]), Decoded::UnknownVersion(2)));
        assert!(matches!(decode(&[]), Decoded::Malformed));
    }
}

//! The key-encoding target.

use engine::keys::{KeyBuilder, KeyReader};

/// One component of a composite key, decoded from fuzzer bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Component {
    Byte(u8),
    U32(u32),
    U64(u64),
    I64(i64),
    Bytes(Vec<u8>),
}

/// Splits fuzzer bytes into a list of components: a tag byte selects the kind, then its bytes.
fn components(mut data: &[u8]) -> Vec<Component> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = data.split_first() {
        data = rest;
        let component = match tag % 5 {
            0 => match data.split_first() {
                Some((&b, rest)) => {
                    data = rest;
                    Component::Byte(b)
                }
                None => break,
            },
            1 => match data.split_first_chunk::<4>() {
                Some((b, rest)) => {
                    data = rest;
                    Component::U32(u32::from_be_bytes(*b))
                }
                None => break,
            },
            2 => match data.split_first_chunk::<8>() {
                Some((b, rest)) => {
                    data = rest;
                    Component::U64(u64::from_be_bytes(*b))
                }
                None => break,
            },
            3 => match data.split_first_chunk::<8>() {
                Some((b, rest)) => {
                    data = rest;
                    Component::I64(i64::from_be_bytes(*b))
                }
                None => break,
            },
            _ => {
                let len = data
                    .first()
                    .map_or(0, |&n| usize::from(n % 16))
                    .min(data.len().saturating_sub(1));
                let bytes = data.get(1..1 + len).unwrap_or_default().to_vec();
                data = data.get(1 + len..).unwrap_or_default();
                Component::Bytes(bytes)
            }
        };
        out.push(component);
    }
    out
}

fn encode(components: &[Component]) -> Vec<u8> {
    components
        .iter()
        .fold(KeyBuilder::new(), |key, component| match component {
            Component::Byte(b) => key.u8(*b),
            Component::U32(n) => key.u32(*n),
            Component::U64(n) => key.u64(*n),
            Component::I64(n) => key.i64(*n),
            Component::Bytes(b) => key.bytes(b),
        })
        .finish()
}

/// Key encodings: every composite key decodes to what was encoded; two keys of the same shape
/// compare as their components do; a reader over arbitrary bytes never panics.
pub fn key_encoding(data: &[u8]) {
    let (left, right) = data.split_at(data.len() / 2);
    let a = components(left);
    let b = components(right);
    let key_a = encode(&a);

    let mut reader = KeyReader::new(&key_a);
    for component in &a {
        let decoded = match component {
            Component::Byte(_) => reader.u8().map(Component::Byte),
            Component::U32(_) => reader.u32().map(Component::U32),
            Component::U64(_) => reader.u64().map(Component::U64),
            Component::I64(_) => reader.i64().map(Component::I64),
            Component::Bytes(_) => reader.bytes().map(Component::Bytes),
        };
        assert_eq!(
            decoded.as_ref(),
            Some(component),
            "key {key_a:02x?} of {a:?}"
        );
    }
    assert!(reader.is_empty(), "bytes left over in {key_a:02x?}");

    let same_shape = a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| std::mem::discriminant(x) == std::mem::discriminant(y));
    if same_shape {
        assert_eq!(
            a.cmp(&b),
            key_a.cmp(&encode(&b)),
            "order of {a:?} and {b:?}"
        );
    }

    // Arbitrary bytes: every reader method returns None or a value, never panics.
    let mut reader = KeyReader::new(data);
    while !reader.is_empty() {
        if reader.bytes().is_none() && reader.u64().is_none() && reader.u8().is_none() {
            break;
        }
    }
    let _ = engine::keys::prefix_successor(data);
}

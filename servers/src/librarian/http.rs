//! The HTTP semantics of downloads and uploads that do not depend on the store: byte ranges,
//! conditional requests and announced digests (RFC 9110, RFC 9530).

use axum::http::{header, HeaderMap};

use crate::common::ApiError;

/// What a download answers, given its request headers and the file's validators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 304 Not Modified.
    NotModified,
    /// 200 with the whole content.
    Full,
    /// 206 with bytes `start..=end`.
    Partial {
        /// The first byte.
        start: u64,
        /// The last byte, inclusive.
        end: u64,
    },
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
}

/// A strong entity tag for a BLAKE3 hash in hex: `"HEX"`.
pub fn etag(blake3_hex: &str) -> String {
    format!("\"{blake3_hex}\"")
}

/// Decides a GET or HEAD of content with the strong entity tag `etag` (quoted), last
/// modified at `last_modified` (Unix seconds) and `size` bytes long.
///
/// The order is RFC 9110's: `If-None-Match` (or, without it, `If-Modified-Since`) may answer
/// 304; then `Range` is honoured when it is one satisfiable byte range and `If-Range`, if
/// present, matches. Several ranges are answered with the whole content, which RFC 9110
/// allows; a syntactically invalid `Range` is ignored.
pub fn decide(headers: &HeaderMap, etag: &str, last_modified: i64, size: u64) -> Decision {
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        if let Ok(value) = value.to_str() {
            if none_match_hits(value, etag) {
                return Decision::NotModified;
            }
        }
    } else if let Some(since) = header_date(headers, header::IF_MODIFIED_SINCE) {
        if last_modified <= since {
            return Decision::NotModified;
        }
    }
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Decision::Full;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        let Ok(if_range) = if_range.to_str() else {
            return Decision::Full;
        };
        let if_range = if_range.trim();
        let matches = if if_range.starts_with('"') {
            if_range == etag
        } else if if_range.starts_with("W/") {
            false
        } else {
            httpdate::parse_http_date(if_range)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|d| d.as_secs() as i64 == last_modified)
        };
        if !matches {
            return Decision::Full;
        }
    }
    match parse_range(range, size) {
        RangeSpec::Ignore => Decision::Full,
        RangeSpec::Unsatisfiable => Decision::Unsatisfiable,
        RangeSpec::Bytes { start, end } => Decision::Partial { start, end },
    }
}

/// Whether an `If-None-Match` value lists `etag` (weak comparison) or is `*`.
fn none_match_hits(value: &str, etag: &str) -> bool {
    let bare = etag.trim_start_matches("W/");
    value
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == bare)
}

fn header_date(headers: &HeaderMap, name: header::HeaderName) -> Option<i64> {
    let value = headers.get(name)?.to_str().ok()?;
    let time = httpdate::parse_http_date(value.trim()).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    Ignore,
    Unsatisfiable,
    Bytes { start: u64, end: u64 },
}

fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => RangeSpec::Ignore,
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        (first, "") => match number(first) {
            None => RangeSpec::Ignore,
            Some(start) if start >= size => RangeSpec::Unsatisfiable,
            Some(start) => RangeSpec::Bytes {
                start,
                end: size - 1,
            },
        },
        (first, last) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    RangeSpec::Unsatisfiable
                } else {
                    RangeSpec::Bytes {
                        start,
                        end: end.min(size - 1),
                    }
                }
            }
            _ => RangeSpec::Ignore,
        },
    }
}

/// A digest the client announced for its upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// `X-Content-BLAKE3: HEX`.
    Blake3([u8; 32]),
    /// `Content-Digest: sha-256=:BASE64:`.
    Sha256([u8; 32]),
}

/// The digests announced in an upload's headers (both may be given).
///
/// # Errors
/// 400 `bad_digest` when a header is present but malformed or empty; a `Content-Digest` that lists
/// only algorithms other than SHA-256 is ignored, as RFC 9530 allows.
pub fn expected_digests(headers: &HeaderMap) -> Result<Vec<Expected>, ApiError> {
    let mut expected = Vec::new();
    if let Some(value) = headers.get("x-content-blake3") {
        let bytes = value
            .to_str()
            .ok()
            .and_then(|s| hex::decode(s.trim()).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                ApiError::bad_request("bad_digest", "X-Content-BLAKE3 must be 64 hex digits")
            })?;
        expected.push(Expected::Blake3(bytes));
    }
    if let Some(value) = headers.get("content-digest") {
        let value = value
            .to_str()
            .map_err(|_| ApiError::bad_request("bad_digest", "Content-Digest is not ASCII"))?;
        // RFC 9530 makes Content-Digest an RFC 8941 Dictionary; sfv parses it (keys,
        // parameters, the base64 of byte sequences) as the RFC says, so a field another
        // client library serialised is read the same way.
        let dictionary: sfv::Dictionary = sfv::Parser::new(value)
            .parse()
            .map_err(|_| ApiError::bad_request("bad_digest", "malformed Content-Digest"))?;
        // RFC 8941 reads an empty field as an empty Dictionary; a client that sends the header
        // meant to announce a digest, so an empty one is refused rather than ignored.
        if dictionary.is_empty() {
            return Err(ApiError::bad_request(
                "bad_digest",
                "Content-Digest lists no digest",
            ));
        }
        // RFC 9530: every member's value is a Byte Sequence, whatever the algorithm; a member
        // that is not one (`null`, a number, an inner list) makes the field malformed.
        let mut sha256 = None;
        for (algorithm, entry) in &dictionary {
            let bytes = match entry {
                sfv::ListEntry::Item(item) => item.bare_item.as_byte_sequence(),
                sfv::ListEntry::InnerList(_) => None,
            }
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_digest",
                    "Content-Digest members must be :BASE64: byte sequences",
                )
            })?;
            if algorithm.as_str() == "sha-256" {
                sha256 = Some(bytes);
            }
        }
        if let Some(bytes) = sha256 {
            let bytes = <[u8; 32]>::try_from(bytes).map_err(|_| {
                ApiError::bad_request(
                    "bad_digest",
                    "Content-Digest sha-256 must be :BASE64: of 32 bytes",
                )
            })?;
            expected.push(Expected::Sha256(bytes));
        }
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use base64::Engine as _;

    const ETAG: &str = "\"abc\"";
    const MODIFIED: i64 = 1_700_000_000;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn date(secs: i64) -> String {
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64))
    }

    #[test]
    fn ranges() {
        let d = |range: &str, size| decide(&headers(&[("range", range)]), ETAG, MODIFIED, size);
        assert_eq!(d("bytes=0-9", 100), Decision::Partial { start: 0, end: 9 });
        assert_eq!(
            d("bytes=90-", 100),
            Decision::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            d("bytes=-10", 100),
            Decision::Partial { start: 90, end: 99 }
        );
        assert_eq!(
            d("bytes=-1000", 100),
            Decision::Partial { start: 0, end: 99 }
        );
        assert_eq!(
            d("bytes=50-1000", 100),
            Decision::Partial { start: 50, end: 99 }
        );
        assert_eq!(d("bytes=100-", 100), Decision::Unsatisfiable);
        assert_eq!(d("bytes=0-", 0), Decision::Unsatisfiable);
        assert_eq!(d("bytes=-0", 100), Decision::Unsatisfiable);
        assert_eq!(d("bytes=9-0", 100), Decision::Full);
        assert_eq!(d("bytes=0-1,5-6", 100), Decision::Full);
        assert_eq!(d("items=0-1", 100), Decision::Full);
        assert_eq!(d("bytes=x-1", 100), Decision::Full);
    }

    #[test]
    fn if_range_with_etag_or_date() {
        let h = |if_range: &str| {
            decide(
                &headers(&[("range", "bytes=10-"), ("if-range", if_range)]),
                ETAG,
                MODIFIED,
                100,
            )
        };
        assert_eq!(h(ETAG), Decision::Partial { start: 10, end: 99 });
        assert_eq!(h("\"other\""), Decision::Full);
        assert_eq!(h("W/\"abc\""), Decision::Full);
        assert_eq!(h(&date(MODIFIED)), Decision::Partial { start: 10, end: 99 });
        assert_eq!(h(&date(MODIFIED - 1)), Decision::Full);
    }

    #[test]
    fn conditionals() {
        let h = |pairs: &[(&'static str, &str)]| decide(&headers(pairs), ETAG, MODIFIED, 100);
        assert_eq!(h(&[("if-none-match", ETAG)]), Decision::NotModified);
        assert_eq!(
            h(&[("if-none-match", "\"x\", W/\"abc\"")]),
            Decision::NotModified
        );
        assert_eq!(h(&[("if-none-match", "*")]), Decision::NotModified);
        assert_eq!(h(&[("if-none-match", "\"x\"")]), Decision::Full);
        assert_eq!(
            h(&[("if-modified-since", &date(MODIFIED))]),
            Decision::NotModified
        );
        assert_eq!(
            h(&[("if-modified-since", &date(MODIFIED - 5))]),
            Decision::Full
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            h(&[
                ("if-none-match", "\"x\""),
                ("if-modified-since", &date(MODIFIED))
            ]),
            Decision::Full
        );
    }

    #[test]
    fn digests() {
        let sha = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(sha);
        let got = expected_digests(&headers(&[
            ("content-digest", &format!("md5=:AAAA:, sha-256=:{b64}:")),
            ("x-content-blake3", &hex::encode([9u8; 32])),
        ]))
        .unwrap();
        assert_eq!(got, vec![Expected::Blake3([9; 32]), Expected::Sha256(sha)]);
        assert!(expected_digests(&headers(&[("x-content-blake3", "abc")])).is_err());
        assert!(expected_digests(&headers(&[("content-digest", "sha-256=:AAAA:")])).is_err());
        // Not a Dictionary (RFC 8941): refused as a whole, not read member by member.
        assert!(expected_digests(&headers(&[("content-digest", "sha-256=:!!:")])).is_err());
        assert!(expected_digests(&headers(&[("content-digest", "sha-256")])).is_err());
        assert!(expected_digests(&headers(&[("content-digest", "")])).is_err());
        assert!(expected_digests(&headers(&[("content-digest", "  ")])).is_err());
        // Every member's value is a byte sequence (RFC 9530), known algorithm or not.
        assert!(expected_digests(&headers(&[("content-digest", "null,null")])).is_err());
        assert!(expected_digests(&headers(&[("content-digest", "unixsum=30637")])).is_err());
        // Parameters are allowed on a member; unknown algorithms are ignored.
        assert_eq!(
            expected_digests(&headers(&[(
                "content-digest",
                &format!("unixsum=:AAAA:, sha-256=:{b64}:;x=1"),
            )]))
            .unwrap(),
            vec![Expected::Sha256(sha)]
        );
        assert!(expected_digests(&headers(&[])).unwrap().is_empty());
    }
}

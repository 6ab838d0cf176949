//! Stateless access tokens for restricted files.
//!
//! A token is `<expiry>.<mac>`: the expiry in whole seconds since the Unix epoch (1 to 19
//! ASCII digits, no sign, no leading `+`) and 64 lowercase hex digits of a keyed BLAKE3 MAC
//! with a 32-byte server secret over
//!
//! ```text
//! "lpstore-token-v1" || file id (u64 BE) || expiry (i64 BE) || len(filename) (u32 BE) || filename
//! ```
//!
//! Length prefixes make the encoding injective, so a token for one (file, name, expiry) is
//! never valid for another. Two secrets are accepted at once (the current and the previous
//! one) so that the secret can be rotated without invalidating tokens already handed out.
//! MACs are compared in constant time.

use std::fmt;
use std::time::Duration;

use crate::types::{FileId, Timestamp};

const DOMAIN: &[u8] = b"lpstore-token-v1";

/// Why a token was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token was given.
    #[error("a token is required")]
    Missing,
    /// The token is not of the form `<expiry>.<64 hex digits>`.
    #[error("the token is malformed")]
    Malformed,
    /// The token's expiry has passed.
    #[error("the token has expired")]
    Expired,
    /// The MAC does not match this file under any accepted secret.
    #[error("the token is not valid for this file")]
    BadSignature,
}

/// A parsed token: its expiry and MAC, not yet checked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The expiry, seconds since the epoch.
    pub expires_secs: i64,
    mac: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("expires_secs", &self.expires_secs)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            self.expires_secs,
            crate::types::to_hex(&self.mac)
        )
    }
}

impl Token {
    /// The longest string [`Token::parse`] accepts.
    pub const MAX_LEN: usize = 19 + 1 + 64;

    /// Parses a token string; rejects anything that is not exactly `<expiry>.<mac>`.
    ///
    /// # Errors
    /// [`TokenError::Malformed`].
    pub fn parse(s: &str) -> Result<Token, TokenError> {
        if s.len() > Self::MAX_LEN {
            return Err(TokenError::Malformed);
        }
        let (expiry, mac) = s.split_once('.').ok_or(TokenError::Malformed)?;
        if expiry.is_empty() || expiry.len() > 19 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::Malformed);
        }
        if mac.len() != 64 || !mac.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(TokenError::Malformed);
        }
        let expires_secs = expiry.parse::<i64>().map_err(|_| TokenError::Malformed)?;
        let mac = crate::types::hex_decode::<32>(mac).ok_or(TokenError::Malformed)?;
        Ok(Token { expires_secs, mac })
    }
}

/// Signs and checks tokens with a current secret and optionally the previous one.
#[derive(Clone)]
pub struct TokenSigner {
    current: [u8; 32],
    previous: Option<[u8; 32]>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("has_previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// The default lifetime of a token: 1 day.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

impl TokenSigner {
    /// Signs with `current`; accepts tokens made with `current` or `previous`.
    pub fn new(current: [u8; 32], previous: Option<[u8; 32]>) -> Self {
        TokenSigner { current, previous }
    }

    /// A signer with a random secret (tokens do not survive a restart).
    pub fn random() -> Self {
        TokenSigner::new(rand::random(), None)
    }

    fn mac(secret: &[u8; 32], id: FileId, filename: &str, expires_secs: i64) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(secret);
        hasher.update(DOMAIN);
        hasher.update(&id.0.to_be_bytes());
        hasher.update(&expires_secs.to_be_bytes());
        let len = u32::try_from(filename.len()).unwrap_or(u32::MAX);
        hasher.update(&len.to_be_bytes());
        hasher.update(filename.as_bytes());
        *hasher.finalize().as_bytes()
    }

    /// A token for `id`/`filename` valid until `expires` (rounded down to the second).
    pub fn sign(&self, id: FileId, filename: &str, expires: Timestamp) -> Token {
        let expires_secs = expires.as_unix_secs();
        Token {
            expires_secs,
            mac: Self::mac(&self.current, id, filename, expires_secs),
        }
    }

    /// Checks `token` for `id`/`filename` at time `now`.
    ///
    /// # Errors
    /// [`TokenError::Malformed`], [`TokenError::Expired`] or [`TokenError::BadSignature`].
    pub fn verify(
        &self,
        token: &str,
        id: FileId,
        filename: &str,
        now: Timestamp,
    ) -> Result<(), TokenError> {
        let token = Token::parse(token)?;
        let given = blake3::Hash::from_bytes(token.mac);
        let matches = |secret: &[u8; 32]| {
            // blake3::Hash equality is constant-time.
            given == blake3::Hash::from_bytes(Self::mac(secret, id, filename, token.expires_secs))
        };
        let valid = matches(&self.current) || self.previous.as_ref().is_some_and(matches);
        if !valid {
            return Err(TokenError::BadSignature);
        }
        if now.as_unix_secs() >= token.expires_secs {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_malformed() {
        let good = format!("123.{}", "a".repeat(64));
        assert!(Token::parse(&good).is_ok());
        assert_eq!(Token::parse(&good).unwrap().to_string(), good);
        for bad in [
            String::new(),
            ".".to_string(),
            format!(".{}", "a".repeat(64)),
            format!("-1.{}", "a".repeat(64)),
            format!("+1.{}", "a".repeat(64)),
            format!("1.{}", "A".repeat(64)),
            format!("1.{}", "a".repeat(63)),
            format!("1.{}", "a".repeat(65)),
            format!("1.1.{}", "a".repeat(64)),
            format!("99999999999999999999.{}", "a".repeat(64)),
            format!("1.{}é", "a".repeat(62)),
        ] {
            assert_eq!(Token::parse(&bad), Err(TokenError::Malformed), "{bad:?}");
        }
    }
}

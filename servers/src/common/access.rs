//! Access control: client addresses in configured CIDR ranges, and HTTP Basic credentials whose
//! passwords are stored as salted hashes and compared in constant time.
//!
//! A stored password is `blake3:SALT_HEX:DIGEST_HEX`, the digest being BLAKE3 keyed-less over
//! the salt followed by the password. The credentials are service secrets generated at random
//! (high entropy), not passwords people choose, so a fast hash with a per-credential salt is
//! enough, and it keeps the per-request cost of checking a writer to a microsecond: a slow
//! password hash (argon2) would cap uploads at a few hundred a second per core.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::config::ServerConfig;
use super::error::ApiError;
use super::feed::{parse_on_behalf_of, Actor, ON_BEHALF_OF};
use super::proxy::{self, ProxiedPeer};

/// A user name and its salted password hash, as written in the configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The user name.
    pub user: String,
    /// `blake3:SALT_HEX:DIGEST_HEX` (see [`hash_password`]).
    pub hash: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .field("hash", &"<hidden>")
            .finish()
    }
}

/// A parsed credential ready for checking.
#[derive(Clone)]
struct Verifier {
    user: Vec<u8>,
    salt: [u8; 16],
    digest: [u8; 32],
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish_non_exhaustive()
    }
}

fn digest(salt: &[u8; 16], password: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"lpstore credential v1\0");
    hasher.update(salt);
    hasher.update(password);
    *hasher.finalize().as_bytes()
}

/// Hashes `password` with a fresh random salt, in the form the configuration stores.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    format!(
        "blake3:{}:{}",
        hex::encode(salt),
        hex::encode(digest(&salt, password.as_bytes()))
    )
}

/// A configured credential that cannot be used; names the user and the part that is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The stored hash is not `blake3:SALT_HEX:DIGEST_HEX`.
    #[error("the hash of user {user:?} is not of the form blake3:SALT_HEX:DIGEST_HEX")]
    Form {
        /// The credential's user.
        user: String,
    },
    /// The salt is not 16 bytes of hex.
    #[error("the salt of user {user:?} is not 16 hex bytes")]
    Salt {
        /// The credential's user.
        user: String,
    },
    /// The digest is not 32 bytes of hex.
    #[error("the digest of user {user:?} is not 32 hex bytes")]
    Digest {
        /// The credential's user.
        user: String,
    },
}

impl Credential {
    fn verifier(&self) -> Result<Verifier, CredentialError> {
        let user = || self.user.clone();
        let mut parts = self.hash.split(':');
        let (Some("blake3"), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CredentialError::Form { user: user() });
        };
        let salt = hex::decode(salt)
            .ok()
            .and_then(|s| <[u8; 16]>::try_from(s).ok())
            .ok_or_else(|| CredentialError::Salt { user: user() })?;
        let digest = hex::decode(hash)
            .ok()
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .ok_or_else(|| CredentialError::Digest { user: user() })?;
        Ok(Verifier {
            user: self.user.as_bytes().to_vec(),
            salt,
            digest,
        })
    }
}

/// Who may call: the allowed networks, the credentials, and whether they are required.
#[derive(Clone, Debug)]
pub struct AccessPolicy {
    allowed: Vec<IpNet>,
    verifiers: Vec<Verifier>,
    require_credentials: bool,
    open_reads: bool,
    trusted_callers: Vec<Vec<u8>>,
    trusted_proxies: Vec<IpNet>,
    realm: &'static str,
}

impl AccessPolicy {
    /// The policy of a server configuration. In development mode no credentials are asked
    /// for (the configuration only validates with a loopback address then).
    ///
    /// # Errors
    /// [`CredentialError`] naming the credential whose hash is malformed.
    pub fn from_config(
        config: &ServerConfig,
        realm: &'static str,
    ) -> Result<Self, CredentialError> {
        let verifiers = config
            .credentials
            .iter()
            .map(Credential::verifier)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AccessPolicy {
            allowed: config.allowed_cidrs.clone(),
            verifiers,
            require_credentials: !config.dev,
            open_reads: config.open_reads,
            trusted_callers: config
                .trusted_callers
                .iter()
                .map(|user| user.as_bytes().to_vec())
                .collect(),
            trusted_proxies: config.trusted_proxies.clone(),
            realm,
        })
    }

    /// Whether `ip` lies in an allowed network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        proxy::in_networks(&self.allowed, ip)
    }

    /// The client's address of a request: the peer of its connection, or, when that is a
    /// trusted proxy, the client the proxy names ([`proxy::client_address`]). A request
    /// without a peer (built in-process without `ConnectInfo`) comes from nowhere allowed.
    ///
    /// # Errors
    /// 400 `bad_forwarded_for` for a malformed `X-Forwarded-For` from a trusted proxy.
    pub fn client_ip(&self, request: &Request) -> Result<IpAddr, ApiError> {
        let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
            return Ok(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        };
        let proxied = request
            .extensions()
            .get::<ProxiedPeer>()
            .map(|ProxiedPeer(addr)| addr.ip());
        self.client_ip_of(peer.ip(), proxied, request.headers())
    }

    /// [`AccessPolicy::client_ip`] from a request's parts: its TCP peer, the PROXY header's
    /// source and its headers (only `X-Forwarded-For` is read).
    ///
    /// # Errors
    /// A malformed `X-Forwarded-For` from a trusted proxy (`bad_forwarded_for`).
    pub fn client_ip_of(
        &self,
        peer: IpAddr,
        proxied: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<IpAddr, ApiError> {
        proxy::client_address(&self.trusted_proxies, peer, proxied, headers)
    }

    /// Whether an `Authorization` header value carries valid credentials. Every configured
    /// credential is checked, in constant time each, whatever matches first.
    pub fn credentials_valid(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let mut ok = subtle::Choice::from(0u8);
        for verifier in &self.verifiers {
            let user_ok = verifier.user.as_slice().ct_eq(user.as_slice());
            let digest_ok = digest(&verifier.salt, &password).ct_eq(&verifier.digest);
            ok |= user_ok & digest_ok;
        }
        bool::from(ok)
    }

    /// Checks a writer: an allowed address and, unless in development mode, credentials.
    ///
    /// # Errors
    /// 403 `forbidden_address` or 401 `unauthorized`.
    pub fn check_writer(
        &self,
        client: IpAddr,
        authorization: Option<&[u8]>,
    ) -> Result<(), ApiError> {
        if !self.address_allowed(client) {
            return Err(ApiError::forbidden_address());
        }
        if self.require_credentials && !self.credentials_valid(authorization) {
            return Err(ApiError::unauthorized(self.realm));
        }
        Ok(())
    }

    /// Who a checked writer's change is recorded as: the Basic user, or the person named by
    /// `X-On-Behalf-Of` when the user is a trusted caller with valid credentials, or
    /// [`Actor::ANONYMOUS`] without credentials (development mode).
    ///
    /// # Errors
    /// 403 `forbidden_on_behalf_of` when an untrusted caller sends `X-On-Behalf-Of`; 400
    /// `bad_on_behalf_of` for a malformed name.
    pub fn actor(
        &self,
        authorization: Option<&[u8]>,
        on_behalf_of: Option<&axum::http::HeaderValue>,
    ) -> Result<Actor, ApiError> {
        let user = authorization.and_then(parse_basic).map(|(user, _)| user);
        let Some(on_behalf_of) = on_behalf_of else {
            return Ok(Actor(match user {
                Some(user) => String::from_utf8_lossy(&user).into_owned(),
                None => Actor::ANONYMOUS.to_owned(),
            }));
        };
        let trusted = user
            .as_ref()
            .is_some_and(|user| self.trusted_callers.contains(user))
            && self.credentials_valid(authorization);
        if !trusted {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden_on_behalf_of",
                "only a trusted caller may act on behalf of someone (X-On-Behalf-Of)",
            ));
        }
        Ok(Actor(parse_on_behalf_of(on_behalf_of)?))
    }

    /// Checks a reader of a service whose reads are guarded (the directory): an allowed
    /// address and, unless reads are open or in development mode, credentials.
    ///
    /// # Errors
    /// 403 `forbidden_address` or 401 `unauthorized`.
    pub fn check_reader(
        &self,
        client: IpAddr,
        authorization: Option<&[u8]>,
    ) -> Result<(), ApiError> {
        if !self.address_allowed(client) {
            return Err(ApiError::forbidden_address());
        }
        if self.require_credentials && !self.open_reads && !self.credentials_valid(authorization) {
            return Err(ApiError::unauthorized(self.realm));
        }
        Ok(())
    }
}

fn parse_basic(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Middleware for writer routes: [`AccessPolicy::check_writer`], then the request's
/// [`Actor`] ([`AccessPolicy::actor`]) into its extensions for the handler.
pub async fn require_writer(
    State(policy): State<Arc<AccessPolicy>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    policy.check_writer(policy.client_ip(&request)?, auth)?;
    let actor = policy.actor(auth, request.headers().get(ON_BEHALF_OF))?;
    let mut request = request;
    request.extensions_mut().insert(actor);
    Ok(next.run(request).await)
}

/// Middleware for routes open to every allowed address (health, metrics).
pub async fn require_address(
    State(policy): State<Arc<AccessPolicy>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !policy.address_allowed(policy.client_ip(&request)?) {
        return Err(ApiError::forbidden_address());
    }
    Ok(next.run(request).await)
}

/// Middleware for guarded reader routes: [`AccessPolicy::check_reader`].
pub async fn require_reader(
    State(policy): State<Arc<AccessPolicy>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    policy.check_reader(policy.client_ip(&request)?, auth)?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
        .into_bytes()
    }

    fn policy(dev: bool) -> AccessPolicy {
        let config = ServerConfig {
            dev,
            allowed_cidrs: vec!["10.1.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()],
            credentials: vec![Credential {
                user: "uploader".into(),
                hash: hash_password("s3cret:with:colons"),
            }],
            ..ServerConfig::default()
        };
        AccessPolicy::from_config(&config, "test").unwrap()
    }

    #[test]
    fn credentials_are_checked_against_the_hash() {
        let p = policy(false);
        assert!(p.credentials_valid(Some(&basic("uploader", "s3cret:with:colons"))));
        assert!(!p.credentials_valid(Some(&basic("uploader", "s3cret"))));
        assert!(!p.credentials_valid(Some(&basic("other", "s3cret:with:colons"))));
        assert!(!p.credentials_valid(Some(b"Bearer abc")));
        assert!(!p.credentials_valid(Some(b"Basic !!notbase64")));
        assert!(!p.credentials_valid(None));
    }

    #[test]
    fn hashes_are_salted() {
        assert_ne!(hash_password("x"), hash_password("x"));
        let bad = Credential {
            user: "u".into(),
            hash: "sha1:00:00".into(),
        };
        assert!(bad.verifier().is_err());
        assert!(!format!("{bad:?}").contains("sha1"));
    }

    #[test]
    fn actors_are_the_basic_user_or_whom_a_trusted_caller_names() {
        let mut config = ServerConfig {
            credentials: vec![
                Credential {
                    user: "sso".into(),
                    hash: hash_password("pw1"),
                },
                Credential {
                    user: "uploader".into(),
                    hash: hash_password("pw2"),
                },
            ],
            ..ServerConfig::default()
        };
        config.trusted_callers = vec!["sso".into()];
        let p = AccessPolicy::from_config(&config, "test").unwrap();
        let sso = basic("sso", "pw1");
        let uploader = basic("uploader", "pw2");
        let alice = axum::http::HeaderValue::from_static("alice");
        assert_eq!(p.actor(Some(&uploader), None).unwrap().as_str(), "uploader");
        assert_eq!(p.actor(None, None).unwrap().as_str(), Actor::ANONYMOUS);
        assert_eq!(p.actor(Some(&sso), Some(&alice)).unwrap().as_str(), "alice");
        let refused = p.actor(Some(&uploader), Some(&alice)).unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::FORBIDDEN);
        assert_eq!(refused.code(), "forbidden_on_behalf_of");
        // A trusted name with a wrong password is not trusted.
        let forged = basic("sso", "wrong");
        assert!(p.actor(Some(&forged), Some(&alice)).is_err());
        let too_long = axum::http::HeaderValue::from_str(&"a".repeat(256)).unwrap();
        assert_eq!(
            p.actor(Some(&sso), Some(&too_long)).unwrap_err().code(),
            "bad_on_behalf_of"
        );
    }

    #[test]
    fn addresses_are_checked_before_credentials() {
        let p = policy(false);
        let inside: IpAddr = "10.1.2.3".parse().unwrap();
        let outside: IpAddr = "10.2.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.9.9".parse().unwrap();
        let good = basic("uploader", "s3cret:with:colons");
        assert!(p.check_writer(inside, Some(&good)).is_ok());
        assert!(p.check_writer(mapped, Some(&good)).is_ok());
        assert_eq!(
            p.check_writer(outside, Some(&good)).unwrap_err().code(),
            "forbidden_address"
        );
        assert_eq!(
            p.check_writer(inside, None).unwrap_err().code(),
            "unauthorized"
        );
        let dev = policy(true);
        assert!(dev.check_writer(inside, None).is_ok());
        assert!(dev.check_writer(outside, None).is_err());
    }
}

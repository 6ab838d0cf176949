//! The client behind a trusted proxy: HAProxy's PROXY protocol v2 header on a connection, and
//! `X-Forwarded-For` on a request.
//!
//! Behind a proxy every connection comes from the proxy's address, so an address allowlist
//! would see only the proxy. A server configured with `server.trusted_proxies` (CIDRs) takes
//! the client's address from what those proxies say, and from nobody else:
//!
//! - **PROXY protocol v2** (HAProxy's `send-proxy-v2`): a binary header before the first HTTP
//!   byte, naming the client's address. The accept loop reads it from any connection that
//!   starts with its 12-byte signature (an HTTP request starts with a method name, so the two
//!   cannot be confused) and records it as [`ProxiedPeer`]; the access checks use it only
//!   when the connection's peer is a trusted proxy. A header with the signature but a wrong
//!   version, command, family or length closes the connection with a 400: after it there is
//!   no telling where the HTTP request begins.
//! - **`X-Forwarded-For`** (HAProxy's `option forwardfor`, nginx, Apache): a comma-separated
//!   list each proxy appends the address it received from to. Only the part appended by
//!   trusted proxies can be believed, so the client is the rightmost address that is not
//!   itself a trusted proxy (if every address is trusted, the leftmost). A malformed list
//!   from a trusted proxy is refused with 400 `bad_forwarded_for`; from an untrusted peer the
//!   header is ignored, whatever it holds.
//!
//! The walk applies both in turn: the connection's peer, then, while the address in hand is a
//! trusted proxy, the PROXY header's source, then `X-Forwarded-For` from right to left.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::http::HeaderMap;
use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::error::ApiError;

/// The PROXY protocol v2 signature (the first 12 bytes of its header).
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The client address a PROXY v2 header named for a connection (a request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxiedPeer(pub SocketAddr);

/// Why a PROXY v2 header was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// The version nibble is not 2.
    #[error("PROXY header version {0} (only 2 is understood)")]
    Version(u8),
    /// The command nibble is neither LOCAL (0) nor PROXY (1).
    #[error("PROXY header command {0} is neither LOCAL nor PROXY")]
    Command(u8),
    /// The address block is shorter than its family needs.
    #[error("PROXY header address block of {len} bytes is too short for family {family:#04x}")]
    Short {
        /// The family and transport byte.
        family: u8,
        /// The announced length of the address block.
        len: usize,
    },
    /// The connection ended or timed out inside the header.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Reads a PROXY v2 header if `stream` starts with one, and returns the client address it
/// names (`None` for a LOCAL command, an unspecified family, or no header at all). Waits at
/// most `timeout` for the header's bytes; reads nothing when the stream does not start with
/// the signature.
///
/// # Errors
/// [`ProxyHeaderError`] for a header with the signature that cannot be used.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let read = async {
        if !starts_with_signature(stream).await? {
            return Ok(None);
        }
        let mut fixed = [0u8; 16];
        stream.read_exact(&mut fixed).await?;
        let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        let mut block = vec![0u8; len];
        stream.read_exact(&mut block).await?;
        parse(fixed[12], fixed[13], &block)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(ProxyHeaderError::Io(io::ErrorKind::TimedOut.into())),
    }
}

/// Whether the stream's first bytes are the signature, peeking (consuming nothing). Decides
/// on the first byte when it is not `\r`, so an HTTP request never waits here.
async fn starts_with_signature(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; SIGNATURE.len()];
    loop {
        let seen = stream.peek(&mut buf).await?;
        if seen == 0 || buf[..seen] != SIGNATURE[..seen] {
            return Ok(false);
        }
        if seen == SIGNATURE.len() {
            return Ok(true);
        }
        // A prefix of the signature so far: wait for more bytes.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The client address of a header's version/command byte, family byte and address block.
fn parse(
    version_command: u8,
    family: u8,
    block: &[u8],
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let version = version_command >> 4;
    if version != 2 {
        return Err(ProxyHeaderError::Version(version));
    }
    match version_command & 0x0f {
        // LOCAL: the proxy speaks for itself (its health checks): the peer is the client.
        0 => return Ok(None),
        1 => {}
        other => return Err(ProxyHeaderError::Command(other)),
    }
    let short = || ProxyHeaderError::Short {
        family,
        len: block.len(),
    };
    // The high nibble is the address family, the low one the transport (stream or datagram).
    match family >> 4 {
        1 => {
            let b: [u8; 12] = block
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        2 => {
            let b: [u8; 36] = block
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([b[32], b[33]]),
            )))
        }
        // UNSPEC (or a UNIX socket): no usable address; the peer stands.
        _ => Ok(None),
    }
}

/// Whether `ip` lies in one of `nets` (an IPv4-mapped IPv6 address counts as IPv4).
pub fn in_networks(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|net| net.contains(&ip))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// The client's address: the connection's `peer`, then — only while the address in hand is a
/// trusted proxy — the PROXY header's `proxied` source, then the `X-Forwarded-For` entries
/// from right to left.
///
/// # Errors
/// 400 `bad_forwarded_for` when a trusted proxy sent an `X-Forwarded-For` that is not a list
/// of IP addresses.
pub fn client_address(
    trusted: &[IpNet],
    peer: IpAddr,
    proxied: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<IpAddr, ApiError> {
    let mut client = canonical(peer);
    if trusted.is_empty() || !in_networks(trusted, client) {
        return Ok(client);
    }
    if let Some(proxied) = proxied {
        client = canonical(proxied);
        if !in_networks(trusted, client) {
            return Ok(client);
        }
    }
    let mut entries = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().map_err(|_| bad_forwarded_for())?;
        for entry in text.split(',') {
            entries.push(parse_entry(entry.trim()).ok_or_else(bad_forwarded_for)?);
        }
    }
    for entry in entries.into_iter().rev() {
        client = canonical(entry);
        if !in_networks(trusted, client) {
            break;
        }
    }
    Ok(client)
}

/// One `X-Forwarded-For` entry: an address, an IPv6 address in brackets, either with a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    entry.parse::<SocketAddr>().ok().map(|addr| addr.ip())
}

fn bad_forwarded_for() -> ApiError {
    ApiError::bad_request(
        "bad_forwarded_for",
        "X-Forwarded-For from a trusted proxy is not a comma-separated list of IP addresses",
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let headers = forwarded(&["203.0.113.9, 198.51.100.7"]);
        // From a trusted proxy: the rightmost untrusted entry.
        assert_eq!(
            client_address(&trusted, ip("10.0.0.1"), None, &headers).unwrap(),
            ip("198.51.100.7")
        );
        // From anyone else: the header is ignored.
        assert_eq!(
            client_address(&trusted, ip("192.0.2.1"), None, &headers).unwrap(),
            ip("192.0.2.1")
        );
        // No trusted proxies configured: ignored too.
        assert_eq!(
            client_address(&[], ip("10.0.0.1"), None, &headers).unwrap(),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_entries_are_skipped_from_the_right() {
        let trusted = nets(&["10.0.0.0/8"]);
        let chain = forwarded(&["203.0.113.9", "10.2.0.1, 10.3.0.1"]);
        assert_eq!(
            client_address(&trusted, ip("10.0.0.1"), None, &chain).unwrap(),
            ip("203.0.113.9")
        );
        let all_trusted = forwarded(&["10.2.0.1, 10.3.0.1"]);
        assert_eq!(
            client_address(&trusted, ip("10.0.0.1"), None, &all_trusted).unwrap(),
            ip("10.2.0.1")
        );
        let with_ports = forwarded(&["[2001:db8::1]:4711, 198.51.100.7:80"]);
        assert_eq!(
            client_address(&trusted, ip("10.0.0.1"), None, &with_ports).unwrap(),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_malformed_list_from_a_trusted_proxy_is_refused() {
        let trusted = nets(&["10.0.0.0/8"]);
        for bad in ["", "not-an-address", "203.0.113.9,,198.51.100.7", "unknown"] {
            let headers = forwarded(&[bad]);
            let error = client_address(&trusted, ip("10.0.0.1"), None, &headers).unwrap_err();
            assert_eq!(error.code(), "bad_forwarded_for", "{bad:?}");
            // The same from an untrusted peer is ignored.
            assert_eq!(
                client_address(&trusted, ip("192.0.2.1"), None, &headers).unwrap(),
                ip("192.0.2.1")
            );
        }
    }

    #[test]
    fn the_proxy_header_names_the_client_of_a_trusted_peer() {
        let trusted = nets(&["127.0.0.1/32"]);
        let none = HeaderMap::new();
        let proxied = Some(ip("192.0.2.44"));
        assert_eq!(
            client_address(&trusted, ip("127.0.0.1"), proxied, &none).unwrap(),
            ip("192.0.2.44")
        );
        assert_eq!(
            client_address(&trusted, ip("127.0.0.2"), proxied, &none).unwrap(),
            ip("127.0.0.2")
        );
        // A mapped IPv4 peer counts as its IPv4 address.
        assert_eq!(
            client_address(&trusted, ip("::ffff:127.0.0.1"), proxied, &none).unwrap(),
            ip("192.0.2.44")
        );
    }

    #[test]
    fn headers_parse_by_family_and_command() {
        let v4 = [192, 0, 2, 44, 127, 0, 0, 1, 0x12, 0x34, 0, 80];
        assert_eq!(
            parse(0x21, 0x11, &v4).unwrap(),
            Some("192.0.2.44:4660".parse().unwrap())
        );
        let mut v6 = [0u8; 36];
        v6[15] = 1;
        v6[32] = 0x01;
        v6[33] = 0xbb;
        assert_eq!(
            parse(0x21, 0x21, &v6).unwrap(),
            Some("[::1]:443".parse().unwrap())
        );
        assert_eq!(
            parse(0x20, 0x11, &v4).unwrap(),
            None,
            "LOCAL: the peer stands"
        );
        assert_eq!(
            parse(0x21, 0x00, &[]).unwrap(),
            None,
            "UNSPEC: the peer stands"
        );
        assert!(matches!(
            parse(0x11, 0x11, &v4),
            Err(ProxyHeaderError::Version(1))
        ));
        assert!(matches!(
            parse(0x23, 0x11, &v4),
            Err(ProxyHeaderError::Command(3))
        ));
        assert!(matches!(
            parse(0x21, 0x11, &v4[..8]),
            Err(ProxyHeaderError::Short { .. })
        ));
    }
}

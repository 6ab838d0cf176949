//! https endpoints: a private Swift whose proxy serves TLS itself (Swift's `cert_file` and
//! `key_file`) with a certificate from a CA made for the test. With that CA in `ca_file` both
//! protocols work; without it the first request fails at once with a certificate error.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use blobstore::{Blake3Hash, BlobBackend};
use engine::MemEngine;
use objectstore::{ObjectStoreBackend, ObjectStoreConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::common::{content, keyspaces, unique_prefix, Protocol};

fn script() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../scripts/swift-saio.sh")
}

/// A private Swift serving https, stopped (by the script, from the PIDs it recorded) when
/// dropped.
struct TlsSwift {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    env: Vec<(String, String)>,
}

impl TlsSwift {
    fn start() -> TlsSwift {
        let dir = tempfile::tempdir().expect("temporary directory");
        // A CA, and a server certificate it signs for 127.0.0.1 and localhost.
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "objectstore test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let server_key = KeyPair::generate().expect("server key");
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let server = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server certificate");
        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("server.pem");
        let key_file = dir.path().join("server.key");
        std::fs::write(&ca_file, ca.pem()).expect("write the CA");
        std::fs::write(&cert_file, server.pem()).expect("write the certificate");
        std::fs::write(&key_file, server_key.serialize_pem()).expect("write the key");

        // The proxy's port and the four after +10 must be free.
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        let port = (0..200)
            .map(|_| 20_000 + (rand::random::<u16>() % 9_000))
            .find(|&p| free(p) && (10..=13).all(|d| free(p + d)))
            .expect("a free port range");
        let swift_dir = dir.path().join("swift");
        let status = Command::new(script())
            .arg("start")
            .arg(&swift_dir)
            .env("SWIFT_PORT", port.to_string())
            .env("SWIFT_TLS_CERT", &cert_file)
            .env("SWIFT_TLS_KEY", &key_file)
            .env("SWIFT_TLS_CA", &ca_file)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/swift-saio.sh (Debian's swift packages are needed)");
        // Built before the assertion, so that a half-started Swift is stopped too.
        let mut swift = TlsSwift {
            dir,
            ca_file,
            env: Vec::new(),
        };
        assert!(status.success(), "scripts/swift-saio.sh start (TLS) failed");
        let text = std::fs::read_to_string(swift_dir.join("env")).expect("the env file");
        swift.env = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        swift
    }

    fn var(&self, name: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing from the env file"))
    }

    fn config(&self, protocol: Protocol, spool: &Path) -> ObjectStoreConfig {
        let config = match protocol {
            Protocol::Swift => ObjectStoreConfig::swift(
                self.var("SWIFT_AUTH_URL"),
                self.var("SWIFT_USER"),
                self.var("SWIFT_KEY"),
            ),
            Protocol::S3 => ObjectStoreConfig::s3(
                self.var("S3_ENDPOINT"),
                self.var("S3_REGION"),
                self.var("S3_ACCESS_KEY"),
                self.var("S3_SECRET_KEY"),
            ),
        };
        config.container_prefix(unique_prefix()).spool_dir(spool)
    }
}

impl Drop for TlsSwift {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path().join("swift"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn upload(backend: &ObjectStoreBackend, data: &[u8]) -> blobstore::Result<Blake3Hash> {
    let hash = Blake3Hash::of(data);
    let mut temp = backend.create_temp()?;
    temp.write_all(data)
        .map_err(|e| blobstore::Error::io("writing", "spool", e))?;
    temp.persist(&hash)?;
    Ok(hash)
}

#[test]
fn https_works_with_the_private_ca_and_fails_clearly_without_it() {
    let swift = TlsSwift::start();
    assert!(
        swift.var("SWIFT_AUTH_URL").starts_with("https://")
            && swift.var("S3_ENDPOINT").starts_with("https://"),
        "the private Swift serves https"
    );
    for protocol in [Protocol::Swift, Protocol::S3] {
        let spool = swift.dir.path().join("spool");
        let data = content(9, 3 << 20);

        let trusting = ObjectStoreBackend::open(
            &swift.config(protocol, &spool).ca_file(&swift.ca_file),
            Arc::new(MemEngine::new(&keyspaces())),
        )
        .expect("open with the CA");
        let hash = upload(&trusting, &data)
            .unwrap_or_else(|e| panic!("{protocol:?} over https with the CA: {e}"));
        let mut back = Vec::new();
        trusting
            .open_range(&hash, 0, u64::MAX)
            .unwrap()
            .expect("stored")
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data, "{protocol:?}: the blob reads back over https");

        let untrusting = ObjectStoreBackend::open(
            &swift.config(protocol, &spool),
            Arc::new(MemEngine::new(&keyspaces())),
        )
        .expect("open without the CA");
        let error = upload(&untrusting, &data).expect_err("an untrusted certificate must fail");
        let source = match &error {
            blobstore::Error::Backend { source, .. } => source
                .downcast_ref::<objectstore::Error>()
                .expect("an objectstore error"),
            other => panic!("{protocol:?}: not a backend error: {other}"),
        };
        assert!(
            matches!(source, objectstore::Error::Tls { .. }),
            "{protocol:?}: a TLS error, not retried as transient: {source}"
        );
        assert!(
            source.to_string().contains("certificate"),
            "{protocol:?}: the error names the certificate: {source}"
        );
        assert!(
            objectstore::is_unavailable(&error),
            "the HTTP layer answers 503"
        );
    }
}

#[test]
fn a_ca_file_without_certificates_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let config = ObjectStoreConfig::s3("https://127.0.0.1:1", "r", "a", "s").ca_file(&empty);
    let error = ObjectStoreBackend::open(&config, Arc::new(MemEngine::new(&keyspaces())))
        .expect_err("a CA file without a certificate");
    assert!(
        matches!(error, objectstore::Error::Config(ref m) if m.contains("empty.pem")),
        "{error}"
    );
    let missing = ObjectStoreConfig::s3("https://127.0.0.1:1", "r", "a", "s")
        .ca_file(dir.path().join("missing.pem"));
    let error = ObjectStoreBackend::open(&missing, Arc::new(MemEngine::new(&keyspaces())))
        .expect_err("a missing CA file");
    assert!(matches!(error, objectstore::Error::Io { .. }), "{error}");
}

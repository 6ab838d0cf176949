//! Restricted tokens and malformed input.

use std::io::{Read, Write};

use engine::Backend;

use super::{upload, Harness, HOUR};
use crate::testing::support::{assert_consistent, bucket, content};
use crate::{
    Access, Blake3Hash, BucketName, Digest, Error, FileId, TokenError, UploadRequest, Visibility,
};

pub fn restricted_tokens<H: Harness>(backend: Backend) {
    let mut h = H::new(backend);
    let store = h.open();
    let b = bucket("private");
    let mut req = UploadRequest::new(b.clone(), "secret.txt");
    req.restricted = true;
    let f = store
        .upload_bytes(req.clone(), b"top secret", "tester")
        .unwrap()
        .record;
    req.filename = "other.txt".into();
    let g = store
        .upload_bytes(req, b"also secret", "tester")
        .unwrap()
        .record;
    let public = upload(&store, &b, "public.txt", b"top secret");
    assert!(matches!(
        store.read(f.id, Access::Anonymous, None),
        Err(Error::Forbidden {
            reason: TokenError::Missing,
            ..
        })
    ));
    assert!(store.read(public.id, Access::Anonymous, None).is_ok());
    let token = store.issue_token(f.id, None).unwrap();
    let mut out = String::new();
    store
        .read(f.id, Access::Token(&token), None)
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "top secret");
    // A token for one file does not open another.
    assert!(matches!(
        store.read(g.id, Access::Token(&token), None),
        Err(Error::Forbidden {
            reason: TokenError::BadSignature,
            ..
        })
    ));
    assert!(matches!(
        store.read(f.id, Access::Token("garbage"), None),
        Err(Error::Forbidden {
            reason: TokenError::Malformed,
            ..
        })
    ));
    // Public and restricted files are looked up apart.
    let hash = Digest::Blake3(f.blake3);
    assert_eq!(
        store
            .files_by_digest(&hash, Visibility::Restricted, 10)
            .unwrap(),
        vec![f.id]
    );
    assert_eq!(
        store
            .files_by_digest(&hash, Visibility::Public, 10)
            .unwrap(),
        vec![public.id]
    );
    // Expiry: default lifetime one day.
    h.advance(23 * HOUR); // an hour before the day is out
    assert!(store.read(f.id, Access::Token(&token), None).is_ok());
    h.advance(2 * HOUR);
    assert!(matches!(
        store.read(f.id, Access::Token(&token), None),
        Err(Error::Forbidden {
            reason: TokenError::Expired,
            ..
        })
    ));
    // Rotation: a token of the old secret is accepted while it is the previous one.
    let old_token = store.issue_token(f.id, Some(HOUR)).unwrap();
    drop(store);
    let old_secret = h.settings_mut().secrets.0;
    h.settings_mut().secrets = ([8; 32], Some(old_secret));
    let store = h.open();
    assert!(store.read(f.id, Access::Token(&old_token), None).is_ok());
    let new_token = store.issue_token(f.id, Some(HOUR)).unwrap();
    drop(store);
    h.settings_mut().secrets = ([9; 32], Some([8; 32]));
    let store = h.open();
    assert!(matches!(
        store.read(f.id, Access::Token(&old_token), None),
        Err(Error::Forbidden {
            reason: TokenError::BadSignature,
            ..
        })
    ));
    assert!(store.read(f.id, Access::Token(&new_token), None).is_ok());
    assert!(store.read(f.id, Access::Trusted, None).is_ok());
}

pub fn bad_input<H: Harness>(backend: Backend) {
    let h = H::new(backend);
    let store = h.open();
    let b = bucket("bad");
    let long = "x".repeat(256);
    for name in [
        "",
        "a/b",
        "nul\0",
        "tab\there",
        "bell\u{7}",
        ".",
        "..",
        long.as_str(),
    ] {
        let result = store.begin_upload(UploadRequest::new(b.clone(), name), "tester");
        assert!(
            matches!(result, Err(Error::InvalidFilename { .. })),
            "{name:?} accepted"
        );
    }
    assert!(store
        .begin_upload(UploadRequest::new(b.clone(), "x".repeat(255)), "tester")
        .is_ok());
    assert!(matches!(
        BucketName::new("no spaces"),
        Err(Error::InvalidBucketName { .. })
    ));
    assert!(matches!(
        store.file(FileId(987_654)),
        Err(Error::NotFound { .. })
    ));
    let f = upload(&store, &b, "ok", b"12345");
    assert!(matches!(
        store.read(f.id, Access::Anonymous, Some(2..6)),
        Err(Error::InvalidRange { size: 5, .. })
    ));
    // Announced digests that do not match leave nothing behind.
    let data = content(3, 400_000);
    let mut req = UploadRequest::new(b.clone(), "wrong");
    req.expected_blake3 = Some(Blake3Hash::of(b"something else"));
    let result = store.upload_bytes(req, &data, "tester");
    assert!(matches!(
        result,
        Err(Error::DigestMismatch {
            algorithm: "blake3",
            ..
        })
    ));
    let mut req = UploadRequest::new(b.clone(), "wrong");
    req.expected_sha256 = Some([0; 32]);
    let result = store.upload_bytes(req, &data, "tester");
    assert!(matches!(
        result,
        Err(Error::DigestMismatch {
            algorithm: "sha256",
            ..
        })
    ));
    let mut req = UploadRequest::new(b.clone(), "right");
    req.expected_blake3 = Some(Blake3Hash::of(&data));
    store.upload_bytes(req, &data, "tester").unwrap();
    assert_eq!(store.bucket_stats(&b).unwrap().files, 2);
    assert_eq!(h.temporaries(), 0);
    assert_eq!(h.stored_blobs(), 1);
    // An upload dropped without commit leaves nothing either.
    let mut up = store
        .begin_upload(UploadRequest::new(b.clone(), "dropped"), "tester")
        .unwrap();
    up.write_all(&content(4, 600_000)).unwrap();
    drop(up);
    assert_eq!(h.temporaries(), 0);
    assert_eq!(store.bucket_stats(&b).unwrap().files, 2);
    assert_consistent(&store);
}

//! Real download clients against the librarian on loopback: `curl` (headers), `aria2c -x 8
//! -s 8` (parallel Range requests, its SHA-256 check on), `wget -c` (resuming a partial
//! file), `wget --content-disposition` (the RFC 6266 name, non-ASCII included) and apt's HTTP
//! method (`/usr/lib/apt/methods/http`, fed an acquire request on stdin, the SHA-256 it
//! reports checked against the file's). `make test` installs aria2 and wget from Debian.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::support::{content, Options, TestServer};

fn run(program: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {program} (is it installed? make test installs it): {e}")
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Fetches `url` into `target` with apt's HTTP method and returns its answer; the method
/// reports the hashes of what it fetched (`SHA256-Hash`), which apt compares with the
/// `Expected-SHA256` of the archive's index.
fn apt_fetch(url: &str, target: &Path, sha256: &str) -> Vec<String> {
    let mut method = Command::new("/usr/lib/apt/methods/http")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("apt's http method (Debian's apt)");
    let mut stdin = method.stdin.take().unwrap();
    write!(
        stdin,
        "601 Configuration\nConfig-Item: APT::Sandbox::User=root\n\n\
         600 URI Acquire\nURI: {url}\nFilename: {}\nExpected-SHA256: {sha256}\n\n",
        target.display()
    )
    .unwrap();
    stdin.flush().unwrap();
    // The method ends when its input does: keep it open until the answer.
    let mut lines = Vec::new();
    let mut done = false;
    for line in BufReader::new(method.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("400 ") || line.starts_with("201 ") {
            done = true;
        }
        if done && line.is_empty() {
            break;
        }
        lines.push(line);
    }
    drop(stdin);
    method.wait().unwrap();
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_aria2_wget_and_apt_fetch_and_check() {
    let server = TestServer::start(Options::default()).await;
    let data = content(12 << 20, 5);
    let sha256 = Sha256::digest(&data);
    let hex = blobstore::to_hex(&sha256);
    let b64 = base64::engine::general_purpose::STANDARD.encode(sha256);
    let iso = server.upload("isos", "live.iso", data.clone()).await;
    let url = server.url(iso["url"].as_str().unwrap());
    let deb_bytes = content(40_000, 6);
    let deb = server
        .upload("pool", "hello_1.0_all.deb", deb_bytes.clone())
        .await;
    let deb_url = server.url(deb["url"].as_str().unwrap());
    let name = "Übersicht des Builds.log";
    let small = server
        .upload("logs", &name.replace(' ', "%20"), b"tiny log".to_vec())
        .await;
    assert_eq!(small["filename"], name);
    let small_url = server.url(small["url"].as_str().unwrap());
    let notes = server.upload("logs", "notes.txt", b"cached".to_vec()).await;
    let notes_url = server.url(notes["url"].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();

    tokio::task::spawn_blocking(move || {
        let dir = dir_path.as_path();
        // curl: the headers, on a full GET, a HEAD and a range.
        for args in [vec!["-sSD", "-", "-o", "/dev/null"], vec!["-sSI"], vec!["-sSD", "-", "-o", "/dev/null", "-r", "5-9"]] {
            let mut args: Vec<&str> = args;
            args.push(&url);
            let headers = String::from_utf8(run("curl", &args, dir).stdout).unwrap().to_lowercase();
            assert!(headers.contains(&format!("repr-digest: sha-256=:{}:", b64.to_lowercase())), "{headers}");
            assert!(headers.contains("content-disposition: inline; filename=\"live.iso\""), "{headers}");
        }
        let headers = String::from_utf8(run("curl", &["-sSD", "-", "-o", "/dev/null", &small_url], dir).stdout).unwrap();
        assert!(
            headers.contains("filename=\"_bersicht des Builds.log\"; filename*=UTF-8''%C3%9Cbersicht%20des%20Builds.log"),
            "{headers}"
        );
        let tiny = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"tiny log"));
        assert!(headers.contains(&format!("sha-256=:{tiny}:")), "{headers}");

        // A small file: the second answer comes from the hot-file cache (the fast path).
        let cached = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"cached"));
        for _ in 0..2 {
            let headers = String::from_utf8(run("curl", &["-sSD", "-", "-o", "/dev/null", &notes_url], dir).stdout).unwrap();
            assert!(headers.contains(&format!("sha-256=:{cached}:")), "{headers}");
            assert!(headers.contains("inline; filename=\"notes.txt\""), "{headers}");
        }

        // aria2c: 8 connections, 8 segments, its SHA-256 check on.
        let checksum = format!("--checksum=sha-256={hex}");
        run(
            "aria2c",
            &["-q", "-x", "8", "-s", "8", "--min-split-size=1M", "--allow-overwrite=true", &checksum, "-o", "aria2.iso", &url],
            dir,
        );
        assert!(std::fs::read(dir.join("aria2.iso")).unwrap() == data, "aria2c's copy differs");

        // wget -c: a partial file resumed with a Range request.
        std::fs::write(dir.join("live.iso"), &data[..3 << 20]).unwrap();
        run("wget", &["-q", "-c", &url], dir);
        assert!(std::fs::read(dir.join("live.iso")).unwrap() == data, "wget -c's copy differs");
        // wget names the file from Content-Disposition, UTF-8 name included.
        let names = dir.join("names");
        std::fs::create_dir(&names).unwrap();
        run("wget", &["-q", "--content-disposition", &small_url], &names);
        assert_eq!(std::fs::read(names.join(name)).unwrap(), b"tiny log");

        // apt's HTTP method, checking the SHA-256 it expects.
        let target = dir.join("hello.deb");
        let deb_sha = blobstore::to_hex(&Sha256::digest(&deb_bytes));
        let answer = apt_fetch(&deb_url, &target, &deb_sha);
        assert!(answer.iter().any(|l| l == "201 URI Done"), "{answer:?}");
        assert!(answer.contains(&format!("SHA256-Hash: {deb_sha}")), "{answer:?}");
        assert_eq!(std::fs::read(&target).unwrap(), deb_bytes);
    })
    .await
    .unwrap();
    server.stop().await;
}

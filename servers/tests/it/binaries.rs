//! The binaries themselves: subcommands against a local store, `--help`, refusing unsafe
//! configurations, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const LIBRARIAN: &str = env!("CARGO_BIN_EXE_librarian");
const DIRECTORY: &str = env!("CARGO_BIN_EXE_directory");

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "serve",
        "gc",
        "verify",
        "stats",
        "put",
        "get",
        "migrate-blobs",
        "backup",
        "restore",
        "upgrade-store",
        "hash-password",
    ] {
        let out = run(LIBRARIAN, &[sub, "--help"]);
        assert!(out.status.success(), "librarian {sub} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: librarian"),
            "{sub}"
        );
    }
    for sub in [
        "serve",
        "import",
        "check",
        "backup",
        "restore",
        "hash-password",
    ] {
        let out = run(DIRECTORY, &[sub, "--help"]);
        assert!(out.status.success(), "directory {sub} --help");
    }
}

#[test]
fn librarian_subcommands_on_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let source = dir.path().join("hello.txt");
    std::fs::write(&source, b"hello from put").unwrap();
    let out = run(
        LIBRARIAN,
        &[
            "--data-dir",
            data,
            "put",
            "--bucket",
            "b",
            source.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["filename"], "hello.txt");
    assert_eq!(record["size"], 14);
    let id = record["id"].to_string();
    let out = run(LIBRARIAN, &["--data-dir", data, "get", &id]);
    assert_eq!(out.stdout, b"hello from put");
    let out = run(LIBRARIAN, &["--data-dir", data, "stats", "--bucket", "b"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["files"], 1);
    assert_eq!(stats["logical_bytes"], 14);
    let out = run(LIBRARIAN, &["--data-dir", data, "verify"]);
    assert!(out.status.success());
    let out = run(LIBRARIAN, &["--data-dir", data, "gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["collected_blobs"], 0);
    let out = run(LIBRARIAN, &["--data-dir", data, "get", "999"]);
    assert!(!out.status.success());
}

/// A store put back in format 1 (as builds up to 2026-12-06 wrote it) is brought to the
/// current format by `librarian upgrade-store`, and reads and checks as before.
#[test]
fn upgrade_store_brings_an_older_store_to_the_current_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let open = || {
        let config = engine::EngineConfig::new(engine::Backend::Rocksdb, data.join("meta"));
        blobstore::StoreBuilder::new(config, &data)
            .upgrade_format(false)
            .open()
    };
    let store = open().unwrap();
    let bucket = blobstore::BucketName::new("b").unwrap();
    let request = blobstore::UploadRequest::new(bucket, "a.txt");
    let put = store
        .upload_bytes(request, b"written in format 1", "tester")
        .unwrap();
    assert_eq!(store.write_store_format_1().unwrap(), 1);
    drop(store);
    assert!(matches!(
        open(),
        Err(blobstore::Error::StoreFormat { found: 1, .. })
    ));

    let data = data.to_str().unwrap();
    let out = run(LIBRARIAN, &["--data-dir", data, "upgrade-store"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["format"], blobstore::STORE_FORMAT);
    assert_eq!(report["files"], 1);
    let out = run(
        LIBRARIAN,
        &["--data-dir", data, "get", &put.record.id.to_string()],
    );
    assert_eq!(out.stdout, b"written in format 1");
    let store = open().unwrap();
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn serving_needs_credentials_or_loopback_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = run(
        LIBRARIAN,
        &["--data-dir", data, "serve", "--listen", "127.0.0.1:0"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"));
    let out = run(
        LIBRARIAN,
        &[
            "--data-dir",
            data,
            "serve",
            "--dev",
            "--listen",
            "0.0.0.0:0",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let out = run(
        DIRECTORY,
        &[
            "--data-dir",
            data,
            "serve",
            "--dev",
            "--listen",
            "0.0.0.0:0",
        ],
    );
    assert!(!out.status.success());
}

#[test]
fn hash_password_output_is_accepted_by_a_config() {
    let mut child = Command::new(LIBRARIAN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let config = servers::common::ServerConfig {
        credentials: vec![servers::common::Credential {
            user: "u".into(),
            hash,
        }],
        ..Default::default()
    };
    let policy = servers::common::AccessPolicy::from_config(&config, "t").unwrap();
    use base64::Engine as _;
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("u:s3cret")
    );
    assert!(policy.credentials_valid(Some(header.as_bytes())));
}

/// Starts `bin serve --dev` on an ephemeral port and returns the child and its address.
fn serve(bin: &str, data: &str) -> (std::process::Child, String) {
    let mut child = Command::new(bin)
        .args([
            "--data-dir",
            data,
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[test]
fn servers_exit_cleanly_on_sigterm_and_keep_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("lib");
    let data = data.to_str().unwrap();
    let (child, addr) = serve(LIBRARIAN, data);
    let out = Command::new("curl")
        .args([
            "-fsS",
            "--data-binary",
            "kept",
            &format!("http://{addr}/buckets/b/files?filename=k"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the librarian exited with {:?}",
        out.status
    );
    let out = run(LIBRARIAN, &["--data-dir", data, "stats"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["files"], 1);

    let data = dir.path().join("dir");
    let data = data.to_str().unwrap();
    let (child, addr) = serve(DIRECTORY, data);
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"role":"member"}"#,
        ])
        .arg(format!("http://{addr}/teams/t/members/p"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the directory exited with {:?}",
        out.status
    );
    let out = run(DIRECTORY, &["--data-dir", data, "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nodes: 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn directory_imports_a_repository_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let rev_list = dir.path().join("rev-list");
    let refs = dir.path().join("refs");
    let id = |n: u8| format!("{n:02x}").repeat(20);
    std::fs::write(&rev_list, format!("{} {}\n{}\n", id(2), id(1), id(1))).unwrap();
    std::fs::write(
        &refs,
        format!("refs/heads/main {}\nrefs/heads/old {}\n", id(2), id(1)),
    )
    .unwrap();
    let out = run(
        DIRECTORY,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "import",
            "repo",
            "lp",
            rev_list.to_str().unwrap(),
            "--refs",
            refs.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["added"], 2);
    assert_eq!(summary["branches"], 2);
}

/// Opens the directory's store in `data` (after the binary exited) and exports `graph`.
fn export_graph(data: &std::path::Path, graph: &str) -> Option<String> {
    let mut config = servers::directory::DirectoryConfig::default();
    config.store.data_dir = data.to_path_buf();
    let (store, _) = config.store.open().unwrap();
    let graph = store.graph(graph).unwrap()?;
    let mut text = Vec::new();
    graph.export_tsv(&mut text).unwrap();
    Some(String::from_utf8(text).unwrap())
}

#[test]
fn directory_imports_a_graph_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let tsv = dir.path().join("deps.tsv");
    let import = |path: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["--data-dir", data.to_str().unwrap(), "import", "graph"];
        args.extend_from_slice(extra);
        args.extend(["deps", path.to_str().unwrap()]);
        run(DIRECTORY, &args)
    };
    // A cycle (libc6 <-> libgcc-s1), an unlabelled edge and a lone node.
    let text = "from\tto\tlabel\nlone\t\t\nbash\tlibc6\tdepends\nlibc6\tlibgcc-s1\tdepends\nlibgcc-s1\tlibc6\tdepends\nsrc:bash\tbash\t\n";
    std::fs::write(&tsv, text).unwrap();
    let out = import(&tsv, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["nodes"], 1, "{summary}");
    assert_eq!(summary["edges"], 4, "{summary}");
    // The export is the sorted file: what POST /import/graphs/deps would have stored.
    let exported = export_graph(&data, "deps").unwrap();
    assert_eq!(
        exported,
        "from\tto\tlabel\nlone\t\t\nbash\tlibc6\tdepends\nlibc6\tlibgcc-s1\tdepends\nlibgcc-s1\tlibc6\tdepends\nsrc:bash\tbash\t\n"
    );
    // A malformed third line: refused naming it, nothing changed.
    let bad = dir.path().join("bad.tsv");
    std::fs::write(&bad, "from\tto\tlabel\nzsh\tlibc6\tdepends\nzsh\n").unwrap();
    let out = import(&bad, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(export_graph(&data, "deps").unwrap(), exported);
    // An acyclic graph refuses the cycle, and is left empty.
    let out = run(
        DIRECTORY,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "import",
            "graph",
            "--kind",
            "acyclic",
            "strict",
            tsv.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cycle"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        export_graph(&data, "strict").as_deref(),
        Some("from\tto\tlabel\n")
    );
}

#[test]
fn backup_and_restore_commands_on_stopped_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (data, backup, restored) = (path("data"), path("backup"), path("restored"));
    let source = dir.path().join("big.bin");
    let bytes: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    let out = run(
        LIBRARIAN,
        &[
            "--data-dir",
            &data,
            "put",
            "--bucket",
            "b",
            source.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"].to_string();
    let out = run(LIBRARIAN, &["--data-dir", &data, "backup", &backup]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["counts"]["files"], 1);
    assert_eq!(summary["counts"]["blob_files"], 1);
    assert_eq!(summary["revision"], 1);
    // Not twice into the same directory.
    let out = run(LIBRARIAN, &["--data-dir", &data, "backup", &backup]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    // Not over the live data directory.
    let out = run(LIBRARIAN, &["--data-dir", &data, "restore", &backup]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    let out = run(LIBRARIAN, &["--data-dir", &restored, "restore", &backup]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(LIBRARIAN, &["--data-dir", &restored, "get", &id]);
    assert_eq!(out.stdout, bytes);

    let teams = dir.path().join("teams.tsv");
    std::fs::write(
        &teams,
        "team\tmember\trole\texpires\ncore\talice\tmember\t\n",
    )
    .unwrap();
    let (graph, graph_backup, graph_restored) = (path("graph"), path("gbackup"), path("grestored"));
    let out = run(
        DIRECTORY,
        &[
            "--data-dir",
            &graph,
            "import",
            "teams",
            teams.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(DIRECTORY, &["--data-dir", &graph, "backup", &graph_backup]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["counts"]["membership_edges"], 1);
    let out = run(
        DIRECTORY,
        &["--data-dir", &graph_restored, "restore", &graph_backup],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(DIRECTORY, &["--data-dir", &graph_restored, "check"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("membership_edges: 1"));
    // The server's route, asked for by the command line: nothing listens here.
    let out = run(
        DIRECTORY,
        &["backup", &path("unused"), "--server", "http://127.0.0.1:9"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/admin/backup"));
}

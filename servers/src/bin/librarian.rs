//! `librarian`: the HTTP blob service and its maintenance commands.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use blobstore::{Access, BlobBackend, BucketName, FileId, UploadRequest};
use clap::{Parser, Subcommand};
use servers::common::{self, serve, ServerFlags};
use servers::librarian::migrate::{local_blobs, MigrationOptions};
use servers::librarian::{self, config::StoreFlags, Librarian, LibrarianConfig};

/// jemalloc rather than glibc's allocator: 6% less CPU per small download (glibc's arenas cost
/// `malloc_consolidate` and `_int_free`), with background threads returning freed pages, so
/// 200 concurrent uploads stay at 234 MB resident (mimalloc, tried first, kept 1.34 GB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The actor the command line records its changes under.
const CLI_ACTOR: &str = "librarian-cli";

/// An HTTP blob service over blobstore: uploads into buckets, downloads by id and filename,
/// restricted files with tokens.
#[derive(Debug, Parser)]
#[command(name = "librarian", version)]
struct Cli {
    /// The TOML configuration file (tables `[server]`, `[store]` and `[object_store]`; see
    /// docs/API.md).
    #[arg(long, short, global = true, env = "LIBRARIAN_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    store: StoreFlags,
    /// Log JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP until SIGTERM or SIGINT.
    Serve(ServerFlags),
    /// Collect garbage now: expired content, unreferenced blobs past the grace, orphan files.
    Gc {
        /// Files or blobs handled per batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Check every blob against its hash, as the online scrub does (read-only); prints each
    /// problem as a JSON line, as `GET /scrub` lists them, then the findings the online scrub
    /// recorded; exits 1 when a blob is corrupt or missing.
    Verify {
        /// Blobs checked per batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Print the store-wide summary, or a bucket's statistics, as JSON.
    Stats {
        /// A bucket.
        #[arg(long)]
        bucket: Option<String>,
    },
    /// Store a local file (or standard input with `-`) and print its record as JSON.
    Put {
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// The filename to store it under (default: the file's name).
        #[arg(long)]
        filename: Option<String>,
        /// The content type.
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        /// Restrict it: readable only with a token.
        #[arg(long)]
        restricted: bool,
        /// The file to store, or `-` for standard input.
        path: PathBuf,
    },
    /// Write a file's content to standard output or to `--output`.
    Get {
        /// The file id.
        id: u64,
        /// Where to write (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Move the blob files of the data directory to the object store of `[object_store]`:
    /// each is uploaded, read back and checked, and only then removed locally. Resumable: run
    /// it again to finish an interrupted run or retry failures. Stop the server first (the
    /// engine is locked); exits 1 when a blob could not be moved.
    MigrateBlobs {
        /// Blobs moved at once.
        #[arg(long, default_value_t = 4)]
        parallelism: usize,
        /// Seconds between progress lines on standard error.
        #[arg(long, default_value_t = 5)]
        progress_secs: u64,
    },
    /// Back up the store into DIR, a new or empty directory, verified against its manifest
    /// (docs/RELIABILITY.md, "Backup and restore"). With `--server` the running server
    /// writes it (DIR is a path on its machine); without, the store is opened here, so the
    /// server must be stopped.
    Backup {
        /// Where the backup goes.
        dir: PathBuf,
        /// The running server, e.g. `http://127.0.0.1:8081`.
        #[arg(long)]
        server: Option<String>,
        /// The user of `[[server.credentials]]` to call the server as; the password is read
        /// from $LIBRARIAN_PASSWORD.
        #[arg(long, requires = "server")]
        user: Option<String>,
    },
    /// Restore the backup in DIR into the data directory, which must be missing or empty
    /// (the server stopped); nothing is written unless the whole backup checks out.
    Restore {
        /// The backup directory.
        dir: PathBuf,
    },
    /// Bring the store to this build's format (blobstore/DESIGN.md, "Store formats"), with
    /// every instance stopped. An embedded store is upgraded by any open; a PostgreSQL one,
    /// which several instances share, only by this command.
    UpgradeStore,
    /// Hash a password for `[[server.credentials]]`: reads it from standard input, or makes
    /// a random one and prints it.
    HashPassword {
        /// Make a random password instead of reading one.
        #[arg(long)]
        generate: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    common::init_logs(cli.log_json);
    let mut config = LibrarianConfig::load(cli.config.as_deref())?;
    config.apply_flags(&cli.store)?;
    match cli.command {
        Command::Serve(flags) => {
            config.server.apply_flags(&flags);
            config.server.validate()?;
            run_server(config)
        }
        Command::Gc { batch } => {
            let store = config.open_store()?.store;
            let (total, sweep) = librarian::collect_as_writer(&store, batch)?;
            println!(
                "{}",
                serde_json::json!({
                    "expired_files": total.expired_files,
                    "collected_blobs": total.collected_blobs,
                    "freed_bytes": total.freed_bytes,
                    "orphan_blobs": sweep.orphan_blobs,
                    "temp_files": sweep.temp_files,
                    "expired_uploads": total.expired_uploads,
                    "upload_files": sweep.upload_files,
                })
            );
            Ok(())
        }
        Command::Verify { batch } => {
            let store = config.open_store()?.store;
            let mut after = None;
            let mut checked = 0;
            let mut problems = 0;
            loop {
                let report = store.verify(after, batch.max(1))?;
                checked += report.checked;
                for problem in &report.problems {
                    problems += 1;
                    let (found_size, actual) = match problem {
                        blobstore::BlobProblem::Corrupt { size, actual, .. } => {
                            (Some(*size), Some(actual.to_hex()))
                        }
                        _ => (None, None),
                    };
                    println!(
                        "{}",
                        serde_json::json!({
                            "blake3": problem.hash().to_hex(),
                            "problem": problem.kind(),
                            "found_size": found_size,
                            "actual_blake3": actual,
                        })
                    );
                }
                match report.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            let recorded = store.scrub_report(librarian::scrub::MAX_FINDINGS, 0)?;
            println!(
                "{}",
                serde_json::json!({
                    "checked": checked,
                    "problems": problems,
                    "scrub_findings": recorded.findings.len(),
                })
            );
            if problems > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Stats { bucket } => {
            let store = config.open_store()?.store;
            let json = match bucket {
                Some(bucket) => {
                    let name = BucketName::new(bucket)?;
                    let s = store.bucket_stats(&name)?;
                    serde_json::json!({
                        "bucket": name.as_str(), "files": s.files, "logical_bytes": s.logical_bytes,
                        "unique_bytes": s.unique_bytes, "quota_bytes": s.quota,
                    })
                }
                None => {
                    let s = store.summary()?;
                    serde_json::json!({
                        "files": s.files, "blobs": s.blobs, "stored_bytes": s.stored_bytes,
                        "logical_bytes": s.logical_bytes, "dedup_ratio": s.dedup_ratio,
                    })
                }
            };
            println!("{json}");
            Ok(())
        }
        Command::Put {
            bucket,
            filename,
            content_type,
            restricted,
            path,
        } => {
            let store = config.open_store()?.store;
            let filename = match filename {
                Some(name) => name,
                None if path.as_os_str() == "-" => {
                    bail!("--filename is required with standard input")
                }
                None => path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("the path has no UTF-8 file name; pass --filename")?
                    .to_string(),
            };
            let mut request = UploadRequest::new(BucketName::new(bucket)?, filename);
            request.content_type = content_type;
            request.restricted = restricted;
            let mut upload = store.begin_upload(request, CLI_ACTOR)?;
            let mut input: Box<dyn Read> = if path.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(
                    std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?,
                )
            };
            std::io::copy(&mut input, &mut upload).context("reading the input")?;
            let blobstore::Uploaded {
                record,
                blob,
                revision,
                ..
            } = upload.commit()?;
            println!(
                "{}",
                serde_json::json!({
                    "id": record.id.0,
                    "bucket": record.bucket.as_str(),
                    "filename": record.filename,
                    "size": record.size,
                    "blake3": record.blake3.to_hex(),
                    "sha256": blobstore::to_hex(&blob.sha256),
                    "revision": revision,
                })
            );
            Ok(())
        }
        Command::Get { id, output } => {
            let store = config.open_store()?.store;
            let mut reader = store.read(FileId(id), Access::Trusted, None)?;
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::fs::File::create(path)?),
                None => Box::new(std::io::stdout().lock()),
            };
            std::io::copy(&mut reader, &mut out)?;
            out.flush()?;
            Ok(())
        }
        Command::MigrateBlobs {
            parallelism,
            progress_secs,
        } => migrate_blobs(&config, parallelism, progress_secs),
        Command::Backup { dir, server, user } => match server {
            Some(server) => common::backup::backup_through_server(
                &server,
                &dir,
                user.as_deref(),
                "LIBRARIAN_PASSWORD",
            )
            .map_err(anyhow::Error::from),
            None => {
                let store = config.open_store()?.store;
                let manifest = librarian::backup::backup(&store, &config.store, &dir)?;
                println!("{}", common::backup_summary(&dir, &manifest));
                Ok(())
            }
        },
        Command::Restore { dir } => {
            let manifest = librarian::backup::restore(&dir, &config.store)?;
            println!(
                "{}",
                common::backup_summary(&config.store.data_dir, &manifest)
            );
            Ok(())
        }
        Command::UpgradeStore => {
            config.store.upgrade_format = Some(true);
            let store = config.open_store()?.store;
            let summary = store.summary()?;
            println!(
                "{}",
                serde_json::json!({
                    "format": blobstore::STORE_FORMAT,
                    "files": summary.files,
                    "blobs": summary.blobs,
                })
            );
            Ok(())
        }
        Command::HashPassword { generate } => {
            let password = if generate {
                let bytes: [u8; 24] = rand::random();
                let password = hex::encode(bytes);
                eprintln!("password: {password}");
                password
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            };
            if password.is_empty() {
                bail!("an empty password");
            }
            println!("{}", common::access::hash_password(&password));
            Ok(())
        }
    }
}

fn migrate_blobs(
    config: &LibrarianConfig,
    parallelism: usize,
    progress_secs: u64,
) -> anyhow::Result<()> {
    let options = MigrationOptions::default()
        .parallelism(parallelism)
        .progress_every(Duration::from_secs(progress_secs.max(1)));
    let pending = local_blobs(&config.store.data_dir)
        .with_context(|| format!("listing {}", config.store.data_dir.display()))?;
    eprintln!(
        "migrate-blobs: {} blob files ({} bytes) to move from {}",
        pending.blobs,
        pending.bytes,
        config.store.data_dir.display()
    );
    let summary = librarian::migrate::migrate_blobs(config, options, &|p| {
        eprintln!(
            "migrate-blobs: uploaded {} of {} blobs ({} of {} bytes)",
            p.uploaded.blobs, p.pending.blobs, p.uploaded.bytes, p.pending.bytes
        );
    })?;
    for (hash, reason) in &summary.failed {
        eprintln!("migrate-blobs: {hash} not moved: {reason}");
    }
    println!(
        "{}",
        serde_json::json!({
            "pending": summary.pending.blobs,
            "moved": summary.moved.blobs,
            "moved_bytes": summary.moved.bytes,
            "failed": summary.failed.len(),
            "remaining": summary.remaining.blobs,
        })
    );
    if !summary.failed.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn run_server(config: LibrarianConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let threads = serve::http_threads();
    // Opened (and dropped, at the end) outside the runtime: the object store's clients run
    // runtimes of their own, which cannot be dropped from async code.
    let opened = config.open_store()?;
    let store = opened.store.clone();
    let mut state = Librarian::new(store.clone(), &config.server).map_err(anyhow::Error::msg)?;
    if let Some(backends) = &opened.object_store {
        state = state.with_object_store(backends.object_store.clone());
    }
    // On PostgreSQL, several instances elect the writer (always this one on an embedded store).
    let leader = common::Leader::elect(
        store.engine().clone(),
        librarian::LEASE,
        config.server.lease_ttl(),
    );
    state = state.with_leader(leader.clone());
    let scrub = librarian::scrub::ScrubSettings {
        bytes_per_sec: config.store.scrub_bytes_per_sec,
        period: Duration::from_secs(config.store.scrub_period_secs),
        ..Default::default()
    };
    state = state.with_scrub(scrub);
    state = state.with_store_config(config.store.clone());
    let blobs = opened
        .object_store
        .as_ref()
        .map_or("local", |b| b.object_store.name());
    let counts = store.clone();
    runtime.block_on(async move {
        leader.start();
        let listener = serve::bind(config.server.listen, config.server.dev).await?;
        tracing::info!(
            address = %listener.local_addr()?,
            data_dir = %config.store.data_dir.display(),
            backend = %config.store.backend,
            blobs,
            dev = config.server.dev,
            "librarian listening"
        );
        if config.store.gc_interval_secs > 0 {
            tokio::spawn(librarian::gc_loop(
                state.clone(),
                Duration::from_secs(config.store.gc_interval_secs),
            ));
        }
        tokio::spawn(librarian::flush_downloads_loop(state.clone()));
        tokio::spawn(librarian::scrub::scrub_loop(state.clone()));
        let app = librarian::router(state);
        serve::serve_threads(
            listener,
            threads,
            app,
            config.server.limits.clone(),
            serve::shutdown_signal(),
        )
        .await?;
        // Drained: the download counts are written while this instance is still the writer
        // (after the handover its engine refuses them), then the lease is handed over at once
        // rather than at its expiry.
        if leader.is_leader() {
            let counts = counts.clone();
            if let Err(error) =
                tokio::task::spawn_blocking(move || counts.flush_downloads()).await?
            {
                tracing::warn!(%error, "could not write the download counts before the handover");
            }
        }
        leader.stop().await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    match store.flush() {
        // Another instance writes (several instances on PostgreSQL): what this one counted
        // since is lost, as after a crash; the counts are statistics, never acknowledged.
        Err(blobstore::Error::Engine(error @ engine::Error::Fenced { .. })) => {
            tracing::warn!(%error, "download counts not written: another instance is the writer");
        }
        flushed => flushed?,
    }
    drop(opened);
    tracing::info!("librarian stopped");
    Ok(())
}

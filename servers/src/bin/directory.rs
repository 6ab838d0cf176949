//! `directory`: the HTTP service for team participation and package sets, and its import
//! commands.

use std::io::{BufReader, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use servers::common::{self, serve, ServerFlags};
use servers::directory::{self, config::GraphFlags, Directory, DirectoryConfig};

/// jemalloc rather than glibc's allocator, as in the librarian: after loading the
/// Launchpad-shaped team graph (530,000 nodes), glibc held 400 MB resident for 278 MB asked
/// for (heaptrack): 51 MB of chunk headers and rounding over three million small allocations,
/// and 73 MB freed by the load but kept in its heap. jemalloc's size classes carry no header
/// and its background threads return the load's freed pages (graphdb/DESIGN.md, "Memory"),
/// within 100 ms of their release (`JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The progress bar of an import, drawn on standard error when it is a terminal.
struct ImportBar(indicatif::ProgressBar);

impl ImportBar {
    fn new() -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return ImportBar(indicatif::ProgressBar::hidden());
        }
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} edges ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style);
        }
        bar.set_message("importing");
        ImportBar(bar)
    }

    fn show(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
}

impl Drop for ImportBar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// An HTTP service for team participation and package sets over graphdb.
#[derive(Debug, Parser)]
#[command(name = "directory", version)]
struct Cli {
    /// The TOML configuration file (tables `[server]` and `[store]`; see docs/API.md).
    #[arg(long, short, global = true, env = "DIRECTORY_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    store: GraphFlags,
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
    /// Import a TSV file into the local store (the server must be stopped), all or nothing,
    /// with a progress bar on a terminal.
    Import {
        #[command(subcommand)]
        what: ImportKind,
    },
    /// Check the indexes against a fresh traversal and print their sizes.
    Check,
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
        /// from $DIRECTORY_PASSWORD.
        #[arg(long, requires = "server")]
        user: Option<String>,
    },
    /// Restore the backup in DIR into the data directory, which must be missing or empty
    /// (the server stopped); nothing is written unless the whole backup checks out.
    Restore {
        /// The backup directory.
        dir: PathBuf,
    },
    /// Hash a password for `[[server.credentials]]`, read from standard input.
    HashPassword,
}

#[derive(Debug, Subcommand)]
enum ImportKind {
    /// `team\tmember\trole\texpires` rows.
    Teams {
        /// The TSV file.
        path: PathBuf,
    },
    /// `set\titem\ttype` rows.
    Packagesets {
        /// The TSV file.
        path: PathBuf,
    },
    /// A general graph's `from\tto\tlabel` rows, as `POST /import/graphs/{graph}` takes them
    /// (without its edge limit). The graph is created first when missing.
    Graph {
        /// The graph's name.
        name: String,
        /// The TSV file.
        path: PathBuf,
        /// The kind to create it with when missing: `general` (cycles allowed) or `acyclic`.
        #[arg(long, default_value = "general", value_parser = ["general", "acyclic"])]
        kind: String,
    },
    /// A repository's commits and branches.
    Repo {
        /// The repository's name.
        repo: String,
        /// The output of `git rev-list --all --parents`.
        rev_list: PathBuf,
        /// The output of `git for-each-ref --format='%(refname) %(objectname)'`.
        #[arg(long)]
        refs: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    common::init_logs(cli.log_json);
    let mut config = DirectoryConfig::load(cli.config.as_deref())?;
    config.store.apply_flags(&cli.store);
    match cli.command {
        Command::Serve(flags) => {
            config.server.apply_flags(&flags);
            config.server.validate()?;
            run_server(config)
        }
        Command::Import {
            what:
                ImportKind::Repo {
                    repo,
                    rev_list,
                    refs,
                },
        } => {
            let (_, commits) = config.store.open()?;
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            };
            let rev_list = read(&rev_list)?;
            let refs = refs.as_ref().map(read).transpose()?.unwrap_or_default();
            // The library reports its steps; the spinner is drawn only on a terminal.
            let spinner = if std::io::stderr().is_terminal() {
                indicatif::ProgressBar::new_spinner()
            } else {
                indicatif::ProgressBar::hidden()
            };
            // The change feed records a command-line import as made by the local user.
            let actor = cli_actor();
            let summary = commits.import_with_progress(
                directory::repos::repo_id(&repo),
                &rev_list,
                &refs,
                commitgraph::Writer::new(&actor, &repo),
                &mut |step: commitgraph::ImportProgress| spinner.set_message(step.to_string()),
            )?;
            spinner.finish_and_clear();
            println!(
                "{}",
                serde_json::json!({
                    "repo": repo,
                    "added": summary.appended.added,
                    "known": summary.appended.known,
                    "branches": summary.branches,
                    "revision": summary.revision,
                })
            );
            Ok(())
        }
        Command::Import { what } => {
            let (store, _) = config.store.open()?;
            let (path, summary) = match what {
                ImportKind::Teams { path } => {
                    let file = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    let bar = ImportBar::new();
                    let summary = graphdb::Teams::open(&store)?.import_tsv(
                        BufReader::new(file),
                        Some(&|done, total| bar.show(done, total)),
                    )?;
                    (path, summary)
                }
                ImportKind::Packagesets { path } => {
                    let file = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    let bar = ImportBar::new();
                    let summary = graphdb::PackageSets::open(&store)?.import_tsv(
                        BufReader::new(file),
                        Some(&|done, total| bar.show(done, total)),
                    )?;
                    (path, summary)
                }
                ImportKind::Graph { name, path, kind } => {
                    let kind = if kind == "acyclic" {
                        graphdb::NamespaceKind::Acyclic
                    } else {
                        graphdb::NamespaceKind::General
                    };
                    let file = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    let graph = match store.graph(&name)? {
                        Some(graph) => graph,
                        None => store.create_graph(&name, kind)?,
                    };
                    let bar = ImportBar::new();
                    let (nodes, edges, revision) = graph
                        .acting_as(&cli_actor())
                        .import_tsv_with_progress(
                            BufReader::new(file),
                            None,
                            Some(&|done, total| bar.show(done, total)),
                        )
                        .with_context(|| format!("importing {}", path.display()))?;
                    (
                        path,
                        graphdb::import::ImportSummary {
                            nodes,
                            edges,
                            revision,
                        },
                    )
                }
                ImportKind::Repo { .. } => {
                    anyhow::bail!("repositories are imported by the arm above")
                }
            };
            println!(
                "{}",
                serde_json::json!({
                    "file": path.display().to_string(),
                    "nodes": summary.nodes,
                    "edges": summary.edges,
                })
            );
            Ok(())
        }
        Command::Check => {
            let (store, _) = config.store.open()?;
            let teams = graphdb::Teams::open(&store)?;
            let report = teams.check();
            let stats = teams.stats();
            println!("teams: {stats:?}");
            // Where the team index's memory goes (estimated: graphdb/DESIGN.md, "Memory").
            println!("teams memory: {:?}", teams.memory());
            println!("teams check: {report:?}");
            let sets = graphdb::PackageSets::open(&store)?.check();
            println!("packagesets check: {sets:?}");
            if !report.is_clean() || !sets.is_clean() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Backup { dir, server, user } => match server {
            Some(server) => common::backup::backup_through_server(
                &server,
                &dir,
                user.as_deref(),
                "DIRECTORY_PASSWORD",
            )
            .map_err(anyhow::Error::from),
            None => {
                let (store, _commits) = config.store.open()?;
                let manifest =
                    directory::backup::backup(store.engine().as_ref(), &config.store, &dir)?;
                println!("{}", common::backup_summary(&dir, &manifest));
                Ok(())
            }
        },
        Command::Restore { dir } => {
            let manifest = directory::backup::restore(&dir, &config.store)?;
            println!(
                "{}",
                common::backup_summary(&config.store.data_dir, &manifest)
            );
            Ok(())
        }
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "an empty password");
            println!("{}", common::access::hash_password(password));
            Ok(())
        }
    }
}

/// The author the change feed records for a command-line import: the local user.
fn cli_actor() -> String {
    std::env::var("USER").map_or_else(|_| "cli".into(), |u| format!("cli:{u}"))
}

fn run_server(config: DirectoryConfig) -> anyhow::Result<()> {
    // The librarian's arrangement: one single-threaded runtime per HTTP thread, connections
    // handed round-robin (see `serve::serve_threads`), so a point lookup answered in place
    // costs no wake-up of another worker.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let threads = serve::http_threads();
    let (store, commits) = config.store.open()?;
    let state = Directory::new(store, commits, &config.server)
        .map_err(anyhow::Error::msg)?
        .with_max_import_edges(config.store.max_import_edges)
        .with_store_config(config.store.clone());
    let engine = state.store().engine().clone();
    // On PostgreSQL, several instances elect the writer (always this one on an embedded store).
    let leader = common::Leader::elect(engine.clone(), "directory", config.server.lease_ttl());
    // The change feed's retention: prune once an hour, on a thread of its own, on the
    // writer only (several instances on one database).
    let pruner = state.clone();
    let pruning_leader = leader.clone();
    std::thread::Builder::new()
        .name("feed-retention".into())
        .spawn(move || loop {
            if !pruning_leader.is_leader() {
                std::thread::sleep(Duration::from_secs(60));
                continue;
            }
            match pruner.prune_changes() {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "change feed pruned"),
                Err(error) => tracing::warn!(%error, "pruning the change feed failed"),
            }
            std::thread::sleep(Duration::from_secs(3600));
        })?;
    let state = state.with_leader(leader.clone());
    runtime.block_on(async move {
        leader.start();
        let listener = serve::bind(config.server.listen, config.server.dev).await?;
        tracing::info!(
            address = %listener.local_addr()?,
            data_dir = %config.store.data_dir.display(),
            backend = %config.store.backend,
            dev = config.server.dev,
            "directory listening"
        );
        let app = directory::app(state);
        serve::serve_threads(
            listener,
            threads,
            app,
            config.server.limits.clone(),
            serve::shutdown_signal(),
        )
        .await?;
        // Drained: hand the lease over at once rather than at its expiry.
        leader.stop().await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    engine.flush()?;
    tracing::info!("directory stopped");
    Ok(())
}

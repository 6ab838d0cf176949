//! `capacity report`: `docs/CAPACITY.md` and `docs/capacity/*.svg` from one run's rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::common::Flags;

/// One figure of the run.
#[derive(Clone, Debug)]
struct Row {
    name: String,
    scale: u64,
    value: f64,
    unit: String,
    command: String,
}

/// The rows of a run, in the order they were written.
#[derive(Debug)]
struct Run {
    rows: Vec<Row>,
}

impl Run {
    fn load(path: &Path) -> Result<Run> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let rows = text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.splitn(5, '\t').collect();
                (f.len() == 5).then(|| Row {
                    name: f[0].to_string(),
                    scale: f[1].parse().unwrap_or(0),
                    value: f[2].parse().unwrap_or(f64::NAN),
                    unit: f[3].to_string(),
                    command: f[4].to_string(),
                })
            })
            .collect();
        Ok(Run { rows })
    }

    /// The value of `name` at `scale` (the last one written).
    fn get(&self, name: &str, scale: u64) -> Option<f64> {
        self.rows
            .iter()
            .rev()
            .find(|r| r.name == name && r.scale == scale)
            .map(|r| r.value)
            .filter(|v| v.is_finite())
    }

    /// The value of `name` at its largest scale, with that scale.
    fn largest(&self, name: &str) -> Option<(u64, f64)> {
        self.rows
            .iter()
            .filter(|r| r.name == name && r.value.is_finite())
            .max_by_key(|r| r.scale)
            .map(|r| (r.scale, r.value))
    }

    /// The growth of `name` per unit of scale between its smallest and largest scale.
    fn slope(&self, name: &str) -> Option<f64> {
        let points = self.series(name);
        let (first, last) = (points.first()?, points.last()?);
        (last.0 > first.0).then(|| (last.1 - first.1) / (last.0 - first.0))
    }

    fn series(&self, name: &str) -> Vec<(f64, f64)> {
        let mut points: BTreeMap<u64, f64> = BTreeMap::new();
        for r in self.rows.iter().filter(|r| r.name == name) {
            if r.value.is_finite() && r.value > 0.0 {
                points.insert(r.scale, r.value);
            }
        }
        points.into_iter().map(|(s, v)| (s as f64, v)).collect()
    }

    /// A table of every row whose name starts with `prefix`: one line per name, one column
    /// per scale.
    fn table(&self, prefix: &str, scale_label: &str) -> String {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.name.starts_with(prefix))
            .collect();
        let mut scales: Vec<u64> = rows.iter().map(|r| r.scale).collect();
        scales.sort_unstable();
        scales.dedup();
        let mut names: Vec<(&str, &str)> = Vec::new();
        for r in &rows {
            if !names.iter().any(|(n, _)| *n == r.name) {
                names.push((&r.name, &r.unit));
            }
        }
        if names.is_empty() {
            return "(not measured in this run)\n".to_string();
        }
        let mut out = format!("| {scale_label} |");
        for s in &scales {
            let _ = write!(out, " {} |", thousands(*s));
        }
        out.push_str("\n| --- |");
        for _ in &scales {
            out.push_str(" ---: |");
        }
        out.push('\n');
        for (name, unit) in names {
            let _ = write!(out, "| {} ({unit}) |", &name[prefix.len()..]);
            for s in &scales {
                match self.get(name, *s) {
                    Some(v) => {
                        let _ = write!(out, " {} |", number(v));
                    }
                    None => out.push_str(" |"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// The distinct commands of the rows under `prefix`.
    fn commands(&self, prefix: &str) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for r in self.rows.iter().filter(|r| r.name.starts_with(prefix)) {
            if !seen.contains(&r.command.as_str()) {
                seen.push(&r.command);
            }
        }
        let mut out = String::from("```sh\n");
        for c in seen {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str("```\n");
        out
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Three significant digits, thousands separated.
fn number(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let digits = v.abs().log10().floor() as i32 + 1;
        let unit = 10f64.powi((digits - 3).max(0));
        let rounded = (v / unit).round() * unit;
        let sign = if rounded < 0.0 { "-" } else { "" };
        format!("{sign}{}", thousands(rounded.abs() as u64))
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}×", number(a / b)),
        _ => "—".to_string(),
    }
}

/// A log-log line chart of `series` (label, points).
fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<bool> {
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    if all.is_empty() {
        return Ok(false);
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &all {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    let (x0, x1) = (x0 / 1.5, x1 * 1.5);
    let (y0, y1) = (y0 / 2.0, y1 * 2.0);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| number(*v))
        .draw()?;
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    for (i, (label, points)) in series.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(true)
}

struct Charts<'a> {
    run: &'a Run,
    dir: &'a Path,
    md: String,
}

impl Charts<'_> {
    fn add(
        &mut self,
        file: &str,
        title: &str,
        x: &str,
        y: &str,
        names: &[(&str, &str)],
    ) -> Result<()> {
        let series: Vec<(String, Vec<(f64, f64)>)> = names
            .iter()
            .map(|(label, name)| (label.to_string(), self.run.series(name)))
            .collect();
        if chart(&self.dir.join(file), title, x, y, &series)? {
            let _ = writeln!(self.md, "![{title}](capacity/{file})\n");
        }
        Ok(())
    }
}

/// A paragraph saying which figures a busy machine lowers, when the load average before or
/// after the run exceeded the core count; `None` on a quiet machine.
fn shared_machine_warning(machine: &str) -> Option<String> {
    let field = |name: &str| {
        machine
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let first_load = |name: &str| field(name)?.split_whitespace().next()?.parse::<f64>().ok();
    let cores: f64 = field("nproc:")?.parse().ok()?;
    let loads: Vec<f64> = ["load before:", "load after:"]
        .into_iter()
        .filter_map(first_load)
        .collect();
    let highest = loads.iter().copied().fold(0.0, f64::max);
    (highest > cores).then(|| {
        format!(
            "**This run shared the machine** (load average up to {highest} on {cores} cores): \
             rates and p99 latencies are floors of what the code does on a quiet machine; \
             bytes per file, pair or commit do not depend on it, and the ratios to peers \
             measured in the same minutes less than the rates do.\n\n"
        )
    })
}

/// `capacity report --results R --machine FILE --out DOCS`.
pub fn run(flags: &Flags) -> Result<()> {
    let run = Run::load(&flags.path("results")?)?;
    let machine = std::fs::read_to_string(flags.path("machine")?).unwrap_or_default();
    let docs = flags.path("out")?;
    let charts_dir = docs.join("capacity");
    std::fs::create_dir_all(&charts_dir)?;
    let mut md = String::new();
    md.push_str("# Capacity\n\n");
    md.push_str(
        "**Generated by `make capacity` (`scripts/capacity.sh`, `benches/src/bin/capacity`) from \
         the rows of its last run; do not edit by hand: rerun it.** Every figure below comes from \
         that one run, peers included, so the ratios compare like with like on the same machine \
         at the same moment. Criterion's own benches (`make bench`) are separate; their HTML \
         reports stay under `$CARGO_TARGET_DIR/criterion`.\n\n",
    );
    md.push_str(
        "Each table lists the commands that produced its rows: `capacity …` is \
         `$CARGO_TARGET_DIR/release/capacity` (`benches/src/bin/capacity`), run by the script \
         with a temporary directory; the `pg/`, `git/` and `http/` rows come from \
         `scripts/capacity.sh` itself. The raw rows of the run are in \
         `docs/capacity/results.tsv`; `capacity report --results docs/capacity/results.tsv \
         --machine docs/capacity/machine.txt --out docs` redraws this page from them.\n\n",
    );
    md.push_str("## The machine\n\n```text\n");
    md.push_str(machine.trim_end());
    md.push_str("\n```\n\n");
    if let Some(warning) = shared_machine_warning(&machine) {
        md.push_str(&warning);
    }
    md.push_str(
        "Scales are counts of files, persons or commits; latencies are per call measured with \
         `Instant` around each call (timer included); `p50`/`p99` are percentiles of those \
         samples. A noisy machine (see the load average above) widens p99 first.\n\n",
    );

    let mut charts = Charts {
        run: &run,
        dir: &charts_dir,
        md: String::new(),
    };

    // Blob store.
    md.push_str("## Blob store (`blobstore`, RocksDB metadata, local-filesystem blobs)\n\n");
    md.push_str(
        "Tiny files (48 bytes, stored inline) are uploaded by 32 writers sharing the group \
         fsync; each upload is durable when it returns. Metadata bytes are the engine \
         directory (SST files and log) after a clean close, divided by the files.\n\n",
    );
    md.push_str(&run.table("blobs/", "files"));
    md.push('\n');
    md.push_str(&run.commands("blobs/"));
    md.push_str("\n### By file size (one writer, one reader)\n\n");
    md.push_str(
        "Random content (no dedup), about 128 MiB per size (at most 2,000 files, at least one), \
         uploaded by one writer, each upload durable on return, then read back at once: the \
         reads come from the page cache. Scale = KiB per file.\n\n",
    );
    md.push_str(&run.table("sizes/", "KiB per file"));
    md.push('\n');
    md.push_str(&run.table("blake3/", "KiB hashed per call"));
    md.push('\n');
    md.push_str(&run.commands("sizes/"));
    md.push('\n');
    charts.add(
        "blobs-metadata.svg",
        "Blob store: metadata bytes per file",
        "files",
        "bytes per file",
        &[(
            "engine directory bytes / file",
            "blobs/metadata bytes per file",
        )],
    )?;
    charts.add(
        "blobs-rates.svg",
        "Blob store: rates against scale",
        "files in the store",
        "per second",
        &[
            (
                "ingest tiny files/s (32 writers)",
                "blobs/ingest tiny files, 32 writers, synced",
            ),
            (
                "dedup hits/s (32 writers)",
                "blobs/dedup hits, 32 writers, synced",
            ),
            ("reads/s (1 reader)", "blobs/read tiny files, 1 reader"),
            ("GC blobs/s", "blobs/gc collected blobs"),
        ],
    )?;
    charts.add(
        "sizes.svg",
        "Blob store: MiB/s by file size",
        "KiB per file",
        "MiB/s",
        &[
            ("ingest", "sizes/ingest MiB/s"),
            ("read", "sizes/read MiB/s"),
            ("BLAKE3 one thread", "blake3/single-thread hash MiB/s"),
        ],
    )?;
    md.push_str(&std::mem::take(&mut charts.md));

    // Teams.
    md.push_str("## Team graph (`graphdb` teams, RocksDB)\n\n");
    md.push_str(
        "`graphdb::generate` graphs: the production shape (`Shape::full()`, 500,000 persons, \
         30,000 teams, an 18,000-person team, a 300-team person) divided (`Shape::scaled`) or \
         multiplied (persons, teams, audits ×2; the special teams kept). is-member probes \
         random (person, team) pairs, the distribution pgbench uses below.\n\n",
    );
    md.push_str(&run.table("teams/", "persons"));
    md.push('\n');
    md.push_str(&run.commands("teams/"));
    md.push('\n');
    charts.add(
        "teams-latency.svg",
        "Team graph: query latency against persons",
        "persons",
        "µs",
        &[
            ("is-member p50", "teams/is-member p50"),
            ("is-member p99", "teams/is-member p99"),
            (
                "members of largest team (ids) p50",
                "teams/members of the largest team (ids) p50",
            ),
            (
                "members of largest team (names) p50",
                "teams/members of the largest team (all names) p50",
            ),
            (
                "teams of busiest person p50",
                "teams/teams of the busiest person (ids) p50",
            ),
            (
                "add/remove buffered p50",
                "teams/add or remove a membership, buffered p50",
            ),
        ],
    )?;
    charts.add(
        "teams-bytes.svg",
        "Team graph: bytes per (member, team) pair",
        "persons",
        "bytes per pair",
        &[
            ("engine directory", "teams/engine bytes per pair"),
            (
                "persisted closure",
                "teams/persisted closure bytes per pair",
            ),
            (
                "in-memory closure",
                "teams/in-memory closure bytes per pair",
            ),
        ],
    )?;
    md.push_str(&std::mem::take(&mut charts.md));

    // Commits.
    md.push_str("## Commit graph (`commitgraph`, RocksDB)\n\n");
    md.push_str(
        "`commitgraph::gen` DAGs (10% merges, N/1,000 branches between 10 and 1,000); \
         is-ancestor on random pairs, is-merged on random branch pairs with the targets' \
         reach vectors cached.\n\n",
    );
    md.push_str(&run.table("commits/", "commits"));
    md.push('\n');
    md.push_str(&run.commands("commits/"));
    md.push('\n');
    charts.add(
        "commits-latency.svg",
        "Commit graph: latency against commits",
        "commits",
        "µs",
        &[
            ("is-ancestor p50", "commits/is-ancestor p50"),
            ("is-ancestor p99", "commits/is-ancestor p99"),
            ("is-merged warm p50", "commits/is-merged warm p50"),
            ("is-merged warm p99", "commits/is-merged warm p99"),
        ],
    )?;
    charts.add(
        "commits-bytes.svg",
        "Commit graph: bytes per commit",
        "commits",
        "bytes per commit",
        &[
            ("engine directory", "commits/engine bytes per commit"),
            (
                "index in memory",
                "commits/index bytes per commit (in memory)",
            ),
        ],
    )?;
    md.push_str(&std::mem::take(&mut charts.md));

    // Peers.
    md.push_str("## The peers, same run\n\n");
    md.push_str(&peers(&run));

    // HTTP.
    md.push_str("## Both servers under wrk\n\n");
    md.push_str(
        "Release binaries in `--dev` mode on 127.0.0.1, tokio's default runtime (one worker per \
         core); nginx with as many workers; wrk with 2 threads for 8 and 64 connections, 1 for 1, \
         each run bounded in time. `req/s` is wrk's Requests/sec, latencies are its percentiles \
         in ms. Scale = connections. wrk runs on the same 2 cores as the server: the figures \
         are a floor.\n\n",
    );
    md.push_str(&run.table("http/", "connections"));
    md.push('\n');
    md.push_str(&run.commands("http/"));
    md.push('\n');
    let routes: Vec<String> = {
        let mut v: Vec<String> = run
            .rows
            .iter()
            .filter_map(|r| r.name.strip_prefix("http/"))
            .filter_map(|n| n.strip_suffix(" req/s"))
            .map(str::to_string)
            .collect();
        v.dedup();
        v.sort();
        v.dedup();
        v
    };
    let names: Vec<(String, String)> = routes
        .iter()
        .map(|r| (r.clone(), format!("http/{r} req/s")))
        .collect();
    let refs: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    charts.add(
        "http.svg",
        "Requests per second by connections",
        "connections",
        "requests/s",
        &refs,
    )?;
    md.push_str(&std::mem::take(&mut charts.md));

    md.push_str("## Not measured in this run\n\n");
    md.push_str(&not_measured(&run));
    md.push_str("## Sizing model\n\n");
    md.push_str(&sizing(&run));

    std::fs::write(docs.join("CAPACITY.md"), md)?;
    println!("wrote {}", docs.join("CAPACITY.md").display());
    Ok(())
}

fn peers(run: &Run) -> String {
    let mut md = String::new();
    // The scale the peers ran at (the production shape unless the run said otherwise).
    let full = run.largest("pg/is-member").map_or(500_000, |(s, _)| s);
    md.push_str("### PostgreSQL `TeamParticipation(team, person)` closure table\n\n");
    md.push_str(
        "The full generated graph's closure, Launchpad-style (integer ids, self rows, a \
         unique index on (team, person) and an index on person), loaded with COPY; each query \
         run by `pgbench -M prepared` on one connection over the loopback socket for a bounded \
         time (`latency average`). graphdb in-process is one call on one thread answering with \
         sorted ids, as the SQL does; the directory over HTTP is wrk's p50 at one connection \
         and answers with sorted names.\n\n",
    );
    md.push_str("| question | PostgreSQL µs | graphdb in-process µs | PostgreSQL / graphdb | directory HTTP p50 µs (1 conn) | PostgreSQL / directory HTTP |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
    let http = |route: &str| {
        run.get(&format!("http/{route} p50"), 1)
            .map(|ms| ms * 1000.0)
    };
    for (label, pg, ours, route) in [
        (
            "is P in T (random pairs)",
            "pg/is-member",
            "teams/is-member p50",
            "directory is-member",
        ),
        (
            "members of the 18,000-person team",
            "pg/members of the largest team",
            "teams/members of the largest team (ids) p50",
            "directory members of the largest team",
        ),
        (
            "teams of the 300-team person",
            "pg/teams of the busiest person",
            "teams/teams of the busiest person (ids) p50",
            "directory teams of the busiest person",
        ),
    ] {
        let (p, o, h) = (run.get(pg, full), run.get(ours, full), http(route));
        let f = |v: Option<f64>| v.map_or("—".to_string(), number);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} |",
            f(p),
            f(o),
            ratio(p, o),
            f(h),
            ratio(p, h)
        );
    }
    for (name, label) in [
        ("pg/TeamParticipation rows", "TeamParticipation rows"),
        (
            "pg/bytes per row (table + indexes)",
            "PostgreSQL bytes per row (table + indexes)",
        ),
        ("pg/load (COPY + indexes + analyze)", "PostgreSQL load, s"),
    ] {
        if let Some(v) = run.get(name, full) {
            let _ = writeln!(md, "\n{label}: {}", number(v));
        }
    }
    if let (Some(pg), Some(ours)) = (
        run.get("pg/bytes per row (table + indexes)", full),
        run.get("teams/engine bytes per pair", full),
    ) {
        let _ = writeln!(
            md,
            "\nBytes per pair, PostgreSQL / graphdb's engine directory: {}",
            ratio(Some(pg), Some(ours))
        );
    }
    md.push('\n');
    md.push_str(&run.commands("pg/"));

    md.push_str("\n### git `merge-base --is-ancestor` on the same generated DAG\n\n");
    md.push_str(
        "A real repository built by `git fast-import` from `GeneratedDag::fast_import_stream` \
         (the graph graphdb indexes, commit for commit), asked about the same random pairs one \
         `git` process per question, before and after `git commit-graph write --reachable`. \
         git's figure includes starting a process, so the start of `git rev-parse HEAD` is \
         shown too.\n\n",
    );
    md.push_str("| commits | git µs, no commit-graph | git µs, commit-graph | git start µs | graphdb µs (same pairs) | git (commit-graph) / graphdb | git (commit-graph) minus start / graphdb |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let mut scales: Vec<u64> = run
        .rows
        .iter()
        .filter(|r| r.name.starts_with("git/"))
        .map(|r| r.scale)
        .collect();
    scales.sort_unstable();
    scales.dedup();
    for s in scales {
        let plain = run.get("git/is-ancestor without commit-graph mean", s);
        let graph = run.get("git/is-ancestor with commit-graph mean", s);
        let start = run.get("git/process start mean", s);
        let ours = run.get("commits/is-ancestor on the git pairs mean", s);
        let f = |v: Option<f64>| v.map_or("—".to_string(), number);
        let net = match (graph, start) {
            (Some(g), Some(st)) => Some((g - st).max(0.0)),
            _ => None,
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            thousands(s),
            f(plain),
            f(graph),
            f(start),
            f(ours),
            ratio(graph, ours),
            ratio(net, ours)
        );
    }
    md.push('\n');
    md.push_str(&run.table("git/", "commits"));
    md.push('\n');
    md.push_str(&run.commands("git/"));

    md.push_str("\n### nginx serving the same files as the librarian\n\n");
    md.push_str("| connections | librarian req/s | nginx req/s | librarian / nginx |\n| ---: | ---: | ---: | ---: |\n");
    for c in [1u64, 8, 64] {
        let l = run.get("http/librarian small file req/s", c);
        let n = run.get("http/nginx small file req/s", c);
        if l.is_none() && n.is_none() {
            continue;
        }
        let f = |v: Option<f64>| v.map_or("—".to_string(), number);
        let _ = writeln!(md, "| {c} | {} | {} | {} |", f(l), f(n), ratio(l, n));
    }
    md.push_str("\n### BLAKE3 as the ingest ceiling\n\n");
    let big = 256 << 10;
    let ingest = run.get("sizes/ingest MiB/s", big);
    let hash = run.get("blake3/single-thread hash MiB/s", big);
    let _ = writeln!(
        md,
        "Ingest of 256 MiB files, one writer: {} MiB/s; BLAKE3 on one thread over 256 MiB: {} \
         MiB/s; ingest / BLAKE3 = {}.\n",
        ingest.map_or("—".to_string(), number),
        hash.map_or("—".to_string(), number),
        ratio(ingest, hash)
    );
    md
}

/// What the 30-minute budget left out, with what it would take from this run's rates.
fn not_measured(run: &Run) -> String {
    let f = |v: Option<f64>| v.map_or("—".to_string(), number);
    let mut md = String::new();
    if run
        .get("blobs/ingest tiny files, 32 writers, synced", 10_000_000)
        .is_none()
    {
        let rate = run.largest("blobs/ingest tiny files, 32 writers, synced");
        let meta = run.largest("blobs/metadata bytes per file");
        let _ = writeln!(
            md,
            "- The blob store at 10,000,000 files: at the {} files/s measured at {} files the \
             fill alone takes {} minutes, beyond the budget; it would need about {} GiB of \
             metadata. Run `BLOB_SCALES=10000000 TEAM_SCALES= COMMIT_SCALES= \
             scripts/capacity.sh` for it.",
            f(rate.map(|r| r.1)),
            f(rate.map(|r| r.0 as f64)),
            f(rate.map(|r| 1e7 / r.1 / 60.0)),
            f(meta.map(|m| m.1 * 1e7 / 1073741824.0)),
        );
    }
    if run.get("commits/is-ancestor p50", 10_000_000).is_none() {
        let _ = writeln!(
            md,
            "- The commit graph at 10,000,000 commits: the generator, the rev-list text and the \
             index of one repository would hold several GiB at once; the scales stop at {}.",
            f(run.largest("commits/is-ancestor p50").map(|c| c.0 as f64)),
        );
    }
    let _ = writeln!(
        md,
        "- git answers one question per process (it has no long-lived is-ancestor service), \
         so its figures include a process start; the table above subtracts one for a lower \
         bound.\n\
         - The librarian's upload route under wrk, its range reads and large downloads are \
         measured by `benches/servers/librarian.sh` (issue 6), not here.\n"
    );
    md
}

fn sizing(run: &Run) -> String {
    let mut md = String::new();
    let f = |v: Option<f64>| v.map_or("—".to_string(), number);
    let meta = run.largest("blobs/metadata bytes per file");
    let tiny = run.largest("blobs/ingest tiny files, 32 writers, synced");
    let big = run.get("sizes/ingest MiB/s", 256 << 10);
    let rss = run.largest("blobs/process peak RSS");
    let rss_slope = run.slope("blobs/process peak RSS").map(|m| m * 1048576.0);
    let _ = writeln!(
        md,
        "Per-unit figures are taken at the largest scale measured; the model is linear in them, \
         which the tables above show to hold (or not) across the scales.\n\n\
         **Librarian.** For N files and M new bytes a day (after dedup):\n\n\
         - disk: M bytes a day for content + N × {} bytes of metadata (measured at {} files); \
           14 million files need {} GiB of metadata;\n\
         - cores: one writer ingests {} MiB/s of large files (hashing, writing, fsync), and the \
           store takes {} tiny synced uploads/s on this machine: cores ≈ peak MiB/s ÷ {} + peak \
           uploads/s ÷ {};\n\
         - memory: the store process peaked at {} MiB at {} files (RocksDB's default cache; \
           blob content is streamed, not held), growing by {} bytes per file between the \
           smallest and the largest scale, plus the page cache for hot content.\n",
        f(meta.map(|m| m.1)),
        f(meta.map(|m| m.0 as f64)),
        f(meta.map(|m| m.1 * 14e6 / 1073741824.0)),
        f(big),
        f(tiny.map(|t| t.1)),
        f(big),
        f(tiny.map(|t| t.1 / 2.0)),
        f(rss.map(|r| r.1)),
        f(rss.map(|r| r.0 as f64)),
        f(rss_slope),
    );
    let pairs = run.largest("teams/closure pairs");
    let bytes = run.largest("teams/engine bytes per pair");
    let mem = run.largest("teams/resident memory after reopen");
    let per_person_pairs = pairs.map(|(s, p)| p / s as f64);
    // The growth of resident memory per person between the smallest and largest scale (the
    // process's fixed cost cancels out); the plain ratio when only one scale ran.
    let per_person_mem = run
        .slope("teams/resident memory after reopen")
        .map(|m| m * 1048576.0)
        .or(mem.map(|(s, m)| m * 1048576.0 / s as f64));
    let ism = run.largest("teams/is-member, 1 thread");
    let _ = writeln!(
        md,
        "**Directory, teams.** For P persons (and teams in the generated proportion, T ≈ P/17):\n\n\
         - pairs ≈ P × {} (measured at {} persons);\n\
         - disk: pairs × {} bytes (engine directory per pair);\n\
         - memory: P × {} bytes resident after a reopen (growth between the smallest and the \
           largest scale: the closure and the names are held in memory); 10 million persons ≈ \
           {} GiB;\n\
         - cores: one core answers {} is-member questions/s in-process; over HTTP see the wrk \
           table (the HTTP stack, not the index, is the cost there).\n",
        f(per_person_pairs),
        f(pairs.map(|p| p.0 as f64)),
        f(bytes.map(|b| b.1)),
        f(per_person_mem),
        f(per_person_mem.map(|m| m * 1e7 / 1073741824.0)),
        f(ism.map(|i| i.1)),
    );
    let cbytes = run.largest("commits/engine bytes per commit");
    let cmem = run.largest("commits/index bytes per commit (in memory)");
    let crss = run.largest("commits/process peak RSS");
    let crss_slope = run.slope("commits/process peak RSS").map(|m| m * 1048576.0);
    let _ = writeln!(
        md,
        "**Directory, commits.** For C commits over all repositories: disk C × {} bytes, index \
         memory C × {} bytes when every repository is loaded (the measuring process peaked at {} \
         MiB for {} commits, generation and the import text included: {} bytes per commit of \
         growth between the smallest and the largest scale, an upper bound).\n",
        f(cbytes.map(|c| c.1)),
        f(cmem.map(|c| c.1)),
        f(crss.map(|c| c.1)),
        f(crss.map(|c| c.0 as f64)),
        f(crss_slope),
    );
    md
}

#[cfg(test)]
mod tests {
    use super::shared_machine_warning;

    #[test]
    fn a_load_above_the_core_count_is_called_out() {
        let busy = "nproc:       2\nload before: 6.14 3.89 2.75\nload after:  11.88 10.64 11.61\n";
        let warning = shared_machine_warning(busy).expect("a busy run is called out");
        assert!(warning.contains("up to 11.88 on 2 cores"), "{warning}");
        let quiet = "nproc:       2\nload before: 0.52 0.40 0.33\nload after:  1.90 1.10 0.80\n";
        assert_eq!(shared_machine_warning(quiet), None);
        assert_eq!(shared_machine_warning("no fields"), None);
    }
}

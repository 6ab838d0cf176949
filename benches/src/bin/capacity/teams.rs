//! The team graph at one scale: import, index bytes, queries, updates, reopen; optionally
//! the files the peers load (the directory's TSV, PostgreSQL's `TeamParticipation` rows,
//! wrk's request paths).

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufWriter, Write as _};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use engine::{Durability, EngineConfig};
use graphdb::generate::{Generated, Shape};
use graphdb::{Depth, Filter, GraphStore, ManualClock, NodeId, Role, TeamFilter, Teams};

use crate::common::{dir_size, micros, rss, Flags, Lcg};

/// The generated shape with `persons` persons: the production shape divided or multiplied.
pub fn shape(persons: usize) -> Shape {
    let full = Shape::full();
    if persons <= full.persons {
        return Shape::scaled(full.persons / persons.max(1));
    }
    let m = persons / full.persons;
    let mut shape = full;
    shape.persons *= m;
    shape.teams *= m;
    shape.audits *= m;
    shape
}

fn open(dir: &std::path::Path, now: i64, durability: Durability) -> Result<(GraphStore, Teams)> {
    let engine = EngineConfig::rocksdb(dir).open(graphdb::KEYSPACES)?;
    let store = GraphStore::builder(engine)
        .clock(Arc::new(ManualClock::at_seconds(now)))
        .durability(durability)
        .open()?;
    let teams = graphdb::Teams::open(&store)?;
    Ok((store, teams))
}

/// `capacity teams --persons P`.
pub fn run(flags: &Flags) -> Result<()> {
    let persons = flags.number("persons", 10_000)?;
    let tmp = tempfile::tempdir_in(flags.path("dir")?)?;
    let dir = tmp.path().join("graph");
    let mut out = flags.results()?;
    let g = Generated::new(&shape(persons));
    let scale = g.persons.len() as u64;
    let tsv = g.to_tsv();

    let (store, teams) = open(&dir, g.now, Durability::Sync)?;
    let started = Instant::now();
    teams.import_tsv(tsv.as_bytes(), None)?;
    out.row(
        "teams/bulk import + index build",
        scale,
        started.elapsed().as_secs_f64(),
        "s",
    )?;
    let stats = teams.stats();
    out.row("teams/closure pairs", scale, stats.pairs as f64, "pairs")?;
    out.row(
        "teams/persisted closure bytes per pair",
        scale,
        stats.closure_bytes as f64 / stats.pairs as f64,
        "B",
    )?;
    out.row(
        "teams/in-memory closure bytes per pair",
        scale,
        stats.full_closure_bytes as f64 / stats.pairs as f64,
        "B",
    )?;

    let view = teams.view();
    let big = view.id(&g.teams[g.special_roots[0]]).context("big team")?;
    let heavy = view
        .id(&g.persons[g.heavy_person])
        .context("heavy person")?;
    let big_size = view
        .member_ids_of(big, Depth::Transitive, Filter::Leaves)
        .len();
    let heavy_teams = view.group_ids_of(heavy, Depth::Transitive).len();
    drop(view);
    out.row(
        "teams/largest team's persons",
        scale,
        big_size as f64,
        "persons",
    )?;
    out.row(
        "teams/busiest person's teams",
        scale,
        heavy_teams as f64,
        "teams",
    )?;

    // is-member on random (person, team) pairs: the distribution pgbench uses too.
    let mut rng = Lcg(9);
    let probes: Vec<(NodeId, NodeId)> = {
        let view = teams.view();
        (0..200_000)
            .map(|_| {
                let p = view.id(&g.persons[rng.below(g.persons.len())]);
                let t = view.id(&g.teams[rng.below(g.teams.len())]);
                (p.expect("person"), t.expect("team"))
            })
            .collect()
    };
    let mut samples = Vec::with_capacity(probes.len());
    let started = Instant::now();
    for &(p, t) in &probes {
        let s = Instant::now();
        black_box(teams.view().is_member_id(p, t));
        samples.push(s.elapsed());
    }
    let took = started.elapsed();
    out.row(
        "teams/is-member, 1 thread",
        scale,
        probes.len() as f64 / took.as_secs_f64(),
        "queries/s",
    )?;
    out.latencies("teams/is-member", scale, samples)?;

    let names: Vec<(String, String)> = probes
        .iter()
        .take(50_000)
        .map(|&(p, t)| {
            let view = teams.view();
            (
                view.name(p).expect("p").to_owned(),
                view.name(t).expect("t").to_owned(),
            )
        })
        .collect();
    let started = Instant::now();
    for (p, t) in &names {
        black_box(teams.is_member(p, t)?);
    }
    out.row(
        "teams/is-member by names mean",
        scale,
        micros(started.elapsed()) / names.len() as f64,
        "µs",
    )?;

    let mut samples = Vec::new();
    for _ in 0..200 {
        let s = Instant::now();
        let view = teams.view();
        let ids: Vec<u32> = view
            .member_ids_of(big, Depth::Transitive, Filter::Leaves)
            .iter()
            .collect();
        black_box(ids);
        samples.push(s.elapsed());
    }
    out.latencies("teams/members of the largest team (ids)", scale, samples)?;
    let big_name = g.teams[g.special_roots[0]].clone();
    let mut samples = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        black_box(teams.members(
            &big_name,
            Depth::Transitive,
            TeamFilter::Persons,
            None,
            usize::MAX,
        )?);
        samples.push(s.elapsed());
    }
    out.latencies(
        "teams/members of the largest team (all names)",
        scale,
        samples,
    )?;
    // What the directory answers with: the sorted list kept per team and revision, and each
    // name borrowed from the view (the owned page above allocates a `String` per name, which
    // dominates it and swings with the allocator's state).
    let mut samples = Vec::new();
    for _ in 0..200 {
        let s = Instant::now();
        let view = teams.view();
        let sorted = view.sorted_member_ids(big, Filter::Leaves);
        let bytes: usize = sorted
            .iter()
            .map(|&x| view.name(NodeId(x)).map_or(0, str::len))
            .sum();
        black_box(bytes);
        samples.push(s.elapsed());
    }
    out.latencies(
        "teams/members of the largest team (names borrowed, as the directory lists them)",
        scale,
        samples,
    )?;
    let mut samples = Vec::new();
    for _ in 0..10_000 {
        let s = Instant::now();
        let view = teams.view();
        let ids: Vec<u32> = view.group_ids_of(heavy, Depth::Transitive).iter().collect();
        black_box(ids);
        samples.push(s.elapsed());
    }
    out.latencies("teams/teams of the busiest person (ids)", scale, samples)?;

    // Updates: add and remove a person's membership of a general team, buffered and synced.
    let general = |rng: &mut Lcg| g.teams[g.teams.len() - 1 - rng.below(g.teams.len() / 2)].clone();
    drop(teams);
    drop(store);
    for (durability, label, count) in [
        (Durability::Buffered, "buffered", 2_000),
        (Durability::Sync, "synced", 200),
    ] {
        let (_store, teams) = open(&dir, g.now, durability)?;
        let mut samples = Vec::new();
        for _ in 0..count {
            let p = &g.persons[rng.below(g.persons.len())];
            let team = general(&mut rng);
            let s = Instant::now();
            teams.set_membership(&team, p, Role::Member, None)?;
            samples.push(s.elapsed());
            let s = Instant::now();
            teams.remove_membership(&team, p)?;
            samples.push(s.elapsed());
        }
        out.latencies(
            &format!("teams/add or remove a membership, {label}"),
            scale,
            samples,
        )?;
    }
    let (_, peak) = rss();
    out.row(
        "teams/process peak RSS",
        scale,
        peak as f64 / 1048576.0,
        "MiB",
    )?;

    let started = Instant::now();
    let (store, teams) = open(&dir, g.now, Durability::Buffered)?;
    out.row(
        "teams/reopen (engine open + index load)",
        scale,
        started.elapsed().as_secs_f64(),
        "s",
    )?;
    let (now, _) = rss();
    out.row(
        "teams/resident memory after reopen",
        scale,
        now as f64 / 1048576.0,
        "MiB",
    )?;
    drop(teams);
    drop(store);
    let bytes = dir_size(&dir);
    out.row(
        "teams/engine bytes per pair",
        scale,
        bytes as f64 / stats.pairs as f64,
        "B",
    )?;
    out.row("teams/engine bytes total", scale, bytes as f64, "B")?;

    if let Some(export) = flags.get("export") {
        let (_store, teams) = open(&dir, g.now, Durability::Buffered)?;
        export_peers(std::path::Path::new(export), &g, &tsv, &teams)?;
    }
    Ok(())
}

/// The files the script's peers load: `teams.tsv` (the directory's import), `tp.copy`
/// (`TeamParticipation(team, person)` rows with integer ids, self rows included, as
/// Launchpad keeps them), `peer.env` (ids and names of the special nodes), `is-member.paths`
/// (directory routes on random pairs).
fn export_peers(dir: &std::path::Path, g: &Generated, tsv: &str, teams: &Teams) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("teams.tsv"), tsv)?;
    let view = teams.view();
    // PostgreSQL ids: persons 1..=P, teams P+1..=P+T.
    let mut pg: HashMap<u32, usize> = HashMap::new();
    let names = g.persons.iter().chain(&g.teams);
    let mut nodes = Vec::new();
    for (i, name) in names.enumerate() {
        let id = view.id(name).context("node")?;
        pg.insert(id.0, i + 1);
        nodes.push(id);
    }
    let mut copy = BufWriter::new(std::fs::File::create(dir.join("tp.copy"))?);
    let mut rows = 0u64;
    for (i, id) in nodes.iter().enumerate() {
        writeln!(copy, "{}\t{}", i + 1, i + 1)?;
        rows += 1;
        for team in &view.group_ids_of(*id, Depth::Transitive) {
            writeln!(copy, "{}\t{}", pg[&team], i + 1)?;
            rows += 1;
        }
    }
    copy.flush()?;
    let p = g.persons.len();
    let big = g.special_roots[0];
    std::fs::write(
        dir.join("peer.env"),
        format!(
            "PERSONS={p}\nTEAMS={}\nBIG_TEAM_ID={}\nBIG_TEAM={}\nHEAVY_PERSON_ID={}\nHEAVY_PERSON={}\nTP_ROWS={rows}\n",
            g.teams.len(),
            p + big + 1,
            g.teams[big],
            g.heavy_person + 1,
            g.persons[g.heavy_person],
        ),
    )?;
    let mut rng = Lcg(21);
    let mut paths = BufWriter::new(std::fs::File::create(dir.join("is-member.paths"))?);
    for _ in 0..10_000 {
        let person = &g.persons[rng.below(p)];
        let team = &g.teams[rng.below(g.teams.len())];
        writeln!(paths, "/teams/{team}/members/{person}")?;
    }
    paths.flush()?;
    println!(
        "exported {rows} TeamParticipation rows to {}",
        dir.display()
    );
    Ok(())
}

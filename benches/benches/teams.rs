//! Team-participation benchmarks on the full generated graph (500,000 persons, 30,000 teams),
//! stored in RocksDB. Run with `cargo bench -p benches --bench teams`.
//!
//! Names are spread over ids as a real import spreads them (`graphdb::generate`): persons and
//! teams are declared in creation order, so the import numbers them so, but their names are a
//! bijective scramble of the creation index (`zabe1002890490`, `tomi-795556929`), so name
//! order has nothing to do with id order; and the large teams' members are drawn at random
//! from all persons, so a team's members lie all over the id space and memory. Listing and
//! paging by name therefore pay what they pay on real data.
//!
//! Besides criterion's means, it prints one-shot timings (bulk import, reopen) and per-call
//! percentiles measured with `Instant` around each call (timer overhead included).
//!
//! `TEAMS_BENCH_WRITERS=1,4,16` (the default) chooses the numbers of concurrent synced
//! writers measured; `TEAMS_BENCH_WRITES_ONLY=1` stops after the write measurements.
//! `TEAMS_BENCH_NEST_SAMPLES` (default 200) sets how many times the 2,022-member team is
//! nested and un-nested for their percentiles (the count is printed beside them).
//! The concurrent writes are measured with the change feed on, then off
//! (`GraphStore::set_record_changes(false)`), in `TEAMS_BENCH_ROUNDS` rounds (default 3) on
//! the same store, and the medians compared, for the feed's cost in the same run;
//! `TEAMS_BENCH_FEED=on` (or `off`) measures them with the feed on (off) only. `TEAMS_BENCH_WRITES` (default
//! 3,200) sets the writes of each phase (a single writer makes 1,000 of 3,200), longer phases
//! for a profile. `TEAMS_BENCH_INDEXER=off` turns the log's background history indexer off
//! during the phases (the history keys are then written after each phase, untimed), to see
//! what its concurrent writes cost the writers.

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]
// criterion_group! makes public functions that need no documentation.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{cpu_seconds, percentiles, Lcg};
use criterion::Criterion;
use engine::{Durability, EngineConfig};
use graphdb::generate::{Generated, Shape};
use graphdb::{Depth, Filter, GraphStore, ManualClock, NodeId, Role, TeamFilter, Teams};

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn open(dir: &std::path::Path, now: i64, durability: Durability) -> (GraphStore, Teams) {
    let engine = EngineConfig::rocksdb(dir)
        .open(graphdb::KEYSPACES)
        .expect("open rocksdb");
    let store = GraphStore::builder(engine)
        .clock(Arc::new(ManualClock::at_seconds(now)))
        .durability(durability)
        .open()
        .expect("open store");
    let teams = graphdb::Teams::open(&store).expect("teams");
    (store, teams)
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let t = Instant::now();
    let g = Generated::new(&Shape::full());
    let tsv = g.to_tsv();
    println!(
        "generated {} persons, {} teams, {} membership edges, {} audits in {:?} ({} MB of TSV)",
        g.persons.len(),
        g.teams.len(),
        g.edges.len(),
        g.audits.len(),
        t.elapsed(),
        tsv.len() >> 20
    );
    let dir = tempfile::tempdir().expect("temp dir");

    // Bulk import and index build, RocksDB, one synced batch.
    let (store, teams) = open(dir.path(), g.now, Durability::Sync);
    let t = Instant::now();
    teams.import_tsv(tsv.as_bytes(), None).expect("import");
    println!("bulk import + index build: {:?}", t.elapsed());
    drop(tsv);
    let stats = teams.stats();
    println!(
        "index: {} nodes, {} membership edges, {} (member, team) pairs of which {} team-team; \
         persisted closure {} bytes = {:.2} bytes/pair; every node's closure would be {} bytes = {:.2} bytes/pair; {}",
        stats.nodes,
        stats.membership_edges,
        stats.pairs,
        stats.group_pairs,
        stats.closure_bytes,
        stats.closure_bytes as f64 / stats.pairs as f64,
        stats.full_closure_bytes,
        stats.full_closure_bytes as f64 / stats.pairs as f64,
        rss()
    );

    let big = g.teams[g.special_roots[0]].clone();
    let heavy = g.persons[g.heavy_person].clone();
    let two_k = g.teams[g.special_roots[6]].clone();

    // Membership writes with synced durability: percentiles; meanwhile another thread probes
    // is-member, which must not wait for the writes' fsyncs.
    let mut rng = Lcg(1);
    let general_team = |rng: &mut Lcg| g.teams[g.teams.len() - 1 - rng.below(20_000)].clone();
    let probes: Vec<(NodeId, NodeId)> = {
        let view = teams.view();
        let mut r = Lcg(9);
        (0..100_000)
            .map(|_| {
                (
                    view.id(&g.persons[r.below(g.persons.len())])
                        .expect("person"),
                    view.id(&g.teams[r.below(g.teams.len())]).expect("team"),
                )
            })
            .collect()
    };
    let writing = std::sync::atomic::AtomicBool::new(true);
    let mut samples = Vec::new();
    let reads = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = Vec::new();
            let mut i = 0;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let (p, t) = probes[i % probes.len()];
                i += 1;
                let start = Instant::now();
                black_box(teams.view().is_member_id(p, t));
                reads.push(start.elapsed());
            }
            reads
        });
        for _ in 0..300 {
            let p = &g.persons[rng.below(g.persons.len() - 1)];
            let team = general_team(&mut rng);
            let t = Instant::now();
            teams
                .set_membership(&team, p, Role::Member, None)
                .expect("add");
            samples.push(t.elapsed());
            let t = Instant::now();
            teams.remove_membership(&team, p).expect("remove");
            samples.push(t.elapsed());
        }
        writing.store(false, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("reader")
    });
    percentiles(
        "is-member while another thread writes with Durability::Sync",
        reads,
    );
    percentiles("add/remove membership, Durability::Sync, RocksDB", samples);

    // Concurrent synced writers, with the change feed on and off.
    let writer_counts: Vec<usize> = std::env::var("TEAMS_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,4,16".to_owned())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("TEAMS_BENCH_WRITERS: comma-separated counts")
        })
        .collect();
    // The feed on, then off, in rounds on the same store, so that both meet the machine in
    // the same state (other builders' load comes and goes).
    let rounds: usize = std::env::var("TEAMS_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let only = std::env::var("TEAMS_BENCH_FEED").ok();
    let (feed_on, feed_off) = (
        only.as_deref() != Some("off"),
        only.as_deref() != Some("on"),
    );
    let mut rates: Vec<(usize, bool, f64, f64)> = Vec::new();
    for _ in 0..rounds {
        for feed in [true, false] {
            if (feed && !feed_on) || (!feed && !feed_off) {
                continue;
            }
            store.set_record_changes(feed);
            let label = if feed { "feed on" } else { "feed off" };
            for (writers, rate, cpu) in
                concurrent_writers(&store, &teams, &g, &writer_counts, label)
            {
                rates.push((writers, feed, rate, cpu));
            }
        }
    }
    store.set_record_changes(true);
    if feed_on && feed_off {
        for &writers in &writer_counts {
            let median = |feed: bool, cpu: bool| {
                let mut r: Vec<f64> = rates
                    .iter()
                    .filter(|(w, f, _, _)| *w == writers && *f == feed)
                    .map(|&(_, _, rate, us)| if cpu { us } else { rate })
                    .collect();
                r.sort_by(f64::total_cmp);
                r.get(r.len() / 2).copied().unwrap_or(f64::NAN)
            };
            let (on, off) = (median(true, false), median(false, false));
            let (cpu_on, cpu_off) = (median(true, true), median(false, true));
            println!(
                "{writers} concurrent writers: median of {rounds} rounds, feed on {on:.0} writes/s, \
                 feed off {off:.0} writes/s: the feed costs {:.1}% of the throughput; CPU per \
                 write {cpu_on:.0} µs on, {cpu_off:.0} µs off ({:+.1}%)",
                (1.0 - on / off) * 100.0,
                (cpu_on / cpu_off - 1.0) * 100.0
            );
        }
    }
    if std::env::var_os("TEAMS_BENCH_WRITES_ONLY").is_some() {
        return;
    }
    // The store holds RocksDB's lock: close it before the reopen below.
    drop(teams);
    drop(store);

    // Reopen: RocksDB replays its log, then the namespace loads nodes, edges and the
    // persisted closure (no rebuild).
    let t = Instant::now();
    let engine = EngineConfig::rocksdb(dir.path())
        .open(graphdb::KEYSPACES)
        .expect("open rocksdb");
    let engine_open = t.elapsed();
    let store = GraphStore::builder(engine)
        .clock(Arc::new(ManualClock::at_seconds(g.now)))
        .durability(Durability::Buffered)
        .open()
        .expect("open store");
    let t = Instant::now();
    let teams = graphdb::Teams::open(&store).expect("teams");
    println!(
        "reopen: RocksDB open {engine_open:?}, namespace load {:?}; {}",
        t.elapsed(),
        rss()
    );
    let m = teams.memory();
    let per = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
    println!(
        "memory after reopen (estimated from lengths and capacities, jemalloc size classes): \
         {} nodes, {} edges, {} pairs; node slots {}, names {}, name map {}, adjacency {}, \
         anc {} ({:.1} bytes/pair), probe {}, desc {} ({:.1} bytes/pair), name order {}, other {}; \
         total {}",
        m.nodes,
        m.edges,
        m.pairs,
        per(m.node_slots),
        per(m.names),
        per(m.name_map),
        per(m.adjacency),
        per(m.closure_up),
        m.closure_up as f64 / m.pairs as f64,
        per(m.probe),
        per(m.closure_down),
        m.closure_down as f64 / m.pairs as f64,
        per(m.name_order),
        per(m.other),
        per(m.total()),
    );
    let t = Instant::now();
    teams.rebuild().expect("rebuild");
    println!(
        "rebuild of the whole index, for comparison: {:?}",
        t.elapsed()
    );

    let view = teams.view();
    let big_id = view.id(&big).expect("big team");
    let heavy_id = view.id(&heavy).expect("heavy person");
    println!(
        "big team {big}: {} transitive persons; heavy person {heavy}: {} direct / {} transitive teams",
        view.member_ids_of(big_id, Depth::Transitive, Filter::Leaves).len(),
        view.group_ids_of(heavy_id, Depth::Direct).len(),
        view.group_ids_of(heavy_id, Depth::Transitive).len()
    );
    let sizes: Vec<u64> = g
        .teams
        .iter()
        .map(|t| {
            let id = view.id(t).expect("team");
            view.member_ids_of(id, Depth::Transitive, Filter::Leaves)
                .len()
        })
        .collect();
    println!(
        "teams with more than 1,600 transitive persons: {}; largest: {:?}",
        sizes.iter().filter(|&&n| n > 1_600).count(),
        {
            let mut top = sizes.clone();
            top.sort_unstable_by(|a, b| b.cmp(a));
            top.truncate(14);
            top
        }
    );
    let pairs: Vec<(NodeId, NodeId)> = (0..1_000_000)
        .map(|_| {
            (
                view.id(&g.persons[rng.below(g.persons.len())])
                    .expect("person"),
                view.id(&g.teams[rng.below(g.teams.len())]).expect("team"),
            )
        })
        .collect();
    // Half the probes on pairs that are members, so both answers are exercised.
    let member_pairs: Vec<(NodeId, NodeId)> = pairs
        .iter()
        .filter_map(|&(p, _)| {
            let teams = view.group_ids_of(p, Depth::Transitive);
            teams.min().map(|t| (p, NodeId(t)))
        })
        .take(500_000)
        .collect();
    let mixed: Vec<(NodeId, NodeId)> = pairs
        .iter()
        .zip(&member_pairs)
        .flat_map(|(a, b)| [*a, *b])
        .collect();
    drop(view);

    let mut samples = Vec::with_capacity(mixed.len());
    for _ in 0..mixed.len() {
        let start = Instant::now();
        samples.push(start.elapsed());
    }
    percentiles("timer overhead (Instant::now + elapsed)", samples);
    let mut samples = Vec::with_capacity(mixed.len());
    let mut hits = 0u64;
    for &(p, t) in &mixed {
        let start = Instant::now();
        let view = teams.view();
        let yes = view.is_member_id(p, t);
        drop(view);
        samples.push(start.elapsed());
        hits += u64::from(yes);
    }
    println!("is-member mix: {hits} of {} are members", mixed.len());
    percentiles("is-member (view + probe), warm", samples);
    let names: Vec<(String, String)> = mixed
        .iter()
        .take(200_000)
        .map(|&(p, t)| {
            let view = teams.view();
            (
                view.name(p).expect("p").to_owned(),
                view.name(t).expect("t").to_owned(),
            )
        })
        .collect();
    let mut samples = Vec::with_capacity(names.len());
    for (p, t) in &names {
        let start = Instant::now();
        let yes = teams.is_member(p, t).expect("is member");
        samples.push(start.elapsed());
        black_box(yes);
    }
    percentiles("is-member by names (2 hash lookups + probe), warm", samples);

    let mut i = 0usize;
    c.bench_function("is_member_id (view + probe)", |b| {
        b.iter(|| {
            i = (i + 1) % mixed.len();
            let (p, t) = mixed[i];
            teams.view().is_member_id(p, t)
        })
    });
    let mut i = 0usize;
    c.bench_function("is_member by names", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            let (p, t) = &names[i];
            teams.is_member(p, t).expect("is member")
        })
    });
    c.bench_function("members of the 18,000-member team as sorted ids", |b| {
        b.iter(|| {
            let view = teams.view();
            let ids: Vec<u32> = view
                .member_ids_of(big_id, Depth::Transitive, Filter::Leaves)
                .iter()
                .collect();
            ids
        })
    });
    c.bench_function(
        "members of the 18,000-member team, first page of 100 by name",
        |b| {
            b.iter(|| {
                teams
                    .members(&big, Depth::Transitive, TeamFilter::Persons, None, 100)
                    .expect("members")
            })
        },
    );
    // Names are spread over ids as in a real import (graphdb::generate): the sorted list of a
    // team is kept per team until its members change, a page is cut from it at the cursor.
    let all = teams
        .members(
            &big,
            Depth::Transitive,
            TeamFilter::Persons,
            None,
            usize::MAX,
        )
        .expect("members");
    assert!(all.items.windows(2).all(|w| w[0] < w[1]));
    c.bench_function(
        "members of the 18,000-member team, all names sorted (kept list)",
        |b| {
            b.iter(|| {
                teams
                    .members(
                        &big,
                        Depth::Transitive,
                        TeamFilter::Persons,
                        None,
                        usize::MAX,
                    )
                    .expect("members")
            })
        },
    );
    // What the directory does: the kept sorted ids and the names borrowed from the view (no
    // `String` per name).
    c.bench_function(
        "members of the 18,000-member team, all names sorted, borrowed from the view",
        |b| {
            b.iter(|| {
                let view = teams.view();
                let sorted = view.sorted_member_ids(big_id, Filter::Leaves);
                let names: Vec<&str> = sorted
                    .iter()
                    .map(|&x| view.name(NodeId(x)).expect("name"))
                    .collect();
                black_box(names.len())
            })
        },
    );
    let mut i = 0usize;
    c.bench_function(
        "members of the 18,000-member team, a page of 100 at a random cursor",
        |b| {
            b.iter(|| {
                i = (i + 7_919) % all.items.len();
                teams
                    .members(
                        &big,
                        Depth::Transitive,
                        TeamFilter::Persons,
                        Some(&all.items[i]),
                        100,
                    )
                    .expect("members")
            })
        },
    );
    // The first answer after a change sorts the list afresh (by rank, not by name): a person
    // joins a subteam of the big team, then the whole list is asked for.
    let sub = {
        let view = teams.view();
        let sub = view
            .member_ids_of(big_id, Depth::Direct, Filter::Groups)
            .iter()
            .next()
            .expect("a subteam");
        view.name(NodeId(sub)).expect("name").to_owned()
    };
    let mut samples = Vec::new();
    for k in 0..100 {
        let p = &g.persons[(k * 4_999) % g.persons.len()];
        teams
            .set_membership(&sub, p, Role::Member, None)
            .expect("join");
        let start = Instant::now();
        let page = teams
            .members(
                &big,
                Depth::Transitive,
                TeamFilter::Persons,
                None,
                usize::MAX,
            )
            .expect("members");
        samples.push(start.elapsed());
        black_box(page);
        teams.remove_membership(&sub, p).expect("leave");
    }
    percentiles(
        "members of the 18,000-member team, all names, first answer after a change",
        samples,
    );
    c.bench_function("teams of the 300-team person, all names sorted", |b| {
        b.iter(|| {
            teams
                .teams_of(&heavy, Depth::Transitive, None, usize::MAX)
                .expect("teams")
        })
    });
    c.bench_function("teams of the 300-team person as sorted ids", |b| {
        b.iter(|| {
            let view = teams.view();
            let ids: Vec<u32> = view
                .group_ids_of(heavy_id, Depth::Transitive)
                .iter()
                .collect();
            ids
        })
    });

    // Writes, buffered durability.
    let mut samples = Vec::new();
    for _ in 0..2_000 {
        let p = &g.persons[rng.below(g.persons.len() - 1)];
        let team = general_team(&mut rng);
        let t = Instant::now();
        teams
            .set_membership(&team, p, Role::Member, None)
            .expect("add");
        samples.push(t.elapsed());
        let t = Instant::now();
        teams.remove_membership(&team, p).expect("remove");
        samples.push(t.elapsed());
    }
    percentiles(
        "add/remove membership, Durability::Buffered, RocksDB",
        samples,
    );
    c.bench_function("add + remove a person's membership (buffered)", |b| {
        b.iter(|| {
            let p = &g.persons[rng.below(g.persons.len() - 1)];
            let team = general_team(&mut rng);
            teams
                .set_membership(&team, p, Role::Member, None)
                .expect("add");
            teams.remove_membership(&team, p).expect("remove");
        })
    });

    // Nesting a 2,000-member team under a team with many ancestors: a chain of 40 teams
    // under the big team, each nested in the previous one.
    let mut parent = big.clone();
    for k in 0..40 {
        let name = format!("chain-{k}");
        teams.add_team(&name).expect("add team");
        teams
            .set_membership(&parent, &name, Role::Member, None)
            .expect("nest");
        parent = name;
    }
    let view = teams.view();
    let deep = view.id(&parent).expect("deep");
    let two_k_id = view.id(&two_k).expect("2k team");
    println!(
        "deep team {parent}: {} ancestors; nested team {two_k}: {} transitive members",
        view.group_ids_of(deep, Depth::Transitive).len(),
        view.member_ids_of(two_k_id, Depth::Transitive, Filter::All)
            .len()
    );
    drop(view);
    let mut add = Vec::new();
    let mut remove = Vec::new();
    // Enough samples for the p99 quoted (at 20 it is the second largest).
    let nest_samples: usize = std::env::var("TEAMS_BENCH_NEST_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for _ in 0..nest_samples {
        let t = Instant::now();
        teams
            .set_membership(&parent, &two_k, Role::Member, None)
            .expect("nest");
        add.push(t.elapsed());
        let t = Instant::now();
        teams.remove_membership(&parent, &two_k).expect("unnest");
        remove.push(t.elapsed());
    }
    percentiles(
        "nest 2,000-member team under 41-ancestor team (buffered)",
        add,
    );
    percentiles("un-nest it again (buffered)", remove);
    c.final_summary();
}

/// Concurrent synced writers (a service has many clients): each writer adds and removes
/// memberships of its own persons; their writes share group fsyncs.
fn concurrent_writers(
    store: &GraphStore,
    teams: &Teams,
    g: &Generated,
    writer_counts: &[usize],
    feed: &str,
) -> Vec<(usize, f64, f64)> {
    let total: usize = std::env::var("TEAMS_BENCH_WRITES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_200);
    let mut rates = Vec::new();
    let log = store.change_log();
    let background_indexer = std::env::var("TEAMS_BENCH_INDEXER").as_deref() != Ok("off");
    log.set_background_indexing(background_indexer);
    for &writers in writer_counts {
        // The writes per phase, shared by the writers (a single writer makes at most 5/16
        // of them, as 1,000 of the default 3,200).
        let ops_per_writer = (total / writers).clamp(200, (total * 5 / 16).max(1_000));
        let (batches, syncs) = (store.committer().batches(), store.committer().syncs());
        let (log_before, syncing_before) = (log.write_stats(), store.committer().syncing_time());
        let cpu = cpu_seconds();
        let start = Instant::now();
        let samples: Vec<Duration> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    let (teams, g) = (&teams, &g);
                    scope.spawn(move || {
                        let mut rng = Lcg(1_000 + w as u64);
                        let mut samples = Vec::with_capacity(ops_per_writer);
                        for _ in 0..ops_per_writer / 2 {
                            // Persons are split between writers, so no two touch one pair.
                            let n = rng.below((g.persons.len() - 1) / writers);
                            let p = &g.persons[n * writers + w];
                            let team = &g.teams[g.teams.len() - 1 - rng.below(20_000)];
                            let t = Instant::now();
                            teams
                                .set_membership(team, p, Role::Member, None)
                                .expect("add");
                            samples.push(t.elapsed());
                            let t = Instant::now();
                            teams.remove_membership(team, p).expect("remove");
                            samples.push(t.elapsed());
                        }
                        samples
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("writer"))
                .collect()
        });
        let elapsed = start.elapsed();
        let (batches, syncs) = (
            store.committer().batches() - batches,
            store.committer().syncs() - syncs,
        );
        let n = samples.len();
        let rate = n as f64 / elapsed.as_secs_f64();
        // How busy the two serial stages of a synced write were: the log's combined writes
        // and the group syncs (each runs one at a time).
        let log_after = log.write_stats();
        let groups = log_after.groups - log_before.groups;
        let writing = log_after
            .writing
            .saturating_sub(log_before.writing)
            .as_secs_f64();
        let syncing = store
            .committer()
            .syncing_time()
            .saturating_sub(syncing_before)
            .as_secs_f64();
        let stages = format!(
            "log writes {:.0}% busy ({groups} groups of {:.1}, {:.0} µs each), syncs {:.0}% \
             busy ({:.0} µs each)",
            writing * 100.0 / elapsed.as_secs_f64(),
            (log_after.batches - log_before.batches) as f64 / groups.max(1) as f64,
            writing * 1e6 / groups.max(1) as f64,
            syncing * 100.0 / elapsed.as_secs_f64(),
            syncing * 1e6 / syncs.max(1) as f64,
        );
        // The history keys are written by the log's indexer after the writes: say how far
        // behind it was when they ended, and let it catch up (untimed) before the next phase,
        // so no phase inherits another's indexing.
        let lag = log.head() - log.indexed_through().expect("indexed mark");
        let caught_up = Instant::now();
        if !background_indexer {
            log.index_pending().expect("index the phase's events");
        }
        while log.indexed_through().expect("indexed mark") < log.head() {
            assert!(
                caught_up.elapsed() < Duration::from_secs(60),
                "indexer stuck"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // The process's CPU per write, the indexer's catching up included: what the feed
        // costs in work, which the machine's load does not blur as it blurs the rates.
        let cpu_us = (cpu_seconds() - cpu) * 1e6 / n as f64;
        rates.push((writers, rate, cpu_us));
        percentiles(
            &format!(
                "add/remove membership, Durability::Sync, RocksDB, {writers} concurrent writers, \
                 {feed} ({rate:.0} writes/s, {cpu_us:.0} µs of CPU per write, {:.1} engine \
                 writes per fsync; {stages}; history indexer {lag} events behind at the end, \
                 caught up {:.1} ms later)",
                batches as f64 / syncs.max(1) as f64,
                caught_up.elapsed().as_secs_f64() * 1e3
            ),
            samples,
        );
    }
    rates
}

//! Writes a generated Launchpad-shaped team graph for the directory benchmark
//! (`benches/servers/directory.sh`): the team TSV for `directory import teams`, the
//! participation closure `team_index\tperson_index` for a PostgreSQL `TeamParticipation`
//! table, and the team and person names in index order (`teams.txt`, `persons.txt`).
//!
//!     cargo run --release -p servers --example team_graph -- DIVISOR|xTIMES OUT_DIR NOW_UNIX_SECS

use std::collections::{HashMap, VecDeque};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use graphdb::generate::{Generated, Member, Shape};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    // `xN` instead of a divisor: N times the persons, teams and audits of the production
    // shape (the special trees as they are), for the memory table at ten times the size.
    let scale = args.next().unwrap_or_default();
    let shape = match scale
        .strip_prefix('x')
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(times) => {
            let mut shape = Shape::full();
            shape.persons *= times;
            shape.teams *= times;
            shape.audits *= times;
            shape
        }
        None => Shape::scaled(scale.parse().unwrap_or(1)),
    };
    let out = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let now: i64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(graphdb::generate::GENERATED_NOW);
    let g = Generated::new(&shape);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("teams.tsv"), g.to_tsv())?;

    let mut names = BufWriter::new(std::fs::File::create(out.join("teams.txt"))?);
    for name in &g.teams {
        writeln!(names, "{name}")?;
    }
    names.flush()?;
    let mut names = BufWriter::new(std::fs::File::create(out.join("persons.txt"))?);
    for name in &g.persons {
        writeln!(names, "{name}")?;
    }
    names.flush()?;

    let mut children: HashMap<usize, Vec<Member>> = HashMap::new();
    for e in &g.edges {
        if e.expires.is_none_or(|at| at > now) {
            children.entry(e.team).or_default().push(e.member);
        }
    }
    let mut closure = BufWriter::new(std::fs::File::create(out.join("closure.tsv"))?);
    let mut pairs = 0u64;
    let mut sizes = vec![0u64; g.teams.len()];
    for (team, size) in sizes.iter_mut().enumerate() {
        let mut persons = Vec::new();
        let mut seen = vec![team];
        let mut queue = VecDeque::from([team]);
        while let Some(t) = queue.pop_front() {
            for m in children.get(&t).into_iter().flatten() {
                match *m {
                    Member::Person(p) => persons.push(p),
                    Member::Team(c) if !seen.contains(&c) => {
                        seen.push(c);
                        queue.push_back(c);
                    }
                    Member::Team(_) => {}
                }
            }
        }
        persons.sort_unstable();
        persons.dedup();
        *size = persons.len() as u64;
        for p in persons {
            writeln!(closure, "{team}\t{p}")?;
            pairs += 1;
        }
    }
    closure.flush()?;
    let largest = g.special_roots.first().copied().unwrap_or(0);
    println!(
        "persons={} teams={} edges={} pairs={pairs} largest_team={} largest_index={largest} largest_persons={} heavy_person={} heavy_index={}",
        g.persons.len(),
        g.teams.len(),
        g.edges.len(),
        g.teams[largest],
        sizes[largest],
        g.persons[g.heavy_person],
        g.heavy_person
    );
    Ok(())
}

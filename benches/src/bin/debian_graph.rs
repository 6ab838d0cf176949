//! Writes a Debian-shaped graph (`graphdb::generate::debian`) for the peer script
//! `benches/servers/graphs-pg.sh`: `debian_graph SCALE DIR` writes `DIR/graph.tsv` (the
//! directory's import format, `from\tto\tlabel`), `DIR/binaries.txt` (one binary package a
//! line, hubs first) and prints `edges=N binaries=N largest=section:libs`.

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let scale: f64 = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "graph".into()));
    std::fs::create_dir_all(&dir)?;
    let g =
        graphdb::generate::debian::debian(&graphdb::generate::debian::DebianShape::scaled(scale));
    std::fs::write(dir.join("graph.tsv"), g.tsv())?;
    let mut names = std::io::BufWriter::new(std::fs::File::create(dir.join("binaries.txt"))?);
    for name in &g.binaries {
        writeln!(names, "{name}")?;
    }
    names.flush()?;
    println!(
        "edges={} binaries={} largest={}",
        g.edges.len(),
        g.binaries.len(),
        g.sections[0]
    );
    Ok(())
}

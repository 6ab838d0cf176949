#!/usr/bin/env bash
# Measures the parse stage of the team TSV import two ways over the same bytes, in one run:
# graphdb's hand-written splitter (the loop of `import::for_each_line` and `import::fields`)
# and the `csv` crate (tab delimiter, no quoting, flexible), each handing the same four
# fields to the same row step (the names copied, as `import::name` does). Samples alternate.
# Issue 14 asked for `csv` only if it does not cost import speed; graphdb/DESIGN.md ("TSV
# formats") has the figures and the decision.
#
#   scripts/tsv-vs-csv.sh [ROWS] [SAMPLES]    # defaults: 1000000 rows (28 MB), 41 samples
#
# A standalone release build of one file and `csv` (seconds, not the workspace's RocksDB), in
# a temporary directory removed on exit (CARGO_TARGET_DIR, when set, is not used).
set -euo pipefail

rows="${1:-1000000}"
samples="${2:-41}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<'TOML'
[package]
name = "tsv-vs-csv"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
csv = "1"

[workspace]
TOML
cat > "$dir/src/main.rs" <<'RUST'
use std::hint::black_box;
use std::io::BufRead;
use std::time::Instant;

const HEADER: &str = "team\tmember\trole\texpires";

fn data(rows: usize) -> Vec<u8> {
    let mut s = String::from(HEADER);
    s.push('\n');
    for i in 0..rows {
        let team = format!("team-{}", i % 5000);
        match i % 10 {
            0 => s.push_str(&format!("{team}\t\t\t\n")),
            1 => s.push_str(&format!("{team}\tteam-{}\tadmin\t1767225600\n", (i * 7) % 5000 + 5000)),
            _ => s.push_str(&format!("{team}\tperson-{i}\tmember\t\n")),
        }
    }
    s.into_bytes()
}

// What both parsers hand to the row logic: the four fields as &str, owned names built as
// the importer does (`name()` copies each name).
fn row(fields: [&str; 4], acc: &mut usize) {
    let [team, member, role, exp] = fields;
    let t = team.to_owned();
    let m = member.to_owned();
    *acc += t.len() + m.len() + role.len() + exp.len();
    black_box((t, m));
}

fn hand(input: &[u8]) -> usize {
    let mut reader = std::io::BufReader::new(input);
    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut acc = 0;
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).unwrap();
        if read == 0 {
            break;
        }
        line += 1;
        let mut bytes = buf.as_slice();
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest;
        }
        if let Some(rest) = bytes.strip_suffix(b"\r") {
            bytes = rest;
        }
        let text = std::str::from_utf8(bytes).unwrap();
        if line == 1 {
            assert_eq!(text, HEADER);
            continue;
        }
        if text.is_empty() {
            continue;
        }
        let mut out = [""; 4];
        let mut count = 0;
        for (i, field) in text.split('\t').enumerate() {
            if i < 4 {
                out[i] = field;
            }
            count += 1;
        }
        assert_eq!(count, 4, "line {line}");
        row(out, &mut acc);
    }
    acc
}

fn with_csv(input: &[u8]) -> usize {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .quoting(false)
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(input));
    let mut record = csv::ByteRecord::new();
    let mut first = true;
    let mut acc = 0;
    while reader.read_byte_record(&mut record).unwrap() {
        let line = record.position().map_or(0, |p| p.line());
        let mut out = [""; 4];
        if record.len() != 4 && !first {
            panic!("line {line}: {} fields", record.len());
        }
        for (i, field) in record.iter().enumerate().take(4) {
            out[i] = std::str::from_utf8(field).unwrap();
        }
        if first {
            first = false;
            assert_eq!(out.join("\t"), HEADER);
            continue;
        }
        row(out, &mut acc);
    }
    acc
}

fn main() {
    let rows: usize = std::env::args().nth(1).map_or(1_000_000, |a| a.parse().unwrap());
    let samples: usize = std::env::args().nth(2).map_or(15, |a| a.parse().unwrap());
    let input = data(rows);
    assert_eq!(hand(&input), with_csv(&input));
    let (mut h, mut c) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let t = Instant::now();
        black_box(hand(black_box(&input)));
        h.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(with_csv(black_box(&input)));
        c.push(t.elapsed().as_secs_f64());
    }
    h.sort_by(f64::total_cmp);
    c.sort_by(f64::total_cmp);
    let med = |v: &[f64]| v[v.len() / 2];
    println!(
        "{rows} rows, {} MB, {samples} samples each (alternating): hand-written median {:.1} ms (min {:.1}), csv median {:.1} ms (min {:.1}); csv/hand {:.2}",
        input.len() >> 20,
        med(&h) * 1e3, h[0] * 1e3, med(&c) * 1e3, c[0] * 1e3, med(&c) / med(&h)
    );
}
RUST
(cd "$dir" && CARGO_TARGET_DIR="$dir/target" cargo build --release --quiet)
uptime
date -u
"$dir/target/release/tsv-vs-csv" "$rows" "$samples"

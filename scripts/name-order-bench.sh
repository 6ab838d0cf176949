#!/usr/bin/env bash
# Compares graphdb's name order before and after the general graphs' own order (graph/rank.rs)
# was folded into `NameOrder` (issue 14), in one process over the same names: the first page
# after a load (old: `NameRank::build`, a sort of the names; new: the positions from `sorted`),
# warm pages (a dense first page of 1,000 and a sparse whole set), and node insertions and
# removals with the order built (old: both orders kept; new: one). The modules are the real
# files, taken from git: OLD (default: the commit before the change) and the working tree.
#
#   scripts/name-order-bench.sh [NODES] [SAMPLES] [OLD]    # defaults: 98060 41 2d5e039~1
#
# A standalone release build of three source files and `roaring` (seconds, not the workspace's
# RocksDB), in a temporary directory removed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
nodes="${1:-98060}"
samples="${2:-41}"
old="${3:-2d5e039~1}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/src"
roaring=$(grep -A1 '^name = "roaring"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "name-order-bench"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
roaring = "=$roaring"

[workspace]
TOML
# The graph modules see `super::state::NodeRec` and `super::types::Filter`: both given here.
fix='s/use super::state::NodeRec;/use crate::NodeRec;/; s/use super::types::Filter;/use crate::Filter;/'
git show "$old:graphdb/src/graph/order.rs" | sed "$fix" > "$dir/src/order_old.rs"
git show "$old:graphdb/src/graph/rank.rs" | sed "$fix" > "$dir/src/rank_old.rs"
sed "$fix" graphdb/src/graph/order.rs > "$dir/src/order_new.rs"
cat > "$dir/src/main.rs" <<'RUST'
#![allow(dead_code)]
mod order_new;
mod order_old;
mod rank_old;

use std::hint::black_box;
use std::time::Instant;

use roaring::RoaringBitmap;

#[derive(Clone, Copy, Debug)]
pub enum Filter {
    All,
    Leaves,
    Groups,
}

pub struct NodeRec {
    pub name: Box<str>,
}

/// Names that sort in no relation to their ids (as package names do), from a fixed LCG.
fn make_names(n: usize) -> Vec<String> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            format!("lib{:x}-{i}", x >> 40)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(98_060, |a| a.parse().unwrap());
    let samples: usize = std::env::args().nth(2).map_or(41, |a| a.parse().unwrap());
    let names = make_names(n);
    let nodes: Vec<Option<NodeRec>> = names
        .iter()
        .map(|s| Some(NodeRec { name: s.as_str().into() }))
        .collect();
    // Names read from the nodes, as `State::name` does (and the old `name_of`).
    let name = |x: u32| {
        nodes
            .get(x as usize)
            .and_then(Option::as_ref)
            .map_or("", |n| &*n.name)
    };
    let live = || names.iter().enumerate().map(|(i, s)| (i as u32, s.as_str()));
    // A third of the graph (as `section:libs`: 31,720 of 98,060), and every id.
    let third: RoaringBitmap = (0..n as u32).filter(|x| x % 3 == 0).collect();
    let mut old_order = order_old::NameOrder::default();
    old_order.rebuild(live());
    let mut new_order = order_new::NameOrder::default();
    new_order.rebuild(live());

    let (mut first_old, mut first_new) = (Vec::new(), Vec::new());
    let (mut dense_old, mut dense_new, mut sparse_old, mut sparse_new) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rank = rank_old::NameRank::build(&nodes);
    for sample in 0..samples {
        // First page after a load: the old order sorts the names, the new one numbers `sorted`.
        let t = Instant::now();
        rank = rank_old::NameRank::build(&nodes);
        black_box(rank.page(&nodes, &third, None, 1000));
        first_old.push(t.elapsed().as_secs_f64());
        new_order.forget_positions();
        let t = Instant::now();
        black_box(new_order.page(&third, None, 1000, name));
        first_new.push(t.elapsed().as_secs_f64());
        // Warm pages, each side after an unmeasured page of its own (so both run on caches
        // they warmed), which side goes first alternating: a dense page of 1,000 after a
        // cursor, and the whole set (the sparse path).
        for turn in 0..2 {
            if (turn + sample) % 2 == 0 {
                black_box(rank.page(&nodes, &third, None, usize::MAX));
                let t = Instant::now();
                black_box(rank.page(&nodes, &third, Some("lib8"), 1000));
                dense_old.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                black_box(rank.page(&nodes, &third, None, usize::MAX));
                sparse_old.push(t.elapsed().as_secs_f64());
            } else {
                black_box(new_order.page(&third, None, usize::MAX, name));
                let t = Instant::now();
                black_box(new_order.page(&third, Some("lib8"), 1000, name));
                dense_new.push(t.elapsed().as_secs_f64());
                let t = Instant::now();
                black_box(new_order.page(&third, None, usize::MAX, name));
                sparse_new.push(t.elapsed().as_secs_f64());
            }
        }
        assert_eq!(
            rank.page(&nodes, &third, Some("lib8"), 1000),
            new_order.page(&third, Some("lib8"), 1000, name)
        );
    }

    // Insert then remove 200 nodes with the order built (names spread over the order).
    let extra: Vec<String> = make_names(200).into_iter().map(|s| format!("{s}x")).collect();
    let mut all_names = names.clone();
    all_names.extend(extra.iter().cloned());
    let mut all_nodes: Vec<Option<NodeRec>> = all_names[..n]
        .iter()
        .map(|s| Some(NodeRec { name: s.as_str().into() }))
        .collect();
    let (mut churn_old, mut churn_new) = (Vec::new(), Vec::new());
    rank = rank_old::NameRank::build(&all_nodes[..n]);
    black_box(new_order.page(&third, None, 10, name));
    for _ in 0..samples.min(11) {
        let t = Instant::now();
        for (k, s) in extra.iter().enumerate() {
            let id = (n + k) as u32;
            all_nodes.push(Some(NodeRec { name: s.as_str().into() }));
            rank.insert(&all_nodes, id);
            old_order.insert(id, s, |x| &all_names[x as usize]);
        }
        for (k, s) in extra.iter().enumerate() {
            let id = (n + k) as u32;
            old_order.remove(id, s, |x| &all_names[x as usize]);
            rank.remove(id);
        }
        all_nodes.truncate(n);
        churn_old.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for (k, s) in extra.iter().enumerate() {
            new_order.insert((n + k) as u32, s, |x| &all_names[x as usize]);
        }
        for (k, s) in extra.iter().enumerate() {
            new_order.remove((n + k) as u32, s, |x| &all_names[x as usize]);
        }
        churn_new.push(t.elapsed().as_secs_f64());
    }
    let row = |what: &str, old: Vec<f64>, new: Vec<f64>| {
        let (o, w) = (median(old), median(new));
        println!("{what}: old {:.3} ms, new {:.3} ms, new/old {:.2}", o * 1e3, w * 1e3, w / o);
    };
    println!("{n} nodes, a set of {} ids, {samples} samples (churn: {}), medians:", third.len(), samples.min(11));
    row("first page of 1,000 after a load", first_old, first_new);
    row("dense page of 1,000 after a cursor", dense_old, dense_new);
    row("whole set (sparse path)", sparse_old, sparse_new);
    row("200 inserts + 200 removals, order built", churn_old, churn_new);
}
RUST
(cd "$dir" && CARGO_TARGET_DIR="$dir/target" cargo build --release --quiet)
uptime
date -u
"$dir/target/release/name-order-bench" "$nodes" "$samples"

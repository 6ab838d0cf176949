//! `capacity`: the measuring half of the capacity-planning tool (`make capacity`,
//! `scripts/capacity.sh`).
//!
//! Each subcommand measures one kind of work at one scale in a fresh process (so that its
//! resident memory is its own) and appends rows `name\tscale\tvalue\tunit\tcommand` to the
//! results file; `report` turns the rows of one run into `docs/CAPACITY.md` and the charts
//! under `docs/capacity/`. The peers (PostgreSQL, git, nginx, wrk) are driven by the script,
//! which appends its rows to the same file.
//!
//! ```text
//! capacity blobs   --files N   --dir TMP --results R
//! capacity fill    --files N   --dir DATA_DIR --paths FILE [--sample K]
//! capacity sizes               --dir TMP --results R
//! capacity teams   --persons P --dir TMP --results R [--export DIR]
//! capacity commits --commits N --dir TMP --results R [--export DIR --pairs K] [--git-graph 1]
//! capacity report  --results R --machine FILE --out docs
//! ```

// Benchmark code: a failed unwrap stops a measurement, which must not carry on past a broken setup.
#![allow(clippy::unwrap_used)]

mod blobs;
mod commits;
mod common;
mod report;
mod teams;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        bail!("usage: capacity blobs|fill|sizes|teams|commits|report [--key value]...");
    };
    let flags = common::Flags::parse(rest)?;
    match command.as_str() {
        "blobs" => blobs::scale(&flags),
        "fill" => blobs::fill(&flags),
        "sizes" => blobs::sizes(&flags),
        "teams" => teams::run(&flags),
        "commits" => commits::run(&flags),
        "report" => report::run(&flags),
        other => bail!("unknown subcommand {other}"),
    }
}

//! A generator of graphs shaped like Debian's package graph, for tests and benchmarks of
//! general graphs ([`crate::Graph`]).
//!
//! [`DebianShape::bookworm`] follows the published figures of Debian bookworm (amd64, main):
//! about 64,000 binary packages, 34,000 source packages and 275,000 `depends` edges, with
//! hubs (a few libraries such as `libc6` that most packages reach), meta packages with many
//! dependencies (`task-*`), and 55 non-trivial strongly connected components, among them
//! `libc6 <-> libgcc-s1` and a 7-node Ruby cycle. Besides `depends` edges between binaries,
//! every source package has `builds` edges to its binaries and every section set (`section:libs`,
//! ...) `contains` edges to its binaries: so "everything `section:libs` reaches" and "the
//! sources of what `task-gnome-desktop` pulls in" are ordinary traversals.
//!
//! Names are not in creation order (they come from a seeded permutation), and the edges are
//! shuffled. [`DebianShape::scaled`] multiplies or divides the counts. Deterministic for a seed.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The counts of a generated Debian-shaped graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebianShape {
    /// Binary packages.
    pub binaries: usize,
    /// Source packages (each builds one or more binaries).
    pub sources: usize,
    /// `depends` edges between binaries.
    pub depends: usize,
    /// Non-trivial strongly connected components (two of them the named 2- and 7-cycles).
    pub cycles: usize,
    /// Section sets.
    pub sections: usize,
    /// The seed.
    pub seed: u64,
}

impl DebianShape {
    /// Debian bookworm's size.
    pub fn bookworm() -> DebianShape {
        DebianShape {
            binaries: 64_000,
            sources: 34_000,
            depends: 275_000,
            cycles: 55,
            sections: 60,
            seed: 12,
        }
    }

    /// The bookworm shape with every count multiplied by `factor` (at least 100 binaries).
    pub fn scaled(factor: f64) -> DebianShape {
        let b = DebianShape::bookworm();
        let n = |x: usize, min: usize| ((x as f64 * factor) as usize).max(min);
        DebianShape {
            binaries: n(b.binaries, 100),
            sources: n(b.sources, 50),
            depends: n(b.depends, 400),
            cycles: n(b.cycles, 2),
            sections: n(b.sections, 3).min(60),
            seed: b.seed,
        }
    }
}

/// A generated graph: labelled edges and the names worth querying.
#[derive(Clone, Debug)]
pub struct DebianGraph {
    /// `(from, to, label)`, shuffled.
    pub edges: Vec<(String, String, &'static str)>,
    /// Every binary package's name, in creation order (hubs first).
    pub binaries: Vec<String>,
    /// The section sets, largest first (`section:libs`).
    pub sections: Vec<String>,
    /// The members of each non-trivial cycle planted (the 2-cycle first, then the 7-cycle).
    pub cycles: Vec<Vec<String>>,
}

/// Hubs, in creation order: every package below may depend on them.
const HUBS: &[&str] = &[
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libssl3",
    "libglib2.0-0",
    "libpython3.11",
    "python3",
    "perl",
    "libx11-6",
    "libgtk-3-0",
    "libqt5core5a",
];

/// The planted 7-node Ruby cycle.
const RUBY: &[&str] = &[
    "ruby3.1",
    "libruby3.1",
    "rubygems-integration",
    "rake",
    "ruby-net-telnet",
    "ruby-xmlrpc",
    "ruby",
];

const PREFIXES: &[&str] = &[
    "lib", "python3-", "golang-", "r-cran-", "node-", "ruby-", "texlive-", "fonts-", "gir1.2-", "",
];

const SECTIONS: &[&str] = &[
    "libs",
    "devel",
    "python",
    "golang",
    "javascript",
    "text",
    "utils",
    "net",
    "admin",
    "misc",
    "x11",
    "gnome",
    "kde",
    "science",
    "math",
    "perl",
    "ruby",
    "java",
    "doc",
    "web",
    "fonts",
    "sound",
    "video",
    "graphics",
    "games",
    "mail",
    "editors",
    "database",
    "interpreters",
    "shells",
    "kernel",
    "metapackages",
    "oldlibs",
    "otherosfs",
    "php",
    "rust",
    "haskell",
    "ocaml",
    "lisp",
    "httpd",
    "hamradio",
    "electronics",
    "embedded",
    "gnu-r",
    "introspection",
    "localization",
    "tex",
    "vcs",
    "zope",
    "cli-mono",
    "comm",
    "debug",
    "education",
    "fortran",
    "news",
    "x11-fonts",
    "translations",
    "tasks",
    "httpd-doc",
    "devel-doc",
];

/// Generates a Debian-shaped graph.
pub fn debian(shape: &DebianShape) -> DebianGraph {
    let mut rng = StdRng::seed_from_u64(shape.seed);
    let n = shape.binaries;
    // Names: hubs and the Ruby cycle by name, the rest from a permutation of the indices.
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut rng);
    let ruby_at = n / 3;
    let binaries: Vec<String> = (0..n)
        .map(|i| {
            if let Some(hub) = HUBS.get(i) {
                (*hub).to_owned()
            } else if (ruby_at..ruby_at + RUBY.len()).contains(&i) {
                RUBY[i - ruby_at].to_owned()
            } else if i + 1 == n {
                "task-gnome-desktop".to_owned()
            } else {
                let p = perm[i];
                format!("{}pkg{p:05}", PREFIXES[p % PREFIXES.len()])
            }
        })
        .collect();
    let mut edges: Vec<(usize, usize)> = Vec::with_capacity(shape.depends);
    let mut seen = std::collections::HashSet::new();
    let mut add = |edges: &mut Vec<(usize, usize)>, a: usize, b: usize| {
        if a != b && seen.insert((a, b)) {
            edges.push((a, b));
        }
    };
    // Planted cycles: libc6 <-> libgcc-s1, the Ruby chain closed, and small ones (2 to 4
    // nodes) among neighbours; the rest of the graph only depends "downwards" (on lower
    // indices), so these are its only non-trivial components.
    add(&mut edges, 0, 1);
    add(&mut edges, 1, 0);
    for k in 0..RUBY.len() {
        add(&mut edges, ruby_at + k, ruby_at + (k + 1) % RUBY.len());
    }
    let mut cycles = vec![
        vec![0, 1],
        (ruby_at..ruby_at + RUBY.len()).collect::<Vec<_>>(),
    ];
    let mut start = HUBS.len() + 100;
    for _ in 2..shape.cycles {
        let size = rng.gen_range(2..=4);
        if start + size >= ruby_at && start < ruby_at + RUBY.len() {
            start = ruby_at + RUBY.len() + 1;
        }
        if start + size >= n - 1 {
            break;
        }
        let members: Vec<usize> = (start..start + size).collect();
        for k in 0..size {
            add(&mut edges, members[k], members[(k + 1) % size]);
        }
        cycles.push(members);
        start += (n / shape.cycles.max(1)).max(size + 1);
    }
    // Depends: a heavy-tailed out-degree, targets drawn towards the hubs (a power law over
    // lower indices), the meta package last with hundreds.
    let meta = n - 1;
    for _ in 0..400.min(n / 4) {
        let target = rng.gen_range(HUBS.len()..meta);
        add(&mut edges, meta, target);
    }
    while edges.len() < shape.depends {
        let a = rng.gen_range(2..meta);
        let degree = 1 + (rng.gen::<f64>().powi(3) * 12.0) as usize;
        for _ in 0..degree {
            let b = if rng.gen_bool(0.25) {
                rng.gen_range(0..HUBS.len().min(a))
            } else {
                // Skewed towards 0: a cubed uniform over [0, a).
                let u: f64 = rng.gen::<f64>();
                ((u * u * u) * a as f64) as usize
            };
            add(&mut edges, a, b);
        }
    }
    edges.truncate(shape.depends);
    let mut out: Vec<(String, String, &'static str)> = edges
        .iter()
        .map(|&(a, b)| (binaries[a].clone(), binaries[b].clone(), "depends"))
        .collect();
    // Sources: each builds one or more binaries (every binary has one source).
    let sources = shape.sources.min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    for (k, &b) in order.iter().enumerate() {
        let s = if k < sources {
            k
        } else {
            rng.gen_range(0..sources)
        };
        let mut name = String::from("src:");
        let _ = write!(name, "{}", binaries[order[s]]);
        out.push((name, binaries[b].clone(), "builds"));
    }
    // Sections: `libs` holds a fifth of the binaries, the rest a long tail.
    let sections: Vec<String> = SECTIONS
        .iter()
        .take(shape.sections)
        .map(|s| format!("section:{s}"))
        .collect();
    for binary in &binaries {
        let s = if rng.gen_bool(0.2) {
            0
        } else {
            let u: f64 = rng.gen();
            1 + ((u * u) * (sections.len() - 1) as f64) as usize
        };
        let s = s.min(sections.len() - 1);
        out.push((sections[s].clone(), binary.clone(), "contains"));
    }
    out.shuffle(&mut rng);
    let cycles = cycles
        .into_iter()
        .map(|c| c.into_iter().map(|i| binaries[i].clone()).collect())
        .collect();
    DebianGraph {
        edges: out,
        binaries,
        sections,
        cycles,
    }
}

impl DebianGraph {
    /// The graph as the TSV that [`crate::Graph::import_tsv`] reads.
    pub fn tsv(&self) -> String {
        let mut out = String::with_capacity(self.edges.len() * 40);
        out.push_str(crate::graphs::GRAPH_HEADER);
        out.push('\n');
        for (from, to, label) in &self.edges {
            let _ = writeln!(out, "{from}\t{to}\t{label}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_graphs_have_the_shape() {
        let shape = DebianShape::scaled(0.01);
        let g = debian(&shape);
        let depends = g.edges.iter().filter(|e| e.2 == "depends").count();
        assert_eq!(depends, shape.depends);
        assert_eq!(g.cycles[0], ["libc6", "libgcc-s1"]);
        assert_eq!(g.cycles[1].len(), 7);
        let names: std::collections::HashSet<&String> = g.binaries.iter().collect();
        assert_eq!(names.len(), g.binaries.len(), "names are unique");
        let mut sorted = g.binaries.clone();
        sorted.sort();
        assert_ne!(sorted, g.binaries, "names are not in creation order");
        assert_eq!(debian(&shape).edges, g.edges, "deterministic");
    }
}

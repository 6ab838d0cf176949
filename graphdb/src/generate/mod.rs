//! A generator of team graphs shaped like the real one, for tests and benchmarks.
//!
//! [`Shape::full`] is the production shape: 500,000 persons and 30,000 teams nested up to 6
//! levels, one team of 18,000 transitive members, one of 12,000, ten of 1,601 to 2,501, one
//! person in 300 teams, most persons in 1 to 5 teams, some `audits` relations and some expired
//! memberships. [`Shape::scaled`] divides the counts for fast tests. The output is
//! deterministic for a seed.
//!
//! Names are spread over ids as in a real import: persons and teams are created (and declared
//! first in [`Generated::to_tsv`], so an import gives them ids) in index order, but their names
//! ([`person_name`], [`team_name`]) are a bijective scramble of the index, so that name order
//! is unrelated to id order; and the members of the special teams are drawn at random from all
//! persons, so that a large team's members lie all over the id space and memory, not in one
//! run of consecutive ids.

use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub mod debian;

use crate::graph::Role;

/// The parameters of a generated graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Persons.
    pub persons: usize,
    /// Teams, all kinds together.
    pub teams: usize,
    /// The special teams: for each, the number of transitive person members and the branching
    /// of its subtree of nested teams, level by level; the persons are spread evenly over the
    /// subtree's teams.
    pub special: Vec<(usize, Vec<usize>)>,
    /// How many teams the busiest person belongs to directly.
    pub heavy_person_teams: usize,
    /// `audits` relations.
    pub audits: usize,
    /// Per mille of person memberships that expired before [`Generated::now`].
    pub expired_per_mille: u32,
    /// Per mille of person memberships that expire after [`Generated::now`].
    pub expiring_per_mille: u32,
    /// The seed.
    pub seed: u64,
}

impl Shape {
    /// The production shape.
    pub fn full() -> Shape {
        // Wide at the top, so that no subteam of the two largest reaches 1,600 persons.
        let mut special = vec![
            (18_000, vec![12, 3, 2, 2, 2]),
            (12_000, vec![8, 3, 2, 2, 2]),
        ];
        for i in 0..10 {
            special.push((1_601 + 100 * i, vec![3, 2, 2]));
        }
        Shape {
            persons: 500_000,
            teams: 30_000,
            special,
            heavy_person_teams: 300,
            audits: 2_000,
            expired_per_mille: 20,
            expiring_per_mille: 10,
            seed: 42,
        }
    }

    /// The production shape with every count divided by `divisor` (the special trees keep
    /// their branching; the busy person keeps at most 300 teams).
    pub fn scaled(divisor: usize) -> Shape {
        let d = divisor.max(1);
        let mut shape = Shape::full();
        shape.persons /= d;
        shape.teams /= d;
        for (size, _) in &mut shape.special {
            *size /= d;
        }
        shape.heavy_person_teams = shape.heavy_person_teams.min(shape.teams / 4);
        shape.audits /= d;
        shape
    }
}

/// A member in a generated edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    /// A person, by index into [`Generated::persons`].
    Person(usize),
    /// A team, by index into [`Generated::teams`].
    Team(usize),
}

/// A generated membership edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenEdge {
    /// The team, by index.
    pub team: usize,
    /// The member.
    pub member: Member,
    /// The role.
    pub role: Role,
    /// The expiry.
    pub expires: Option<i64>,
}

/// A generated graph.
#[derive(Clone, Debug)]
pub struct Generated {
    /// Person names.
    pub persons: Vec<String>,
    /// Team names.
    pub teams: Vec<String>,
    /// Membership edges, nested teams included.
    pub edges: Vec<GenEdge>,
    /// `audits` relations: (holder, target team).
    pub audits: Vec<(Member, usize)>,
    /// The roots of the special teams, largest first (indexes into `teams`).
    pub special_roots: Vec<usize>,
    /// The person in the most teams.
    pub heavy_person: usize,
    /// The time the expiries are relative to: use it as the clock.
    pub now: i64,
}

/// The time [`Generated::now`] holds.
pub const GENERATED_NOW: i64 = 1_800_000_000;

impl Generated {
    /// Generates a graph of the given shape.
    pub fn new(shape: &Shape) -> Generated {
        let mut rng = StdRng::seed_from_u64(shape.seed);
        let now = GENERATED_NOW;
        let persons: Vec<String> = (0..shape.persons).map(person_name).collect();
        // The special teams draw their persons from a shuffled pool, not the first ids.
        let mut pool: Vec<usize> = (0..shape.persons).collect();
        pool.shuffle(&mut rng);
        let mut is_special = vec![false; shape.persons];
        let mut teams: Vec<String> = Vec::with_capacity(shape.teams);
        let mut edges = Vec::new();
        let mut special_roots = Vec::new();
        let mut next_person = 0usize;
        // The special trees: persons from a dedicated pool, spread evenly over the subtree.
        for (size, branching) in &shape.special {
            let root = teams.len();
            teams.push(team_name(root));
            special_roots.push(root);
            let mut level = vec![root];
            let mut all = vec![root];
            for &b in branching {
                let mut next_level = Vec::new();
                for &parent in &level {
                    for _ in 0..b {
                        let t = teams.len();
                        teams.push(team_name(t));
                        edges.push(GenEdge {
                            team: parent,
                            member: Member::Team(t),
                            role: Role::Member,
                            expires: None,
                        });
                        next_level.push(t);
                        all.push(t);
                    }
                }
                level = next_level;
            }
            for k in 0..*size {
                let p = pool[next_person % shape.persons.max(1)];
                next_person += 1;
                is_special[p] = true;
                edges.push(GenEdge {
                    team: all[k % all.len()],
                    member: Member::Person(p),
                    role: if k % 50 == 0 {
                        Role::Admin
                    } else {
                        Role::Member
                    },
                    expires: None,
                });
            }
        }
        let first_general = teams.len();
        while teams.len() < shape.teams.max(first_general + 1) {
            let t = teams.len();
            teams.push(team_name(t));
        }
        let general: Vec<usize> = (first_general..teams.len()).collect();
        // Nest about 30% of the general teams under one of the 200 general teams created just
        // before (so that no general team grows to the size of the special ones), at most 6
        // levels deep.
        let mut depth = vec![0u8; teams.len()];
        for &t in general.iter().skip(1) {
            if rng.gen_ratio(3, 10) {
                let parent = rng.gen_range(t.saturating_sub(200).max(first_general)..t);
                if depth[parent] < 5 {
                    depth[t] = depth[parent] + 1;
                    edges.push(GenEdge {
                        team: parent,
                        member: Member::Team(t),
                        role: Role::Member,
                        expires: None,
                    });
                }
            }
        }
        // Persons: 1 to 5 general teams each (60/20/10/6/4 %); the heavy person in many.
        let heavy_person = shape.persons.saturating_sub(1);
        let expiry = |rng: &mut StdRng| -> Option<i64> {
            let roll = rng.gen_range(0..1000u32);
            if roll < shape.expired_per_mille {
                Some(now - rng.gen_range(1..10_000_000))
            } else if roll < shape.expired_per_mille + shape.expiring_per_mille {
                Some(now + rng.gen_range(1..10_000_000))
            } else {
                None
            }
        };
        for (p, &special) in is_special.iter().enumerate() {
            let count = if p == heavy_person {
                shape.heavy_person_teams.min(general.len())
            } else {
                match rng.gen_range(0..100u32) {
                    0..60 => 1,
                    60..80 => 2,
                    80..90 => 3,
                    90..96 => 4,
                    _ => 5,
                }
            };
            let count = if special { count - 1 } else { count };
            let mut chosen: Vec<usize> = general
                .choose_multiple(&mut rng, count.min(general.len()))
                .copied()
                .collect();
            chosen.sort_unstable();
            for t in chosen {
                let expires = if p == heavy_person {
                    None
                } else {
                    expiry(&mut rng)
                };
                edges.push(GenEdge {
                    team: t,
                    member: Member::Person(p),
                    role: if rng.gen_ratio(1, 20) {
                        Role::Admin
                    } else {
                        Role::Member
                    },
                    expires,
                });
            }
        }
        let mut audits = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while audits.len() < shape.audits && shape.persons > 0 {
            let target = rng.gen_range(0..teams.len());
            let holder = if rng.gen_bool(0.5) {
                Member::Team(rng.gen_range(0..teams.len()))
            } else {
                Member::Person(rng.gen_range(0..shape.persons))
            };
            if seen.insert((holder_key(holder), target)) {
                audits.push((holder, target));
            }
        }
        Generated {
            persons,
            teams,
            edges,
            audits,
            special_roots,
            heavy_person,
            now,
        }
    }

    /// The name of a member.
    pub fn member_name(&self, member: Member) -> &str {
        match member {
            Member::Person(p) => &self.persons[p],
            Member::Team(t) => &self.teams[t],
        }
    }

    /// The graph as a team TSV file (persons in no team are declared).
    pub fn to_tsv(&self) -> String {
        let mut out = String::with_capacity(self.edges.len() * 32);
        out.push_str(crate::import::TEAMS_HEADER);
        out.push('\n');
        // Teams, then persons, declared in creation order: the import numbers them so.
        for t in &self.teams {
            let _ = writeln!(out, "{t}\t\t\t");
        }
        for name in &self.persons {
            let _ = writeln!(out, "\t{name}\t\t");
        }
        for e in &self.edges {
            let expires = e.expires.map(|x| x.to_string()).unwrap_or_default();
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}",
                self.teams[e.team],
                self.member_name(e.member),
                e.role,
                expires
            );
        }
        for &(holder, target) in &self.audits {
            let _ = writeln!(
                out,
                "{}\t{}\taudits\t",
                self.teams[target],
                self.member_name(holder)
            );
        }
        out
    }
}

/// Syllables of the generated names.
const SYLLABLES: [&str; 32] = [
    "ka", "to", "mi", "ra", "ne", "so", "lu", "be", "di", "fa", "go", "hu", "ji", "ko", "le", "mo",
    "na", "pe", "qui", "ri", "sa", "ti", "vo", "wa", "xe", "yu", "za", "bren", "cal", "dor", "el",
    "fin",
];

/// A bijection of `u32` that scatters consecutive indexes (an odd multiplier, then a xor).
fn scramble(i: usize, salt: u32) -> u32 {
    (i as u32).wrapping_mul(0x9E37_79B1) ^ salt
}

/// Two or three syllables and the scrambled index: unique, and unrelated to `i`'s order.
fn scrambled_name(h: u32, separator: &str) -> String {
    let mut name = String::with_capacity(20);
    let syllables = 2 + (h >> 31) as usize;
    for k in 0..syllables {
        name.push_str(SYLLABLES[((h >> (5 * k)) & 31) as usize]);
    }
    let _ = write!(name, "{separator}{h}");
    name
}

/// The name of person `i`: letters and digits, as unrelated to `i`'s order as a real user's
/// name is to its account's creation order.
pub fn person_name(i: usize) -> String {
    scrambled_name(scramble(i, 0x5bd1_e995), "")
}

/// The name of team `i` (a `-` before the digits, so no person has it).
pub fn team_name(i: usize) -> String {
    scrambled_name(scramble(i, 0x2f6b_3c41), "-")
}

fn holder_key(m: Member) -> (bool, usize) {
    match m {
        Member::Person(p) => (false, p),
        Member::Team(t) => (true, t),
    }
}

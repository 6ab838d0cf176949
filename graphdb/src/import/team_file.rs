//! The team file's parse and load: rows that name each person and team by number, every name
//! stored once.
//!
//! A Launchpad-sized file has 1.4 million rows over 530,000 names. Rows that owned their two
//! names held 2.8 million small strings (most of the parse's resident memory, kept through
//! the index build and the engine write); numbered rows over one text of names hold the
//! names once. graphdb/DESIGN.md, "The import's peak", has the figures.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::io::BufRead;

use hashbrown::HashTable;

use super::{apply, checked_name, cut, expires, fields, for_each_line};
use super::{ImportError, ImportSummary, LineProblem, TEAMS_HEADER};
use crate::graph::{
    validate_relation, BulkEdge, BulkKind, BulkLoad, EdgeKind, Namespace, NodeKind, Role,
};
use crate::{Error, Result};

/// A parsed team file: its rows in file order (see [`TeamFile::rows`]).
#[derive(Clone, Default)]
pub struct TeamFile {
    /// Persons and teams, numbered in order of first appearance (a row's team before its
    /// member): the order in which an import creates them.
    names: Names,
    /// Relation names (`audits`, ...), numbered likewise.
    relations: Names,
    rows: Vec<Row>,
}

/// One row of a team file, its names borrowed from the [`TeamFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamRow<'a> {
    /// A membership or relation edge.
    Edge {
        /// The line number.
        line: usize,
        /// The team (or the relation's target).
        team: &'a str,
        /// The member (or the relation's holder).
        member: &'a str,
        /// The role or relation.
        kind: EdgeKind,
        /// The expiry.
        expires: Option<i64>,
    },
    /// `T\t\t\t`.
    Team {
        /// The line number.
        line: usize,
        /// The team.
        name: &'a str,
    },
    /// `\tP\t\t`.
    Person {
        /// The line number.
        line: usize,
        /// The person.
        name: &'a str,
    },
}

impl TeamRow<'_> {
    /// The line the row was read from.
    pub fn line(&self) -> usize {
        match self {
            TeamRow::Edge { line, .. }
            | TeamRow::Team { line, .. }
            | TeamRow::Person { line, .. } => *line,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    line: usize,
    parsed: Parsed,
}

/// A row with its names as numbers in the file's [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parsed {
    Edge {
        team: u32,
        member: u32,
        kind: Kind,
        expires: Option<i64>,
    },
    Team(u32),
    Person(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Membership(Role),
    /// A relation, by its number in the file's relation names.
    Relation(u32),
}

impl TeamFile {
    /// The number of rows (declarations and edges; blank lines and the header are not rows).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the file has no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, in file order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = TeamRow<'_>> + '_ {
        self.rows.iter().map(|row| self.view(row))
    }

    /// Row `index` (0 is the first row after the header), if there is one.
    pub fn row(&self, index: usize) -> Option<TeamRow<'_>> {
        self.rows.get(index).map(|row| self.view(row))
    }

    fn view(&self, row: &Row) -> TeamRow<'_> {
        let line = row.line;
        match row.parsed {
            Parsed::Edge {
                team,
                member,
                kind,
                expires,
            } => TeamRow::Edge {
                line,
                team: self.names.get(team),
                member: self.names.get(member),
                kind: self.edge_kind(kind),
                expires,
            },
            Parsed::Team(name) => TeamRow::Team {
                line,
                name: self.names.get(name),
            },
            Parsed::Person(name) => TeamRow::Person {
                line,
                name: self.names.get(name),
            },
        }
    }

    fn edge_kind(&self, kind: Kind) -> EdgeKind {
        match kind {
            Kind::Membership(role) => EdgeKind::Membership(role),
            Kind::Relation(r) => EdgeKind::Relation(self.relations.get(r).to_owned()),
        }
    }

    /// The line of the first row that makes `name` a team.
    fn team_line(&self, name: u32) -> usize {
        self.rows
            .iter()
            .find_map(|row| match row.parsed {
                Parsed::Edge {
                    team,
                    kind: Kind::Membership(_),
                    ..
                }
                | Parsed::Team(team)
                    if team == name =>
                {
                    Some(row.line)
                }
                _ => None,
            })
            .unwrap_or(0)
    }
}

impl PartialEq for TeamFile {
    fn eq(&self, other: &Self) -> bool {
        self.rows().eq(other.rows())
    }
}

impl Eq for TeamFile {}

impl fmt::Debug for TeamFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.rows()).finish()
    }
}

/// Names stored once each and numbered from 0, with a hash table to find a name's number.
#[derive(Clone, Default)]
struct Names {
    text: NameText,
    /// Each name's number, hashed by the name.
    numbers: HashTable<u32>,
    hasher: RandomState,
}

impl Names {
    fn len(&self) -> usize {
        self.text.len()
    }

    fn get(&self, number: u32) -> &str {
        self.text.get(number as usize)
    }

    /// The number of `name`, given the next one if it is new.
    fn number(&mut self, name: &str) -> Result<u32, LineProblem> {
        let hash = self.hasher.hash_one(name);
        let Names {
            text,
            numbers,
            hasher,
        } = self;
        if let Some(&number) = numbers.find(hash, |&n| text.get(n as usize) == name) {
            return Ok(number);
        }
        let number = u32::try_from(text.len()).map_err(|_| LineProblem::TooManyNames {
            limit: u32::MAX as usize,
        })?;
        text.push(name);
        numbers.insert_unique(hash, number, |&n| hasher.hash_one(text.get(n as usize)));
        Ok(number)
    }

    /// The names without their hash table, once no name is looked up any more.
    fn into_text(self) -> NameText {
        self.text
    }
}

/// Names one after another in one string, by index.
#[derive(Clone, Default)]
struct NameText {
    text: String,
    /// Where each name ends in `text` (it starts where the one before it ends).
    ends: Vec<usize>,
}

impl NameText {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, index: usize) -> &str {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.text[start..self.ends[index]]
    }

    fn push(&mut self, name: &str) {
        self.text.push_str(name);
        self.ends.push(self.text.len());
    }
}

/// Parses a team file.
///
/// # Errors
/// [`ImportError`] naming the first bad line; duplicates and person/team conflicts included.
pub fn parse_teams(reader: impl BufRead) -> Result<TeamFile, ImportError> {
    let mut file = TeamFile::default();
    // Each edge row's index in `file.rows`, hashed by the row's key (see `edge_key`).
    let mut seen: HashTable<usize> = HashTable::new();
    let hasher = RandomState::new();
    for_each_line(reader, TEAMS_HEADER, |line, text| {
        let [team, member, role, exp] = fields::<4>(text)?;
        let parsed = match (team.is_empty(), member.is_empty()) {
            (true, true) => return Err(LineProblem::BadDeclaration("no team and no member")),
            (false, true) | (true, false) if !role.is_empty() || !exp.is_empty() => {
                return Err(LineProblem::BadDeclaration(
                    "a declaration row has no role and no expiry",
                ))
            }
            (false, true) => Parsed::Team(file.names.number(checked_name(team)?)?),
            (true, false) => Parsed::Person(file.names.number(checked_name(member)?)?),
            (false, false) => {
                let kind = match role.parse::<Role>() {
                    Ok(r) => Kind::Membership(r),
                    Err(()) => {
                        validate_relation(role).map_err(|e| LineProblem::BadRole {
                            role: cut(role),
                            reason: match e {
                                Error::InvalidRelation { reason, .. } => reason.to_owned(),
                                other => other.to_string(),
                            },
                        })?;
                        Kind::Relation(file.relations.number(role)?)
                    }
                };
                let team = file.names.number(checked_name(team)?)?;
                let member = file.names.number(checked_name(member)?)?;
                let key = edge_key(team, member, kind);
                let rows = &file.rows;
                // The key as hashed: a growing table rehashes its rows with this too, so it
                // must hash exactly what `hash` below hashed.
                let key_of = |&i: &usize| match rows[i].parsed {
                    Parsed::Edge {
                        team, member, kind, ..
                    } => edge_key(team, member, kind),
                    _ => unreachable!("only edge rows are in the table"),
                };
                let hash = hasher.hash_one(key);
                if let Some(&first) = seen.find(hash, |i| key_of(i) == key) {
                    return Err(LineProblem::Duplicate {
                        first: rows[first].line,
                    });
                }
                seen.insert_unique(hash, rows.len(), |i| hasher.hash_one(key_of(i)));
                Parsed::Edge {
                    team,
                    member,
                    kind,
                    expires: expires(exp)?,
                }
            }
        };
        file.rows.push(Row { line, parsed });
        Ok(())
    })?;
    Ok(file)
}

/// What makes two edge rows the same edge: membership edges are keyed by pair whatever their
/// role, relations by pair and relation.
fn edge_key(team: u32, member: u32, kind: Kind) -> (u32, u32, Option<u32>) {
    let relation = match kind {
        Kind::Membership(_) => None,
        Kind::Relation(r) => Some(r),
    };
    (team, member, relation)
}

/// [`parse_teams`] over a string.
///
/// # Errors
/// As for [`parse_teams`].
pub fn parse_teams_str(text: &str) -> Result<TeamFile, ImportError> {
    parse_teams(text.as_bytes())
}

/// Loads a parsed team file into `ns`. The rows are freed before the index build and the
/// engine write (the load borrows only the names).
pub(crate) fn load_teams(
    ns: &Namespace,
    actor: &str,
    file: TeamFile,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ImportSummary> {
    // A name is a team when the file puts it in the team column of a membership row or
    // declares it a team.
    let mut is_team = vec![false; file.names.len()];
    for row in &file.rows {
        match row.parsed {
            Parsed::Edge {
                team,
                kind: Kind::Membership(_),
                ..
            }
            | Parsed::Team(team) => is_team[team as usize] = true,
            _ => {}
        }
    }
    // A declared person that the file also uses as a team is a conflict.
    for row in &file.rows {
        if let Parsed::Person(name) = row.parsed {
            if is_team[name as usize] {
                return Err(ImportError::Line {
                    line: row.line,
                    problem: LineProblem::KindConflict {
                        name: cut(file.names.get(name)),
                        first_kind: "team",
                        first: file.team_line(name),
                    },
                }
                .into());
            }
        }
    }
    // Only the names' text is borrowed from here on: their hash table goes now.
    let TeamFile {
        names,
        relations,
        rows,
    } = file;
    let (names, relations) = (names.into_text(), relations.into_text());
    let mut load = BulkLoad::default();
    let view = ns.view();
    // The file's name numbers are the load's node indexes.
    load.nodes = (0..names.len())
        .map(|number| {
            let name = names.get(number);
            let kind = if is_team[number] {
                NodeKind::Group
            } else {
                view.id(name)
                    .and_then(|id| view.kind(id))
                    .unwrap_or(NodeKind::Leaf)
            };
            (name, kind)
        })
        .collect();
    drop(view);
    drop(is_team);
    load.relations = (0..relations.len()).map(|r| relations.get(r)).collect();
    load.edges = rows
        .iter()
        .filter_map(|row| match row.parsed {
            Parsed::Edge {
                team,
                member,
                kind,
                expires,
            } => Some(BulkEdge {
                member,
                group: team,
                kind: match kind {
                    Kind::Membership(role) => BulkKind::Membership(role),
                    Kind::Relation(r) => BulkKind::Relation(r),
                },
                expires,
            }),
            _ => None,
        })
        .collect();
    // What the index build and the engine write need is in `load` now.
    drop(rows);
    apply(ns, actor, load, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_is_stored_once_and_rows_read_back_as_written() {
        let file = parse_teams_str(
            "team\tmember\trole\texpires\n\
             t\tp\tmember\t\n\
             t\tq\tadmin\t7\n\
             u\tt\tmember\t\n\
             u\tp\taudits\t\n\
             u\tq\taudits\t\n\
             \tp\t\t\n",
        )
        .unwrap();
        assert_eq!(file.names.len(), 4, "t, p, q, u");
        assert_eq!(file.names.text.text, "tpqu", "in order of first appearance");
        assert_eq!(file.relations.len(), 1);
        assert_eq!(file.len(), 6);
        assert_eq!(
            file.row(1),
            Some(TeamRow::Edge {
                line: 3,
                team: "t",
                member: "q",
                kind: EdgeKind::Membership(Role::Admin),
                expires: Some(7),
            })
        );
        assert_eq!(
            file.row(4),
            Some(TeamRow::Edge {
                line: 6,
                team: "u",
                member: "q",
                kind: EdgeKind::Relation("audits".to_owned()),
                expires: None,
            })
        );
        assert_eq!(file.row(5), Some(TeamRow::Person { line: 7, name: "p" }));
        assert_eq!(file.row(6), None);
    }

    #[test]
    fn duplicates_are_found_by_pair_for_membership_and_by_relation_too() {
        let h = "team\tmember\trole\texpires\n";
        let problem = |body: &str| match parse_teams_str(&format!("{h}{body}")) {
            Err(ImportError::Line { line, problem }) => Some((line, problem)),
            _ => None,
        };
        assert_eq!(
            problem("t\tp\tmember\t\nt\tp\tadmin\t\n"),
            Some((3, LineProblem::Duplicate { first: 2 }))
        );
        assert_eq!(
            problem("t\tp\taudits\t\nt\tp\tmember\t\nt\tp\taudits\t5\n"),
            Some((4, LineProblem::Duplicate { first: 2 }))
        );
        // A duplicate of an early row after enough rows that the table has grown (and moved
        // its rows) several times: found whatever the hasher's seed (the rows were once
        // rehashed under another key than they were looked up by, found by the team_tsv fuzz
        // corpus).
        for _ in 0..8 {
            let mut text = String::new();
            for i in 0..3_000 {
                text.push_str(&format!("t{}\tp{i}\tmember\t\n", i % 7));
                text.push_str(&format!("t{}\tp{i}\taudits\t\n", i % 7));
            }
            text.push_str("t1\tp1\taudits\t\n");
            assert_eq!(
                problem(&text),
                Some((6_002, LineProblem::Duplicate { first: 5 }))
            );
        }
        assert_eq!(
            problem("t\tp\taudits\t\nt\tp\towns\t\nt\tp\tmember\t\n"),
            None
        );
        assert_eq!(
            problem("t\tp\tmember\t\np\tt\tmember\t\n"),
            None,
            "the other way round"
        );
    }
}

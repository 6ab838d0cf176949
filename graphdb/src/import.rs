//! Bulk import and export as TSV.
//!
//! Teams: a header `team\tmember\trole\texpires`, then one row per edge:
//! - `T\tM\tmember|admin\tE`: `M` (a person or a team) is a member of team `T`, until the
//!   Unix second `E` (empty: no expiry);
//! - `T\tH\trelation\tE`: `H` holds `relation` (`audits`, ...) on `T` (not membership);
//! - `T\t\t\t`: declares team `T`; `\tP\t\t`: declares person `P`.
//!
//! A name is a team when it is in the `team` column of a membership row or of a declaration,
//! or already a team in the store; any other name is a person.
//!
//! Package sets: a header `set\titem\ttype`, then `S\tI\tpackage|set` (set `S` contains `I`),
//! `S\t\t` (declares set `S`) or `\tI\tpackage|set` (declares `I`).
//!
//! The parsers are pure functions over a [`BufRead`] (or `&str`) that never panic; a
//! malformed line gives an [`ImportError`] naming it (the header is line 1). Blank lines are
//! skipped, a trailing `\r` is ignored. An import is all or nothing: everything is parsed and
//! checked (kinds, cycles) before one atomic batch is written. An import merges: it adds nodes
//! and adds or changes edges, and removes nothing that the file does not mention.
//!
//! The splitter is hand-written, not the `csv` crate: `csv` measured slower on the parse
//! stage and would replace only `fields` (figures in DESIGN.md, "TSV formats").

use std::collections::HashMap;
use std::io::{BufRead, Write};

use crate::graph::{
    validate_name, BulkEdge, BulkKind, BulkLoad, EdgeKind, Namespace, NodeKind, Role,
};
use crate::packagesets::SetItem;
use crate::{Error, Result};

mod team_file;

pub(crate) use team_file::load_teams;
pub use team_file::{parse_teams, parse_teams_str, TeamFile, TeamRow};

/// The header of a team TSV file.
pub const TEAMS_HEADER: &str = "team\tmember\trole\texpires";
/// The header of a package-set TSV file.
pub const PACKAGE_SETS_HEADER: &str = "set\titem\ttype";

/// Why a TSV file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A line is malformed.
    #[error("line {line}: {problem}")]
    Line {
        /// The 1-based line number (the header is line 1).
        line: usize,
        /// What is wrong.
        problem: LineProblem,
    },
    /// Reading the input failed.
    #[error("line {line}: read error: {message}")]
    Read {
        /// The line being read.
        line: usize,
        /// The I/O error's message.
        message: String,
    },
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineProblem {
    /// The input is empty.
    #[error("missing header {expected:?}")]
    MissingHeader {
        /// The header expected.
        expected: &'static str,
    },
    /// The first line is not the header.
    #[error("expected header {expected:?}, found {found:?}")]
    BadHeader {
        /// The header expected.
        expected: &'static str,
        /// The line found (cut to 100 bytes).
        found: String,
    },
    /// The line is not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// Wrong number of tab-separated fields.
    #[error("expected {expected} tab-separated fields, found {found}")]
    FieldCount {
        /// Fields expected.
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// A name cannot be used.
    #[error("invalid name {name:?}: {reason}")]
    BadName {
        /// The name (cut to 100 bytes).
        name: String,
        /// Why.
        reason: String,
    },
    /// The role is neither a membership role nor a valid relation name.
    #[error("invalid role {role:?}: {reason}")]
    BadRole {
        /// The role (cut to 100 bytes).
        role: String,
        /// Why.
        reason: String,
    },
    /// The expiry is not an integer number of Unix seconds.
    #[error("invalid expiry {value:?}: expected Unix seconds or nothing")]
    BadExpiry {
        /// The value (cut to 100 bytes).
        value: String,
    },
    /// The item type is neither `package` nor `set`.
    #[error("invalid type {value:?}: expected \"package\" or \"set\"")]
    BadType {
        /// The value (cut to 100 bytes).
        value: String,
    },
    /// A declaration row with a role, expiry or type that makes no sense, or an empty row.
    #[error("{0}")]
    BadDeclaration(&'static str),
    /// An edge label that cannot be used.
    #[error("invalid label {label:?}: {reason}")]
    BadLabel {
        /// The label (cut to 100 bytes).
        label: String,
        /// Why.
        reason: String,
    },
    /// The file holds more edges than the import accepts.
    #[error("more than {limit} edges")]
    TooManyEdges {
        /// The configured limit.
        limit: usize,
    },
    /// The file names more distinct persons and teams than an import can number.
    #[error("more than {limit} distinct names")]
    TooManyNames {
        /// The limit.
        limit: usize,
    },
    /// The same edge twice.
    #[error("duplicate of line {first}")]
    Duplicate {
        /// The line that had it first.
        first: usize,
    },
    /// A name used as a package and as a set (or a person and a team).
    #[error("{name:?} was a {first_kind} on line {first}")]
    KindConflict {
        /// The name (cut to 100 bytes).
        name: String,
        /// What it was first.
        first_kind: &'static str,
        /// Where.
        first: usize,
    },
}

pub(crate) fn cut(s: &str) -> String {
    let mut end = s.len().min(100);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// One row of a package-set file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetRow {
    /// `S\tI\ttype`.
    Contains {
        /// The line number.
        line: usize,
        /// The set.
        set: String,
        /// The item.
        item: String,
        /// Its type.
        item_type: SetItem,
    },
    /// `S\t\t` or `\tI\ttype`.
    Declare {
        /// The line number.
        line: usize,
        /// The name.
        name: String,
        /// Its type.
        item_type: SetItem,
    },
}

/// Splits the input into numbered lines (header included), checking the header, skipping blank
/// lines, and calling `row` for each other line.
pub(crate) fn for_each_line(
    mut reader: impl BufRead,
    header: &'static str,
    mut row: impl FnMut(usize, &str) -> Result<(), LineProblem>,
) -> Result<(), ImportError> {
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| ImportError::Read {
                line: line + 1,
                message: e.to_string(),
            })?;
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
        let text = std::str::from_utf8(bytes).map_err(|_| ImportError::Line {
            line,
            problem: LineProblem::NotUtf8,
        })?;
        if line == 1 {
            if text != header {
                return Err(ImportError::Line {
                    line,
                    problem: LineProblem::BadHeader {
                        expected: header,
                        found: cut(text),
                    },
                });
            }
            continue;
        }
        if text.is_empty() {
            continue;
        }
        row(line, text).map_err(|problem| ImportError::Line { line, problem })?;
    }
    if line == 0 {
        return Err(ImportError::Line {
            line: 1,
            problem: LineProblem::MissingHeader { expected: header },
        });
    }
    Ok(())
}

pub(crate) fn fields<const N: usize>(text: &str) -> Result<[&str; N], LineProblem> {
    let mut out = [""; N];
    let mut count = 0;
    for (i, field) in text.split('\t').enumerate() {
        if i < N {
            out[i] = field;
        }
        count += 1;
    }
    if count == N {
        Ok(out)
    } else {
        Err(LineProblem::FieldCount {
            expected: N,
            found: count,
        })
    }
}

pub(crate) fn name(field: &str) -> Result<String, LineProblem> {
    checked_name(field).map(str::to_owned)
}

/// `field`, if it is a valid name.
fn checked_name(field: &str) -> Result<&str, LineProblem> {
    validate_name(field).map_err(|e| LineProblem::BadName {
        name: cut(field),
        reason: match e {
            Error::InvalidName { reason, .. } => reason.to_owned(),
            other => other.to_string(),
        },
    })?;
    Ok(field)
}

fn expires(field: &str) -> Result<Option<i64>, LineProblem> {
    if field.is_empty() {
        return Ok(None);
    }
    let digits = field.strip_prefix('-').unwrap_or(field);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineProblem::BadExpiry { value: cut(field) });
    }
    field
        .parse::<i64>()
        .map(Some)
        .map_err(|_| LineProblem::BadExpiry { value: cut(field) })
}

/// Parses a package-set file.
///
/// # Errors
/// [`ImportError`] naming the first bad line; duplicates and package/set conflicts included.
pub fn parse_package_sets(reader: impl BufRead) -> Result<Vec<SetRow>, ImportError> {
    let mut rows = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut kinds: HashMap<String, (SetItem, usize)> = HashMap::new();
    let mut note = |name: &str, t: SetItem, line: usize| -> Result<(), LineProblem> {
        match kinds.get(name) {
            Some(&(first_t, first)) if first_t != t => Err(LineProblem::KindConflict {
                name: cut(name),
                first_kind: first_t.as_str(),
                first,
            }),
            Some(_) => Ok(()),
            None => {
                kinds.insert(name.to_owned(), (t, line));
                Ok(())
            }
        }
    };
    for_each_line(reader, PACKAGE_SETS_HEADER, |line, text| {
        let [set, item, ty] = fields::<3>(text)?;
        let item_type = match ty {
            "package" => Some(SetItem::Package),
            "set" => Some(SetItem::Set),
            "" => None,
            other => return Err(LineProblem::BadType { value: cut(other) }),
        };
        let row = match (set.is_empty(), item.is_empty(), item_type) {
            (false, true, None) => {
                let set = name(set)?;
                note(&set, SetItem::Set, line)?;
                SetRow::Declare {
                    line,
                    name: set,
                    item_type: SetItem::Set,
                }
            }
            (true, false, Some(item_type)) => {
                let item = name(item)?;
                note(&item, item_type, line)?;
                SetRow::Declare {
                    line,
                    name: item,
                    item_type,
                }
            }
            (false, false, Some(item_type)) => {
                let set = name(set)?;
                let item = name(item)?;
                note(&set, SetItem::Set, line)?;
                note(&item, item_type, line)?;
                if let Some(&first) = seen.get(&(set.clone(), item.clone())) {
                    return Err(LineProblem::Duplicate { first });
                }
                seen.insert((set.clone(), item.clone()), line);
                SetRow::Contains {
                    line,
                    set,
                    item,
                    item_type,
                }
            }
            (_, false, None) => return Err(LineProblem::BadDeclaration("an item needs a type")),
            (false, true, Some(_)) => {
                return Err(LineProblem::BadDeclaration("a set declaration has no type"))
            }
            (true, true, _) => return Err(LineProblem::BadDeclaration("no set and no item")),
        };
        rows.push(row);
        Ok(())
    })?;
    Ok(rows)
}

/// [`parse_package_sets`] over a string.
///
/// # Errors
/// As for [`parse_package_sets`].
pub fn parse_package_sets_str(text: &str) -> Result<Vec<SetRow>, ImportError> {
    parse_package_sets(text.as_bytes())
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    /// Nodes named in the file (new or existing).
    pub nodes: u64,
    /// Edges written (added or changed).
    pub edges: u64,
    /// The revision of the import's one event.
    pub revision: u64,
}

fn apply(
    ns: &Namespace,
    actor: &str,
    load: BulkLoad,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ImportSummary> {
    let (nodes, edges) = (load.nodes.len() as u64, load.edges.len() as u64);
    let revision = ns.bulk(actor, load, &|done| {
        if let Some(progress) = progress {
            progress(done, edges);
        }
    })?;
    Ok(ImportSummary {
        nodes,
        edges,
        revision,
    })
}

/// Loads parsed package-set rows into `ns`.
pub(crate) fn load_package_sets<'a>(
    ns: &Namespace,
    actor: &str,
    rows: &'a [SetRow],
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<ImportSummary> {
    let mut load = BulkLoad::default();
    // Each name's index in `load.nodes`.
    let mut named: HashMap<&str, u32> = HashMap::new();
    let mut index = |load: &mut BulkLoad<'a>, n: &'a str, t: SetItem| -> Result<u32> {
        if let Some(&i) = named.get(n) {
            return Ok(i);
        }
        let i = u32::try_from(load.nodes.len()).map_err(|_| Error::IdsExhausted {
            namespace: ns.name().to_owned(),
        })?;
        named.insert(n, i);
        load.nodes.push((n, t.kind()));
        Ok(i)
    };
    for row in rows {
        match row {
            SetRow::Contains {
                set,
                item,
                item_type,
                ..
            } => {
                let group = index(&mut load, set, SetItem::Set)?;
                let member = index(&mut load, item, *item_type)?;
                load.edges.push(BulkEdge {
                    member,
                    group,
                    kind: BulkKind::Membership(Role::Member),
                    expires: None,
                });
            }
            SetRow::Declare {
                name, item_type, ..
            } => {
                index(&mut load, name, *item_type)?;
            }
        }
    }
    apply(ns, actor, load, progress)
}

fn io(source: std::io::Error) -> Error {
    Error::Io {
        operation: "export",
        source,
    }
}

/// Writes a team namespace as TSV.
pub(crate) fn export_teams(ns: &Namespace, writer: impl Write) -> Result<()> {
    let mut out = std::io::BufWriter::new(writer);
    let edges = ns.edges();
    let mut membership_teams: HashMap<&str, ()> = HashMap::new();
    let mut mentioned: HashMap<&str, ()> = HashMap::new();
    for e in &edges {
        if let EdgeKind::Membership(_) = e.kind {
            membership_teams.insert(&e.group, ());
        }
        mentioned.insert(&e.group, ());
        mentioned.insert(&e.member, ());
    }
    writeln!(out, "{TEAMS_HEADER}").map_err(io)?;
    for (name, kind) in ns.nodes() {
        match kind {
            NodeKind::Group if !membership_teams.contains_key(name.as_str()) => {
                writeln!(out, "{name}\t\t\t").map_err(io)?;
            }
            NodeKind::Leaf if !mentioned.contains_key(name.as_str()) => {
                writeln!(out, "\t{name}\t\t").map_err(io)?;
            }
            _ => {}
        }
    }
    for e in &edges {
        let expires = e.expires.map(|x| x.to_string()).unwrap_or_default();
        writeln!(out, "{}\t{}\t{}\t{}", e.group, e.member, e.kind, expires).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Writes a package-set namespace as TSV.
pub(crate) fn export_package_sets(ns: &Namespace, writer: impl Write) -> Result<()> {
    let mut out = std::io::BufWriter::new(writer);
    let edges = ns.edges();
    let nodes = ns.nodes();
    let kinds: HashMap<&str, NodeKind> = nodes.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    let mut mentioned: HashMap<&str, ()> = HashMap::new();
    for e in &edges {
        mentioned.insert(&e.group, ());
        mentioned.insert(&e.member, ());
    }
    writeln!(out, "{PACKAGE_SETS_HEADER}").map_err(io)?;
    for (name, kind) in &nodes {
        if !mentioned.contains_key(name.as_str()) {
            match kind {
                NodeKind::Group => writeln!(out, "{name}\t\t").map_err(io)?,
                NodeKind::Leaf => writeln!(out, "\t{name}\tpackage").map_err(io)?,
            }
        }
    }
    for e in &edges {
        let ty = match kinds.get(e.member.as_str()) {
            Some(NodeKind::Group) => "set",
            _ => "package",
        };
        writeln!(out, "{}\t{}\t{}", e.group, e.member, ty).map_err(io)?;
    }
    out.flush().map_err(io)
}

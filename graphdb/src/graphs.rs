//! General graphs: named graphs of labelled edges, with or without cycles.
//!
//! A [`Graph`] is a namespace `graphs/{name}` of the store whose nodes are all groups and whose
//! edges `from -> to` carry an optional label (`depends`, `contains`, ...: 1 to 255 bytes, no
//! control character). A *general* graph accepts cycles (self-loops included) and keeps its
//! index exact through them by condensing strongly connected components; an *acyclic* one
//! refuses an edge that closes a cycle with [`crate::Error::Cycle`] naming it.
//!
//! Reachability is a probe of the index (and one per hub the node reaches: a general graph's
//! index stops at the nodes most of it depends on, so an edge below them rewrites a handful of
//! sets, not every closure above; `DESIGN.md`, "Hubs"); descendants and ancestors are its
//! bitmaps, sorted
//! by name and paged, or a BFS when a label or depth filter is given; a node's direct edges
//! and its component come from the adjacency lists and the index. Every write records events
//! in the change feed (`membership.*` with `group` = `to`, `member` = `from` and the `label`;
//! one `import.graph` event with counts per import).
//!
//! TSV (import and export): the header `from\tto\tlabel`, then `A\tB\tL` (an edge with label
//! `L`), `A\tB\t` (without a label) or `A\t\t` (a node without edges). Export writes exactly
//! what import reads back.
//!
//! ```
//! # fn main() -> Result<(), graphdb::Error> {
//! use graphdb::{GraphStore, NamespaceKind, Direction};
//! let engine = engine::EngineConfig::memory().open(graphdb::KEYSPACES)?;
//! let store = GraphStore::open(engine)?;
//! let deps = store.create_graph("deps", NamespaceKind::General)?;
//! deps.put_edge("libc6", "libgcc-s1", Some("depends"))?;
//! deps.put_edge("libgcc-s1", "libc6", Some("depends"))?;
//! deps.put_edge("bash", "libc6", Some("depends"))?;
//! let reach = deps.reachable("bash", "libgcc-s1", true)?;
//! assert_eq!(reach.path.unwrap(), ["bash", "libc6", "libgcc-s1"]);
//! assert_eq!(deps.node("libc6")?.component, ["libc6", "libgcc-s1"]);
//! # Ok(())
//! # }
//! ```

use std::io::{BufRead, Write};
use std::sync::Arc;

use crate::graph::{Direction, GraphStore, LabelledEdge, Namespace, NamespaceKind, Page, View};
use crate::import::{self, ImportError, LineProblem};
use crate::{Error, Result};

/// The header of a graph TSV file.
pub const GRAPH_HEADER: &str = "from\tto\tlabel";

/// The namespace prefix of general graphs.
const PREFIX: &str = "graphs/";

/// One named graph of labelled edges; cheap to clone.
#[derive(Clone, Debug)]
pub struct Graph {
    name: String,
    ns: Arc<Namespace>,
    actor: String,
}

/// The answer of [`Graph::reachable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// Whether `to` is reachable from `from` over one or more edges.
    pub reachable: bool,
    /// A shortest path `[from, ..., to]`, when asked for and reachable.
    pub path: Option<Vec<String>>,
}

/// A node's direct edges and component ([`Graph::node`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEdges {
    /// The node.
    pub node: String,
    /// Its outgoing edges, sorted by target.
    pub out: Vec<LabelledEdge>,
    /// Its incoming edges, sorted by source.
    pub into: Vec<LabelledEdge>,
    /// The members of its strongly connected component, sorted (itself included); empty when
    /// it lies on no cycle.
    pub component: Vec<String>,
}

/// Options of a descendants or ancestors query.
#[derive(Clone, Debug, Default)]
pub struct Traversal<'a> {
    /// Follow only edges with one of these labels (`None`: every edge).
    pub labels: Option<Vec<&'a str>>,
    /// Stop this many edges away (`None`: no limit; 0 finds nothing).
    pub depth: Option<u32>,
    /// The cursor: names after this one.
    pub after: Option<&'a str>,
    /// The page size (at least 1).
    pub limit: usize,
}

impl GraphStore {
    /// Creates the graph `name` (or opens it when it exists with the same kind).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::NamespaceKind`] when it exists with the other kind,
    /// engine errors.
    pub fn create_graph(&self, name: &str, kind: NamespaceKind) -> Result<Graph> {
        crate::graph::validate_name(name)?;
        let ns = self.namespace(&format!("{PREFIX}{name}"), kind)?;
        Ok(Graph {
            name: name.to_owned(),
            ns,
            actor: crate::SYSTEM_ACTOR.to_owned(),
        })
    }

    /// The graph `name`, if it was created.
    ///
    /// # Errors
    /// Engine and corruption errors.
    pub fn graph(&self, name: &str) -> Result<Option<Graph>> {
        Ok(self
            .existing_namespace(&format!("{PREFIX}{name}"))?
            .map(|ns| Graph {
                name: name.to_owned(),
                ns,
                actor: crate::SYSTEM_ACTOR.to_owned(),
            }))
    }
}

impl Graph {
    /// The same graph, recording `actor` as the author of its writes.
    pub fn acting_as(&self, actor: &str) -> Graph {
        Graph {
            actor: actor.to_owned(),
            ..self.clone()
        }
    }

    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it accepts cycles.
    pub fn kind(&self) -> NamespaceKind {
        self.ns.kind()
    }

    /// The namespace underneath.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// A consistent view for several queries.
    pub fn view(&self) -> View<'_> {
        self.ns.view()
    }

    /// Puts the edge `from -> to` with `label` (creating the nodes), or changes its label.
    /// Returns the revision.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidLabel`], [`Error::Cycle`] in an acyclic graph
    /// (a self-loop too), engine errors.
    pub fn put_edge(&self, from: &str, to: &str, label: Option<&str>) -> Result<u64> {
        self.ns.put_labelled_edge(&self.actor, from, to, label)
    }

    /// Removes the edge `from -> to`; `None` when it was not there.
    ///
    /// # Errors
    /// [`Error::UnknownNode`], engine errors.
    pub fn remove_edge(&self, from: &str, to: &str) -> Result<Option<u64>> {
        self.ns.remove_membership(&self.actor, from, to)
    }

    /// Whether `to` is reachable from `from` over one or more edges (a node reaches itself
    /// only on a cycle), with a shortest path when `path` is set.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn reachable(&self, from: &str, to: &str, path: bool) -> Result<Reach> {
        let view = self.view();
        let reachable = view.is_member(from, to)?;
        let path = if path && reachable {
            view.path(from, to)?
        } else {
            None
        };
        Ok(Reach { reachable, path })
    }

    /// One page of the descendants or ancestors of `node`, sorted by name.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn traverse(
        &self,
        node: &str,
        direction: Direction,
        query: &Traversal<'_>,
    ) -> Result<Page> {
        let view = self.view();
        let ids = view.reach_ids(node, direction, query.labels.as_deref(), query.depth)?;
        Ok(view.page_of(&ids, query.after, query.limit))
    }

    /// One page of the descendants or ancestors of `node`, sorted by name, handed to `emit`
    /// as names borrowed from the index (and the cursor of the next page, if any), so a
    /// caller that serialises them (the HTTP route) copies no name: the owned
    /// [`Graph::traverse`] allocates one string per name, which for tens of thousands of
    /// names costs more than finding them.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn traverse_with<R>(
        &self,
        node: &str,
        direction: Direction,
        query: &Traversal<'_>,
        emit: impl FnOnce(&[&str], Option<&str>) -> R,
    ) -> Result<R> {
        let view = self.view();
        let ids = view.reach_ids(node, direction, query.labels.as_deref(), query.depth)?;
        let (names, more) = view.names_page(&ids, query.after, query.limit);
        let next = if more { names.last().copied() } else { None };
        Ok(emit(&names, next))
    }

    /// The direct edges of `node` both ways and its component.
    ///
    /// # Errors
    /// [`Error::UnknownNode`].
    pub fn node(&self, node: &str) -> Result<NodeEdges> {
        let view = self.view();
        let (out, into) = view.edges_of(node)?;
        let component = view.names_sorted(&view.component_ids(node)?);
        Ok(NodeEdges {
            node: node.to_owned(),
            out,
            into,
            component,
        })
    }

    /// Imports a TSV file (see the module docs), all or nothing, as one event with counts.
    /// With `max_edges`, a file of more edges is refused before anything changes. Returns the
    /// rows (nodes, edges) and the revision.
    ///
    /// # Errors
    /// [`Error::Import`] naming the bad line (or [`LineProblem::TooManyEdges`]),
    /// [`Error::Cycle`] in an acyclic graph, engine errors.
    pub fn import_tsv(
        &self,
        reader: impl BufRead,
        max_edges: Option<usize>,
    ) -> Result<(u64, u64, u64)> {
        self.import_tsv_with_progress(reader, max_edges, None)
    }

    /// [`Graph::import_tsv`], telling `progress` `(edges applied, edges in all)` as it goes
    /// (the `directory import graph` command draws it as a bar).
    ///
    /// # Errors
    /// As [`Graph::import_tsv`].
    pub fn import_tsv_with_progress(
        &self,
        reader: impl BufRead,
        max_edges: Option<usize>,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<(u64, u64, u64)> {
        let (nodes, edges) = parse_graph(reader, max_edges)?;
        let revision = self
            .ns
            .load_labelled(&self.actor, &nodes, &edges, progress)?;
        Ok((nodes.len() as u64, edges.len() as u64, revision))
    }

    /// Writes every edge (and every node without one) as TSV, sorted.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn export_tsv(&self, mut writer: impl Write) -> Result<()> {
        let io = |source| Error::Io {
            operation: "export",
            source,
        };
        let (edges, isolated) = self.ns.labelled_edges();
        writeln!(writer, "{GRAPH_HEADER}").map_err(io)?;
        for node in isolated {
            writeln!(writer, "{node}\t\t").map_err(io)?;
        }
        for e in edges {
            let label = e.label.as_deref().unwrap_or("");
            writeln!(writer, "{}\t{}\t{label}", e.from, e.to).map_err(io)?;
        }
        writer.flush().map_err(io)
    }
}

/// Parses a graph TSV file: the declared nodes and the edges (a repeated edge keeps its last
/// label).
///
/// # Errors
/// [`ImportError`] naming the first bad line, or the first edge past `max_edges`.
pub fn parse_graph(
    reader: impl BufRead,
    max_edges: Option<usize>,
) -> Result<(Vec<String>, Vec<LabelledEdge>), ImportError> {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    import::for_each_line(reader, GRAPH_HEADER, |_, text| {
        let [from, to, label] = import::fields::<3>(text)?;
        let from = import::name(from)?;
        if to.is_empty() {
            if !label.is_empty() {
                return Err(LineProblem::BadDeclaration(
                    "a node declaration has no label",
                ));
            }
            nodes.push(from);
            return Ok(());
        }
        let to = import::name(to)?;
        let label = if label.is_empty() {
            None
        } else {
            crate::graph::validate_label(label).map_err(|e| LineProblem::BadLabel {
                label: import::cut(label),
                reason: match e {
                    Error::InvalidLabel { reason, .. } => reason.to_owned(),
                    other => other.to_string(),
                },
            })?;
            Some(label.to_owned())
        };
        if max_edges.is_some_and(|max| edges.len() >= max) {
            return Err(LineProblem::TooManyEdges {
                limit: max_edges.unwrap_or(0),
            });
        }
        edges.push(LabelledEdge { from, to, label });
        Ok(())
    })?;
    Ok((nodes, edges))
}

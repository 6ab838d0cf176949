//! The text parsers: team and package-set TSV, `git rev-list --parents` and
//! `git for-each-ref`, and the restricted-file token.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::sync::Arc;

use blobstore::{FileId, Timestamp, Token, TokenError, TokenSigner};
use commitgraph::{CommitGraphs, CommitId, RepoId};
use graphdb::{import, GraphStore};

/// The writer these writes are recorded as in the change feed.
const BY: commitgraph::Writer<'static> = commitgraph::Writer {
    actor: "fuzz",
    repo: "fuzz",
};

fn graph_store() -> GraphStore {
    let engine = engine::EngineConfig::memory()
        .open(graphdb::KEYSPACES)
        .expect("memory engine");
    GraphStore::open(engine).expect("graph store")
}

/// Graph TSV (`from\tto\tlabel`): a general graph imports all or nothing, stays exact
/// (cycles and self-loops included), and exports to a file that imports to the same text; an
/// acyclic graph imports it only when it has no cycle.
pub fn graph_tsv(data: &[u8]) {
    let parsed = graphdb::graphs::parse_graph(Cursor::new(data), Some(10_000));
    let store = graph_store();
    let graph = store
        .create_graph("g", graphdb::NamespaceKind::General)
        .unwrap();
    match graph.import_tsv(Cursor::new(data), Some(10_000)) {
        Err(_) => {
            let mut after = Vec::new();
            graph.export_tsv(&mut after).unwrap();
            assert_eq!(after, b"from\tto\tlabel\n", "a refused import left a trace");
        }
        Ok(_) => {
            assert!(parsed.is_ok(), "imported what does not parse");
            assert!(graph.namespace().check().is_clean());
            let mut exported = Vec::new();
            graph.export_tsv(&mut exported).unwrap();
            let copy = store
                .create_graph("copy", graphdb::NamespaceKind::General)
                .unwrap();
            copy.import_tsv(Cursor::new(&exported), None)
                .unwrap_or_else(|e| panic!("the export does not import: {e}"));
            let mut again = Vec::new();
            copy.export_tsv(&mut again).unwrap();
            assert_eq!(again, exported, "export, import, export differ");
            let dag = store
                .create_graph("dag", graphdb::NamespaceKind::Acyclic)
                .unwrap();
            if dag.import_tsv(Cursor::new(&exported), None).is_ok() {
                assert!(dag.namespace().check().is_clean());
            }
        }
    }
}

/// Team TSV: the byte reader and the string parser agree; a parsed file imports all or
/// nothing; what was imported exports to a file that parses and imports to the same graph.
pub fn team_tsv(data: &[u8]) {
    let from_reader = import::parse_teams(Cursor::new(data));
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            from_reader,
            import::parse_teams_str(text),
            "reader and str disagree"
        );
    }
    let store = graph_store();
    let teams = graphdb::Teams::open(&store).unwrap();
    let mut empty = Vec::new();
    teams.export_tsv(&mut empty).unwrap();
    match teams.import_tsv(Cursor::new(data), None) {
        Err(error) => {
            // All or nothing: a refused import leaves the namespace as it was.
            let mut after = Vec::new();
            teams.export_tsv(&mut after).unwrap();
            assert_eq!(after, empty, "a refused import ({error}) left a trace");
            assert!(teams.check().is_clean());
        }
        Ok(_) => {
            assert!(from_reader.is_ok(), "imported what does not parse");
            assert!(teams.check().is_clean(), "{:?}", teams.check());
            let mut exported = Vec::new();
            teams.export_tsv(&mut exported).unwrap();
            let again = graph_store();
            let again_teams = graphdb::Teams::open(&again).unwrap();
            again_teams
                .import_tsv(Cursor::new(&exported), None)
                .unwrap_or_else(|e| panic!("the export does not import: {e}"));
            let mut re_exported = Vec::new();
            again_teams.export_tsv(&mut re_exported).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&exported),
                String::from_utf8_lossy(&re_exported)
            );
        }
    }
}

/// Package-set TSV: as for teams.
pub fn package_set_tsv(data: &[u8]) {
    let from_reader = import::parse_package_sets(Cursor::new(data));
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            from_reader,
            import::parse_package_sets_str(text),
            "reader and str disagree"
        );
    }
    let store = graph_store();
    let sets = graphdb::PackageSets::open(&store).unwrap();
    let mut empty = Vec::new();
    sets.export_tsv(&mut empty).unwrap();
    match sets.import_tsv(Cursor::new(data), None) {
        Err(error) => {
            let mut after = Vec::new();
            sets.export_tsv(&mut after).unwrap();
            assert_eq!(after, empty, "a refused import ({error}) left a trace");
        }
        Ok(_) => {
            assert!(from_reader.is_ok(), "imported what does not parse");
            assert!(sets.check().is_clean(), "{:?}", sets.check());
            let mut exported = Vec::new();
            sets.export_tsv(&mut exported).unwrap();
            let again = graph_store();
            let again_sets = graphdb::PackageSets::open(&again).unwrap();
            again_sets
                .import_tsv(Cursor::new(&exported), None)
                .unwrap_or_else(|e| panic!("the export does not import: {e}"));
            let mut re_exported = Vec::new();
            again_sets.export_tsv(&mut re_exported).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&exported),
                String::from_utf8_lossy(&re_exported)
            );
        }
    }
}

/// `git rev-list --parents` and `git for-each-ref` output, separated by the first NUL byte:
/// the parsers never panic; an import either fails and leaves the repository empty, or
/// succeeds, and then every ancestry answer agrees with a BFS over the parsed lines and every
/// `refs/heads/` ref is a branch.
pub fn rev_list(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (rev_list, refs) = text.split_once('\0').unwrap_or((&text, ""));
    let entries = commitgraph::import::parse_rev_list(rev_list);
    let parsed_refs = commitgraph::import::parse_refs(refs);
    if let Ok(entries) = &entries {
        // A parsed line prints back to a line that parses to the same ids.
        for entry in entries {
            let line = std::iter::once(entry.commit)
                .chain(entry.parents.iter().copied())
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            let again = commitgraph::import::parse_rev_list(&line).unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(
                (again[0].commit, &again[0].parents),
                (entry.commit, &entry.parents)
            );
        }
    }
    let engine = engine::EngineConfig::memory()
        .open(commitgraph::STANDALONE_KEYSPACES)
        .expect("memory engine");
    let graphs = CommitGraphs::open_standalone(Arc::clone(&engine)).expect("commit graphs");
    let repo = RepoId(1);
    match graphs.import(repo, rev_list, refs, BY) {
        Err(_) => {
            assert!(
                graphs.branches(repo).unwrap().is_empty(),
                "a refused import set branches"
            );
            if let Ok(entries) = &entries {
                for entry in entries {
                    assert!(
                        !graphs.contains(repo, &entry.commit).unwrap(),
                        "a refused import stored {}",
                        entry.commit
                    );
                }
            }
        }
        Ok(summary) => {
            let entries = entries.expect("imported what does not parse");
            let refs = parsed_refs.expect("imported refs that do not parse");
            let parents: HashMap<CommitId, Vec<CommitId>> = entries
                .iter()
                .map(|e| (e.commit, e.parents.clone()))
                .collect();
            let ids: Vec<CommitId> = parents.keys().copied().collect();
            let ancestors = |b: CommitId| -> HashSet<CommitId> {
                let mut seen = HashSet::from([b]);
                let mut todo = vec![b];
                while let Some(x) = todo.pop() {
                    for p in parents.get(&x).into_iter().flatten() {
                        if seen.insert(*p) {
                            todo.push(*p);
                        }
                    }
                }
                seen
            };
            for &b in ids.iter().take(16) {
                let reach = ancestors(b);
                for &a in ids.iter().take(16) {
                    assert_eq!(
                        graphs.is_ancestor(repo, &a, &b).unwrap(),
                        reach.contains(&a),
                        "is {a} an ancestor of {b}"
                    );
                }
            }
            let heads = refs
                .iter()
                .filter(|r| r.name.starts_with("refs/heads/"))
                .count();
            assert!(summary.branches <= heads);
            // A reopen finds the same commits.
            let reopened = CommitGraphs::open_standalone(engine).expect("reopen");
            for id in ids.iter().take(16) {
                assert!(reopened.contains(repo, id).unwrap(), "{id} lost on reopen");
            }
        }
    }
}

/// Restricted-file tokens: parsing never panics; what parses prints back to a string that
/// parses to the same token; a signed token verifies for its file only, and until it expires.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(token) = Token::parse(&text) {
        let printed = token.to_string();
        assert!(printed.len() <= Token::MAX_LEN);
        assert_eq!(Token::parse(&printed), Ok(token));
    }
    let signer = TokenSigner::new([3; 32], Some([4; 32]));
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let filename = text.get(..text.len().min(40)).unwrap_or("f");
    let id = FileId(data.len() as u64);
    // An arbitrary string is not a valid token (the fuzzer cannot forge a MAC).
    assert!(signer.verify(&text, id, filename, now).is_err());
    let expires = 1_700_000_000 + i64::from(data.first().copied().unwrap_or(0)) - 100;
    let signed = signer.sign(id, filename, Timestamp::from_unix_millis(expires * 1000));
    let printed = signed.to_string();
    let verdict = signer.verify(&printed, id, filename, now);
    if expires > now.as_unix_secs() {
        assert_eq!(verdict, Ok(()));
    } else {
        assert_eq!(verdict, Err(TokenError::Expired));
    }
    assert_eq!(
        signer.verify(&printed, FileId(id.0 + 1), filename, now),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        signer.verify(&printed, id, &format!("{filename}x"), now),
        Err(TokenError::BadSignature)
    );
    let other = TokenSigner::new([5; 32], None);
    assert_eq!(
        other.verify(&printed, id, filename, now),
        Err(TokenError::BadSignature)
    );
}

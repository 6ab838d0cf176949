//! Replays the committed corpus of every fuzz target through its body.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    // Read when the test runs, not when it was built: a build kept in a shared target
    // directory may come from another checkout.
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../corpus")
        .join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "the corpus of {target} is empty");
    inputs
}

/// One test per target, each replaying every file of `fuzz/corpus/<target>/`.
macro_rules! corpus_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                for (path, input) in corpus(stringify!($target)) {
                    eprintln!("{}", path.display());
                    fuzz_bodies::$target(&input);
                }
            }
        )*
    };
}

corpus_tests!(
    key_encoding,
    team_tsv,
    graph_tsv,
    package_set_tsv,
    rev_list,
    token,
    librarian_http,
    directory_http,
    blob_model,
    graph_model,
);

/// Every target in `fuzz/fuzz_targets/` has a corpus replayed above.
#[test]
fn every_target_is_replayed() {
    let targets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz_targets");
    let replayed = [
        "key_encoding",
        "team_tsv",
        "graph_tsv",
        "package_set_tsv",
        "rev_list",
        "token",
        "librarian_http",
        "directory_http",
        "blob_model",
        "graph_model",
    ];
    for entry in std::fs::read_dir(targets).unwrap() {
        let name = entry.unwrap().path();
        let stem = name.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(
            replayed.contains(&stem.as_str()),
            "{stem} has no corpus test"
        );
    }
}

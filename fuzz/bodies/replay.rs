// The replay harness the crates' `tests/fuzz_replay.rs` include: runs a fuzz target's body on
// every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, so stable
// `cargo test` replays the corpora and every crash ever found.

/// Runs `body` on each input of `target`'s corpus and regressions and fails, naming every input
/// that panicked, if any did. Fails too if the corpus is missing or empty, so a moved or
/// deleted corpus cannot make the replay pass vacuously. Missing regressions are fine: a
/// target that never crashed has none.
fn replay(target: &str, body: fn(&[u8])) {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = inputs(&fuzz.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ is missing or empty: the replay of target {target} needs its seed \
         inputs (see fuzz/README.md)"
    );
    let regressions = inputs(&fuzz.join("regressions").join(target));
    let mut panicked = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read fuzz input {}: {e}", path.display()));
        if std::panic::catch_unwind(|| body(&bytes)).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(
        panicked.is_empty(),
        "target {target} panicked on {} input(s): {panicked:#?}; reproduce with \
         `cargo +nightly fuzz run {target} <input>` in fuzz/",
        panicked.len()
    );
}

/// The regular files of `dir` except dot-files, sorted; none if `dir` does not exist.
fn inputs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<std::path::PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path()
        })
        .filter(|path| path.is_file())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| !name.starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

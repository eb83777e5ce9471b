//! Replays the corpus and crash regressions of the `agent_source` fuzz target (`fuzz/`) under
//! stable `cargo test`: the CSV and JSON Lines export reader. The body is the fuzz target's
//! own, included from `fuzz/bodies/`.

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fuzz/bodies/replay.rs"
));

mod agent_source {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/bodies/agent_source.rs"
    ));
}

#[test]
fn agent_source_corpus_and_regressions_do_not_panic() {
    replay("agent_source", agent_source::run);
}

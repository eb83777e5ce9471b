//! Replays the corpora and crash regressions of the `skp_core` fuzz targets (`fuzz/`) under
//! stable `cargo test`: the catalog loader, the signed checkpoint parsers and the Merkle proof
//! verifiers. The bodies are the fuzz targets' own, included from `fuzz/bodies/`.

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fuzz/bodies/replay.rs"
));

mod catalog {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/bodies/catalog.rs"
    ));
}

mod checkpoint {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/bodies/checkpoint.rs"
    ));
}

mod merkle {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/bodies/merkle.rs"
    ));
}

#[test]
fn catalog_corpus_and_regressions_do_not_panic() {
    replay("catalog", catalog::run);
}

#[test]
fn checkpoint_corpus_and_regressions_do_not_panic() {
    replay("checkpoint", checkpoint::run);
}

#[test]
fn merkle_corpus_and_regressions_do_not_panic() {
    replay("merkle", merkle::run);
}

//! Replays the corpora and crash regressions of the gateway's fuzz targets (`fuzz/`) under
//! stable `cargo test`: the agreement loader, the audit entry decoder, the JWT checks and the
//! release manifest parser. The bodies are the fuzz targets' own, included from
//! `fuzz/bodies/`.

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fuzz/bodies/replay.rs"
));

mod isa {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/bodies/isa.rs"
    ));
}

mod audit_entry {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/bodies/audit_entry.rs"
    ));
}

mod jwt {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/bodies/jwt.rs"
    ));
}

mod release_manifest {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/bodies/release_manifest.rs"
    ));
}

#[test]
fn isa_corpus_and_regressions_do_not_panic() {
    replay("isa", isa::run);
}

#[test]
fn audit_entry_corpus_and_regressions_do_not_panic() {
    replay("audit_entry", audit_entry::run);
}

#[test]
fn jwt_corpus_and_regressions_do_not_panic() {
    replay("jwt", jwt::run);
}

#[test]
fn release_manifest_corpus_and_regressions_do_not_panic() {
    replay("release_manifest", release_manifest::run);
}

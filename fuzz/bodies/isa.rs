// Fuzz body: the Information Sharing Agreement loader (`gateway::policy::isa::load`), against
// the catalog compiled into the gateway. Shared by `fuzz_targets/isa.rs` and
// `gateway/tests/fuzz_replay.rs`.

/// The compiled-in catalog the agreements are checked against, loaded once.
static ISA_CATALOG: std::sync::LazyLock<skp_core::Catalog> = std::sync::LazyLock::new(|| {
    skp_core::Catalog::embedded().expect("the compiled-in catalog is valid")
});

/// Loads `data` as one agreement file at a fixed time inside the shipped agreements' validity.
/// A refused agreement must name at least one problem, and every problem must format.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // 2026-11-15T12:00:00Z.
    let now = time::OffsetDateTime::from_unix_timestamp(1_794_744_000).expect("a valid time");
    let path = std::path::Path::new("policies/agreements/fuzz.toml");
    match gateway::policy::isa::load(path, text, &ISA_CATALOG, now) {
        Ok(agreement) => assert!(
            !agreement.id.is_empty(),
            "an agreement loaded without an id"
        ),
        Err(problems) => {
            assert!(!problems.is_empty(), "a refused agreement names no problem");
            for problem in &problems {
                let _ = problem.to_string();
            }
        }
    }
}

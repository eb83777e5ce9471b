// Fuzz body: the dataset catalog loader (`skp_core::Catalog::from_files`), on one TOML file.
// Shared by `fuzz_targets/catalog.rs` and `core/tests/fuzz_replay.rs`.

/// Loads `data` as the only file of a catalog, in a file named after the dataset (the loader
/// requires `<name>.toml`). A loaded catalog must answer for each of its datasets by name; a
/// refused one must say why, and its message must format.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = format!("{}.toml", dataset_name(text).unwrap_or("fuzz"));
    match skp_core::Catalog::from_files([(file, text.to_owned())]) {
        Ok(catalog) => {
            for dataset in catalog.datasets() {
                assert!(catalog.dataset(dataset.name.as_str()).is_some());
                for field in dataset.sent_fields() {
                    assert!(dataset.field(field.name.as_str()).is_some());
                }
            }
        }
        Err(error) => {
            assert!(
                !error.problems.is_empty(),
                "a refused catalog names no problem"
            );
            let _ = error.to_string();
        }
    }
}

/// The value of the first top-level `name = "..."` line, found without parsing the TOML.
fn dataset_name(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with('['))
        .find_map(|line| {
            let value = line.strip_prefix("name")?.trim_start().strip_prefix('=')?;
            value.trim().strip_prefix('"')?.strip_suffix('"')
        })
}

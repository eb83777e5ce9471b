// Fuzz body: the agent's export reader (`agent::source`), on the same bytes read once as CSV
// and once as JSON Lines. Shared by `fuzz_targets/agent_source.rs` and
// `agent/tests/fuzz_replay.rs`.

/// Reads `data` as a CSV export and as a JSONL export. Any result is fine; a panic is a bug.
/// Checks what the reader promises of the rows it returns: every cell's column is among the
/// columns returned, and no cell is empty or has surrounding whitespace.
pub fn run(data: &[u8]) {
    for name in ["export.csv", "export.jsonl"] {
        let Ok((columns, rows)) = agent::source::read_from(std::path::Path::new(name), data) else {
            continue;
        };
        for row in rows.iter().flatten() {
            for (column, value) in &row.cells {
                assert!(
                    columns.contains(column),
                    "{name}: a cell's column is not a column"
                );
                assert!(!value.is_empty(), "{name}: an empty cell was kept");
                assert_eq!(value.trim(), value, "{name}: a cell was not trimmed");
            }
        }
    }
}

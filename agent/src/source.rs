//! Reading source exports: CSV with a header row, or JSON Lines (one object per line). Each row
//! comes with its line number; a malformed row is reported and the rest are still read.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::Path;

/// One row of a source export: column → cell text.
#[derive(Debug)]
pub struct Row {
    /// 1-based line in the file where the row starts.
    pub line: u64,
    /// Cells by column name (empty cells are absent).
    pub cells: HashMap<String, String>,
}

/// A row that could not be read at all.
#[derive(Debug)]
pub struct BadRow {
    /// 1-based line.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// The columns of a file and its rows, each readable or not.
pub type Rows = (Vec<String>, Vec<Result<Row, BadRow>>);

/// Reads every row of a CSV or JSONL file, sorted into good and unreadable rows.
/// Returns the header (CSV) or the union of keys seen (JSONL) as well.
pub fn read(path: &Path) -> Result<Rows> {
    let format = Format::of(path)?;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_format(format, path, file)
}

/// Like [`read`], but reads the export's bytes from `reader` instead of opening `path`; `path`
/// only names the export in errors and, by its extension, picks the format. For callers that
/// already hold the bytes, such as the fuzz targets and their replay tests.
pub fn read_from(path: &Path, reader: impl std::io::Read) -> Result<Rows> {
    read_format(Format::of(path)?, path, reader)
}

/// The export formats the agent reads.
#[derive(Clone, Copy)]
enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// The format named by the file's extension.
    fn of(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Ok(Format::Csv),
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            _ => bail!(
                "{}: unknown file type; the agent reads .csv (with a header row) and .jsonl files",
                path.display()
            ),
        }
    }
}

fn read_format(format: Format, path: &Path, reader: impl std::io::Read) -> Result<Rows> {
    match format {
        Format::Csv => read_csv(path, reader),
        Format::Jsonl => read_jsonl(std::io::BufReader::new(reader)),
    }
}

fn read_csv(path: &Path, reader: impl std::io::Read) -> Result<Rows> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let headers: Vec<String> = rdr
        .headers()
        .with_context(|| format!("{}:1: cannot read the header row", path.display()))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut rows = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let line = rec.position().map(|p| p.line()).unwrap_or(0);
                let cells = headers
                    .iter()
                    .zip(rec.iter())
                    .filter(|(_, v)| !v.trim().is_empty())
                    .map(|(h, v)| (h.clone(), v.trim().to_string()))
                    .collect();
                rows.push(Ok(Row { line, cells }));
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => {
                        format!("row has {len} cells but the header has {expected_len}")
                    }
                    csv::ErrorKind::Utf8 { .. } => "row is not valid UTF-8".to_string(),
                    csv::ErrorKind::Io(_) => {
                        return Err(e).with_context(|| format!("cannot read {}", path.display()));
                    }
                    _ => "row cannot be parsed as CSV".to_string(),
                };
                rows.push(Err(BadRow { line, reason }));
            }
        }
    }
    Ok((headers, rows))
}

fn read_jsonl(reader: impl std::io::BufRead) -> Result<Rows> {
    let mut seen: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = match line {
            Ok(l) => l,
            Err(_) => {
                rows.push(Err(BadRow {
                    line: line_no,
                    reason: "line is not valid UTF-8".into(),
                }));
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(&line) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
                rows.push(Err(BadRow {
                    line: line_no,
                    reason: "line is not a JSON object".into(),
                }));
                continue;
            }
            Err(e) => {
                rows.push(Err(BadRow {
                    line: line_no,
                    reason: format!("invalid JSON at column {}", e.column()),
                }));
                continue;
            }
        };
        let mut cells = HashMap::new();
        for (k, v) in obj {
            if !seen.contains(&k) {
                seen.push(k.clone());
            }
            let text = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(";"),
                other => other.to_string(),
            };
            if !text.trim().is_empty() {
                cells.insert(k, text.trim().to_string());
            }
        }
        rows.push(Ok(Row {
            line: line_no,
            cells,
        }));
    }
    Ok((seen, rows))
}

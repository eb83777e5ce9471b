//! Parquet copies of released CSV files (`gateway extract --format parquet`), and the check that
//! a Parquet copy holds exactly the rows of its CSV.
//!
//! The CSV files stay the originals of a release: the manifest and the release's audit entry
//! hash their bytes. A Parquet file `<name>.parquet` is a derived copy that the client writes
//! beside `<name>.csv` once that CSV has verified against the manifest, and that
//! `gateway audit verify-release` accepts only if it reads back to exactly the CSV's header and
//! rows ([`check_copy`]).
//!
//! Mapping: one column per CSV column, named by the header, each a `REQUIRED BYTE_ARRAY` with the
//! `STRING` (UTF8) logical type holding the cell exactly as the CSV has it. A CSV cell has no type
//! and no null, so an empty cell stays an empty string: any typing or empty-as-null rule would
//! read back differently from the CSV for some cell. Rows are written in row groups of at most
//! [`WriteOptions::row_group_rows`] rows, pages Snappy-compressed.
//!
//! Files are written to a temporary name in the destination folder and renamed once complete and
//! synced, so a failed conversion never leaves a partial `.parquet`. Errors name files, rows by
//! number and columns by name, never a cell's value.

use parquet::basic::{Compression, ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::column::reader::ColumnReader;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// The extension of a Parquet copy: `<name>.parquet` is the copy of `<name>.csv`.
pub const PARQUET_EXTENSION: &str = "parquet";

/// The name of the schema's root group.
const ROOT_NAME: &str = "release";

/// Values asked of the column reader at once while reading back.
const READ_CHUNK: usize = 8192;

/// How [`write_parquet`] cuts rows into row groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// The most rows in one row group.
    pub row_group_rows: usize,
    /// A row group is also closed once its cells add up to this many bytes (bounds memory for
    /// wide rows).
    pub row_group_bytes: usize,
}

impl Default for WriteOptions {
    /// 100,000 rows or 64 MiB of cells a row group, whichever comes first.
    fn default() -> Self {
        WriteOptions {
            row_group_rows: 100_000,
            row_group_bytes: 64 << 20,
        }
    }
}

/// Why a Parquet copy could not be written, read, or does not match its CSV.
#[derive(Debug, thiserror::Error)]
pub enum ParquetCopyError {
    /// A file could not be opened, created, read, written, synced or renamed.
    #[error("{path}: cannot {action}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What was being done (`read it`, `create a temporary file beside it`, ...).
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CSV file is not CSV the gateway writes (UTF-8, rows as wide as the header).
    #[error("{file}: not a CSV file of the kind the gateway releases: {reason}")]
    Csv {
        /// The CSV file.
        file: String,
        /// What the CSV reader reported (positions, never values).
        reason: String,
    },
    /// The CSV header cannot name Parquet columns.
    #[error("{file}: header: {reason}")]
    Header {
        /// The CSV file.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The parquet library refused to write or read the file.
    #[error("{file}: Parquet: {source}")]
    Parquet {
        /// The Parquet file.
        file: String,
        /// The library's error.
        source: ParquetError,
    },
    /// The Parquet file is not of the shape this module writes (flat, required UTF8 columns).
    #[error("{file}: not a Parquet copy of a release CSV: {reason}")]
    NotACopy {
        /// The Parquet file.
        file: String,
        /// What differs from the shape written here.
        reason: String,
    },
    /// The Parquet file does not hold exactly the header and rows of its CSV.
    #[error(
        "{parquet} does not hold exactly the rows of {csv}: {reason}; it was altered or made from another file: delete it (the CSV is the verified original) and fetch the release again with --format parquet"
    )]
    Differs {
        /// The CSV file.
        csv: String,
        /// The Parquet file.
        parquet: String,
        /// The first difference (row number and column name, never values).
        reason: String,
    },
}

/// `<name>.parquet` for `<name>.csv`; `None` for a name not ending in `.csv`.
pub fn parquet_name(csv_name: &str) -> Option<String> {
    csv_name
        .strip_suffix(".csv")
        .filter(|stem| !stem.is_empty())
        .map(|stem| format!("{stem}.{PARQUET_EXTENSION}"))
}

/// `<name>.csv` for `<name>.parquet`; `None` for a name not ending in `.parquet`.
pub fn csv_name(parquet_name: &str) -> Option<String> {
    parquet_name
        .strip_suffix(PARQUET_EXTENSION)
        .and_then(|s| s.strip_suffix('.'))
        .filter(|stem| !stem.is_empty())
        .map(|stem| format!("{stem}.csv"))
}

/// Converts the CSV file `csv` into the Parquet file `out` with the default
/// [`WriteOptions`]; returns the number of data rows written.
///
/// `out` is written under a temporary name in its folder, given the CSV's permissions, synced
/// and renamed into place (an existing file of that name is replaced); on any error nothing is
/// left at `out` or the temporary name.
pub fn csv_to_parquet(csv: &Path, out: &Path) -> Result<u64, ParquetCopyError> {
    csv_to_parquet_with(csv, out, WriteOptions::default())
}

/// [`csv_to_parquet`] with explicit [`WriteOptions`].
pub fn csv_to_parquet_with(
    csv: &Path,
    out: &Path,
    options: WriteOptions,
) -> Result<u64, ParquetCopyError> {
    let csv_label = csv.display().to_string();
    let out_label = out.display().to_string();
    let io = |path: &str, action: &'static str| {
        let path = path.to_owned();
        move |source| ParquetCopyError::Io {
            path,
            action,
            source,
        }
    };
    let input = File::open(csv).map_err(io(&csv_label, "open it"))?;
    let input_meta = input
        .metadata()
        .map_err(io(&csv_label, "read its metadata"))?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let stem = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A hidden name: a release folder check names it if a crash ever leaves it behind.
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{stem}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(&out_label, "create a temporary file beside it"))?;
    let rows = write_parquet(
        BufReader::with_capacity(1 << 20, input),
        &csv_label,
        temp.as_file_mut(),
        &out_label,
        options,
    )?;
    // As readable as its original (the temporary file was made private).
    let permissions = input_meta.permissions();
    temp.as_file()
        .set_permissions(permissions)
        .map_err(io(&out_label, "set its permissions"))?;
    temp.as_file()
        .sync_all()
        .map_err(io(&out_label, "sync it"))?;
    temp.persist(out).map_err(|e| ParquetCopyError::Io {
        path: out_label.clone(),
        action: "rename the finished temporary file to it",
        source: e.error,
    })?;
    Ok(rows)
}

/// Writes the CSV read from `csv` (a header line, then rows) as Parquet to `out`; returns the
/// number of data rows. `csv_label` and `out_label` name the two in errors.
pub fn write_parquet<R: Read, W: Write + Send>(
    csv: R,
    csv_label: &str,
    out: W,
    out_label: &str,
    options: WriteOptions,
) -> Result<u64, ParquetCopyError> {
    let csv_err = |e: csv::Error| ParquetCopyError::Csv {
        file: csv_label.to_owned(),
        reason: e.to_string(),
    };
    let pq_err = |source| ParquetCopyError::Parquet {
        file: out_label.to_owned(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(csv);
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_owned)
        .collect();
    let schema = schema_for(&header).map_err(|reason| ParquetCopyError::Header {
        file: csv_label.to_owned(),
        reason,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer =
        SerializedFileWriter::new(out, Arc::new(schema), Arc::new(props)).map_err(pq_err)?;
    let row_group_rows = options.row_group_rows.max(1);
    let mut columns: Vec<Vec<ByteArray>> = vec![Vec::new(); header.len()];
    let (mut buffered_rows, mut buffered_bytes, mut rows) = (0usize, 0usize, 0u64);
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_err)? {
        for (column, cell) in columns.iter_mut().zip(record.iter()) {
            buffered_bytes += cell.len();
            column.push(ByteArray::from(cell.as_bytes()));
        }
        buffered_rows += 1;
        rows += 1;
        if buffered_rows >= row_group_rows || buffered_bytes >= options.row_group_bytes {
            write_row_group(&mut writer, &mut columns, out_label)?;
            (buffered_rows, buffered_bytes) = (0, 0);
        }
    }
    if buffered_rows > 0 {
        write_row_group(&mut writer, &mut columns, out_label)?;
    }
    writer.close().map_err(pq_err)?;
    Ok(rows)
}

/// Reads a Parquet copy whole: its column names and its rows, as strings.
///
/// For tests and small files; [`check_copy`] compares with a CSV without holding all rows.
pub fn read_parquet_rows(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), ParquetCopyError> {
    let copy = CopyReader::open(path)?;
    let mut rows = Vec::new();
    for group in 0..copy.row_groups() {
        let columns = copy.read_group(group)?;
        let n = columns.first().map_or(0, Vec::len);
        for r in 0..n {
            let row = columns
                .iter()
                .enumerate()
                .map(|(c, column)| {
                    copy.cell(column, r, rows.len() as u64 + 1, c)
                        .map(str::to_owned)
                })
                .collect::<Result<Vec<String>, _>>()?;
            rows.push(row);
        }
    }
    Ok((copy.header, rows))
}

/// Checks that the Parquet file `parquet` holds exactly the header and rows of the CSV file
/// `csv` (the same cells, in the same order); returns the number of data rows.
///
/// Reads one row group at a time beside the CSV, so memory is bounded by a row group.
pub fn check_copy(csv: &Path, parquet: &Path) -> Result<u64, ParquetCopyError> {
    let csv_label = csv.display().to_string();
    let differs = |reason: String| ParquetCopyError::Differs {
        csv: csv_label.clone(),
        parquet: parquet.display().to_string(),
        reason,
    };
    let csv_err = |e: csv::Error| ParquetCopyError::Csv {
        file: csv_label.clone(),
        reason: e.to_string(),
    };
    let input = File::open(csv).map_err(|source| ParquetCopyError::Io {
        path: csv_label.clone(),
        action: "open it",
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::with_capacity(1 << 20, input));
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_owned)
        .collect();
    let copy = CopyReader::open(parquet)?;
    if copy.header != header {
        return Err(differs(format!(
            "its columns are {:?}, the CSV's header is {:?}",
            copy.header, header
        )));
    }
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    for group in 0..copy.row_groups() {
        let columns = copy.read_group(group)?;
        let n = columns.first().map_or(0, Vec::len);
        for r in 0..n {
            rows += 1;
            if !reader.read_byte_record(&mut record).map_err(csv_err)? {
                return Err(differs(format!(
                    "it has more rows than the CSV's {}",
                    rows - 1
                )));
            }
            for (c, column) in columns.iter().enumerate() {
                let cell = copy.cell(column, r, rows, c)?;
                if Some(cell.as_bytes()) != record.get(c) {
                    return Err(differs(format!(
                        "row {rows}, column {:?} differs",
                        header.get(c).map_or("", String::as_str)
                    )));
                }
            }
        }
    }
    if reader.read_byte_record(&mut record).map_err(csv_err)? {
        return Err(differs(format!("it has {rows} rows, fewer than the CSV")));
    }
    Ok(rows)
}

/// The Parquet schema of a CSV header: one required UTF8 column per header field.
fn schema_for(header: &[String]) -> Result<Type, String> {
    if header.is_empty() {
        return Err("no header line (an empty file?)".into());
    }
    let mut seen = BTreeSet::new();
    let mut fields = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        if name.is_empty() {
            return Err(format!(
                "column {} has an empty name; Parquet columns need names",
                i + 1
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(format!(
                "column {name:?} appears twice; Parquet column names must be unique"
            ));
        }
        let field = Type::primitive_type_builder(name, PhysicalType::BYTE_ARRAY)
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(Some(LogicalType::String))
            .build()
            .map_err(|e| format!("column {name:?}: {e}"))?;
        fields.push(Arc::new(field));
    }
    Type::group_type_builder(ROOT_NAME)
        .with_fields(fields)
        .build()
        .map_err(|e| e.to_string())
}

/// Writes the buffered columns as one row group and empties them.
fn write_row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    columns: &mut [Vec<ByteArray>],
    out_label: &str,
) -> Result<(), ParquetCopyError> {
    let pq_err = |source| ParquetCopyError::Parquet {
        file: out_label.to_owned(),
        source,
    };
    let mut group = writer.next_row_group().map_err(pq_err)?;
    for column in columns.iter_mut() {
        let mut col = group.next_column().map_err(pq_err)?.ok_or_else(|| {
            pq_err(ParquetError::General(
                "the schema has fewer columns than the header".into(),
            ))
        })?;
        match col.untyped() {
            ColumnWriter::ByteArrayColumnWriter(w) => {
                w.write_batch(column, None, None).map_err(pq_err)?;
            }
            _ => {
                return Err(pq_err(ParquetError::General(
                    "a column of the schema is not BYTE_ARRAY".into(),
                )));
            }
        }
        col.close().map_err(pq_err)?;
        column.clear();
    }
    group.close().map_err(pq_err)?;
    Ok(())
}

/// A Parquet file checked to be of the shape [`write_parquet`] writes.
struct CopyReader {
    label: String,
    reader: SerializedFileReader<File>,
    header: Vec<String>,
}

impl CopyReader {
    fn open(path: &Path) -> Result<CopyReader, ParquetCopyError> {
        let label = path.display().to_string();
        let file = File::open(path).map_err(|source| ParquetCopyError::Io {
            path: label.clone(),
            action: "open it",
            source,
        })?;
        let reader =
            SerializedFileReader::new(file).map_err(|source| ParquetCopyError::Parquet {
                file: label.clone(),
                source,
            })?;
        let not_copy = |reason: String| ParquetCopyError::NotACopy {
            file: label.clone(),
            reason,
        };
        let schema = reader.metadata().file_metadata().schema_descr();
        if schema.root_schema().get_fields().len() != schema.num_columns() {
            return Err(not_copy("it has nested columns".into()));
        }
        let mut header = Vec::with_capacity(schema.num_columns());
        for col in schema.columns() {
            let flat_string = col.physical_type() == PhysicalType::BYTE_ARRAY
                && col.converted_type() == ConvertedType::UTF8
                && col.max_def_level() == 0
                && col.max_rep_level() == 0;
            if !flat_string {
                return Err(not_copy(format!(
                    "column {:?} is not a required UTF8 string",
                    col.name()
                )));
            }
            header.push(col.name().to_owned());
        }
        Ok(CopyReader {
            label,
            reader,
            header,
        })
    }

    /// Cell `r` of a column read by [`Self::read_group`], as text; `row` (1-based, in the file)
    /// and `c` name it in errors.
    fn cell<'a>(
        &self,
        column: &'a [ByteArray],
        r: usize,
        row: u64,
        c: usize,
    ) -> Result<&'a str, ParquetCopyError> {
        column
            .get(r)
            .and_then(|v| v.as_utf8().ok())
            .ok_or_else(|| ParquetCopyError::NotACopy {
                file: self.label.clone(),
                reason: format!(
                    "row {row}, column {:?}: not a UTF-8 string",
                    self.header.get(c).map_or("", String::as_str)
                ),
            })
    }

    fn row_groups(&self) -> usize {
        self.reader.num_row_groups()
    }

    /// The values of every column of row group `i`, each as long as the group's row count.
    fn read_group(&self, i: usize) -> Result<Vec<Vec<ByteArray>>, ParquetCopyError> {
        let pq_err = |source| ParquetCopyError::Parquet {
            file: self.label.clone(),
            source,
        };
        let group = self.reader.get_row_group(i).map_err(pq_err)?;
        let rows = usize::try_from(group.metadata().num_rows()).map_err(|_| {
            ParquetCopyError::NotACopy {
                file: self.label.clone(),
                reason: format!("row group {i} has a negative row count"),
            }
        })?;
        let mut columns = Vec::with_capacity(self.header.len());
        for c in 0..self.header.len() {
            let ColumnReader::ByteArrayColumnReader(mut reader) =
                group.get_column_reader(c).map_err(pq_err)?
            else {
                return Err(ParquetCopyError::NotACopy {
                    file: self.label.clone(),
                    reason: format!("column {c} is not BYTE_ARRAY"),
                });
            };
            let mut values: Vec<ByteArray> = Vec::with_capacity(rows.min(READ_CHUNK));
            while values.len() < rows {
                let want = (rows - values.len()).min(READ_CHUNK);
                let (records, _, _) = reader
                    .read_records(want, None, None, &mut values)
                    .map_err(pq_err)?;
                if records == 0 {
                    break;
                }
            }
            if values.len() != rows {
                return Err(ParquetCopyError::NotACopy {
                    file: self.label.clone(),
                    reason: format!(
                        "row group {i}: column {:?} holds {} values for {rows} rows",
                        self.header.get(c).map_or("", String::as_str),
                        values.len()
                    ),
                });
            }
            columns.push(values);
        }
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` as `dir/name.csv`, converts it with `options`, and returns the CSV's own
    /// header and rows (csv crate) and the Parquet copy's (read back).
    type Table = (Vec<String>, Vec<Vec<String>>);

    fn round_trip(text: &str, options: WriteOptions) -> (Table, Table, u64, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = dir.path().join("data.csv");
        std::fs::write(&csv, text).expect("write csv");
        let out = dir.path().join("data.parquet");
        let rows = csv_to_parquet_with(&csv, &out, options).expect("convert");
        let expected = read_csv(&csv);
        let got = read_parquet_rows(&out).expect("read back");
        assert_eq!(check_copy(&csv, &out).expect("check_copy"), rows);
        (expected, got, rows, dir)
    }

    fn read_csv(path: &Path) -> Table {
        let mut r = csv::Reader::from_path(path).expect("open csv");
        let header = r
            .headers()
            .expect("header")
            .iter()
            .map(str::to_owned)
            .collect();
        let rows = r
            .records()
            .map(|rec| {
                rec.expect("record")
                    .iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        (header, rows)
    }

    fn folder_names(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn quotes_commas_newlines_unicode_and_empty_cells_round_trip() {
        let text = "person_id,note,ward,\"odd, \"\"name\"\"\"\r\n\
                    p1,\"has, a comma\",Canbury,x\r\n\
                    p2,\"has \"\"quotes\"\"\",,\r\n\
                    p3,\"two\r\nlines\nand LF\",Norbiton,\r\n\
                    ,Zoë — café ✓ 漢字 🚒,\"\",\"\"\r\n\
                    ,,,\r\n";
        let (expected, got, rows, _dir) = round_trip(text, WriteOptions::default());
        assert_eq!(rows, 5);
        assert_eq!(got, expected);
        assert_eq!(got.0[3], "odd, \"name\"");
        assert_eq!(got.1[2][1], "two\r\nlines\nand LF");
        assert_eq!(got.1[3][1], "Zoë — café ✓ 漢字 🚒");
        assert_eq!(
            got.1[4],
            vec![String::new(); 4],
            "empty cells stay empty strings"
        );
    }

    #[test]
    fn header_only_file_has_no_rows() {
        let (expected, got, rows, dir) = round_trip("a,b,c\r\n", WriteOptions::default());
        assert_eq!(rows, 0);
        assert_eq!(got, expected);
        assert_eq!(got.0, ["a", "b", "c"]);
        assert!(got.1.is_empty());
        let reader =
            SerializedFileReader::new(File::open(dir.path().join("data.parquet")).expect("open"))
                .expect("parquet");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    }

    #[test]
    fn single_column_with_empty_cells_round_trips() {
        // The csv crate writes a lone empty field as "" so the row is not a blank line.
        let (expected, got, rows, _dir) =
            round_trip("only\r\n\"\"\r\nx\r\n\"\"\r\n", WriteOptions::default());
        assert_eq!(rows, 3);
        assert_eq!(got, expected);
        assert_eq!(got.1, [vec![""], vec!["x"], vec![""]]);
    }

    #[test]
    fn thousands_of_rows_span_several_row_groups() {
        let mut text = String::from("person_id,seq,label\r\n");
        for i in 0..5000 {
            let label = match i % 4 {
                0 => String::new(),
                1 => format!("\"row {i}, with comma\""),
                2 => format!("ü{i}"),
                _ => format!("\"quote \"\"{i}\"\"\""),
            };
            text.push_str(&format!("p{:05},{i},{label}\r\n", i % 997));
        }
        let options = WriteOptions {
            row_group_rows: 700,
            ..WriteOptions::default()
        };
        let (expected, got, rows, dir) = round_trip(&text, options);
        assert_eq!(rows, 5000);
        assert_eq!(got, expected);
        let reader =
            SerializedFileReader::new(File::open(dir.path().join("data.parquet")).expect("open"))
                .expect("parquet");
        assert_eq!(reader.num_row_groups(), 8, "5000 rows in groups of 700");
        let schema = reader.metadata().file_metadata().schema_descr();
        for col in schema.columns() {
            assert_eq!(col.physical_type(), PhysicalType::BYTE_ARRAY);
            assert_eq!(col.logical_type_ref(), Some(&LogicalType::String));
            assert_eq!(col.max_def_level(), 0, "required");
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_copy_has_the_permissions_of_its_csv() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = dir.path().join("p.csv");
        std::fs::write(&csv, "a\r\n1\r\n").expect("write");
        for mode in [0o644, 0o640] {
            std::fs::set_permissions(&csv, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let out = dir.path().join("p.parquet");
            csv_to_parquet(&csv, &out).expect("convert");
            let got = std::fs::metadata(&out).expect("stat").permissions().mode() & 0o777;
            assert_eq!(got, mode);
        }
    }

    #[test]
    fn row_groups_are_also_cut_by_bytes() {
        let mut text = String::from("a\r\n");
        for i in 0..100 {
            text.push_str(&format!("{}\r\n", "x".repeat(100 + i)));
        }
        let options = WriteOptions {
            row_group_rows: 1_000,
            row_group_bytes: 1_000,
        };
        let (expected, got, _, dir) = round_trip(&text, options);
        assert_eq!(got, expected);
        let reader =
            SerializedFileReader::new(File::open(dir.path().join("data.parquet")).expect("open"))
                .expect("parquet");
        assert!(reader.num_row_groups() > 5);
    }

    #[test]
    fn a_bad_csv_leaves_no_parquet_file_and_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = dir.path().join("bad.csv");
        let out = dir.path().join("bad.parquet");
        let mut text = String::from("a,b\r\n");
        for i in 0..3000 {
            text.push_str(&format!("{i},{i}\r\n"));
        }
        text.push_str("1,2,3\r\n");
        std::fs::write(&csv, text).expect("write");
        let options = WriteOptions {
            row_group_rows: 500,
            ..WriteOptions::default()
        };
        let err = csv_to_parquet_with(&csv, &out, options).expect_err("ragged row");
        let msg = err.to_string();
        assert!(msg.contains("bad.csv"), "{msg}");
        assert!(msg.contains("3 fields"), "{msg}");
        assert_eq!(
            folder_names(dir.path()),
            BTreeSet::from(["bad.csv".to_owned()]),
            "no .parquet and no temporary file left"
        );
    }

    #[test]
    fn unusable_headers_are_refused() {
        for (text, want) in [
            ("", "no header line"),
            ("a,,b\r\n", "column 2 has an empty name"),
            ("a,b,a\r\n", "\"a\" appears twice"),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let csv = dir.path().join("h.csv");
            std::fs::write(&csv, text).expect("write");
            let err = csv_to_parquet(&csv, &dir.path().join("h.parquet")).expect_err(text);
            assert!(err.to_string().contains(want), "{err}");
            assert_eq!(folder_names(dir.path()).len(), 1);
        }
    }

    #[test]
    fn not_utf8_csv_is_refused_without_values() {
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = dir.path().join("latin1.csv");
        std::fs::write(&csv, b"name\r\nZo\xeb\r\n").expect("write");
        let err = csv_to_parquet(&csv, &dir.path().join("latin1.parquet")).expect_err("latin-1");
        let msg = err.to_string();
        assert!(msg.contains("latin1.csv") && msg.contains("utf-8"), "{msg}");
        assert!(!msg.contains("Zo"), "no cell value in the error: {msg}");
    }

    #[test]
    fn check_copy_names_the_first_difference() {
        let dir = tempfile::tempdir().expect("temp dir");
        let csv = dir.path().join("d.csv");
        let out = dir.path().join("d.parquet");
        std::fs::write(&csv, "a,b\r\n1,secret\r\n2,x\r\n").expect("write");
        csv_to_parquet(&csv, &out).expect("convert");
        assert_eq!(check_copy(&csv, &out).expect("same"), 2);

        let other = dir.path().join("other.csv");
        let cases = [
            ("a,b\r\n1,secreT\r\n2,x\r\n", "row 1, column \"b\" differs"),
            ("a,b\r\n1,secret\r\n", "more rows than the CSV's 1"),
            ("a,b\r\n1,secret\r\n2,x\r\n3,y\r\n", "it has 2 rows, fewer"),
            ("a,c\r\n1,secret\r\n2,x\r\n", "its columns are"),
        ];
        for (text, want) in cases {
            std::fs::write(&other, text).expect("write");
            let err = check_copy(&other, &out).expect_err(text);
            let msg = err.to_string();
            assert!(msg.contains(want), "{msg}");
            assert!(!msg.contains("secret"), "no cell value in the error: {msg}");
        }

        std::fs::write(&out, b"PAR1 not really").expect("write");
        let err = check_copy(&csv, &out).expect_err("not parquet");
        assert!(matches!(err, ParquetCopyError::Parquet { .. }), "{err}");
    }

    #[test]
    fn names_pair_csv_and_parquet() {
        assert_eq!(
            parquet_name("police_crime.csv").as_deref(),
            Some("police_crime.parquet")
        );
        assert_eq!(parquet_name("manifest.json"), None);
        assert_eq!(parquet_name(".csv"), None);
        assert_eq!(
            csv_name("police_crime.parquet").as_deref(),
            Some("police_crime.csv")
        );
        assert_eq!(csv_name("x.parquet.tmp"), None);
        assert_eq!(csv_name(".parquet"), None);
        assert_eq!(csv_name("xparquet"), None);
    }
}

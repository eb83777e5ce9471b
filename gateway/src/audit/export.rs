//! The audit export file, format v1: the log's entries and a signed checkpoint, as text an IG
//! officer can read with ordinary tools (`less`, `grep`, `jq -c`, `sha256sum`).
//!
//! Owns the file layout only: it writes and splits lines and never decodes an entry, checks a
//! hash or opens a signature (that is [`super::verify`]'s job). It does no I/O of its own: the
//! writer writes to any [`Write`], the parser takes the file's bytes.
//!
//! # Format v1
//!
//! ```text
//! # skp audit export v1
//! <entry 0, canonical JSON>
//! <entry 1, canonical JSON>
//! ...
//! <entry n-1, canonical JSON>
//! # checkpoint
//! <signed note, verbatim as produced by skp_core::checkpoint::sign; it ends in \n>
//! ```
//!
//! Every line ends in `\n` (no CR). Entry `i` is on line `i + 2` (lines count from 1). An entry
//! line is exactly the entry's canonical bytes, the bytes its Merkle leaf hashes, so
//! `SHA-256(0x00 ‖ line)` is its leaf hash. The parser checks only the framing: the header, that
//! each entry line starts with `{` and ends with `}`, the `# checkpoint` line, and that a
//! UTF-8 note follows it.

use std::fmt;
use std::io::{self, Write};

/// The first line of a v1 export, without its newline.
pub const HEADER: &str = "# skp audit export v1";

/// The line that separates the entries from the signed checkpoint, without its newline.
pub const CHECKPOINT_MARKER: &str = "# checkpoint";

/// The line number (1-based) of entry 0 in a v1 export.
pub const FIRST_ENTRY_LINE: usize = 2;

/// The start every export header shares, whatever its version.
const HEADER_PREFIX: &str = "# skp audit export ";

/// The longest version text an error message repeats from a foreign header.
const MAX_VERSION_ECHO: usize = 16;

/// Writes a v1 export: the header, then entries one per line, then the signed checkpoint.
///
/// Wrap a file in a [`std::io::BufWriter`]: each entry is one small write.
pub struct ExportWriter<W: Write> {
    out: W,
    entries: u64,
}

impl<W: Write> fmt::Debug for ExportWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportWriter")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl<W: Write> ExportWriter<W> {
    /// Starts an export by writing the header line.
    ///
    /// # Errors
    /// The writer's error.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(HEADER.as_bytes())?;
        out.write_all(b"\n")?;
        Ok(ExportWriter { out, entries: 0 })
    }

    /// Writes the next entry's canonical bytes as one line.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] (and nothing is written) if the bytes hold a newline, do
    /// not start with `{` and end with `}`, or are not UTF-8: canonical entry JSON never does,
    /// and the reader would refuse the file. Otherwise the writer's error.
    pub fn entry(&mut self, canonical_bytes: &[u8]) -> io::Result<()> {
        if find_newline(canonical_bytes).is_some() {
            return Err(invalid_input(
                "an audit entry holds a newline; canonical entry JSON never does",
            ));
        }
        if !is_entry_shaped(canonical_bytes) {
            return Err(invalid_input(
                "an audit entry must be a JSON object: start with '{' and end with '}'",
            ));
        }
        if std::str::from_utf8(canonical_bytes).is_err() {
            return Err(invalid_input("an audit entry is not UTF-8"));
        }
        self.out.write_all(canonical_bytes)?;
        self.out.write_all(b"\n")?;
        self.entries += 1;
        Ok(())
    }

    /// The number of entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Ends the export with the checkpoint marker line and the signed note, flushes, and returns
    /// the writer.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] (and nothing is written) if the note is empty or does
    /// not end in `\n`, as every note [`skp_core::checkpoint::sign`] makes does. Otherwise the
    /// writer's error.
    pub fn finish(mut self, signed_note: &str) -> io::Result<W> {
        if !signed_note.ends_with('\n') {
            return Err(invalid_input(
                "the signed note is empty or does not end in a newline; pass the note exactly \
                 as checkpoint::sign returned it",
            ));
        }
        self.out.write_all(CHECKPOINT_MARKER.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.write_all(signed_note.as_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// An export split into its parts. Entries are not decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedExport<'a> {
    /// Each entry line, without its `\n`: entry `i` is `entries[i]`.
    pub entries: Vec<&'a [u8]>,
    /// The line number (1-based) of `entries[0]`, [`FIRST_ENTRY_LINE`]; entry `i` is on line
    /// `first_entry_line + i`.
    pub first_entry_line: usize,
    /// The signed checkpoint note, verbatim (not yet opened).
    pub note: &'a str,
}

impl ParsedExport<'_> {
    /// The line number (1-based) of entry `index`.
    pub fn line_of(&self, index: u64) -> u64 {
        index.saturating_add(self.first_entry_line as u64)
    }
}

/// Why a file is not a well-formed v1 export. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The first line is not an export header at all.
    #[error(
        "line 1 is not \"{HEADER}\": this file is not an skp audit export (was the right file \
         given? an export starts with that line)"
    )]
    MissingHeader,
    /// The header names a format version this code does not read.
    #[error(
        "line 1 declares export format {found:?}, but this tool reads only v1; use the gateway \
         version that wrote the export"
    )]
    UnsupportedVersion {
        /// The version text found (at most a few characters of it).
        found: String,
    },
    /// A line in the entries section does not start with `{` and end with `}`.
    #[error(
        "line {line} (entry {index}) is not an audit entry: entry lines start with '{{' and end \
         with '}}'; the line was altered or damaged, or a line break was inserted into it or \
         into the entry before it"
    )]
    NotAnEntry {
        /// The line number.
        line: usize,
        /// The entry index the line is in the place of.
        index: u64,
    },
    /// The file ends before the `# checkpoint` line.
    #[error(
        "the export ends at line {line} without a \"{CHECKPOINT_MARKER}\" line: the file was \
         truncated (copy or export it again)"
    )]
    MissingCheckpoint {
        /// The number of the last line of the file (it may lack its newline).
        line: usize,
    },
    /// Nothing follows the `# checkpoint` line.
    #[error(
        "no signed checkpoint follows the \"{CHECKPOINT_MARKER}\" line at line {line}: the file \
         was truncated (copy or export it again)"
    )]
    MissingNote {
        /// The line number of the marker.
        line: usize,
    },
    /// The signed note is not UTF-8.
    #[error(
        "the signed checkpoint after line {line} is not UTF-8 text: it was damaged (a note is \
         plain text)"
    )]
    NoteNotUtf8 {
        /// The line number of the `# checkpoint` marker before it.
        line: usize,
    },
}

impl ExportError {
    /// The index of the entry the error is about, if it is about one.
    pub fn entry_index(&self) -> Option<u64> {
        match self {
            ExportError::NotAnEntry { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// Splits an export into entry lines and the signed note, checking the framing only.
///
/// # Errors
/// The first framing problem, with its line number: see [`ExportError`].
pub fn parse(text: &str) -> Result<ParsedExport<'_>, ExportError> {
    parse_bytes(text.as_bytes())
}

/// Like [`parse`], for a file read as bytes. Entry lines need not be UTF-8 here (a damaged
/// entry is reported by the verifier, by index); the note must be.
///
/// # Errors
/// The first framing problem, with its line number: see [`ExportError`].
pub fn parse_bytes(bytes: &[u8]) -> Result<ParsedExport<'_>, ExportError> {
    let mut lines = Lines {
        rest: bytes,
        line: 0,
    };
    match lines.next_line() {
        Some((first, true)) if first == HEADER.as_bytes() => {}
        // The file was cut inside (or right after) its header.
        Some((first, false)) if HEADER.as_bytes().starts_with(first) => {
            return Err(ExportError::MissingCheckpoint { line: 1 });
        }
        Some((first, complete)) => {
            return Err(match first.strip_prefix(HEADER_PREFIX.as_bytes()) {
                Some(version) if complete && !version.is_empty() => {
                    ExportError::UnsupportedVersion {
                        found: String::from_utf8_lossy(
                            &version[..version.len().min(MAX_VERSION_ECHO)],
                        )
                        .into_owned(),
                    }
                }
                _ => ExportError::MissingHeader,
            });
        }
        None => return Err(ExportError::MissingHeader),
    }
    // A rough guess (entries are a few hundred bytes) saves most re-allocations.
    let mut entries = Vec::with_capacity(bytes.len() / 256);
    loop {
        let Some((line, complete)) = lines.next_line() else {
            return Err(ExportError::MissingCheckpoint { line: lines.line });
        };
        if !complete {
            // The last line of the file lacks its newline: whatever it is, the file was cut.
            return Err(ExportError::MissingCheckpoint { line: lines.line });
        }
        if line == CHECKPOINT_MARKER.as_bytes() {
            break;
        }
        if !is_entry_shaped(line) {
            return Err(ExportError::NotAnEntry {
                line: lines.line,
                index: entries.len() as u64,
            });
        }
        entries.push(line);
    }
    let marker_line = lines.line;
    if lines.rest.is_empty() {
        return Err(ExportError::MissingNote { line: marker_line });
    }
    let note = std::str::from_utf8(lines.rest)
        .map_err(|_| ExportError::NoteNotUtf8 { line: marker_line })?;
    Ok(ParsedExport {
        entries,
        first_entry_line: FIRST_ENTRY_LINE,
        note,
    })
}

/// The position of the first `\n` in `hay`.
///
/// Reads eight bytes at a time (the "has zero byte" bit trick on `word ^ 0x0a0a…`), which keeps
/// line splitting well below the cost of hashing the line.
pub(crate) fn find_newline(hay: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut chunks = hay.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks_exact(8) yields 8 bytes"));
        let x = word ^ NEWLINES;
        // A byte of x is zero where the input byte is '\n'. The lowest flagged byte is exact
        // (false flags only occur above a true zero), and little-endian puts the first byte lowest.
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| offset + p)
}

/// Whether a line has the outline of an entry: a JSON object on one line.
fn is_entry_shaped(line: &[u8]) -> bool {
    line.len() >= 2 && line[0] == b'{' && line[line.len() - 1] == b'}'
}

fn invalid_input(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Splits bytes into lines, counting them.
struct Lines<'a> {
    rest: &'a [u8],
    /// The number of the line last returned.
    line: usize,
}

impl<'a> Lines<'a> {
    /// The next line without its `\n`, and whether it had one; `None` at the end.
    fn next_line(&mut self) -> Option<(&'a [u8], bool)> {
        if self.rest.is_empty() {
            return None;
        }
        self.line += 1;
        match find_newline(self.rest) {
            Some(end) => {
                let (line, rest) = self.rest.split_at(end);
                self.rest = &rest[1..];
                Some((line, true))
            }
            None => {
                let line = self.rest;
                self.rest = &[];
                Some((line, false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: &str = "kingston.skp/audit/v1\n2\nAAAA\n\n\u{2014} kingston.skp/audit sig\n";

    fn export(entries: &[&[u8]], note: &str) -> Vec<u8> {
        let mut w = ExportWriter::new(Vec::new()).expect("vec");
        for e in entries {
            w.entry(e).expect("entry");
        }
        w.finish(note).expect("finish")
    }

    #[test]
    fn writes_the_documented_layout() {
        let out = export(&[br#"{"v":1,"seq":0}"#, br#"{"v":1,"seq":1}"#], NOTE);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            format!(
                "# skp audit export v1\n{{\"v\":1,\"seq\":0}}\n{{\"v\":1,\"seq\":1}}\n\
                 # checkpoint\n{NOTE}"
            )
        );
        let parsed = parse(&text).expect("parses");
        assert_eq!(
            parsed.entries,
            vec![&br#"{"v":1,"seq":0}"#[..], &br#"{"v":1,"seq":1}"#[..]]
        );
        assert_eq!(parsed.first_entry_line, 2);
        assert_eq!(parsed.line_of(1), 3);
        assert_eq!(parsed.note, NOTE);
    }

    #[test]
    fn empty_log_round_trips() {
        let out = export(&[], NOTE);
        let parsed = parse_bytes(&out).expect("parses");
        assert!(parsed.entries.is_empty());
        assert_eq!(parsed.note, NOTE);
    }

    #[test]
    fn writer_refuses_what_the_reader_would_refuse() {
        let mut w = ExportWriter::new(Vec::new()).expect("vec");
        for bad in [
            &b"{\"a\":\n1}"[..],
            b"[1]",
            b"{",
            b"",
            b" {}",
            b"{\"a\":\"\xff\"}",
        ] {
            let err = w.entry(bad).expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert_eq!(w.entries(), 0);
        let w = ExportWriter::new(Vec::new()).expect("vec");
        assert_eq!(
            w.finish("no newline").expect_err("refused").kind(),
            io::ErrorKind::InvalidInput
        );
        let w = ExportWriter::new(Vec::new()).expect("vec");
        assert!(w.finish("").is_err());
    }

    #[test]
    fn header_is_required() {
        assert_eq!(parse(""), Err(ExportError::MissingHeader));
        assert_eq!(
            parse("{\"v\":1}\n# checkpoint\nx\n"),
            Err(ExportError::MissingHeader)
        );
        assert_eq!(
            parse("# skp audit export v1"),
            Err(ExportError::MissingCheckpoint { line: 1 })
        );
        assert_eq!(
            parse("# skp audit export v2"),
            Err(ExportError::MissingHeader)
        );
        assert_eq!(
            parse("# skp audit export v1 \n# checkpoint\nx\n"),
            Err(ExportError::UnsupportedVersion {
                found: "v1 ".into()
            })
        );
        assert_eq!(
            parse("# skp audit export v2\n# checkpoint\nx\n"),
            Err(ExportError::UnsupportedVersion { found: "v2".into() })
        );
        assert_eq!(
            parse("# skp audit export v1\r\n# checkpoint\nx\n"),
            Err(ExportError::UnsupportedVersion {
                found: "v1\r".into()
            })
        );
    }

    #[test]
    fn non_entry_lines_are_refused_with_their_line_number() {
        for (text, line, index) in [
            ("# skp audit export v1\n{}\n\n# checkpoint\nx\n", 3, 1),
            (
                "# skp audit export v1\n{}\n{}\n{\n}\n# checkpoint\nx\n",
                4,
                2,
            ),
            (
                "# skp audit export v1\n{}\n# comment\n# checkpoint\nx\n",
                3,
                1,
            ),
            ("# skp audit export v1\n{}\r\n# checkpoint\nx\n", 2, 0),
            ("# skp audit export v1\n# checkpoint \nx\n", 2, 0),
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err, ExportError::NotAnEntry { line, index }, "{text:?}");
            assert_eq!(err.entry_index(), Some(index));
            assert!(err.to_string().contains(&format!("line {line} ")), "{err}");
        }
    }

    #[test]
    fn a_cut_file_is_refused() {
        let full = String::from_utf8(export(&[b"{\"a\":1}", b"{\"a\":2}"], NOTE)).expect("utf8");
        let marker = full.find("# checkpoint").expect("marker");
        // Cut anywhere before the note starts: the marker line is lost or incomplete.
        for cut in 0..marker + CHECKPOINT_MARKER.len() + 1 {
            let err = parse(&full[..cut]).expect_err("cut");
            assert!(
                matches!(
                    err,
                    ExportError::MissingHeader
                        | ExportError::MissingCheckpoint { .. }
                        | ExportError::MissingNote { .. }
                ),
                "cut at {cut}: {err:?}"
            );
        }
        assert_eq!(
            parse(&full[..marker]),
            Err(ExportError::MissingCheckpoint { line: 3 })
        );
        assert_eq!(
            parse(&full[..marker - 3]),
            Err(ExportError::MissingCheckpoint { line: 3 })
        );
        assert_eq!(
            parse(&full[..marker + CHECKPOINT_MARKER.len() + 1]),
            Err(ExportError::MissingNote { line: 4 })
        );
    }

    #[test]
    fn the_first_marker_ends_the_entries_and_the_note_is_kept_verbatim() {
        let text = "# skp audit export v1\n# checkpoint\n# checkpoint\n{}\n";
        let parsed = parse(text).expect("parses");
        assert!(parsed.entries.is_empty());
        assert_eq!(parsed.note, "# checkpoint\n{}\n");
    }

    #[test]
    fn a_note_that_is_not_utf8_is_refused() {
        let mut bytes = export(&[b"{}"], NOTE);
        let last = bytes.len() - 2;
        bytes[last] = 0xff;
        assert_eq!(
            parse_bytes(&bytes),
            Err(ExportError::NoteNotUtf8 { line: 3 })
        );
    }

    #[test]
    fn entries_need_not_be_utf8_to_be_split() {
        let text = b"# skp audit export v1\n{\xff}\n# checkpoint\nx\n";
        let parsed = parse_bytes(text).expect("framing is fine");
        assert_eq!(parsed.entries, vec![&b"{\xff}"[..]]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn find_newline_agrees_with_a_byte_scan(
                hay in prop::collection::vec(prop::sample::select(vec![b'\n', b'a', 0x0b, 0x09, 0x8a, 0x00, 0xff]), 0..70)
            ) {
                prop_assert_eq!(find_newline(&hay), hay.iter().position(|&b| b == b'\n'));
            }

            #[test]
            fn written_entries_parse_back(
                entries in prop::collection::vec("\\{[ -~]{0,40}\\}", 0..20)
            ) {
                let refs: Vec<&[u8]> = entries.iter().map(|e| e.as_bytes()).collect();
                let out = export(&refs, NOTE);
                let parsed = parse_bytes(&out).expect("parses");
                prop_assert_eq!(parsed.entries, refs);
                prop_assert_eq!(parsed.note, NOTE);
            }
        }
    }
}

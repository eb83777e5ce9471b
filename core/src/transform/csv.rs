//! The small CSV dialect of `policies/lookups/`: `#` comment lines, one header line, comma
//! separated fields, a field may be wrapped in double quotes to hold commas (no escaped quotes).
//! Read once per table when a transform first needs it; tests check every row is read.

/// The named columns of every well-formed data row, in the order asked for. A row with the wrong
/// number of fields, or a table lacking a column, yields nothing (and fails the table's test).
pub(super) fn rows<'a>(
    text: &'a str,
    columns: &'a [&'a str],
) -> impl Iterator<Item = Vec<&'a str>> + 'a {
    let mut lines = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let header = lines.next().map(split).unwrap_or_default();
    let index: Option<Vec<usize>> = columns
        .iter()
        .map(|c| header.iter().position(|h| h == c))
        .collect();
    let width = header.len();
    lines.filter_map(move |line| {
        let fields = split(line);
        let index = index.as_ref()?;
        (fields.len() == width).then(|| index.iter().map(|i| fields[*i]).collect())
    })
}

/// Data rows (not comments, not the header) in the table, for tests.
#[cfg(test)]
pub(super) fn data_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count()
        .saturating_sub(1)
}

fn split(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        if let Some(quoted) = rest.strip_prefix('"') {
            let Some(end) = quoted.find('"') else {
                out.push(quoted);
                return out;
            };
            out.push(&quoted[..end]);
            match quoted[end + 1..].strip_prefix(',') {
                Some(next) => rest = next,
                None => return out,
            }
        } else {
            match rest.split_once(',') {
                Some((field, next)) => {
                    out.push(field);
                    rest = next;
                }
                None => {
                    out.push(rest);
                    return out;
                }
            }
        }
    }
}

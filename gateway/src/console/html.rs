//! The console's HTML building blocks: the page layout, the style sheet, escaping, and the
//! parsing of query strings, form bodies and cookies. No script: every page is server-rendered.

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub(crate) use crate::register::esc;

/// The console's style sheet, served as `/style.css` (the content security policy allows no
/// inline style).
pub const CSS: &str = "\
body{font-family:sans-serif;margin:0;color:#0b0c0c;background:#fff}
header{background:#0b0c0c;color:#fff;padding:.6em 1.5em;display:flex;gap:1.5em;align-items:center;flex-wrap:wrap}
header a{color:#fff;font-weight:bold;text-decoration:none}
header a:hover{text-decoration:underline}
header .who{margin-left:auto;font-size:.9em}
header form{display:inline}
main{padding:1em 1.5em}
h1{font-size:1.5em}
table{border-collapse:collapse;width:100%;margin:.5em 0 1em}
th,td{border:1px solid #b1b4b6;padding:.25em .45em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f3f2f1}
td.n{text-align:right}
code,pre{font-size:.85em;word-break:break-all;white-space:pre-wrap}
form.filters{display:flex;flex-wrap:wrap;gap:.6em;align-items:flex-end;margin-bottom:1em}
form.filters label{display:flex;flex-direction:column;font-size:.85em}
.ok{background:#cce2d8;color:#005a30;padding:.1em .4em;font-weight:bold}
.bad{background:#f6d7d2;color:#942514;padding:.1em .4em;font-weight:bold}
.warn{background:#fff7bf;color:#594d00;padding:.1em .4em;font-weight:bold}
tr.expired td{background:#f6d7d2}
tr.due td{background:#fff7bf}
.error{border-left:5px solid #d4351c;padding:.5em 1em;background:#fef7f7}
textarea{width:100%;max-width:60em;font-family:monospace}
";

/// A whole page: `title`, the signed-in subject (none on the sign-in page) and `body` (HTML).
pub fn layout(title: &str, who: Option<&str>, body: &str) -> String {
    let mut h = String::with_capacity(body.len() + 1024);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{} · partnership gateway console</title>\n\
         <link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n<body>\n<header>\
         <span>Partnership gateway</span>",
        esc(title)
    );
    if let Some(who) = who {
        h.push_str(
            "<a href=\"/entries\">Audit log</a><a href=\"/checkpoint\">Checkpoint</a>\
             <a href=\"/agreements\">Agreements</a><a href=\"/releases\">Releases</a>\
             <a href=\"/person\">Person lookup</a>",
        );
        let _ = write!(
            h,
            "<span class=\"who\">signed in as <b id=\"who\">{}</b> \
             <form method=\"post\" action=\"/logout\"><button>Sign out</button></form></span>",
            esc(who)
        );
    }
    let _ = write!(
        h,
        "</header>\n<main>\n<h1>{}</h1>\n{body}\n</main>\n</body>\n</html>\n",
        esc(title)
    );
    h
}

/// Decodes an `application/x-www-form-urlencoded` text (a query string or a form body) into
/// name → value; a repeated name keeps its last value.
pub fn parse_form(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k), decode(v));
    }
    out
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// Percent-encodes a value for a query string.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `<select>` named `name` offering `options` (value = label), with `selected` chosen and
/// a first empty option labelled `any`.
pub fn select(name: &str, options: &[&str], selected: &str) -> String {
    let mut h = format!(
        "<select name=\"{}\"><option value=\"\">any</option>",
        esc(name)
    );
    for o in options {
        let _ = write!(
            h,
            "<option{}>{}</option>",
            if *o == selected { " selected" } else { "" },
            esc(o)
        );
    }
    h.push_str("</select>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent() {
        let f = parse_form("token=a%2Bb+c&empty=&flag&x=%E2%9C%93");
        assert_eq!(f["token"], "a+b c");
        assert_eq!(f["empty"], "");
        assert_eq!(f["flag"], "");
        assert_eq!(f["x"], "✓");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = "a=1; skp_console=tok.en.x; skp_console2=no";
        assert_eq!(cookie(h, "skp_console"), Some("tok.en.x"));
        assert_eq!(cookie(h, "b"), None);
    }

    #[test]
    fn layout_escapes_the_title_and_subject() {
        let h = layout("<x>", Some("\"s\"<script>"), "");
        assert!(!h.contains("<script>"));
        assert!(h.contains("&lt;x&gt;"));
    }

    #[test]
    fn encode_round_trips_through_parse() {
        let v = "SKP-ISA 01&x=y+z/é";
        assert_eq!(parse_form(&format!("q={}", encode(v)))["q"], v);
    }
}

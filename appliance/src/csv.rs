//! CSV text for the logs' exports (`GET /api/v1/audit?format=csv`,
//! `GET /api/v1/events?format=csv`): RFC 4180 quoting, CRLF line ends, and
//! a cell that a spreadsheet would read as a formula kept as text.

/// A CSV document: `header`, then each of `rows`, one line each.
pub(crate) fn document<R>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator<Item = String>,
{
    let mut out = header.join(",");
    out.push_str("\r\n");
    for row in rows {
        let cells: Vec<String> = row.into_iter().map(|cell| field(&cell)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// One cell, quoted when it needs to be.
pub(crate) fn field(field: &str) -> String {
    // A leading =, +, - or @ would be a formula in a spreadsheet: quoted
    // and prefixed with ' so it stays text.
    let formula = field.starts_with(['=', '+', '-', '@']);
    if formula || field.contains([',', '"', '\r', '\n']) {
        let prefix = if formula { "'" } else { "" };
        format!("\"{prefix}{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_needs_it_and_defuses_formulas() {
        assert_eq!(field("admin"), "admin");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("=cmd()"), "\"'=cmd()\"");
        assert_eq!(field("-1"), "\"'-1\"");
        assert_eq!(field(""), "");
    }

    #[test]
    fn a_document_is_a_header_and_one_line_per_row() {
        let rows = [
            vec!["1".to_owned(), "a,b".to_owned()],
            vec!["2".to_owned(), String::new()],
        ];
        assert_eq!(
            document(&["id", "text"], rows),
            "id,text\r\n1,\"a,b\"\r\n2,\r\n"
        );
    }
}

//! Maps errors to line, column and field in the TOML text they came from.
//! The serde error knows the byte span but not always the key; the validator
//! knows the key path but not the span. A spanned parse of the same text
//! (`toml::de::DeTable`) answers both questions.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::path::{FieldPath, Segment};
use super::{FieldError, Problem};

pub(super) fn toml_error(text: &str, error: &toml::de::Error) -> Problem {
    let span = error.span().unwrap_or(0..0);
    let field = DeTable::parse(text)
        .ok()
        .and_then(|root| path_at(&root, span.start))
        .map(|path| path.to_string());
    let (line, column) = line_column(text, span.start);
    Problem {
        line,
        column,
        field,
        message: error.message().trim().replace('\n', "; "),
    }
}

pub(super) fn field_error(text: &str, error: &FieldError) -> Problem {
    let offset = DeTable::parse(text)
        .ok()
        .and_then(|root| span_of(&root, &error.path))
        .map_or(0, |span| span.start);
    let (line, column) = line_column(text, offset);
    Problem {
        line,
        column,
        field: Some(error.path.to_string()),
        message: error.message.clone(),
    }
}

/// The span of the value at `path`, or of the nearest ancestor present.
fn span_of(root: &Spanned<DeTable<'_>>, path: &FieldPath) -> Option<Range<usize>> {
    let mut best = root.span();
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
    for segment in path.segments() {
        let value = match segment {
            Segment::Key(key) => table?
                .iter()
                .find(|(k, _)| k.get_ref() == key)
                .map(|(_, v)| v),
            Segment::Index(i) => array?.get(*i),
        };
        let Some(value) = value else {
            break;
        };
        best = value.span();
        table = None;
        array = None;
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    Some(best)
}

/// The deepest key path whose key or value covers `offset`.
fn path_at(root: &Spanned<DeTable<'_>>, offset: usize) -> Option<FieldPath> {
    fn in_table(table: &DeTable<'_>, offset: usize, path: FieldPath) -> Option<FieldPath> {
        for (key, value) in table.iter() {
            let here = path.key(key.get_ref());
            if let Some(deeper) = in_value(value, offset, here.clone()) {
                return Some(deeper);
            }
            if key.span().contains(&offset) || value.span().contains(&offset) {
                return Some(here);
            }
        }
        None
    }
    fn in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: FieldPath) -> Option<FieldPath> {
        match value.get_ref() {
            DeValue::Table(table) => in_table(table, offset, path),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                let here = path.index(i);
                in_value(item, offset, here.clone())
                    .or_else(|| item.span().contains(&offset).then_some(here))
            }),
            _ => None,
        }
    }
    in_table(root.get_ref(), offset, FieldPath::root())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 6));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn finds_nested_array_of_tables() {
        let text = "[[pool]]\nname = \"a\"\n[[pool.member]]\nname = \"x\"\n[[pool.member]]\nname = \"y\"\n";
        let root = DeTable::parse(text).expect("valid toml");
        let path = FieldPath::root()
            .item("pool", 0)
            .item("member", 1)
            .key("name");
        let span = span_of(&root, &path).expect("span");
        assert_eq!(&text[span], "\"y\"");
        let found = path_at(&root, text.find("\"y\"").expect("present")).expect("path");
        assert_eq!(found, path);
    }
}

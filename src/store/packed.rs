//! The large texts of a group of rows (a brief's JSON, an event's envelope), bound to a
//! statement once as one blob, each row naming its text by byte offset and length.
//!
//! The groups are written as one JSON array of rows (one bind whatever their number).
//! A 2 KB JSON text inside that array is escaped on the way in (every quote) and parsed
//! and unescaped again by the database, once per column read from the row: with two such
//! texts per event that was about 7 % of the CPU per event (BENCHMARKS.md, issue 16). A span
//! into the blob is two small numbers; the database cuts the text out of the blob as it is.
//!
//! In SQL the text of row `j` is [`sqlite_text!`] / [`postgres_text!`] of the row's field.

use serde::Serialize;

/// The blob: texts one after another. Offsets are 1-based, as SQL's `substr` counts.
#[derive(Debug, Default)]
pub(super) struct Packed {
    blob: Vec<u8>,
}

/// Where one text is in a [`Packed`] blob: serialized as `[offset, length]`, in bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Span(usize, usize);

impl Packed {
    /// Appends `text`; the span that names it.
    pub(super) fn push(&mut self, text: &str) -> Span {
        let at = self.blob.len() + 1;
        self.blob.extend_from_slice(text.as_bytes());
        Span(at, text.len())
    }

    /// Appends `value` serialized as compact JSON, without an intermediate string.
    pub(super) fn push_json(&mut self, value: &impl Serialize) -> Span {
        let at = self.blob.len() + 1;
        serde_json::to_writer(&mut self.blob, value)
            .expect("a value of strings and numbers serializes");
        Span(at, self.blob.len() + 1 - at)
    }

    /// The blob, to bind.
    pub(super) fn blob(&self) -> &[u8] {
        &self.blob
    }
}

/// SQLite: the text named by the span in field `$field` of the JSON row `j.value`, cut out
/// of the blob bound as `$blob` (`substr` of a blob counts bytes; the cast reads them as
/// the database's UTF-8 text, unchanged).
macro_rules! sqlite_text {
    ($blob:literal, $field:literal) => {
        concat!(
            "CAST(substr(",
            $blob,
            ", j.value ->> '$.",
            $field,
            "[0]', j.value ->> '$.",
            $field,
            "[1]') AS TEXT)"
        )
    };
}
pub(super) use sqlite_text;

/// PostgreSQL: the same from a `jsonb` row `j.value` and a `bytea` blob.
macro_rules! postgres_text {
    ($blob:literal, $field:literal) => {
        concat!(
            "convert_from(substring(",
            $blob,
            " FROM (j.value -> '",
            $field,
            "' ->> 0)::int FOR (j.value -> '",
            $field,
            "' ->> 1)::int), 'UTF8')"
        )
    };
}
pub(super) use postgres_text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_name_each_text_by_one_based_byte_offset_and_length() {
        let mut packed = Packed::default();
        let a = packed.push("héllo");
        let b = packed.push_json(&serde_json::json!({"q": "\"x\""}));
        let c = packed.push("");
        assert_eq!(
            serde_json::to_string(&[a, b, c]).unwrap(),
            "[[1,6],[7,13],[20,0]]"
        );
        assert_eq!(&packed.blob()[6..19], br#"{"q":"\"x\""}"#.as_slice());
    }
}

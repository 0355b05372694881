//! Text from outside (a server's error, a receiver's answer, a meeting's title) made safe
//! to print on an operator's terminal: control characters are shown escaped (`\u{1b}`),
//! so an answer can neither recolour, clear or retitle the terminal nor forge lines.

/// Characters that would act on the terminal rather than show: C0 and C1 controls and
/// DEL, and the bidirectional overrides that reorder what is shown.
fn acts_on_the_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn escaped(text: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if acts_on_the_terminal(c) && !keep(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// For a field printed on one line: every control character escaped, line breaks too.
pub fn one_line(text: &str) -> String {
    escaped(text, |_| false)
}

/// For a text printed as a block (a summary): line breaks and tabs kept.
pub fn block(text: &str) -> String {
    escaped(text, |c| c == '\n' || c == '\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_line_breaks_are_shown_not_obeyed() {
        assert_eq!(
            one_line("a\u{1b}[31mb\nc\u{9b}\u{202e}"),
            "a\\u{1b}[31mb\\u{a}c\\u{9b}\\u{202e}"
        );
        assert_eq!(block("a\n\tb\r\u{7}"), "a\n\tb\\u{d}\\u{7}");
        assert_eq!(one_line("café — ok"), "café — ok");
    }
}

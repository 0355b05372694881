//! Untrusted text made safe for a chat message: escaped for its medium, defused (no
//! mention pings anyone, no address becomes a link) and cut to a platform limit with an
//! ellipsis. The `slack_text` and `teams_text` template filters and the built-in messages
//! all go through here, so a template and a built-in escape alike (docs/operations.md,
//! "Slack and Teams").

use std::borrow::Cow;

/// Put inside a would-be link or mention to break it: invisible, so the text reads the
/// same, but `@everyone` or `example.com` no longer match what the chat client turns
/// into a ping or a link.
pub const DEFUSE: char = '\u{200B}';

/// Appended where a text was cut.
pub const ELLIPSIS: &str = "…";

/// Words that notify a whole channel or team when a client still reads them as mentions.
const BROADCASTS: [&str; 4] = ["channel", "here", "everyone", "all"];

/// Slack counts text in UTF-16 code units (an emoji is two); counting them, never fewer
/// than characters, keeps a cut text within the limit whichever Slack applies.
pub fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// `text` escaped for Slack (`&`, `<`, `>` as `&amp;`, `&lt;`, `&gt;`, so `<!channel>`
/// or `<@U123>` cannot be written), with broadcasts and links defused, in at most `max`
/// UTF-16 units (ellipsis included) when `max` is given.
pub fn slack(text: &str, max: Option<usize>) -> String {
    let defused = defuse(text);
    let pieces = defused.chars().map(|c| match c {
        '&' => Cow::Borrowed("&amp;"),
        '<' => Cow::Borrowed("&lt;"),
        '>' => Cow::Borrowed("&gt;"),
        other => Cow::Owned(other.to_string()),
    });
    fit(pieces, max, utf16_len)
}

/// `text` for an Adaptive Card TextBlock or FactSet value in Teams: every character the
/// card's Markdown reads as formatting is escaped with a backslash (`*`, `_`, `[`, `]`,
/// `(`, `)`, `` ` ``, `~`, `<`, `>`, `#`, `|`, `\`), and so are list markers at the start
/// of a line (`-`, `+`, `1.`), so `<at>`…`</at>`, `**bold**` or `[x](https://…)` show as
/// typed; broadcasts and links are defused as for Slack. At most `max` characters.
pub fn teams(text: &str, max: Option<usize>) -> String {
    let defused = defuse(text);
    let mut pieces = Vec::with_capacity(defused.len());
    for line in defused.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let (lead, rest) = line.split_at(indent);
        pieces.extend(lead.chars().map(|c| Cow::Owned(c.to_string())));
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        for (index, c) in rest.chars().enumerate() {
            let at_start = index == 0 && matches!(c, '-' | '+');
            let numbered = digits > 0 && index == digits && matches!(c, '.' | ')');
            let special = matches!(
                c,
                '\\' | '*' | '_' | '[' | ']' | '(' | ')' | '`' | '~' | '<' | '>' | '#' | '|'
            );
            pieces.push(if at_start || numbered || special {
                Cow::Owned(format!("\\{c}"))
            } else {
                Cow::Owned(c.to_string())
            });
        }
    }
    fit(pieces.into_iter(), max, |piece| piece.chars().count())
}

/// An already escaped Slack text cut to `max` UTF-16 units, never inside an entity
/// (`&amp;`): for limits applied to a message after it was made (a template's output).
pub fn cut_slack_escaped(text: &str, max: usize) -> String {
    if utf16_len(text) <= max {
        return text.to_owned();
    }
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let entity = (c == '&').then(|| rest.find(';')).flatten().filter(|end| {
            *end <= 10
                && rest[1..*end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '#')
        });
        let len = entity.map_or(c.len_utf8(), |end| end + 1);
        pieces.push(Cow::Borrowed(&rest[..len]));
        rest = &rest[len..];
    }
    fit(pieces.into_iter(), Some(max), utf16_len)
}

/// An already escaped Teams text cut to at most `max` bytes, never between a backslash
/// and the character it escapes: for the card-wide size budget.
pub fn cut_teams_escaped(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut pieces = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let mut end = start + c.len_utf8();
        if c == '\\'
            && let Some((next, escaped)) = chars.next()
        {
            end = next + escaped.len_utf8();
        }
        pieces.push(Cow::Borrowed(&text[start..end]));
    }
    fit(pieces.into_iter(), Some(max_bytes), str::len)
}

/// Joins `pieces` (each kept whole: an escaped character is never split) into at most
/// `max` units as `measure` counts them, ending with an ellipsis when something was left
/// out.
fn fit<'a>(
    pieces: impl Iterator<Item = Cow<'a, str>>,
    max: Option<usize>,
    measure: impl Fn(&str) -> usize,
) -> String {
    let pieces: Vec<Cow<'a, str>> = pieces.collect();
    let Some(max) = max else {
        return pieces.concat();
    };
    let total: usize = pieces.iter().map(|piece| measure(piece)).sum();
    if total <= max {
        return pieces.concat();
    }
    let budget = max.saturating_sub(measure(ELLIPSIS));
    let mut out = String::new();
    let mut used = 0;
    for piece in &pieces {
        let size = measure(piece);
        if used + size > budget {
            break;
        }
        out.push_str(piece);
        used += size;
    }
    let kept = out.trim_end().len();
    out.truncate(kept);
    out.push_str(ELLIPSIS);
    out
}

/// Breaks what a chat client would turn into a ping or a link: `@everyone`, `@here`,
/// `@channel`, `@all` get [`DEFUSE`] after their `@`; in a word that looks like an
/// address (`https://…`, `www.…`, `name.tld`, `someone@example.com`) every `.` and the
/// `:` of `://` get it after them.
pub fn defuse(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() {
            defuse_word(&word, &mut out);
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    defuse_word(&word, &mut out);
    out
}

fn defuse_word(word: &str, out: &mut String) {
    let linkish = looks_like_address(word);
    let mut rest = word;
    while let Some(c) = rest.chars().next() {
        let after = &rest[c.len_utf8()..];
        out.push(c);
        let mention = c == '@' && is_broadcast(after);
        let link = linkish && (c == '.' || (c == ':' && after.starts_with("//")));
        if mention || link {
            out.push(DEFUSE);
        }
        rest = after;
    }
}

fn is_broadcast(after_at: &str) -> bool {
    BROADCASTS.iter().any(|name| {
        after_at
            .get(..name.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(name))
            && !after_at[name.len()..]
                .chars()
                .next()
                .is_some_and(|next| next.is_alphanumeric() || next == '_')
    })
}

/// A scheme (`x://`), `www.`, or a dot between a letter or digit and two letters
/// (`example.com`, `ann@corp.io`): what chat clients make clickable. A sentence's full stop
/// is followed by a space, so ordinary prose is left alone.
fn looks_like_address(word: &str) -> bool {
    if word.contains("://") || word.to_ascii_lowercase().contains("www.") {
        return true;
    }
    let chars: Vec<char> = word.chars().collect();
    chars.windows(4).any(|window| {
        window[0].is_alphanumeric()
            && window[1] == '.'
            && window[2].is_ascii_alphabetic()
            && window[3].is_ascii_alphabetic()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible(text: &str) -> String {
        text.replace(DEFUSE, "")
    }

    #[test]
    fn slack_control_characters_become_entities_so_no_mention_can_be_written() {
        let escaped = slack("<!channel> & <@U123|boss> say > hi", None);
        assert_eq!(
            escaped,
            "&lt;!channel&gt; &amp; &lt;@U123|boss&gt; say &gt; hi"
        );
    }

    #[test]
    fn broadcast_words_are_defused_but_read_the_same() {
        let escaped = slack(
            "ping @everyone and @Here, not @heres or me@here.example",
            None,
        );
        assert!(escaped.contains("@\u{200B}everyone"), "{escaped:?}");
        assert!(escaped.contains("@\u{200B}Here,"), "{escaped:?}");
        assert!(escaped.contains("@heres"), "{escaped:?}");
        assert_eq!(
            visible(&escaped),
            "ping @everyone and @Here, not @heres or me@here.example"
        );
    }

    #[test]
    fn addresses_are_defused_and_prose_is_not() {
        let text = "See https://evil.example/x or www.evil.example or evil.com. Done. Budget 3.5k";
        let escaped = slack(text, None);
        assert!(
            escaped.contains("https:\u{200B}//evil.\u{200B}example/x"),
            "{escaped:?}"
        );
        assert!(escaped.contains("evil.\u{200B}com.\u{200B}"), "{escaped:?}");
        assert!(escaped.contains(" Done. Budget 3.5k"), "{escaped:?}");
        assert_eq!(visible(&escaped), text);
    }

    #[test]
    fn a_cut_text_fits_its_limit_ends_with_an_ellipsis_and_splits_no_entity() {
        let text = "&".repeat(100);
        let cut = slack(&text, Some(23));
        assert!(utf16_len(&cut) <= 23, "{cut}");
        assert_eq!(cut, format!("{}…", "&amp;".repeat(4)));
        assert_eq!(slack("short", Some(150)), "short");
    }

    #[test]
    fn slack_limits_count_utf16_units() {
        let cut = slack(&"😀".repeat(100), Some(150));
        assert!(utf16_len(&cut) <= 150);
        assert_eq!(cut.chars().count(), 75);
    }

    #[test]
    fn cutting_escaped_slack_text_keeps_entities_whole() {
        let cut = cut_slack_escaped("ab&amp;cd", 6);
        assert_eq!(cut, "ab…");
        assert_eq!(cut_slack_escaped("ab&amp;cd", 9), "ab&amp;cd");
    }

    #[test]
    fn teams_markdown_and_mentions_are_escaped() {
        let escaped = teams(
            "**bold** _it_ [x](https://evil.example) <at>All</at> `c` ~s~ # h\n- item\n12. item\n  + item",
            None,
        );
        assert!(
            escaped.starts_with(r"\*\*bold\*\* \_it\_ \[x\]\(https:"),
            "{escaped}"
        );
        assert!(escaped.contains(r"\<at\>All\</at\>"), "{escaped}");
        assert!(escaped.contains(r"\`c\` \~s\~ \# h"), "{escaped}");
        assert!(
            escaped.contains("\n\\- item\n12\\. item\n  \\+ item"),
            "{escaped}"
        );
    }

    #[test]
    fn cutting_escaped_teams_text_never_strands_a_backslash() {
        let escaped = teams(&"*".repeat(50), None);
        let cut = cut_teams_escaped(&escaped, 12);
        assert!(cut.len() <= 12, "{cut}");
        assert_eq!(cut, format!("{}…", r"\*".repeat(4)));
    }
}

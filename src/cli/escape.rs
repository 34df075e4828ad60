//! Text that came from outside (a datanode's error, a peer's address, an operator's reason,
//! a bundle's fields) shown on a terminal: control characters are written as escapes, so
//! one field stays on one line and no escape sequence reaches the terminal.
//!
//! JSON and CSV output have their own, correct escaping and do not use this.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as is: control characters (C0, DEL, C1) and the
/// invisible marks that reorder or hide text (bidirectional overrides and isolates).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character written as `\n`, `\r`, `\t` or `\u{1b}`; text
/// without one comes back borrowed. A backslash is kept as is: cells that hold JSON (the
/// `events` table) already escape their own, and a forged `\n` cannot break a line.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_kept_as_is() {
        assert!(matches!(
            escape_text("flush failed: disk busy → peer 2"),
            Cow::Borrowed("flush failed: disk busy → peer 2")
        ));
    }

    #[test]
    fn control_characters_become_escapes_on_one_line() {
        assert_eq!(
            escape_text("failed\noutcome:         completed\r\t\u{1b}[31mred\u{7f}\u{9b}"),
            "failed\\noutcome:         completed\\r\\t\\u{1b}[31mred\\u{7f}\\u{9b}"
        );
        assert_eq!(escape_text("a\\nb"), "a\\nb");
        assert_eq!(escape_text("left\u{202e}thgir"), "left\\u{202e}thgir");
        assert_eq!(escape_text("nul\0"), "nul\\u{0}");
    }
}

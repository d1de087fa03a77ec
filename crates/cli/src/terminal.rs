//! Text from outside (names and messages from a plan, output of a step, errors of a cloud) made
//! safe to print on a terminal.
//!
//! A terminal acts on control characters: `\r` and escape sequences can move the cursor and
//! erase or overwrite a line (so a step name could fake a PASS in the summary), and others set
//! the window title or write to the clipboard (OSC 52). Every line `qa-run` prints for people
//! passes what it did not write itself through [`safe`] (one line) or [`safe_lines`] (a
//! message of several lines), which show each such character as a visible escape instead:
//! `\x1b`, `\r`, `\n`, `\u{9b}`, `\u{202e}`.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` as one line: every control character, line ends included, shown as an escape.
pub(crate) fn safe(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// `text` with its line ends kept and every other control character shown as an escape.
pub(crate) fn safe_lines(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// Whether a terminal could act on `c`: C0 controls but tab, DEL, C1 controls (`\u{9b}` starts a
/// sequence like ESC `[` does), and the marks that reorder text (bidirectional overrides).
fn is_unsafe(c: char, keep_newlines: bool) -> bool {
    match c {
        '\t' => false,
        '\n' => !keep_newlines,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            true
        }
        _ => false,
    }
}

fn escape(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c, keep_newlines)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_unsafe(c, keep_newlines) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_untouched() {
        let t = "step:build@box — ünïcode\tand a tab";
        assert!(matches!(safe(t), Cow::Borrowed(_)));
        assert_eq!(safe(t), t);
    }

    #[test]
    fn hostile_text_is_shown_not_obeyed() {
        let cases = [
            // Erase the line and write a fake verdict over it.
            ("ok\r\x1b[2KPASS", "ok\\r\\x1b[2KPASS"),
            // A fake summary line on a line of its own.
            (
                "boom\n  PASS        all@box: ok",
                "boom\\n  PASS        all@box: ok",
            ),
            // Clipboard write and window title (OSC 52, OSC 0), ended by BEL and by ST.
            ("\x1b]52;c;ZWNobyBoaQ==\x07", "\\x1b]52;c;ZWNobyBoaQ==\\x07"),
            ("\x1b]0;owned\x1b\\", "\\x1b]0;owned\\x1b\\"),
            // The one-byte CSI, DEL, NUL and a backspace.
            ("a\u{9b}2Jb\u{7f}\0\x08", "a\\u{9b}2Jb\\x7f\\x00\\x08"),
            // Text made to read backwards.
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
        ];
        for (input, shown) in cases {
            assert_eq!(safe(input), shown, "{input:?}");
        }
    }

    #[test]
    fn messages_of_several_lines_keep_their_line_ends_only() {
        assert_eq!(
            safe_lines("plan.yaml: cannot run this plan:\n  - \x1b[31mred\r"),
            "plan.yaml: cannot run this plan:\n  - \\x1b[31mred\\r"
        );
    }
}

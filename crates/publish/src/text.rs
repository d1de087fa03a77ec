//! Turning untrusted text (anything a test printed, any name from a plan) into text that is inert
//! in the format it lands in: HTML, XML, Markdown, file names.
//!
//! Every publisher goes through these functions; none of them writes untrusted text directly.

use std::fmt::Write as _;

/// Escapes text for HTML element content and for double- or single-quoted attribute values.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    push_html(&mut out, text);
    out
}

/// Appends `text` escaped for HTML to `out`.
pub fn push_html(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters (ANSI escape introducers among them) have no business in a page.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// Escapes text for XML 1.0 content and attributes. Characters XML 1.0 cannot carry at all
/// (most C0 controls, ESC among them) become U+FFFD: a report that does not parse is worse than
/// a replaced byte. In attributes, tab and line ends are written as character references so that
/// attribute-value normalisation keeps them.
pub fn xml(text: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' if attribute => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Text with ANSI escape sequences (CSI, OSC, two-byte escapes) removed and `\r`-overwritten line
/// starts collapsed the way a terminal would show them, for places that show plain text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // CSI: parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') | Some('P') | Some('_') | Some('^') => {
                // OSC/DCS/APC/PM: up to BEL or ST (ESC \).
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            Some('(') | Some(')') | Some('#') => {
                chars.next();
            }
            _ => {}
        }
    }
    // A carriage return not followed by a line feed overwrites the line: keep what was last drawn.
    let mut result = String::with_capacity(out.len());
    for (i, line) in out.split('\n').enumerate() {
        if i > 0 {
            result.push('\n');
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        result.push_str(line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or(""));
    }
    result
}

/// A name usable as one path component: ASCII letters, digits, `.`, `_` and `-`; never empty,
/// never `.` or `..`, at most 80 bytes.
pub fn slug(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        s = format!("_{s}");
    }
    s
}

/// Escapes text for a Markdown table cell or paragraph: HTML-significant characters become
/// entities (GitHub renders inline HTML), and Markdown punctuation is backslash-escaped.
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '!' | '~' | '(' | ')' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Wall time for people: `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`.
pub fn duration(ms: u64) -> String {
    let mut s = String::new();
    let secs = ms / 1000;
    if ms < 1000 {
        let _ = write!(s, "{ms} ms");
    } else if secs < 60 {
        let _ = write!(s, "{:.1} s", ms as f64 / 1000.0);
    } else if secs < 3600 {
        let _ = write!(s, "{}m {:02}s", secs / 60, secs % 60);
    } else {
        let _ = write!(s, "{}h {:02}m", secs / 3600, (secs % 3600) / 60);
    }
    s
}

/// A cost for people: `12.34 USD`.
pub fn cost(total: f64, currency: &str) -> String {
    format!("{total:.2} {currency}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_and_controls() {
        assert_eq!(
            html(r#""><img src=x onerror=alert(1)>"#),
            "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"
        );
        assert_eq!(html("<script>x</script>"), "&lt;script&gt;x&lt;/script&gt;");
        assert_eq!(html("a\u{1b}[31mb"), "a\u{FFFD}[31mb");
        assert_eq!(html("it's"), "it&#39;s");
    }

    #[test]
    fn xml_replaces_characters_xml_cannot_hold() {
        assert_eq!(xml("a\u{1b}b\u{0}c", false), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(xml("a\nb", true), "a&#10;b");
        assert_eq!(xml("a\nb]]>", false), "a\nb]]&gt;");
    }

    #[test]
    fn strip_ansi_removes_sequences_and_overwritten_progress() {
        assert_eq!(strip_ansi("\u{1b}[1;31mFAIL\u{1b}[0m done"), "FAIL done");
        assert_eq!(strip_ansi("\u{1b}]0;title\u{7}text"), "text");
        assert_eq!(strip_ansi("10%\r50%\r100%\nnext\r\n"), "100%\nnext\n");
    }

    #[test]
    fn slug_is_one_safe_component() {
        assert_eq!(slug("../etc/passwd"), ".._etc_passwd");
        assert_eq!(slug(".."), "_..");
        assert_eq!(slug(""), "_");
        assert_eq!(slug("box-1.step_2"), "box-1.step_2");
    }

    #[test]
    fn markdown_cannot_open_html_or_break_tables() {
        assert_eq!(markdown("a|b <script>"), "a\\|b &lt;script&gt;");
        assert_eq!(markdown("[x](javascript:1)"), "\\[x\\]\\(javascript:1\\)");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(duration(7_380_000), "2h 03m");
    }
}

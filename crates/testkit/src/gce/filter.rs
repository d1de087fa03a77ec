//! The `filter` query parameter of list and aggregatedList, as far as clients of qa-run write it.
//!
//! Supported (from the v1 reference's description of `filter`):
//! - `field = value`, `field != value` (exact; the value may be quoted),
//! - `field eq regex`, `field ne regex` (RE2 subset: literals, `.`, `*`, `+`, `?`, `\` escapes;
//!   the whole value must match),
//! - `field:*` (the field is set) and `field:value`,
//! - nested fields with dots (`labels.test_id`, `scheduling.provisioningModel`),
//! - terms joined by `AND` or by juxtaposition in parentheses: `(labels.a = "1") (status = RUNNING)`.
//!
//! `OR` and `NOT` are refused as invalid filters, so a client that relies on them notices.
//! A link-valued field (`zone`, `machineType`) compares by its last segment when the value has no
//! `/`.

use serde_json::Value;

/// A parsed filter: every term must hold.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter {
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq)]
struct Term {
    field: String,
    op: Op,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Regex,
    NotRegex,
    Has,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Word(String),
    Quoted(String),
    Op(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '"' | '\'' => {
                let mut v = String::new();
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && i + 1 < chars.len() && chars[i + 1] == c {
                        i += 1;
                    }
                    v.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err("unterminated quote".into());
                }
                i += 1;
                out.push(Tok::Quoted(v));
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op("!="));
                i += 2;
            }
            '=' => {
                out.push(Tok::Op("="));
                i += 1;
            }
            ':' => {
                out.push(Tok::Op(":"));
                i += 1;
            }
            _ => {
                let mut w = String::new();
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '(' | ')' | '=' | ':' | '"' | '\'')
                    && (chars[i] != '!' || chars.get(i + 1) != Some(&'='))
                {
                    w.push(chars[i]);
                    i += 1;
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

impl Filter {
    /// Parses `filter`; the error says what is not supported.
    pub fn parse(filter: &str) -> Result<Filter, String> {
        let toks = tokenize(filter)?;
        let mut terms = Vec::new();
        let mut i = 0;
        let mut depth = 0usize;
        while i < toks.len() {
            match &toks[i] {
                Tok::Open => {
                    depth += 1;
                    i += 1;
                }
                Tok::Close => {
                    depth = depth.checked_sub(1).ok_or("unbalanced parentheses")?;
                    i += 1;
                }
                Tok::Word(w) if w.eq_ignore_ascii_case("AND") => i += 1,
                Tok::Word(w) if w.eq_ignore_ascii_case("OR") || w.eq_ignore_ascii_case("NOT") => {
                    return Err(format!("'{w}' is not supported by the emulator"));
                }
                Tok::Word(field) => {
                    let op = match toks.get(i + 1) {
                        Some(Tok::Op("=")) => Op::Eq,
                        Some(Tok::Op("!=")) => Op::Ne,
                        Some(Tok::Op(":")) => Op::Has,
                        Some(Tok::Word(w)) if w == "eq" => Op::Regex,
                        Some(Tok::Word(w)) if w == "ne" => Op::NotRegex,
                        other => {
                            return Err(format!(
                                "expected an operator after {field}, got {other:?}"
                            ));
                        }
                    };
                    let value = match toks.get(i + 2) {
                        Some(Tok::Word(v)) | Some(Tok::Quoted(v)) => v.clone(),
                        other => {
                            return Err(format!("expected a value after {field}, got {other:?}"));
                        }
                    };
                    terms.push(Term {
                        field: field.clone(),
                        op,
                        value,
                    });
                    i += 3;
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        if depth != 0 {
            return Err("unbalanced parentheses".into());
        }
        Ok(Filter { terms })
    }

    /// Whether `resource` passes every term.
    pub fn matches(&self, resource: &Value) -> bool {
        self.terms.iter().all(|t| t.matches(resource))
    }
}

impl Term {
    fn matches(&self, resource: &Value) -> bool {
        let mut v = resource;
        for part in self.field.split('.') {
            match v.get(part) {
                Some(next) => v = next,
                None => return matches!(self.op, Op::Ne | Op::NotRegex),
            }
        }
        let mut actual = match v {
            Value::String(s) => s.clone(),
            Value::Null => return matches!(self.op, Op::Ne | Op::NotRegex),
            other => other.to_string(),
        };
        if actual.contains('/') && !self.value.contains('/') {
            actual = actual.rsplit('/').next().unwrap_or("").to_string();
        }
        match self.op {
            Op::Eq => actual == self.value,
            Op::Ne => actual != self.value,
            Op::Regex => full_match(&self.value, &actual),
            Op::NotRegex => !full_match(&self.value, &actual),
            Op::Has => self.value == "*" || actual == self.value,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Atom {
    Any,
    Lit(char),
}

/// Whether regex `pattern` (literals, `.`, `*`, `+`, `?`, `\x`) matches all of `text`.
fn full_match(pattern: &str, text: &str) -> bool {
    let mut atoms: Vec<(Atom, char)> = Vec::new(); // (atom, quantifier or ' ')
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        let atom = match c {
            '.' => Atom::Any,
            '\\' => Atom::Lit(it.next().unwrap_or('\\')),
            c => Atom::Lit(c),
        };
        let q = match it.peek() {
            Some(&q @ ('*' | '+' | '?')) => {
                it.next();
                q
            }
            _ => ' ',
        };
        atoms.push((atom, q));
    }
    let text: Vec<char> = text.chars().collect();
    fn ok(a: Atom, c: char) -> bool {
        match a {
            Atom::Any => true,
            Atom::Lit(l) => l == c,
        }
    }
    fn go(atoms: &[(Atom, char)], text: &[char]) -> bool {
        let Some(&(a, q)) = atoms.first() else {
            return text.is_empty();
        };
        match q {
            '*' | '+' | '?' => {
                let min = usize::from(q == '+');
                let max = if q == '?' { 1 } else { usize::MAX };
                let mut n = 0;
                while n < text.len() && n < max && ok(a, text[n]) {
                    n += 1;
                }
                (min..=n).rev().any(|k| go(&atoms[1..], &text[k..]))
            }
            _ => !text.is_empty() && ok(a, text[0]) && go(&atoms[1..], &text[1..]),
        }
    }
    go(&atoms, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inst() -> Value {
        json!({
            "name": "qa-run1-0",
            "status": "RUNNING",
            "zone": "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a",
            "labels": {"qa-run": "1", "test_id": "run1"},
            "scheduling": {"automaticRestart": false}
        })
    }

    #[test]
    fn label_forms_the_clients_send() {
        for f in [
            "labels.test_id=run1",
            "labels.test_id = \"run1\"",
            "labels.test_id eq run1",
            "labels.test_id eq \"run.*\"",
            "(labels.qa-run = 1) AND (labels.test_id = \"run1\")",
            "(labels.qa-run = \"1\") (status = RUNNING)",
            "labels.qa-run:*",
            "zone = us-central1-a",
            "scheduling.automaticRestart = false",
            "labels.other != x",
            "name ne \"other-.*\"",
        ] {
            assert!(Filter::parse(f).unwrap().matches(&inst()), "{f}");
        }
        for f in [
            "labels.test_id = run2",
            "labels.test_id eq run",
            "labels.missing = 1",
            "labels.missing:*",
            "(labels.qa-run = 1) AND (status = STOPPING)",
        ] {
            assert!(!Filter::parse(f).unwrap().matches(&inst()), "{f}");
        }
    }

    #[test]
    fn unsupported_filters_are_errors() {
        assert!(Filter::parse("labels.a = 1 OR labels.b = 2").is_err());
        assert!(Filter::parse("(labels.a = 1").is_err());
        assert!(Filter::parse("labels.a").is_err());
        assert!(Filter::parse("labels.a = \"1").is_err());
    }

    #[test]
    fn regex_subset() {
        assert!(full_match("qa-.*", "qa-123"));
        assert!(full_match("a\\.b+c?", "a.bb"));
        assert!(!full_match("a\\.b", "axb"));
        assert!(!full_match("qa", "qa-1"));
    }
}

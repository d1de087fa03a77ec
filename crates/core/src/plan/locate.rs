//! Finding a key path (`steps[2].uses`) in a plan file, for problems found after the plan loaded
//! (when a run is set up with an engine that lacks something the plan needs).

use std::path::Path;

use super::tree::{self, Value};

/// The line and column of `key_path` in the plan file at `path`, or of its nearest ancestor in
/// the file; `None` when the file cannot be read or parsed, or for plans built in code.
pub(crate) fn locate(path: &Path, key_path: &str) -> Option<(u64, u64)> {
    let src = std::fs::read_to_string(path).ok()?;
    let root = tree::parse(&src).ok()?;
    let mut node = &root;
    let mut best = node.pos;
    for segment in segments(key_path) {
        let next = match (segment, &node.value) {
            (Segment::Key(k), Value::Map(entries)) => entries
                .iter()
                .find(|(key, _)| matches!(&key.value, Value::Str(s) if s == k))
                // A key points at itself rather than at its value.
                .map(|(key, value)| (key.pos, value)),
            (Segment::Index(i), Value::Seq(items)) => items.get(i).map(|n| (n.pos, n)),
            _ => None,
        };
        let Some((pos, next)) = next else { break };
        best = pos.or(best);
        node = next;
    }
    best.map(|p| (p.line, p.column))
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `steps[2].uses` → `steps`, `2`, `uses`.
fn segments(key_path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key_path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(close) = rest.find(']') {
            if let Ok(i) = rest[1..close].parse() {
                out.push(Segment::Index(i));
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_are_found_or_fall_back_to_their_parent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.yaml");
        std::fs::write(
            &p,
            "name: x\nsecrets: [A, B]\nsteps:\n  - name: a\n    command: true\n  - name: b\n    uses: thing\n",
        )
        .unwrap();
        assert_eq!(locate(&p, "steps[1].uses"), Some((7, 5)));
        assert_eq!(locate(&p, "secrets[1]"), Some((2, 14)));
        assert_eq!(locate(&p, "steps[1].nothing"), Some((6, 5)));
        assert_eq!(locate(&p, "steps[9]"), Some((3, 1)));
        assert_eq!(locate(&dir.path().join("absent.yaml"), "steps"), None);
    }
}

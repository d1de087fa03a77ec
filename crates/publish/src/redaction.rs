//! Applying a [`Redactor`] to everything a publisher writes: the report's every string, logs and
//! recordings.
//!
//! The recorder already masks secrets as output arrives; publishing masks again because a report
//! may come from an older run, another tool, or a plan whose secret list has since grown.

use qa_core::redact::Redactor;
use qa_core::report::Report;
use serde_json::Value;

/// The report with every string in it (messages, log tails, facts, names) redacted.
pub fn report(report: &Report, redactor: &Redactor) -> Report {
    let Ok(mut value) = serde_json::to_value(report) else {
        return report.clone();
    };
    value_in_place(&mut value, redactor);
    serde_json::from_value(value).unwrap_or_else(|_| report.clone())
}

fn value_in_place(value: &mut Value, redactor: &Redactor) {
    match value {
        Value::String(s) => {
            let r = redactor.redact(s);
            if r != *s {
                *s = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| value_in_place(v, redactor)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut v) in old {
                value_in_place(&mut v, redactor);
                map.insert(redactor.redact(&k), v);
            }
        }
        _ => {}
    }
}

/// An asciicast v2 recording with secrets masked in its header and its event data.
///
/// A secret split across two output events is masked too: event data is joined per line before
/// masking, and the masked line is put back into the first event of that line. Lines that are not
/// JSON are dropped, since a player could not use them anyway.
pub fn cast(text: &str, redactor: &Redactor) -> String {
    let mut out = String::with_capacity(text.len());
    let _ = cast_stream(text.as_bytes(), redactor, |item| {
        out.push_str(&match item {
            CastItem::Header(h) => h.to_string(),
            CastItem::Event(e) => e.to_string(),
        });
        out.push('\n');
        Ok(())
    });
    out
}

/// A piece of a masked recording, as [`cast_stream`] gives it.
#[derive(Debug)]
pub enum CastItem {
    /// The header (the first line), masked.
    Header(Value),
    /// An event (`[time, code, data]`), its data masked.
    Event(Value),
}

/// The most data of one line of output held to mask it whole; a longer line is masked in parts.
const LINE_HELD_MAX: usize = 1 << 20;

/// [`cast`] as a stream: reads the recording from `input` a line at a time and gives each masked
/// item to `emit` in order, holding no more than one line of output (at most
/// 1 MiB of data) at once. Gives nothing if the first line is not a JSON header.
pub fn cast_stream(
    input: impl std::io::BufRead,
    redactor: &Redactor,
    mut emit: impl FnMut(CastItem) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut lines = input.split(b'\n');
    let Some(header) = lines.next().transpose()? else {
        return Ok(());
    };
    match serde_json::from_slice::<Value>(&header) {
        Ok(mut h) => {
            value_in_place(&mut h, redactor);
            emit(CastItem::Header(h))?;
        }
        Err(_) => return Ok(()),
    }
    let mut group: Vec<(f64, String, String)> = Vec::new();
    let mut held = 0;
    let mut flush = |group: &mut Vec<(f64, String, String)>, held: &mut usize| {
        mask_across_events(group, redactor);
        *held = 0;
        for (t, code, data) in group.drain(..) {
            emit(CastItem::Event(Value::Array(vec![
                serde_json::json!(t),
                Value::String(code),
                Value::String(data),
            ])))?;
        }
        Ok::<(), std::io::Error>(())
    };
    for line in lines {
        let line = line?;
        let Ok(Value::Array(ev)) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let (Some(t), Some(code), Some(data)) = (
            ev.first().and_then(Value::as_f64),
            ev.get(1).and_then(Value::as_str),
            ev.get(2).and_then(Value::as_str),
        ) else {
            continue;
        };
        // A line of output ends where an event ends a line, or where the stream changes.
        if group.last().is_some_and(|last| last.1 != code) {
            flush(&mut group, &mut held)?;
        }
        held += data.len();
        let ends_line = data.contains(['\n', '\r']);
        group.push((t, code.to_string(), data.to_string()));
        if ends_line || held >= LINE_HELD_MAX {
            flush(&mut group, &mut held)?;
        }
    }
    flush(&mut group, &mut held)
}

/// Groups consecutive output events into lines and masks each line as a whole.
fn mask_across_events(events: &mut [(f64, String, String)], redactor: &Redactor) {
    let n = events.len();
    let mut start = 0;
    while start < n {
        let mut end = start;
        while !events[end].2.contains(['\n', '\r'])
            && end + 1 < n
            && events[end + 1].1 == events[start].1
        {
            end += 1;
        }
        let joined: String = events[start..=end].iter().map(|e| e.2.as_str()).collect();
        let masked = redactor.redact(&joined);
        // Unchanged lines keep their original event split, and so their timing.
        if masked != joined {
            events[start].2 = masked;
            for e in &mut events[start + 1..=end] {
                e.2.clear();
            }
        }
        start = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_masks_secret_split_across_events() {
        let r = Redactor::new(["topsecret".to_string()]);
        let cast_text = "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"pw=tops\"]\n[0.2,\"o\",\"ecret\\r\\n\"]\n[0.3,\"o\",\"ok topsecret\\n\"]\nnot json\n";
        let out = cast(cast_text, &r);
        assert!(!out.contains("topsecret"), "{out}");
        assert!(!out.contains("tops\""), "{out}");
        assert_eq!(out.lines().count(), 4, "{out}");
        assert!(out.contains("[REDACTED]"));
    }

    #[test]
    fn a_long_recording_is_masked_a_line_at_a_time() {
        let r = Redactor::new(["topsecret".to_string()]);
        let mut text = String::from("{\"version\":2}\n");
        for i in 0..1000 {
            text.push_str(&format!(
                "[{i}.0,\"o\",\"line {i} tops\"]\n[{i}.5,\"o\",\"ecret\\n\"]\n"
            ));
        }
        let mut items = Vec::new();
        cast_stream(text.as_bytes(), &r, |item| {
            items.push(item);
            Ok(())
        })
        .unwrap();
        assert_eq!(items.len(), 2001);
        let CastItem::Event(e) = &items[1999] else {
            panic!("{:?}", items[1999])
        };
        assert_eq!(e[2], "line 999 [REDACTED]\n");
        assert!(matches!(&items[2000], CastItem::Event(e) if e[2] == ""));
    }

    #[test]
    fn report_strings_are_masked_everywhere() {
        let r = Redactor::new(["hunter22".to_string()]);
        let mut rep = crate::testdata::report();
        rep.steps[0].log_tail = Some("password hunter22".into());
        rep.machines[0]
            .facts
            .insert("note".into(), "https://u:hunter22@h/x".into());
        let out = report(&rep, &r);
        let json = serde_json::to_string(&out).unwrap();
        assert!(!json.contains("hunter22"), "{json}");
    }
}

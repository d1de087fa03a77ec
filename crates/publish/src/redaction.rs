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
    let mut lines = text.lines();
    let mut out = String::with_capacity(text.len());
    let Some(header) = lines.next() else {
        return out;
    };
    match serde_json::from_str::<Value>(header) {
        Ok(mut h) => {
            value_in_place(&mut h, redactor);
            out.push_str(&h.to_string());
            out.push('\n');
        }
        Err(_) => return out,
    }
    let mut events: Vec<(f64, String, String)> = Vec::new();
    for line in lines {
        if let Ok(Value::Array(ev)) = serde_json::from_str::<Value>(line) {
            if let (Some(t), Some(code), Some(data)) = (
                ev.first().and_then(Value::as_f64),
                ev.get(1).and_then(Value::as_str),
                ev.get(2).and_then(Value::as_str),
            ) {
                events.push((t, code.to_string(), data.to_string()));
            }
        }
    }
    mask_across_events(&mut events, redactor);
    for (t, code, data) in events {
        out.push_str(
            &Value::Array(vec![
                serde_json::json!(t),
                Value::String(code),
                Value::String(data),
            ])
            .to_string(),
        );
        out.push('\n');
    }
    out
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

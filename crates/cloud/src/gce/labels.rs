//! qa-run's tags as Compute Engine labels, and the names of what qa-run makes there.
//!
//! Label keys and values take only lowercase letters, digits, `_` and `-`, at most 63 characters
//! (keys start with a letter), so the [`qa_core::tags`] names are spelled with `_` for `:`
//! (`qa-run_test-id`), and a value that does not fit is kept readable and made unique: its
//! lowercased, filtered start, `-`, and 8 hex digits of its SHA-256. The same value always maps
//! to the same label, so a sweep finds by label what a run labelled. The keep-until time is
//! written `2026-12-02t10-00-00z` so that the janitor can read it back.
//!
//! Reservations have no labels in the v1 API: their name starts with [`reservation_prefix`] of
//! the test id, and their description carries the test id in full
//! ([`reservation_description`]), which is what cancelling compares.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

pub use qa_core::tags::{
    CLIENT_TOKEN, CREATED_BY, CREATED_BY_VALUE, KEEP_UNTIL, PLAN, RUN_ID, TEST_ID, USER,
};

/// The longest label key, label value or resource name.
const MAX: usize = 63;

fn hash8(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..4])
}

/// A tag name as a label key: `:` and anything else a key refuses become `_`.
pub fn label_key(tag: &str) -> String {
    let mut k: String = tag
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '_',
        })
        .collect();
    if !k.starts_with(|c: char| c.is_ascii_lowercase()) {
        k.insert(0, 'k');
    }
    k.truncate(MAX);
    k
}

/// A tag value as a label value (see the [module docs](self)).
pub fn label_value(value: &str) -> String {
    let fits = value.len() <= MAX
        && value
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if fits {
        return value.to_string();
    }
    let readable: String = value
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '_',
        })
        .take(MAX - 9)
        .collect();
    format!("{readable}-{}", hash8(value))
}

/// An RFC 3339 UTC time (`2026-12-02T10:00:00Z`, fractions of a second dropped) as a label
/// value (`2026-12-02t10-00-00z`).
pub fn keep_until_value(rfc3339: &str) -> String {
    let whole = match (rfc3339.find('.'), rfc3339.rfind(['Z', 'z'])) {
        (Some(dot), Some(z)) if dot < z => format!("{}{}", &rfc3339[..dot], &rfc3339[z..]),
        _ => rfc3339.to_string(),
    };
    whole.to_ascii_lowercase().replace(':', "-")
}

/// A keep-until label value read back as an RFC 3339 time.
pub fn keep_until_rfc3339(label: &str) -> Option<String> {
    let (date, time) = label.split_once('t')?;
    let time = time.strip_suffix('z')?;
    let mut parts = time.splitn(3, '-');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(format!("{date}T{h}:{m}:{s}Z"))
}

/// The labels of a resource qa-run makes: `tags` (a run's), the test id and
/// [`CREATED_BY`] = [`CREATED_BY_VALUE`] unless `tags` sets them, then `extra`; every key and
/// value as a label takes it.
pub fn resource_labels(
    tags: &BTreeMap<String, String>,
    test_id: &str,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut all = tags.clone();
    all.entry(TEST_ID.into())
        .or_insert_with(|| test_id.to_string());
    all.entry(CREATED_BY.into())
        .or_insert_with(|| CREATED_BY_VALUE.into());
    for (k, v) in extra {
        all.insert(k.to_string(), v.to_string());
    }
    all.iter()
        .map(|(k, v)| {
            let value = if k == KEEP_UNTIL {
                keep_until_value(v)
            } else {
                label_value(v)
            };
            (label_key(k), value)
        })
        .collect()
}

/// The list filter that selects what carries the test id's label.
pub fn test_id_filter(test_id: &str) -> String {
    format!(
        "labels.{} = \"{}\"",
        label_key(TEST_ID),
        label_value(test_id)
    )
}

/// The list filter that selects what qa-run made.
pub fn made_by_qa_run_filter() -> String {
    format!(
        "labels.{} = \"{}\"",
        label_key(CREATED_BY),
        label_value(CREATED_BY_VALUE)
    )
}

/// A name Compute Engine accepts (a lowercase letter, then lowercase letters, digits and `-`, at
/// most 63, not ending in `-`) made from `parts`: kept readable, and when something had to be
/// cut or changed, made unique by 8 hex digits of the parts' SHA-256.
pub fn resource_name(parts: &[&str]) -> String {
    let raw = parts.join("-");
    let mut s = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        };
        if !(c == '-' && s.ends_with('-')) {
            s.push(c);
        }
    }
    let mut s = s.trim_matches('-').to_string();
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.insert_str(0, "qa-");
    }
    if s != raw || s.len() > MAX {
        s.truncate(MAX - 9);
        let s = s.trim_end_matches('-');
        return format!("{s}-{}", hash8(&raw));
    }
    s
}

/// The start of the name of every reservation made for `test_id`.
pub fn reservation_prefix(test_id: &str) -> String {
    format!("qa-r{}", hash8(test_id))
}

/// The name of a reservation of `machine_type` in `zone` for `test_id`; `token` (lowercase hex)
/// tells apart the reservations of one test id, zone and type.
pub fn reservation_name(test_id: &str, zone: &str, machine_type: &str, token: &str) -> String {
    let rest = resource_name(&[zone, machine_type]);
    let mut name = format!("{}-{token}-{rest}", reservation_prefix(test_id));
    name.truncate(MAX);
    name.trim_end_matches('-').to_string()
}

/// The description of a reservation made for `test_id` (reservations take no labels).
pub fn reservation_description(test_id: &str) -> String {
    format!("made by qa-run; {TEST_ID}={test_id}")
}

/// Whether a reservation's description says it was made for `test_id`.
pub fn reservation_is_of(description: Option<&str>, test_id: &str) -> bool {
    description.is_some_and(|d| d == reservation_description(test_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names_become_label_keys() {
        assert_eq!(label_key(TEST_ID), "qa-run_test-id");
        assert_eq!(label_key(CREATED_BY), "created-by");
        assert_eq!(label_key("9lives"), "k9lives");
    }

    #[test]
    fn values_that_fit_stay_and_others_are_readable_and_distinct() {
        assert_eq!(
            label_value("smoke-20261202t092300z"),
            "smoke-20261202t092300z"
        );
        let a = label_value("Nightly.2026-12-02");
        let b = label_value("nightly_2026-12-02");
        assert!(a.starts_with("nightly_2026-12-02-"), "{a}");
        assert_ne!(a, b);
        let long = label_value(&"x".repeat(200));
        assert_eq!(long.len(), 63);
        assert_eq!(long, label_value(&"x".repeat(200)));
        for v in [a, long] {
            assert!(
                v.bytes().all(|c| c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || c == b'-'
                    || c == b'_'),
                "{v}"
            );
        }
    }

    #[test]
    fn keep_until_reads_back() {
        let v = keep_until_value("2026-12-02T10:00:00Z");
        assert_eq!(v, "2026-12-02t10-00-00z");
        assert_eq!(
            keep_until_rfc3339(&v).as_deref(),
            Some("2026-12-02T10:00:00Z")
        );
        assert_eq!(keep_until_rfc3339("soon"), None);
        // What the engine writes has nanoseconds; the janitor needs to read it back.
        let v = keep_until_value("2026-12-02T17:27:25.397070634Z");
        assert_eq!(v, "2026-12-02t17-27-25z");
        assert_eq!(
            keep_until_rfc3339(&v).as_deref(),
            Some("2026-12-02T17:27:25Z")
        );
    }

    #[test]
    fn labels_carry_the_test_id_and_created_by() {
        let mut tags = BTreeMap::new();
        tags.insert(KEEP_UNTIL.to_string(), "2026-12-02T10:00:00Z".to_string());
        tags.insert(USER.to_string(), "Jane.Doe@example.com".to_string());
        let l = resource_labels(&tags, "smoke-1", &[]);
        assert_eq!(l["qa-run_test-id"], "smoke-1");
        assert_eq!(l["created-by"], "qa-run");
        assert_eq!(l["qa-run_keep-until"], "2026-12-02t10-00-00z");
        assert!(l["qa-run_user"].starts_with("jane_doe_example_com-"));
        assert_eq!(
            test_id_filter("smoke-1"),
            "labels.qa-run_test-id = \"smoke-1\""
        );
    }

    #[test]
    fn names_are_what_compute_engine_accepts() {
        assert_eq!(resource_name(&["qa", "smoke", "db-1"]), "qa-smoke-db-1");
        let n = resource_name(&["qa", "Smoke_20261202T092300Z-00ab", "db.1"]);
        assert!(n.starts_with("qa-smoke-20261202t092300z-00ab-db-1-"), "{n}");
        let long = resource_name(&["qa", &"r".repeat(100), "m"]);
        assert!(
            long.len() <= 63 && crate::gce::options::is_gce_name(&long),
            "{long}"
        );
        assert!(crate::gce::options::is_gce_name(&resource_name(&[
            "1", "-"
        ])));
        let r = reservation_name("smoke-1", "us-central1-a", "n2-standard-2", "0a1b2c");
        assert!(r.starts_with(&reservation_prefix("smoke-1")), "{r}");
        assert!(crate::gce::options::is_gce_name(&r), "{r}");
        assert_ne!(
            r,
            reservation_name("smoke-1", "us-central1-a", "n2-standard-2", "3d4e5f")
        );
        let long = reservation_name(
            "t",
            "northamerica-northeast1-a",
            "c3d-highmem-360-lssd",
            "0a1b2c",
        );
        assert!(crate::gce::options::is_gce_name(&long), "{long}");
        assert!(reservation_is_of(
            Some(&reservation_description("smoke-1")),
            "smoke-1"
        ));
        assert!(!reservation_is_of(
            Some(&reservation_description("smoke-10")),
            "smoke-1"
        ));
    }
}

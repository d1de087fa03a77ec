//! qa-run's tags as EC2 spells them: the [`qa_core::tags`] names (re-exported here), the tags a
//! resource gets at creation ([`resource_tags`], [`tag_spec`]) and the filters that find what
//! carries them ([`tag_filter`], [`made_by_qa_run`]).
//!
//! EC2 accepts `:` in tag keys, so the names are used as they are.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

pub use qa_core::tags::{
    CLIENT_TOKEN, CREATED_BY, CREATED_BY_VALUE, KEEP_UNTIL, PLAN, RUN_ID, TEST_ID, USER,
};

/// One tag.
pub fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// The value of the tag `key` among `tags`.
pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The tags of a resource qa-run makes: `base` (a run's tags), [`TEST_ID`] = `test_id` and
/// [`CREATED_BY`] = [`CREATED_BY_VALUE`] unless `base` sets them, then `extra` over all of them;
/// sorted by key.
pub fn resource_tags(
    base: &BTreeMap<String, String>,
    test_id: &str,
    extra: &[(&str, &str)],
) -> Vec<Tag> {
    let mut tags = base.clone();
    tags.entry(TEST_ID.into())
        .or_insert_with(|| test_id.to_string());
    tags.entry(CREATED_BY.into())
        .or_insert_with(|| CREATED_BY_VALUE.into());
    for (k, v) in extra {
        tags.insert(k.to_string(), v.to_string());
    }
    tags.iter().map(|(k, v)| tag(k, v)).collect()
}

/// `tags` for resources of type `resource_type` made by a create call (`TagSpecifications`), so
/// a resource carries them from its first moment.
pub fn tag_spec(resource_type: ResourceType, tags: &[Tag]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource_type)
        .set_tags(Some(tags.to_vec()))
        .build()
}

/// A filter of a `Describe*` call: `name` is one of `values`.
pub fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// What carries the tag `key` with one of `values` (e.g. [`TEST_ID`] = a test id).
pub fn tag_filter(key: &str, values: &[&str]) -> Filter {
    filter(&format!("tag:{key}"), values)
}

/// What qa-run made: [`CREATED_BY`] = [`CREATED_BY_VALUE`].
pub fn made_by_qa_run() -> Filter {
    tag_filter(CREATED_BY, &[CREATED_BY_VALUE])
}

/// What carries the tag `key`, whatever its value.
pub fn has_tag(key: &str) -> Filter {
    filter("tag-key", &[key])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(tags: &[Tag]) -> Vec<(&str, &str)> {
        tags.iter()
            .map(|t| (t.key().unwrap(), t.value().unwrap()))
            .collect()
    }

    #[test]
    fn every_resource_says_its_test_id_and_who_made_it() {
        let tags = resource_tags(&BTreeMap::new(), "nightly", &[]);
        assert_eq!(
            pairs(&tags),
            [("created-by", "qa-run"), ("qa-run:test-id", "nightly")]
        );
    }

    #[test]
    fn the_runs_tags_stay_and_extras_go_over_them() {
        let base: BTreeMap<String, String> = [
            (TEST_ID.to_string(), "from-run".to_string()),
            (RUN_ID.to_string(), "r1".to_string()),
            ("Name".to_string(), "old".to_string()),
        ]
        .into_iter()
        .collect();
        let tags = resource_tags(&base, "ignored", &[("Name", "web")]);
        assert_eq!(tag_value(&tags, TEST_ID), Some("from-run"));
        assert_eq!(tag_value(&tags, RUN_ID), Some("r1"));
        assert_eq!(tag_value(&tags, "Name"), Some("web"));
        assert_eq!(tag_value(&tags, CREATED_BY), Some(CREATED_BY_VALUE));
    }

    #[test]
    fn tag_filters_name_the_tag() {
        let f = tag_filter(TEST_ID, &["t1"]);
        assert_eq!(f.name(), Some("tag:qa-run:test-id"));
        assert_eq!(f.values(), ["t1"]);
        assert_eq!(made_by_qa_run().name(), Some("tag:created-by"));
    }
}

//! Regions: which the account has ([`enabled`], `DescribeRegions`), and doing one piece of work
//! in several at once ([`in_each_region`]).
//!
//! A sweep of every region, a cancel of a run's reservations wherever it made them and the
//! janitor all go region by region; a region that fails must not stop the others, or what they
//! hold stays behind. [`in_each_region`] runs the work in every region concurrently and returns
//! what each did, with the failed regions named, for the caller to report.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::operation::describe_regions::DescribeRegionsError;

/// The regions enabled for the account (`DescribeRegions`), asked of `client`'s region.
pub async fn enabled(
    client: &Client,
) -> Result<Vec<String>, SdkError<DescribeRegionsError, HttpResponse>> {
    let out = client.describe_regions().send().await?;
    Ok(out
        .regions()
        .iter()
        .filter_map(|r| r.region_name().map(str::to_string))
        .collect())
}

/// Why the work in one region has no result.
#[derive(Debug)]
pub enum RegionFailure<E> {
    /// The work returned an error.
    Failed(E),
    /// The work's task panicked or was cancelled.
    Aborted(tokio::task::JoinError),
}

impl<E: fmt::Display> fmt::Display for RegionFailure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionFailure::Failed(e) => e.fmt(f),
            RegionFailure::Aborted(e) => write!(f, "its task ended early: {e}"),
        }
    }
}

/// What the work did in each region.
#[derive(Debug)]
pub struct PerRegion<T, E> {
    /// Regions where the work succeeded, with its result, in the order they finished.
    pub done: Vec<(String, T)>,
    /// Regions where it did not, sorted by region.
    pub failed: Vec<(String, RegionFailure<E>)>,
}

impl<T, E: fmt::Display> PerRegion<T, E> {
    /// One `region: error` line per failed region, sorted.
    pub fn failure_lines(&self) -> Vec<String> {
        self.failed
            .iter()
            .map(|(region, e)| format!("{region}: {e}"))
            .collect()
    }
}

/// Runs `work(region)` for each of `regions` concurrently (each in its own task), all of them to
/// the end even when some fail.
pub async fn in_each_region<T, E, F, Fut>(
    regions: impl IntoIterator<Item = String>,
    mut work: F,
) -> PerRegion<T, E>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    // A task that panics leaves only its id; this says whose region it was.
    let mut region_of = HashMap::new();
    for region in regions {
        let handle = tasks.spawn(work(region.clone()));
        region_of.insert(handle.id(), region);
    }
    let mut out = PerRegion {
        done: Vec::new(),
        failed: Vec::new(),
    };
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((id, Ok(t))) => out.done.push((region_of[&id].clone(), t)),
            Ok((id, Err(e))) => out
                .failed
                .push((region_of[&id].clone(), RegionFailure::Failed(e))),
            Err(e) => {
                let region = region_of.get(&e.id()).cloned().unwrap_or_default();
                out.failed.push((region, RegionFailure::Aborted(e)));
            }
        }
    }
    out.failed.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_region_runs_and_failures_are_named_in_order() {
        let regions = ["us-east-1", "eu-west-1", "ap-south-1", "eu-central-1"];
        let out = in_each_region(regions.map(String::from), |region| async move {
            if region.starts_with("eu-") {
                Err(format!("denied in {region}"))
            } else {
                Ok(region.len())
            }
        })
        .await;
        let mut done: Vec<&str> = out.done.iter().map(|(r, _)| r.as_str()).collect();
        done.sort();
        assert_eq!(done, ["ap-south-1", "us-east-1"]);
        assert_eq!(
            out.failure_lines(),
            [
                "eu-central-1: denied in eu-central-1",
                "eu-west-1: denied in eu-west-1"
            ]
        );
    }

    #[tokio::test]
    async fn a_panicking_region_is_still_named() {
        let out = in_each_region(["us-west-2".to_string()], |_| async {
            if true {
                panic!("boom");
            }
            Ok::<(), String>(())
        })
        .await;
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].0, "us-west-2");
        assert!(matches!(out.failed[0].1, RegionFailure::Aborted(_)));
    }
}

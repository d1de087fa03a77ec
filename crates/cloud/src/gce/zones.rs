//! Where a machine type can go: the zones of a region that are up, and those among them that
//! offer every one of some machine types; and [`all_items!`](crate::all_items), which reads a
//! listing to its last page.

use std::collections::BTreeSet;

use google_cloud_gax::paginator::ItemPaginator;

use super::config::Clients;
use super::errors::GceError;

/// Every item of a listing call (`client.list().set_…()`), read page after page; the first error
/// ends it, classified as a [`GceError`].
#[macro_export]
macro_rules! all_items {
    ($call:expr) => {{
        use google_cloud_gax::paginator::ItemPaginator as _;
        let mut items = $call.by_item();
        let mut out = Vec::new();
        let mut failed = None;
        while let Some(item) = items.next().await {
            match item {
                Ok(i) => out.push(i),
                Err(e) => {
                    failed = Some($crate::gce::GceError::of_call(&e));
                    break;
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }};
}

/// The zones of `region` that are up, by name.
pub async fn zones_of_region(
    clients: &Clients,
    project: &str,
    region: &str,
) -> Result<Vec<String>, GceError> {
    let zones: Vec<google_cloud_compute_v1::model::Zone> =
        all_items!(clients.zones.list().set_project(project))?;
    let mut out: Vec<String> = zones
        .into_iter()
        .filter(|z| {
            z.region
                .as_deref()
                .is_some_and(|r| r.rsplit('/').next() == Some(region))
                && z.status.as_ref().and_then(|s| s.name()) != Some("DOWN")
        })
        .filter_map(|z| z.name)
        .collect();
    out.sort();
    Ok(out)
}

/// The zones of `region` that are up and offer every one of `machine_types`, by name.
pub async fn zones_offering(
    clients: &Clients,
    project: &str,
    region: &str,
    machine_types: &[String],
) -> Result<Vec<String>, GceError> {
    let mut zones: BTreeSet<String> = zones_of_region(clients, project, region)
        .await?
        .into_iter()
        .collect();
    for t in machine_types {
        let mut it = clients
            .machine_types
            .aggregated_list()
            .set_project(project)
            .set_filter(format!("name = \"{t}\""))
            .by_item();
        let mut offering = BTreeSet::new();
        while let Some(item) = it.next().await {
            let (scope, list) = item.map_err(|e| GceError::of_call(&e))?;
            if list
                .machine_types
                .iter()
                .any(|m| m.name.as_deref() == Some(t.as_str()))
                && let Some(zone) = scope.strip_prefix("zones/")
            {
                offering.insert(zone.to_string());
            }
        }
        zones.retain(|z| offering.contains(z));
    }
    Ok(zones.into_iter().collect())
}

//! Launching one instance: `RunInstances` with the run's key pair and security group, the spec's
//! extra EBS volumes, the zone, placement group and capacity reservation it was given, on demand
//! or spot. The instance is journaled as an intent with its client token before the call (the
//! token also goes in the [`CLIENT_TOKEN`] tag of the instance and its volumes), so a crash
//! between the call and the answer leaves a record teardown finds the instance by.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, CapacityReservationSpecification, CapacityReservationTarget,
    EbsBlockDevice, Instance, InstanceMarketOptionsRequest, InstanceType, MarketType,
    Placement as Ec2Placement, ResourceType, SpotInstanceType, SpotMarketOptions, VolumeType,
};
use qa_cloud::aws::errors::{ErrorClass, answered, classify};
use qa_cloud::aws::tags::{CLIENT_TOKEN, resource_tags, tag_spec};
use qa_cloud::aws::{AwsMachine, config};
use qa_core::journal::ResourceLedger;
use qa_core::types::ResourceKey;
use qa_core::{Leftovers, MachineRequest, ProvisionError, RunContext};

use super::cost;
use super::errors::{api_error, err};
use super::records::{KIND_INSTANCE, created, details, intent};
use super::shared::RunShared;

/// Everything one `RunInstances` needs.
#[derive(Clone, Copy)]
pub(super) struct LaunchRequest<'a> {
    /// A client for `region`.
    pub(super) client: &'a Client,
    /// Where the instance goes.
    pub(super) region: &'a str,
    /// The machine, with its placement when capacity was reserved.
    pub(super) request: &'a MachineRequest,
    /// Its `aws:` block.
    pub(super) spec: &'a AwsMachine,
    /// Spot rather than on demand.
    pub(super) spot: bool,
    /// The run's key pair, security group and placement group there.
    pub(super) shared: &'a RunShared,
    /// The run's tags and ids.
    pub(super) run: &'a RunContext,
    /// The run's journal.
    pub(super) ledger: &'a dyn ResourceLedger,
}

/// A launch that failed.
pub(super) struct LaunchFailure {
    /// What went wrong and what it left.
    pub(super) error: ProvisionError,
    /// EC2 had no capacity for it (a spot launch may then go on demand).
    pub(super) no_capacity: bool,
}

impl From<ProvisionError> for LaunchFailure {
    fn from(error: ProvisionError) -> Self {
        LaunchFailure {
            error,
            no_capacity: false,
        }
    }
}

/// Device names for extra volumes: `/dev/sdf` … `/dev/sdz`.
fn device_names(n: usize) -> Option<Vec<String>> {
    let names: Vec<String> = (b'f'..=b'z')
        .map(|c| format!("/dev/sd{}", c as char))
        .collect();
    (n <= names.len()).then(|| names[..n].to_vec())
}

/// The spec's extra volumes, one `(type, GiB)` per volume (`count` expanded).
fn volumes(spec: &AwsMachine) -> Vec<(String, u32)> {
    spec.volumes
        .iter()
        .flat_map(|v| {
            std::iter::repeat_n(
                (v.r#type.clone().unwrap_or_else(|| "gp3".into()), v.size_gb),
                v.count as usize,
            )
        })
        .collect()
}

impl LaunchRequest<'_> {
    /// Launches the instance; returns its journal key and EC2's description of it.
    pub(super) async fn launch(&self) -> Result<(ResourceKey, Instance), LaunchFailure> {
        let LaunchRequest {
            client,
            region,
            request,
            spec,
            spot,
            shared,
            run,
            ledger,
        } = *self;
        let token = config::client_token();
        let key = ResourceKey(format!(
            "aws/{KIND_INSTANCE}/{region}/{}/{token}",
            request.name
        ));
        let zone = request.placement.as_ref().map(|p| p.zone.clone());
        let reservation = request
            .placement
            .as_ref()
            .and_then(|p| p.reservations.get(&spec.instance_type))
            .cloned();
        let mut d = details(&[
            ("region", region),
            ("instance-type", &spec.instance_type),
            ("lifecycle", if spot { "spot" } else { "on-demand" }),
        ]);
        if let Some(z) = &zone {
            d.insert("zone".into(), z.clone());
        }
        if let Some(r) = &reservation {
            d.insert("capacity-reservation".into(), r.clone());
        }
        let volumes = volumes(spec);
        // For the cost estimate: what the instance carries and since when.
        let volume_list: Vec<String> = volumes.iter().map(|(t, gb)| format!("{t}:{gb}")).collect();
        d.insert("volumes".into(), volume_list.join(","));
        intent(
            ledger,
            &key,
            KIND_INSTANCE,
            Some(&request.name),
            Some(&token),
            d.clone(),
        )
        .await?;

        let tags = resource_tags(
            &run.tags,
            &run.test_id.0,
            &[("Name", &request.name), (CLIENT_TOKEN, &token)],
        );
        let names = device_names(volumes.len()).ok_or_else(|| {
            err(
                Some(&request.name),
                format!("{} extra volumes; at most 21 fit", volumes.len()),
                Leftovers::Clear,
            )
        })?;
        let mut call = client
            .run_instances()
            .client_token(&token)
            .image_id(&spec.image)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .key_name(&shared.key_name)
            .security_group_ids(&shared.group_id)
            .set_subnet_id(spec.subnet.clone())
            .tag_specifications(tag_spec(ResourceType::Instance, &tags))
            .tag_specifications(tag_spec(ResourceType::Volume, &tags));
        for ((vtype, size), device) in volumes.iter().zip(names) {
            call = call.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(*size as i32)
                            .volume_type(VolumeType::from(vtype.as_str()))
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        if zone.is_some() || shared.placement_group.is_some() {
            call = call.placement(
                Ec2Placement::builder()
                    .set_availability_zone(zone.clone())
                    .set_group_name(shared.placement_group.clone())
                    .build(),
            );
        }
        if let Some(r) = &reservation {
            call = call.capacity_reservation_specification(
                CapacityReservationSpecification::builder()
                    .capacity_reservation_target(
                        CapacityReservationTarget::builder()
                            .capacity_reservation_id(r)
                            .build(),
                    )
                    .build(),
            );
        }
        if spot {
            call = call
                .instance_market_options(
                    InstanceMarketOptionsRequest::builder()
                        .market_type(MarketType::Spot)
                        .spot_options(
                            SpotMarketOptions::builder()
                                .spot_instance_type(SpotInstanceType::OneTime)
                                .build(),
                        )
                        .build(),
                )
                .tag_specifications(tag_spec(ResourceType::SpotInstancesRequest, &tags));
        }
        let out = call
            .customize()
            .config_override(config::single_attempt())
            .send()
            .await;
        match out {
            Ok(out) => {
                let Some(instance) = out.instances().first().cloned() else {
                    return Err(err(
                        Some(&request.name),
                        "RunInstances returned no instance",
                        Leftovers::Remaining(vec![key]),
                    )
                    .into());
                };
                let id = instance.instance_id().unwrap_or_default().to_string();
                if let Some(z) = instance.placement().and_then(|p| p.availability_zone()) {
                    d.insert("zone".into(), z.to_string());
                }
                d.insert("launched-at".into(), cost::now_unix().to_string());
                created(ledger, &key, &id, d).await;
                Ok((key, instance))
            }
            Err(e) => {
                let no_capacity = classify(&e) == ErrorClass::Capacity;
                let left = if answered(&e) {
                    // Refused: nothing was made.
                    let _ = ledger.destroyed(&key).await;
                    Leftovers::Clear
                } else {
                    Leftovers::Remaining(vec![key])
                };
                let call_name = if spot {
                    "RunInstances (spot)"
                } else {
                    "RunInstances"
                };
                Err(LaunchFailure {
                    error: api_error(Some(&request.name), call_name, e, left),
                    no_capacity,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use qa_cloud::aws::VolumeSpec;

    use super::*;

    #[test]
    fn extra_volumes_get_device_names_after_the_root_device() {
        assert_eq!(device_names(2).unwrap(), vec!["/dev/sdf", "/dev/sdg"]);
        assert_eq!(device_names(21).unwrap().last().unwrap(), "/dev/sdz");
        assert!(device_names(22).is_none());
    }

    #[test]
    fn volumes_are_expanded_by_count_with_gp3_by_default() {
        let spec = AwsMachine {
            volumes: vec![
                VolumeSpec {
                    r#type: None,
                    size_gb: 10,
                    count: 2,
                },
                VolumeSpec {
                    r#type: Some("io2".into()),
                    size_gb: 50,
                    count: 1,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            volumes(&spec),
            [
                ("gp3".to_string(), 10),
                ("gp3".to_string(), 10),
                ("io2".to_string(), 50)
            ]
        );
    }
}

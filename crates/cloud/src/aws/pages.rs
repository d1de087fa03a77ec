//! The EC2 listings qa-run reads, each to its last page: what a sweep, a teardown, a janitor or a
//! reservation looks through can be longer than one answer, and a missed page is a resource
//! left running. Each listing follows EC2's `NextToken` with the SDK's paginator and returns the
//! items of every page, or the first page's error as the SDK gave it (callers map it into
//! their own error with [`describe`](super::errors::describe)).

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::operation::describe_capacity_reservations::DescribeCapacityReservationsError;
use aws_sdk_ec2::operation::describe_instance_type_offerings::DescribeInstanceTypeOfferingsError;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsError;
use aws_sdk_ec2::operation::describe_spot_instance_requests::DescribeSpotInstanceRequestsError;
use aws_sdk_ec2::operation::describe_volumes::DescribeVolumesError;
use aws_sdk_ec2::types::{
    CapacityReservation, Filter, Instance, InstanceTypeOffering, LocationType, SecurityGroup,
    SpotInstanceRequest, Volume,
};

/// The result of a listing: every item, or the SDK's error for operation error `E`.
pub type Listed<T, E> = Result<Vec<T>, SdkError<E, HttpResponse>>;

/// Every instance matching `filters`, asking for `page_size` reservations a page (EC2 allows 5
/// to 1000; the value is kept in that range).
pub async fn instances(
    client: &Client,
    filters: Vec<Filter>,
    page_size: i32,
) -> Listed<Instance, DescribeInstancesError> {
    let reservations = client
        .describe_instances()
        .set_filters(Some(filters))
        .max_results(page_size.clamp(5, 1000))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await?;
    Ok(reservations
        .into_iter()
        .flat_map(|r| r.instances.unwrap_or_default())
        .collect())
}

/// Every EBS volume matching `filters`.
pub async fn volumes(
    client: &Client,
    filters: Vec<Filter>,
) -> Listed<Volume, DescribeVolumesError> {
    client
        .describe_volumes()
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
}

/// Every security group matching `filters`.
pub async fn security_groups(
    client: &Client,
    filters: Vec<Filter>,
) -> Listed<SecurityGroup, DescribeSecurityGroupsError> {
    client
        .describe_security_groups()
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
}

/// Every spot instance request matching `filters`.
pub async fn spot_requests(
    client: &Client,
    filters: Vec<Filter>,
) -> Listed<SpotInstanceRequest, DescribeSpotInstanceRequestsError> {
    client
        .describe_spot_instance_requests()
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
}

/// Every capacity reservation matching `filters`, in any state.
pub async fn capacity_reservations(
    client: &Client,
    filters: Vec<Filter>,
) -> Listed<CapacityReservation, DescribeCapacityReservationsError> {
    client
        .describe_capacity_reservations()
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
}

/// Every offering of an instance type at `location_type` matching `filters` (e.g. which zones
/// offer a type).
pub async fn instance_type_offerings(
    client: &Client,
    location_type: LocationType,
    filters: Vec<Filter>,
) -> Listed<InstanceTypeOffering, DescribeInstanceTypeOfferingsError> {
    client
        .describe_instance_type_offerings()
        .location_type(location_type)
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
}

//! How qa-run reaches EC2: one loader for the SDK configuration (credentials and region from the
//! usual AWS places, an endpoint override for emulators), a client per region built from it, the
//! retry setting of create calls, and the client tokens that make creates idempotent.
//!
//! Both EC2 backends build on [`Ec2Config`]; neither loads configuration or builds clients
//! itself, so the provisioner and the capacity reservations of one run always reach the same
//! account, endpoint and region the same way.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;

/// The AWS SDK's configuration (credentials, region, endpoint), as built by `aws_config`.
pub use aws_config::SdkConfig;

/// Neither the caller nor the AWS configuration named a region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no AWS region configured (set it in the plan, AWS_REGION or the profile)")]
#[non_exhaustive]
pub struct NoRegion;

/// The SDK configuration (credentials, endpoint) and the region used when a request names none;
/// hands out a client per region.
#[derive(Debug, Clone)]
pub struct Ec2Config {
    sdk: SdkConfig,
    region: String,
    // The default region's client, built once.
    client: Client,
}

impl Ec2Config {
    /// Loads credentials and region the usual AWS way (environment, profile, instance role);
    /// `region` and `endpoint_url`, when given, override what the configuration says.
    pub async fn from_env(
        region: Option<&str>,
        endpoint_url: Option<&str>,
    ) -> Result<Self, NoRegion> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_string()));
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url.to_string());
        }
        let sdk = loader.load().await;
        Self::from_sdk_config(&sdk, region)
    }

    /// Uses an SDK configuration the caller built; `region` overrides its region.
    pub fn from_sdk_config(sdk: &SdkConfig, region: Option<&str>) -> Result<Self, NoRegion> {
        let region = region
            .map(str::to_string)
            .or_else(|| sdk.region().map(|r| r.to_string()))
            .ok_or(NoRegion)?;
        Ok(Ec2Config {
            client: client_in(sdk, &region),
            sdk: sdk.clone(),
            region,
        })
    }

    /// The region used when a request names none.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The SDK configuration everything is built from.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    /// The same configuration with `region` as its default.
    pub fn in_region(&self, region: &str) -> Ec2Config {
        if region == self.region {
            return self.clone();
        }
        Ec2Config {
            client: client_in(&self.sdk, region),
            sdk: self.sdk.clone(),
            region: region.to_string(),
        }
    }

    /// A client for the default region.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client for `region`.
    pub fn client_in(&self, region: &str) -> Client {
        if region == self.region {
            self.client.clone()
        } else {
            client_in(&self.sdk, region)
        }
    }
}

fn client_in(sdk: &SdkConfig, region: &str) -> Client {
    let conf = aws_sdk_ec2::config::Builder::from(sdk)
        .region(Region::new(region.to_string()))
        .build();
    Client::from_conf(conf)
}

/// The configuration override of a create call that must not be retried by the SDK
/// (`.customize().config_override(single_attempt())`): a capacity error retried three times only
/// delays the fallback to the next zone or to on demand, and the call's client token already
/// makes any retry the caller does safe. Other calls keep the SDK's standard retries
/// (throttling, transient network errors).
pub fn single_attempt() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default()
        .retry_config(RetryConfig::standard().with_max_attempts(1))
}

/// A new idempotency token for a create call (`ClientToken`, and the
/// [`CLIENT_TOKEN`](super::tags::CLIENT_TOKEN) tag). EC2 takes up to 64 ASCII characters; 128
/// random bits are plenty.
pub fn client_token() -> String {
    format!("qa-{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_differ_and_fit_ec2s_limit() {
        let a = client_token();
        let b = client_token();
        assert_ne!(a, b);
        assert!(a.len() <= 64 && a.is_ascii());
    }

    fn sdk(region: Option<&str>) -> SdkConfig {
        let mut b = SdkConfig::builder().behavior_version(BehaviorVersion::latest());
        if let Some(r) = region {
            b = b.region(Region::new(r.to_string()));
        }
        b.build()
    }

    #[test]
    fn the_callers_region_wins_over_the_configurations() {
        let c = Ec2Config::from_sdk_config(&sdk(Some("eu-west-1")), Some("us-east-2")).unwrap();
        assert_eq!(c.region(), "us-east-2");
        let c = Ec2Config::from_sdk_config(&sdk(Some("eu-west-1")), None).unwrap();
        assert_eq!(c.region(), "eu-west-1");
        assert_eq!(c.in_region("ap-south-1").region(), "ap-south-1");
    }

    #[test]
    fn no_region_anywhere_is_an_error_that_says_where_to_set_one() {
        let e = Ec2Config::from_sdk_config(&sdk(None), None).unwrap_err();
        assert!(e.to_string().contains("AWS_REGION"), "{e}");
    }
}

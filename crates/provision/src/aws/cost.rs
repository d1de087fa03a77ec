//! What a run's EC2 machines cost: instance-hours and volume GB-hours from the journal, priced
//! from a table the user can override ([`qa_cloud::cost`], shared by every cloud).
//!
//! The journal's instance records carry `launched-at` (unix seconds), `instance-type`,
//! `lifecycle` (`spot` or `on-demand`) and `volumes` (`type:GiB,…`). The estimate runs each
//! instance from its launch to the end the caller gives (the run's teardown), or to its
//! `destroyed-at` when the journal has it destroyed earlier, bills at least a
//! minute as EC2 does for Linux, and prices extra volumes per GB-month. Types the table does not
//! know are counted in hours but listed as unpriced rather than guessed.
//!
//! [`CostEstimate::to_report`] turns an estimate into the report's form (one item per instance
//! type and per volume type), which is what [`AwsProvisioner`]'s
//! [`Provisioner::estimate_cost`](qa_core::Provisioner::estimate_cost) returns, priced from the
//! table of [`AwsProvisionerOptions::prices`](super::AwsProvisionerOptions::prices) or
//! [`AwsProvisioner::with_prices`] (the built-in one by default).
//!
//! ```
//! use qa_provision::aws::cost::{estimate, PriceTable};
//! let prices = PriceTable::builtin();
//! let report = estimate(&[], 0, &prices);
//! assert_eq!(report.instance_hours, 0.0);
//! ```

use qa_cloud::aws::AWS as AWS_BACKEND;
use qa_core::types::Resource;

pub use qa_cloud::cost::{CostEstimate, CostLine, PriceTable, PriceTableError, PricedAs, now_unix};

use super::AwsProvisioner;

/// Estimates the cost of the EC2 instances in `resources`, each running until `end_unix`
/// ([`qa_cloud::cost::estimate`]).
pub fn estimate(resources: &[Resource], end_unix: i64, prices: &PriceTable) -> CostEstimate {
    qa_cloud::cost::estimate(resources, end_unix, prices, AWS_BACKEND)
}

impl AwsProvisioner {
    /// Prices cost estimates from `prices` instead of the table it was made with (by default
    /// the built-in one).
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.options.prices = prices;
        self
    }

    /// The table cost estimates are priced from.
    pub fn prices(&self) -> &PriceTable {
        &self.options.prices
    }
}

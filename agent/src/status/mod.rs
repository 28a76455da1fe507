//! The report model; publishing it to the status branch; reading the fleet's status branches.

mod chain;
pub mod fleet;
pub(crate) mod git_cli;
pub mod metrics;
pub mod page;
pub mod publish;
pub mod remote;
pub mod report;
pub mod tipcache;

/// plumb's signature on the commits it writes (status reports, disruption slots).
pub use chain::signature as chain_signature;

//! The operator's worst day: `replicadr plan` (what a restore of a backup at a site would do),
//! `failover` and `failback` (do it, check it, start the VMs in order, report). The same site map
//! serves both directions.

mod checks;
pub mod clean;
pub mod every_policy;
pub mod failover;
mod from_standby;
pub mod plan;
pub mod planned;
mod preconditions;
pub mod report;
mod restore;
pub mod site;
pub mod standby;
mod store;
pub mod vm_start;

//! `replicadr status`: every policy, its newest verified backup and its recovery point, as rows
//! the CLI renders.

use jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};
use serde::Serialize;

use crate::policy::{BackupPolicy, condition};

/// One policy as `replicadr status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    pub policy: String,
    pub schedule: String,
    pub paused: bool,
    /// `True`, or `False (reason)`; `-` when the condition is not set.
    pub ready: String,
    pub last_backup: Option<String>,
    pub last_verified_backup: Option<String>,
    /// Age of the newest verified backup; `None` when no backup verified yet.
    pub recovery_point_age_seconds: Option<u64>,
    /// The schedule's interval.
    pub interval_seconds: Option<u64>,
    /// `True`, or `False (reason)`; `-` when the condition is not set.
    pub verified: String,
}

/// Every policy in `namespace`.
pub async fn policies(
    client: &Client,
    namespace: &str,
    now: Timestamp,
) -> Result<Vec<PolicyStatus>, kube::Error> {
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), namespace);
    let mut rows = Vec::new();
    for policy in api.list(&ListParams::default()).await?.items {
        let status = policy.status.clone().unwrap_or_default();
        let condition_text = |type_: &str| {
            status.condition(type_).map_or_else(
                || "-".to_owned(),
                |c| {
                    if c.status == "True" {
                        "True".to_owned()
                    } else {
                        format!("{} ({})", c.status, c.reason)
                    }
                },
            )
        };
        let recovery_point_age = status
            .last_verified_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| now.duration_since(t).unsigned_abs().as_secs());
        rows.push(PolicyStatus {
            policy: policy.name_any(),
            schedule: policy.spec.schedule.clone(),
            paused: policy.spec.paused,
            ready: condition_text(condition::READY),
            last_backup: status.last_backup.clone(),
            last_verified_backup: status.last_verified_backup.clone(),
            recovery_point_age_seconds: recovery_point_age,
            interval_seconds: status.expected_interval_seconds,
            verified: condition_text(condition::VERIFIED),
        });
    }
    Ok(rows)
}

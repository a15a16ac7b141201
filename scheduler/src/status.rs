//! `replicadr status`: which site this is and which one is active (the active-site record of each
//! storage location), then every policy, its newest verified backup and its recovery point, as
//! rows the CLI renders.

use jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};
use serde::Serialize;

use crate::active_site::Record;
use crate::backup_site;
use crate::policy::{BackupPolicy, condition};
use crate::verify::SiteMapSource;

/// The whole `replicadr status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// This site (`localSite` of the plugin ConfigMap).
    pub local_site: Option<String>,
    /// Why this site is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_site_error: Option<String>,
    pub active_site: Vec<LocationStanding>,
    pub policies: Vec<PolicyStatus>,
}

/// One storage location's active-site record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationStanding {
    /// `namespace/name` of the BackupStorageLocation, or `-` when none could be read.
    pub location: String,
    pub url: Option<String>,
    pub record: Option<crate::active_site::ActiveSite>,
    /// Why the record cannot be used (no backups are made anywhere until it can).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// This site, the active site by storage location, and every policy in `namespace`.
pub async fn overview(
    client: &Client,
    namespace: &str,
    now: Timestamp,
) -> Result<Overview, kube::Error> {
    let config = backup_site::site_config(client, namespace, &SiteMapSource::default()).await;
    let (local_site, local_site_error) = match &config {
        Ok(config) => (Some(config.local_site.as_str().to_owned()), None),
        Err(error) => (None, Some(error.to_string())),
    };
    let active_site = match Record::every(client, namespace).await {
        Err(error) => vec![LocationStanding {
            location: "-".to_owned(),
            url: None,
            record: None,
            error: Some(error.to_string()),
        }],
        Ok(records) => {
            let mut rows = Vec::new();
            for record in records {
                let read = match &config {
                    Ok(config) => record.current(&config.site_map).await,
                    Err(_) => record.read().await.and_then(|r| {
                        r.ok_or_else(|| crate::active_site::RecordError::Missing {
                            url: record.url(),
                            location: record.location().to_owned(),
                        })
                    }),
                };
                rows.push(LocationStanding {
                    location: record.location().to_owned(),
                    url: Some(record.url()),
                    error: read.as_ref().err().map(ToString::to_string),
                    record: read.ok(),
                });
            }
            rows
        }
    };
    Ok(Overview {
        local_site,
        local_site_error,
        active_site,
        policies: policies(client, namespace, now).await?,
    })
}

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

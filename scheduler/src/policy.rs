//! The `BackupPolicy` custom resource (`replicadr.io/v1alpha1`): what to back up, when, and how to
//! verify it; and its status, which the scheduler owns. The CRD YAML in
//! `manifests/base/crds/backuppolicies.yaml` is generated from these types (`replicadr crd`).
//!
//! [`ValidPolicy`] is the policy parsed once at the door: every later step works on typed values.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResource;
use replicadr_core::names::MAX_LABEL_VALUE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;
use crate::schedule::{self, MissedRunPolicy, Schedule, ScheduleError};

/// The plugin ConfigMap the Velero plugins read; holds the site map unless a policy says otherwise.
pub const DEFAULT_SITE_MAP_CONFIGMAP: &str = "replicadr-plugins";
/// The key of the site map in that ConfigMap.
pub const DEFAULT_SITE_MAP_KEY: &str = replicadr_core::wire::CONFIG_SITE_MAP;
/// How late a slot may still start under `missedRunPolicy: Skip`.
pub const DEFAULT_STARTING_DEADLINE: Duration = Duration::from_mins(5);
/// How long a backup may stay unfinished before the policy reports it as timed out.
pub const DEFAULT_BACKUP_TIMEOUT: Duration = Duration::from_hours(4);

/// Metadata-only Velero backups of KubeVirt VMs on a schedule, each verified from object storage.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "replicadr.io",
    version = "v1alpha1",
    kind = "BackupPolicy",
    namespaced,
    status = "BackupPolicyStatus",
    shortname = "bp",
    category = "replicadr",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","jsonPath":".spec.paused"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"string","jsonPath":".status.lastBackup"}"#,
    printcolumn = r#"{"name":"Last Verified","type":"date","jsonPath":".status.lastVerifiedTime"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicySpec {
    /// When to back up: a 5-field cron expression ("0 2 * * *"), @hourly/@daily/@weekly/@monthly/
    /// @yearly, or `@every <duration>` in whole minutes ("@every 30m").
    pub schedule: String,
    /// IANA time zone the cron expression is read in ("Europe/Berlin"); UTC when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// No new backups while true, retries included; running ones finish and are verified.
    #[serde(default)]
    pub paused: bool,
    /// Only Forbid: a policy never has two backups running.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// What to do with slots missed while nothing ran: `RunOnce` runs the newest one late, Skip
    /// runs a slot only within 5 minutes of its time.
    #[serde(default)]
    pub missed_run_policy: MissedRunPolicy,
    /// Retries of a failed backup within its slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// Start each backup up to this many seconds after its slot (the same delay on every
    /// replica), to spread policies that share a schedule.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub jitter_seconds: u32,
    /// How long a backup may run before the policy reports it as timed out ("4h" by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_timeout: Option<String>,
    /// The recovery point objective ("26h", "1h30m"): `replicadr plan` and `failover` report a
    /// backup older than this as a problem. Unset, age is reported but not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<String>,
    /// `failover` and `failback` restore this policy's VMs and leave them halted for the operator
    /// to start; by default they start them in `replicadr.io/start-order` order.
    #[serde(
        default,
        rename = "restoreVMsHalted",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub restore_vms_halted: bool,
    /// The Velero Backup to create for each slot.
    #[serde(default)]
    pub template: BackupTemplate,
    /// Where the site map used to dry-run the failover lives; the plugin ConfigMap
    /// `replicadr-plugins`, key `siteMap`, by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_map: Option<SiteMapRef>,
    /// A Velero `Schedule` in this namespace that makes this policy's backups: the policy then
    /// creates none (no slots, no retries) and verifies, publishes and offers for failover every
    /// backup of that Schedule. `schedule` must equal the Schedule's `spec.schedule`, and
    /// `template` may only name the storage location; what the Schedule itself must set is
    /// reported in the `Ready` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velero_schedule: Option<String>,
    /// Warm standby: at a site that is not the active one, the scheduler restores each new
    /// verified backup of this policy as soon as Velero has synced it, VMs halted, so that a
    /// failover there only checks and starts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbySpec>,
}

/// `spec.standby`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StandbySpec {
    /// Keep this policy's newest verified backup restored, halted, at every site that is not
    /// the active one. Switched off, nothing more is restored; `replicadr clean --standby` then
    /// removes what the standby restores made.
    #[serde(default)]
    pub enabled: bool,
}

/// The one concurrency policy: a policy never runs two backups at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    #[default]
    Forbid,
}

/// Retries of a failed backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// How many times a failed backup of one slot is retried.
    #[schemars(range(min = 0, max = 10))]
    pub limit: u32,
    /// Wait before the first retry; doubles for each further one ("5m" by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// The parts of the Velero Backup a policy chooses. The rest is fixed: metadata only, cluster
/// resources included.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTemplate {
    /// Namespaces to back up; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_namespaces: Vec<String>,
    /// Only objects with these labels (Velero adds what they need, e.g. a VM's disks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// How long Velero keeps each backup ("720h0m0s" = 30 days, Velero's default when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// The BackupStorageLocation; Velero's default location when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_location: Option<String>,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// In, `NotIn`, Exists or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// The selector in the API's query syntax (`a=b,c in (d,e),!f`).
    pub fn to_query(&self) -> Result<String, String> {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for requirement in &self.match_expressions {
            let key = &requirement.key;
            let values = requirement.values.join(",");
            parts.push(match requirement.operator.as_str() {
                "In" => format!("{key} in ({values})"),
                "NotIn" => format!("{key} notin ({values})"),
                "Exists" => key.clone(),
                "DoesNotExist" => format!("!{key}"),
                other => {
                    return Err(format!(
                        "operator {other:?} of key {key:?} is not one of In, NotIn, Exists, DoesNotExist"
                    ));
                }
            });
        }
        Ok(parts.join(","))
    }
}

/// A ConfigMap key holding the site map YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteMapRef {
    /// ConfigMap in the policy's namespace.
    pub name: String,
    /// Key holding the site map ("siteMap" by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What the scheduler has observed and done for a policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    /// Ready (the policy is valid and scheduling), `BackupSucceeded` (the newest backup's outcome),
    /// Verified (the newest verification's outcome) and, at a standby site, `StandbyReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The slot of the newest backup started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// The next slot (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
    /// The newest backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// The newest backup that passed verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_backup: Option<String>,
    /// When that backup started (RFC 3339): the recovery point it offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<String>,
    /// The site (its `localSite`) whose scheduler wrote this status: every backup named here
    /// was made there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The longest gap between slots, from the schedule: what RPO is measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_interval_seconds: Option<u64>,
    /// The generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The warm standby at this site, when the policy has one here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyStatus>,
}

/// What the warm standby at a site holds (`status.standby`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StandbyStatus {
    /// The backup the standby holds: restored, halted, at this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The Velero Restore that last brought it up to date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// When that backup started at the active site (RFC 3339): the recovery point the standby holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point: Option<String>,
    /// When the restore finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_time: Option<String>,
    /// Items Velero restored or updated.
    #[serde(default)]
    pub items: u64,
    /// What the last refresh found wrong, each naming the object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// What the last refresh removed because the new backup no longer holds it, `Kind namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
    /// A newer backup the standby refused, and when (RFC 3339): it is tried again after a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_time: Option<String>,
}

/// A standard Kubernetes condition (`metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Condition types the scheduler sets.
pub mod condition {
    /// The policy is valid and its backups are being scheduled.
    pub const READY: &str = "Ready";
    /// The newest backup reached Completed.
    pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
    /// The newest finished backup passed verification.
    pub const VERIFIED: &str = "Verified";
    /// The warm standby at this site holds the newest backup it can restore, without problems.
    pub const STANDBY_READY: &str = "StandbyReady";
}

impl BackupPolicyStatus {
    /// Sets a condition, keeping its transition time when the status does not change.
    pub fn set_condition(
        &mut self,
        type_: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
        now: Timestamp,
    ) {
        let status = if ok { "True" } else { "False" };
        let message = message.into();
        if let Some(existing) = self.conditions.iter_mut().find(|c| c.type_ == type_) {
            if existing.status != status {
                existing.last_transition_time = now.to_string();
            }
            status.clone_into(&mut existing.status);
            reason.clone_into(&mut existing.reason);
            existing.message = message;
            existing.observed_generation = generation;
            return;
        }
        self.conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: now.to_string(),
            observed_generation: generation,
        });
    }

    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The CRD: the schema derived from these types, with `metadata.name` limited to
/// [`MAX_POLICY_NAME`] so that the API server itself refuses a longer name ("metadata.name: Too
/// long: may not be more than 41 bytes"). A `maxLength` rather than a CEL rule: validation
/// ratcheting lets a policy created before the limit still be updated (its status too) until
/// it is renamed, where a rule on the whole object would refuse every update of it.
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt as _;
    let mut crd = BackupPolicy::crd();
    let name = JSONSchemaProps {
        description: Some(format!(
            "At most {MAX_POLICY_NAME} characters, so that the names of the policy's backups (the longest <policy>-manual-YYYYMMDDHHMMSS) are valid label values of at most 63."
        )),
        type_: Some("string".to_owned()),
        max_length: Some(i64::try_from(MAX_POLICY_NAME).expect("a small number")),
        ..JSONSchemaProps::default()
    };
    let metadata = JSONSchemaProps {
        type_: Some("object".to_owned()),
        properties: Some(BTreeMap::from([("name".to_owned(), name)])),
        ..JSONSchemaProps::default()
    };
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema
                .properties
                .get_or_insert_with(BTreeMap::new)
                .insert("metadata".to_owned(), metadata.clone());
        }
    }
    crd
}

/// The CRD manifest, as checked in at `manifests/base/crds/backuppolicies.yaml`.
pub fn crd_yaml() -> String {
    let crd = serde_yaml_ng::to_string(&crd()).expect("a CRD always serialises");
    format!("# Generated by `replicadr crd` from scheduler/src/policy.rs; do not edit.\n---\n{crd}")
}

/// Why a policy's spec cannot be scheduled. Each message names the field and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("spec.{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(
        "metadata.name {name:?} has {} characters; at most {MAX_POLICY_NAME} are accepted, so that the names of its backups (the longest {name}-manual-YYYYMMDDHHMMSS) are valid label values of at most 63",
        name.len()
    )]
    NameTooLong { name: String },
}

impl PolicyError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::Schedule(error) => error.reason(),
            PolicyError::Invalid { .. } => "InvalidSpec",
            PolicyError::NameTooLong { .. } => "InvalidName",
        }
    }
}

/// A policy whose spec was parsed and validated.
#[derive(Debug, Clone)]
pub struct ValidPolicy {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub created: Timestamp,
    pub schedule: Schedule,
    pub zone: TimeZone,
    pub paused: bool,
    pub missed_run_policy: MissedRunPolicy,
    pub retry_limit: u32,
    pub retry_backoff: Duration,
    pub jitter_seconds: u32,
    pub backup_timeout: Duration,
    pub template: BackupTemplate,
    /// `template.labelSelector` in query syntax; empty selects everything.
    pub label_query: String,
    pub ttl: Option<GoDuration>,
    pub rpo: Option<Duration>,
    pub site_map: SiteMapRef,
    /// The Velero Schedule that makes the backups (`spec.veleroSchedule`); `None` when the
    /// policy makes them itself.
    pub velero_schedule: Option<String>,
    /// `spec.standby.enabled`.
    pub standby: bool,
}

/// An optional Go-syntax duration field.
fn go_duration(field: &'static str, text: Option<&str>) -> Result<Option<GoDuration>, PolicyError> {
    text.map(|text| {
        text.parse::<GoDuration>()
            .map_err(|e| PolicyError::Invalid {
                field,
                message: e.to_string(),
            })
    })
    .transpose()
}

/// The longest policy name: 41 characters, so that every backup name the policy makes (the
/// longest is `<policy>-manual-YYYYMMDDHHMMSS`) is at most 63. Backup names are label values
/// (`replicadr.io/backup` on Restores and reports, `velero.io/backup-name` that Velero writes),
/// and the policy name is one itself (`replicadr.io/policy`, `velero.io/schedule-name`). Limiting
/// the name, rather than hashing long backup names, keeps each of those values equal to the name
/// it stands for: `kubectl get -l replicadr.io/backup=<backup>` finds it and the timestamp stays
/// readable.
pub const MAX_POLICY_NAME: usize = MAX_LABEL_VALUE - schedule::LONGEST_BACKUP_NAME_SUFFIX;

impl ValidPolicy {
    /// Validates `policy`'s spec.
    pub fn from_policy(policy: &BackupPolicy) -> Result<Self, PolicyError> {
        let spec = &policy.spec;
        let name = policy.metadata.name.clone().unwrap_or_default();
        if name.len() > MAX_POLICY_NAME {
            return Err(PolicyError::NameTooLong { name });
        }
        let schedule: Schedule = spec.schedule.parse()?;
        let zone = schedule::parse_time_zone(spec.time_zone.as_deref())?;
        let duration = |field: &'static str, value: Option<&str>, default: Duration| {
            value.map_or(Ok(default), |text| {
                text.parse::<GoDuration>()
                    .map(GoDuration::as_std)
                    .map_err(|e| PolicyError::Invalid {
                        field,
                        message: e.to_string(),
                    })
            })
        };
        let retries = spec.retries.clone().unwrap_or(RetryPolicy {
            limit: 0,
            backoff: None,
        });
        let retry_backoff = duration(
            "retries.backoff",
            retries.backoff.as_deref(),
            Duration::from_mins(5),
        )?;
        let backup_timeout = duration(
            "backupTimeout",
            spec.backup_timeout.as_deref(),
            DEFAULT_BACKUP_TIMEOUT,
        )?;
        let ttl = go_duration("template.ttl", spec.template.ttl.as_deref())?;
        let rpo = go_duration("rpo", spec.rpo.as_deref())?.map(GoDuration::as_std);
        let label_query = spec
            .template
            .label_selector
            .as_ref()
            .map(LabelSelector::to_query)
            .transpose()
            .map_err(|message| PolicyError::Invalid {
                field: "template.labelSelector",
                message,
            })?
            .unwrap_or_default();
        if spec.jitter_seconds > 3600 {
            return Err(PolicyError::Invalid {
                field: "jitterSeconds",
                message: format!("{} is above the maximum of 3600", spec.jitter_seconds),
            });
        }
        if let Some(schedule) = &spec.velero_schedule {
            follows_only(spec, schedule)?;
        }
        let created = policy
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        Ok(Self {
            namespace: policy.metadata.namespace.clone().unwrap_or_default(),
            uid: policy.metadata.uid.clone().unwrap_or_default(),
            generation: policy.metadata.generation,
            created,
            schedule,
            zone,
            paused: spec.paused,
            missed_run_policy: spec.missed_run_policy,
            retry_limit: retries.limit,
            retry_backoff,
            jitter_seconds: spec.jitter_seconds,
            backup_timeout,
            template: spec.template.clone(),
            label_query,
            ttl,
            rpo,
            site_map: spec.site_map.clone().unwrap_or(SiteMapRef {
                name: DEFAULT_SITE_MAP_CONFIGMAP.to_owned(),
                key: None,
            }),
            velero_schedule: spec.velero_schedule.clone(),
            standby: spec.standby.as_ref().is_some_and(|s| s.enabled),
            name,
        })
    }

    /// The Velero Schedule whose backups are this policy's, when it follows one.
    pub fn follows(&self) -> Option<&str> {
        self.velero_schedule.as_deref()
    }

    /// The site map's ConfigMap key.
    pub fn site_map_key(&self) -> &str {
        self.site_map.key.as_deref().unwrap_or(DEFAULT_SITE_MAP_KEY)
    }
}

/// A policy that follows a Velero Schedule sets nothing about making backups: the Schedule makes
/// them, so those fields would never be used and would only mislead whoever reads the policy.
fn follows_only(spec: &BackupPolicySpec, schedule: &str) -> Result<(), PolicyError> {
    let set = |field: &'static str, is_set: bool| {
        if is_set {
            Err(PolicyError::Invalid {
                field,
                message: format!(
                    "is set, but the backups come from Velero Schedule {schedule:?} (spec.veleroSchedule), which sets it in its own spec.template; remove spec.{field}, or remove spec.veleroSchedule to let the policy make its backups"
                ),
            })
        } else {
            Ok(())
        }
    };
    if schedule.is_empty() || schedule.len() > MAX_LABEL_VALUE {
        return Err(PolicyError::Invalid {
            field: "veleroSchedule",
            message: format!(
                "{schedule:?} is not a Schedule name; a name of 1 to {MAX_LABEL_VALUE} characters is accepted (it is the velero.io/schedule-name label of its backups)"
            ),
        });
    }
    if spec.paused {
        return Err(PolicyError::Invalid {
            field: "paused",
            message: format!(
                "is true, but pausing the policy cannot stop Velero Schedule {schedule:?} (spec.veleroSchedule), which makes the backups, and would only silence their RPO alerts; pause the Schedule itself (velero schedule pause {schedule}) and remove spec.paused"
            ),
        });
    }
    if spec
        .time_zone
        .as_deref()
        .is_some_and(|z| !z.is_empty() && z != "UTC")
    {
        return Err(PolicyError::Invalid {
            field: "timeZone",
            message: format!(
                "is set, but Velero runs Schedule {schedule:?}'s cron in UTC, which spec.schedule repeats; remove spec.timeZone"
            ),
        });
    }
    set("retries", spec.retries.is_some())?;
    set("jitterSeconds", spec.jitter_seconds != 0)?;
    set(
        "template.includedNamespaces",
        !spec.template.included_namespaces.is_empty(),
    )?;
    set(
        "template.labelSelector",
        spec.template.label_selector.is_some(),
    )?;
    set("template.ttl", spec.template.ttl.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: &serde_json::Value) -> BackupPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "replicadr.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "vms", "namespace": "velero", "uid": "u1"},
            "spec": spec,
        }))
        .expect("policy")
    }

    #[test]
    fn defaults_fill_an_empty_spec() {
        let valid = ValidPolicy::from_policy(&policy(&serde_json::json!({"schedule": "@daily"})))
            .expect("valid");
        assert_eq!(valid.zone, TimeZone::UTC);
        assert_eq!(valid.missed_run_policy, MissedRunPolicy::RunOnce);
        assert_eq!(valid.retry_limit, 0);
        assert_eq!(valid.backup_timeout, DEFAULT_BACKUP_TIMEOUT);
        assert_eq!(valid.site_map.name, DEFAULT_SITE_MAP_CONFIGMAP);
        assert_eq!(valid.site_map_key(), DEFAULT_SITE_MAP_KEY);
        assert_eq!(valid.label_query, "");
    }

    #[test]
    fn a_policy_that_follows_a_velero_schedule_sets_nothing_about_making_backups() {
        let follows = |extra: serde_json::Value| {
            let mut spec = serde_json::json!({"schedule": "@daily", "veleroSchedule": "nightly"});
            spec.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            ValidPolicy::from_policy(&policy(&spec))
        };
        let valid = follows(serde_json::json!({"template": {"storageLocation": "dr-bucket"}}))
            .expect("a storage location is allowed");
        assert_eq!(valid.follows(), Some("nightly"));
        for (extra, field) in [
            (serde_json::json!({"retries": {"limit": 1}}), "spec.retries"),
            (
                serde_json::json!({"jitterSeconds": 30}),
                "spec.jitterSeconds",
            ),
            (
                serde_json::json!({"template": {"includedNamespaces": ["vms"]}}),
                "spec.template.includedNamespaces",
            ),
            (
                serde_json::json!({"template": {"ttl": "24h"}}),
                "spec.template.ttl",
            ),
            (
                serde_json::json!({"veleroSchedule": ""}),
                "spec.veleroSchedule",
            ),
            (serde_json::json!({"paused": true}), "spec.paused"),
            (
                serde_json::json!({"timeZone": "Europe/Berlin"}),
                "spec.timeZone",
            ),
        ] {
            let error = follows(extra).expect_err(field);
            assert!(error.to_string().starts_with(field), "{error}");
            assert_eq!(error.reason(), "InvalidSpec");
        }
        let error = follows(serde_json::json!({"retries": {"limit": 1}})).expect_err("retries");
        assert!(
            error.to_string().contains("Velero Schedule \"nightly\""),
            "{error}"
        );
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            (
                serde_json::json!({"schedule": "0 25 * * *"}),
                "spec.schedule",
                "InvalidSchedule",
            ),
            (
                serde_json::json!({"schedule": "@daily", "timeZone": "Nowhere/City"}),
                "spec.timeZone",
                "UnknownTimeZone",
            ),
            (
                serde_json::json!({"schedule": "@daily", "template": {"ttl": "30 days"}}),
                "spec.template.ttl",
                "InvalidSpec",
            ),
            (
                serde_json::json!({"schedule": "@daily", "retries": {"limit": 2, "backoff": "soon"}}),
                "spec.retries.backoff",
                "InvalidSpec",
            ),
            (
                serde_json::json!({"schedule": "@daily", "template": {"labelSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}),
                "spec.template.labelSelector",
                "InvalidSpec",
            ),
        ];
        for (spec, field, reason) in cases {
            let error = ValidPolicy::from_policy(&policy(&spec)).expect_err(field);
            assert!(error.to_string().starts_with(field), "{error}");
            assert_eq!(error.reason(), reason);
        }
    }

    #[test]
    fn names_are_limited_so_that_backup_names_stay_label_values() {
        let named = |name: &str| {
            let mut policy = policy(&serde_json::json!({"schedule": "@daily"}));
            policy.metadata.name = Some(name.to_owned());
            ValidPolicy::from_policy(&policy)
        };
        let longest = "a".repeat(MAX_POLICY_NAME);
        assert_eq!(MAX_POLICY_NAME, 41);
        let valid = named(&longest).expect("the longest name is accepted");
        assert_eq!(valid.name, longest);
        let too_long = format!("{longest}b");
        let error = named(&too_long).expect_err("one character more");
        assert_eq!(error.reason(), "InvalidName");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "metadata.name {too_long:?} has 42 characters; at most 41 are accepted"
            )),
            "{message}"
        );
    }

    #[test]
    fn label_selectors_render_as_queries() {
        let selector = LabelSelector {
            match_labels: BTreeMap::from([("app".into(), "vm".into())]),
            match_expressions: vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: vec!["gold".into(), "silver".into()],
                },
                LabelSelectorRequirement {
                    key: "skip".into(),
                    operator: "DoesNotExist".into(),
                    values: vec![],
                },
            ],
        };
        assert_eq!(
            selector.to_query().expect("query"),
            "app=vm,tier in (gold,silver),!skip"
        );
    }

    #[test]
    fn conditions_keep_transition_time_while_unchanged() {
        let mut status = BackupPolicyStatus::default();
        let t1: Timestamp = "2026-01-01T00:00:00Z".parse().expect("t1");
        let t2: Timestamp = "2026-01-02T00:00:00Z".parse().expect("t2");
        status.set_condition("Ready", true, "Scheduled", "ok", Some(1), t1);
        status.set_condition("Ready", true, "Scheduled", "still ok", Some(2), t2);
        let ready = status.condition("Ready").expect("ready");
        assert_eq!(ready.last_transition_time, t1.to_string());
        assert_eq!(ready.message, "still ok");
        status.set_condition("Ready", false, "InvalidSchedule", "bad", Some(3), t2);
        assert_eq!(
            status
                .condition("Ready")
                .expect("ready")
                .last_transition_time,
            t2.to_string()
        );
    }

    #[test]
    fn checked_in_crd_matches_the_rust_types() {
        let checked_in = include_str!("../../manifests/base/crds/backuppolicies.yaml");
        assert!(
            checked_in == crd_yaml(),
            "manifests/base/crds/backuppolicies.yaml is stale: run `cargo run -p replicadr-scheduler -- crd > manifests/base/crds/backuppolicies.yaml`"
        );
    }
}

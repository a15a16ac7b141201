//! A policy that follows a user's Velero `Schedule` (`spec.veleroSchedule`): Velero makes the
//! backups on the Schedule's cron, and the policy verifies, publishes and offers for failover
//! every one of them, as it does with its own. This module says what such a Schedule must set for
//! its backups to be a policy's: metadata-only, and labelled with the policy and the site, which
//! is what failover chooses backups by. Pure: the service reads the Schedule and reports what
//! this finds as the policy's `Ready` condition.
//!
//! Velero labels each backup of a Schedule with `spec.template.metadata.labels` when the template
//! sets any, else with the Schedule's own labels, and always with `velero.io/schedule-name`
//! (`pkg/builder/backup_builder.go`, `FromSchedule`).

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::Value;

use crate::policy::ValidPolicy;
use crate::velero::{LABEL_MANAGED_BY, MANAGED_BY, METADATA_ONLY, policy_backup_labels};

/// The labels Velero puts on the backups `schedule` makes (besides `velero.io/schedule-name`),
/// and where they are set.
fn backup_labels(schedule: &DynamicObject) -> (BTreeMap<String, String>, &'static str) {
    match schedule
        .data
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
    {
        Some(labels) => (
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect(),
            "spec.template.metadata.labels",
        ),
        None => (
            schedule.metadata.labels.clone().unwrap_or_default(),
            "metadata.labels (the template sets no labels)",
        ),
    }
}

/// Whether `schedule` is paused (`spec.paused`): Velero makes no backups of it.
pub fn paused(schedule: &DynamicObject) -> bool {
    schedule.data.pointer("/spec/paused") == Some(&Value::Bool(true))
}

/// What `schedule` lacks for its backups to be `valid`'s, made at `site`; each line names the
/// field, its value and what is needed. `cron` is the policy's own `spec.schedule`.
pub fn lacks(schedule: &DynamicObject, cron: &str, valid: &ValidPolicy, site: &str) -> Vec<String> {
    let mut lacks = Vec::new();
    let text = |pointer: &str| {
        schedule
            .data
            .pointer(pointer)
            .map_or_else(|| "unset".to_owned(), Value::to_string)
    };
    let theirs = schedule
        .data
        .pointer("/spec/schedule")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if theirs.trim() != cron.trim() {
        lacks.push(format!(
            "spec.schedule is {theirs:?} but the policy's spec.schedule is {cron:?}: the RPO and the next backup time are read from the policy's, so set both to the same cron"
        ));
    }
    for field in METADATA_ONLY {
        let pointer = format!("/spec/template/{field}");
        if schedule.data.pointer(&pointer) != Some(&Value::Bool(false)) {
            lacks.push(format!(
                "spec.template.{field} is {}: a metadata-only backup needs false (unset takes the Velero server's default)",
                text(&pointer)
            ));
        }
    }
    let (labels, set_in) = backup_labels(schedule);
    for (key, wanted) in policy_backup_labels(&valid.name, site) {
        match labels.get(key) {
            Some(value) if *value == wanted => {}
            Some(value) => lacks.push(format!(
                "its backups are labelled {key}={value} ({set_in}); this policy at site {site} needs {key}={wanted}"
            )),
            None => lacks.push(format!(
                "its backups get no label {key} ({set_in}); set {key}: \"{wanted}\" in spec.template.metadata.labels"
            )),
        }
    }
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY) {
        lacks.push(format!(
            "its backups are labelled {LABEL_MANAGED_BY}={MANAGED_BY} ({set_in}), which marks the backups the scheduler makes itself, so the policy would never take them as the Schedule's: remove that label"
        ));
    }
    let location = schedule
        .data
        .pointer("/spec/template/storageLocation")
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty());
    let ours = valid
        .template
        .storage_location
        .as_deref()
        .filter(|l| !l.is_empty());
    if location != ours {
        let name = |l: Option<&str>| l.map_or_else(|| "Velero's default".to_owned(), str::to_owned);
        lacks.push(format!(
            "spec.template.storageLocation is {} but the policy's spec.template.storageLocation is {}: the policy checks that location and reads the active-site record from it, so name the same one",
            name(location),
            name(ours)
        ));
    }
    lacks
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::BackupPolicy;

    fn policy() -> ValidPolicy {
        let policy: BackupPolicy = serde_json::from_value(json!({
            "apiVersion": "replicadr.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "nightly-vms", "namespace": "velero"},
            "spec": {"schedule": "0 2 * * *", "veleroSchedule": "nightly"},
        }))
        .expect("policy");
        ValidPolicy::from_policy(&policy).expect("valid")
    }

    fn schedule(template: &Value, labels: Option<&Value>) -> DynamicObject {
        let mut schedule: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "velero.io/v1",
            "kind": "Schedule",
            "metadata": {"name": "nightly", "namespace": "velero"},
            "spec": {"schedule": "0 2 * * *", "template": template},
        }))
        .expect("schedule");
        if let Some(labels) = labels {
            schedule.metadata.labels =
                Some(serde_json::from_value(labels.clone()).expect("labels"));
        }
        schedule
    }

    fn complete() -> Value {
        json!({
            "snapshotVolumes": false,
            "defaultVolumesToFsBackup": false,
            "snapshotMoveData": false,
            "metadata": {"labels": {
                "replicadr.io/policy": "nightly-vms",
                "replicadr.io/site": "primary",
                "velero.kubevirt.io/metadataBackup": "true",
            }},
        })
    }

    #[test]
    fn a_complete_schedule_lacks_nothing() {
        assert_eq!(
            lacks(
                &schedule(&complete(), None),
                "0 2 * * *",
                &policy(),
                "primary"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_schedules_own_labels_count_only_when_the_template_sets_none() {
        let mut template = complete();
        let labels = template["metadata"]["labels"].take();
        template["metadata"] = json!({});
        assert_eq!(
            lacks(
                &schedule(&template, Some(&labels)),
                "0 2 * * *",
                &policy(),
                "primary"
            ),
            Vec::<String>::new()
        );
        template["metadata"] = json!({"labels": {"team": "a"}});
        let found = lacks(
            &schedule(&template, Some(&labels)),
            "0 2 * * *",
            &policy(),
            "primary",
        );
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[1].contains("no label replicadr.io/policy (spec.template.metadata.labels)"),
            "{found:#?}"
        );
    }

    #[test]
    fn each_missing_setting_is_named_with_its_value_and_what_is_needed() {
        let mut template = complete();
        template["snapshotVolumes"] = json!(true);
        template
            .as_object_mut()
            .expect("object")
            .remove("snapshotMoveData");
        template["storageLocation"] = json!("other");
        let found = lacks(&schedule(&template, None), "0 3 * * *", &policy(), "dr");
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].contains(
            r#"spec.schedule is "0 2 * * *" but the policy's spec.schedule is "0 3 * * *""#
        ));
        assert!(found[1].starts_with(
            "spec.template.snapshotVolumes is true: a metadata-only backup needs false"
        ));
        assert!(found[2].starts_with("spec.template.snapshotMoveData is unset"));
        assert!(
            found[3].contains("labelled replicadr.io/site=primary")
                && found[3].contains("at site dr needs replicadr.io/site=dr"),
            "{found:#?}"
        );
        assert!(found[4].contains("storageLocation is other but the policy's spec.template.storageLocation is Velero's default"));
    }
}

//! The Velero Restore of a failover, failback or drill: named for the operation, site, backup
//! and attempt, labelled so that a re-run finds it again, restoring VMs halted through a resource
//! modifier, and followed to its end; its results read back from object storage.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use replicadr_core::kubevirt::ReferencedKind;
use replicadr_core::names::{self, label_value};
use replicadr_core::wire::{
    LABEL_BACKUP, LABEL_EPOCH, LABEL_MANAGED_BY, LABEL_OPERATION, LABEL_POLICY, LABEL_SITE,
    MANAGED_BY, PHASE_COMPLETED, PHASE_FAILED, PHASE_FAILED_VALIDATION, PHASE_PARTIALLY_FAILED,
    POINTER_STATUS_PHASE, RESOURCE_DATA_VOLUMES, RESOURCE_PVCS, RESOURCE_PVS,
    RESOURCE_VIRTUAL_MACHINES,
};

use super::failover::{ANNOTATION_ATTEMPT, ANNOTATION_OUTCOME, FIELD_MANAGER, Operation, Options};
use super::plan::Plan;
use super::site::RecoveryError;
use crate::velero;

/// The resource-modifier ConfigMap that restores VMs halted, so they start in order afterwards.
pub const HALT_VMS_CONFIGMAP: &str = "replicadr-restore-vms-halted";

/// What a standby restores: exactly the kinds whose objects at the site the standby can check
/// before it patches them and prune after (a VM, its disks, and what a VM names). Everything
/// else in a backup — Services, Routes, Deployments, pods, custom resources — is left to the
/// failover, which restores it without overwriting anything ([`RestoreScope::AllButStandby`]).
pub fn standby_kinds() -> Vec<String> {
    [
        RESOURCE_VIRTUAL_MACHINES,
        RESOURCE_DATA_VOLUMES,
        RESOURCE_PVCS,
        RESOURCE_PVS,
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(
        ReferencedKind::ALL
            .into_iter()
            .map(ReferencedKind::group_resource),
    )
    .collect()
}

/// Which of a backup's kinds a Restore takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreScope {
    /// Every kind (but snapshots and CRDs, which no restore takes).
    #[default]
    All,
    /// `standby_kinds()` only: a warm standby's Restore.
    Standby,
    /// Every kind but `standby_kinds()`: what a failover from a warm standby restores.
    AllButStandby,
}

/// Merge patches leave no error when `running` is absent; Velero applies the rule to every VM the
/// restore creates (resource modifiers need Velero 1.13 or later).
const HALT_VMS_RULES: &str = r#"version: v1
resourceModifierRules:
  - conditions:
      groupResource: virtualmachines.kubevirt.io
    mergePatches:
      - patchData: '{"spec": {"running": null, "runStrategy": "Halted"}}'
"#;

/// A Restore as the failover reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreView {
    pub name: String,
    pub phase: Option<String>,
    pub attempt: u32,
    pub items_restored: u64,
    pub total_items: u64,
    pub warnings: u64,
    pub errors: u64,
    pub failure_reason: Option<String>,
    /// The takeover's epoch ([`LABEL_EPOCH`]).
    pub epoch: Option<u64>,
    /// The backup it restores.
    pub backup: String,
    /// How the run that followed it ended ([`ANNOTATION_OUTCOME`]).
    pub outcome: Option<String>,
}

impl RestoreView {
    fn from_object(object: &DynamicObject) -> Self {
        let number = |pointer: &str| {
            object
                .data
                .pointer(pointer)
                .and_then(Value::as_u64)
                .unwrap_or_default()
        };
        Self {
            name: object.name_any(),
            phase: object
                .data
                .pointer(POINTER_STATUS_PHASE)
                .and_then(Value::as_str)
                .map(str::to_owned),
            attempt: object
                .annotations()
                .get(ANNOTATION_ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(1),
            items_restored: number("/status/progress/itemsRestored"),
            total_items: number("/status/progress/totalItems"),
            warnings: number("/status/warnings"),
            errors: number("/status/errors"),
            failure_reason: failure_reason(&object.data),
            outcome: object.annotations().get(ANNOTATION_OUTCOME).cloned(),
            backup: object
                .data
                .pointer("/spec/backupName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            epoch: object
                .labels()
                .get(LABEL_EPOCH)
                .and_then(|e| e.parse().ok()),
        }
    }

    /// Velero is done with it.
    pub fn finished(&self) -> bool {
        matches!(
            self.phase.as_deref(),
            Some(PHASE_COMPLETED | PHASE_PARTIALLY_FAILED | PHASE_FAILED | PHASE_FAILED_VALIDATION)
        )
    }

    /// Finished without restoring (a new attempt is needed).
    pub fn failed(&self) -> bool {
        matches!(
            self.phase.as_deref(),
            Some(PHASE_FAILED | PHASE_FAILED_VALIDATION)
        )
    }
}

/// The Restores of one Velero namespace.
pub(crate) struct Restores {
    client: Client,
    namespace: String,
    api: Api<DynamicObject>,
}

impl Restores {
    pub(crate) fn new(client: &Client, namespace: &str) -> Self {
        Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
            api: Api::namespaced_with(client.clone(), namespace, &velero::restore_resource()),
        }
    }

    /// Every attempt of this operation on `backup` at this site, the first first.
    pub(crate) async fn attempts(
        &self,
        options: &Options,
        backup: &str,
    ) -> Result<Vec<RestoreView>, kube::Error> {
        let selector = format!(
            "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SITE}={},{LABEL_BACKUP}={},{LABEL_OPERATION}={}",
            options.site,
            label_value(backup),
            options.operation.as_str()
        );
        let mut attempts: Vec<RestoreView> = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .map(RestoreView::from_object)
            .collect();
        attempts.sort_by_key(|r| r.attempt);
        Ok(attempts)
    }

    /// The warm standby's Restores of `policy` at `site`, oldest first (by creation).
    pub(crate) async fn standby(
        &self,
        site: &str,
        policy: &str,
    ) -> Result<Vec<RestoreView>, kube::Error> {
        let selector = format!(
            "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SITE}={site},{LABEL_OPERATION}={},{LABEL_POLICY}={}",
            Operation::Standby.as_str(),
            label_value(policy)
        );
        let mut listed = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        // A deleted one may linger while Velero removes its logs and results from object storage.
        listed.retain(|r| r.metadata.deletion_timestamp.is_none());
        listed.sort_by_key(|r| (r.creation_timestamp(), r.name_any()));
        Ok(listed.iter().map(RestoreView::from_object).collect())
    }

    /// Deletes one of our Restores (Velero then removes its logs and results from object
    /// storage; what it restored stays).
    pub(crate) async fn delete(&self, name: &str) -> Result<(), kube::Error> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Every failover and failback Restore at `site` in the takeover of `epoch`, by name, with
    /// its backup (none when the epoch is unknown): those of one backup are its run's own.
    pub(crate) async fn of_epoch(
        &self,
        site: &str,
        epoch: Option<u64>,
    ) -> Result<BTreeMap<String, String>, kube::Error> {
        let Some(epoch) = epoch else {
            return Ok(BTreeMap::new());
        };
        let selector = format!(
            "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SITE}={site},{LABEL_EPOCH}={epoch},{LABEL_OPERATION} in (failover,failback)"
        );
        Ok(self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .filter_map(|r| {
                let backup = r.data.pointer("/spec/backupName")?.as_str()?.to_owned();
                Some((r.name_any(), backup))
            })
            .collect())
    }

    /// The Restore to follow: the newest attempt of this backup at this site unless it failed
    /// (or its run failed its checks, or `--new-attempt`), else a new attempt.
    pub(crate) async fn ensure(
        &self,
        options: &Options,
        backup: &str,
        plan: &Plan,
        epoch: Option<u64>,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<String, RecoveryError> {
        let attempts = self.attempts(options, backup).await?;
        // A drill proves the backup restorable again each time: only a drill still running is
        // followed. A failover continues with an attempt still running, or one that finished
        // and whose run did not fail its checks, unless --new-attempt asks for a new one.
        let reusable = |last: &RestoreView| {
            // A Restore of an earlier takeover of this backup is over, however it ended.
            if last.failed() || last.epoch != epoch {
                return false;
            }
            if !last.finished() {
                return true;
            }
            options.operation != Operation::Drill
                && !options.new_attempt
                && last.outcome.as_deref() != Some("Failed")
        };
        let attempt = match attempts.last() {
            Some(last) if reusable(last) => {
                progress(format!(
                    "continuing with Restore {}/{} (attempt {}, {})",
                    self.namespace,
                    last.name,
                    last.attempt,
                    last.phase.as_deref().unwrap_or("New")
                ));
                return Ok(last.name.clone());
            }
            Some(last) => {
                let why = if last.failed() {
                    last.failure_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                } else if last.outcome.as_deref() == Some("Failed") {
                    ", and the run that followed it failed its checks".to_owned()
                } else if options.new_attempt {
                    ", and --new-attempt asks for a new one".to_owned()
                } else {
                    String::new()
                };
                progress(format!(
                    "Restore {} ended {}{why}: starting attempt {}",
                    last.name,
                    last.phase.as_deref().unwrap_or("?"),
                    last.attempt + 1
                ));
                last.attempt + 1
            }
            None => 1,
        };
        let name = restore_name(options.operation, &options.site, backup, attempt);
        let halt = plan.virtual_machines().next().is_some();
        if halt {
            self.put_halt_modifier().await?;
        }
        let restore = build_restore(
            &name,
            &self.namespace,
            options,
            backup,
            attempt,
            halt,
            epoch,
        );
        self.api.create(&PostParams::default(), &restore).await?;
        progress(format!(
            "created Restore {}/{name} of backup {backup}",
            self.namespace
        ));
        Ok(name)
    }

    /// The resource modifier that restores every VM with `runStrategy: Halted`.
    async fn put_halt_modifier(&self) -> Result<(), kube::Error> {
        let configmap: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": HALT_VMS_CONFIGMAP, "namespace": self.namespace,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY},
            },
            "data": {"rules.yaml": HALT_VMS_RULES},
        }))
        .expect("a valid ConfigMap");
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                HALT_VMS_CONFIGMAP,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&configmap),
            )
            .await?;
        Ok(())
    }

    /// Follows the Restore until Velero finishes it, printing phase and progress changes.
    pub(crate) async fn watch(
        &self,
        name: &str,
        timeout: Duration,
        poll: Duration,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<RestoreView, String> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            match self.api.get_opt(name).await {
                Ok(Some(object)) => {
                    let view = RestoreView::from_object(&object);
                    let line = format!(
                        "Restore {name}: {} {}/{} items, {} warnings, {} errors",
                        view.phase.as_deref().unwrap_or("New"),
                        view.items_restored,
                        view.total_items,
                        view.warnings,
                        view.errors
                    );
                    if last.as_ref() != Some(&line) {
                        progress(line.clone());
                        last = Some(line);
                    }
                    if view.finished() {
                        return Ok(view);
                    }
                }
                Ok(None) => return Err(format!("Restore {}/{name} disappeared", self.namespace)),
                Err(error) => progress(format!("cannot read Restore {name} (retrying): {error}")),
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Restore {}/{name} did not finish within {}: is Velero running at this site? Re-run the same command to continue following it (Velero marks a restore it was running when it restarted as Failed; the re-run then starts a new attempt)",
                    self.namespace,
                    crate::duration::human(timeout)
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// `<operation>-<site>-<backup>[-<attempt>]`, at most 63 characters: Velero writes the restore
/// name into the `velero.io/restore-name` label of everything it restores. A longer name keeps
/// its attempt suffix and is cut before it, ending in a hash of the uncut name
/// ([`names::fitted`]), so that backups differing only after the cut (their timestamps) get
/// Restores of their own.
pub fn restore_name(operation: Operation, site: &str, backup: &str, attempt: u32) -> String {
    let suffix = if attempt > 1 {
        format!("-{attempt}")
    } else {
        String::new()
    };
    let name = format!("{}-{site}-{backup}", operation.as_str());
    names::fitted(&name, names::MAX_LABEL_VALUE - suffix.len()).into_owned() + &suffix
}

/// The Restore: the whole backup, PVs restored as backed up (the site-remap plugin rewrites
/// them), nothing that exists overwritten, VMs halted until started in order.
pub(crate) fn build_restore(
    name: &str,
    namespace: &str,
    options: &Options,
    backup: &str,
    attempt: u32,
    halt: bool,
    epoch: Option<u64>,
) -> DynamicObject {
    let standby = options.operation == Operation::Standby;
    let mut excluded: Vec<String> = [
        "volumesnapshots.snapshot.storage.k8s.io",
        "volumesnapshotcontents.snapshot.storage.k8s.io",
        "customresourcedefinitions.apiextensions.k8s.io",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let scope = if standby {
        RestoreScope::Standby
    } else {
        options.scope
    };
    if scope == RestoreScope::AllButStandby {
        excluded.extend(standby_kinds());
    }
    excluded.extend(options.skip_kinds.iter().cloned());
    let mut spec = json!({
        "backupName": backup,
        // Metadata-only backups have no volume snapshots: `restorePVs` only matters for those;
        // PVs are restored as objects because the backed-up copies are Retain.
        "restorePVs": true,
        // A failover never patches an object that exists (it may be the operator's); Velero
        // reports each one as a warning, and a re-run after a partial restore skips what is
        // already there. A standby patches what its earlier restores made (the plan refused the
        // refresh if anything else is there) and labels it with this Restore, so what is left
        // with an earlier one's label is what the new backup no longer holds.
        "existingResourcePolicy": if standby { "update" } else { "none" },
        // Arrays do not replicate snapshots, so a VolumeSnapshot restored here would name a
        // snapshot handle that does not exist at this site; its data came over as the replica PVC.
        // CRDs belong to their operators at this site (KubeVirt's, the CSI snapshotter's); a
        // backed-up copy would only differ from them. The VirtualMachineApi precondition checks
        // that the VM API is served here.
        "excludedResources": excluded,
    });
    if scope == RestoreScope::Standby {
        spec["includedResources"] = json!(standby_kinds());
    }
    if halt {
        spec["resourceModifier"] = json!({"kind": "ConfigMap", "name": HALT_VMS_CONFIGMAP});
    }
    if !options.namespace_mapping.is_empty() {
        spec["namespaceMapping"] = json!(options.namespace_mapping);
    }
    let mut restore = DynamicObject::new(name, &velero::restore_resource()).within(namespace);
    restore.metadata.labels = Some(BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (
            LABEL_OPERATION.to_owned(),
            options.operation.as_str().to_owned(),
        ),
        (LABEL_SITE.to_owned(), options.site.clone()),
        (LABEL_BACKUP.to_owned(), label_value(backup).into_owned()),
    ]));
    if let (Some(labels), Some(policy)) = (restore.metadata.labels.as_mut(), &options.policy) {
        labels.insert(LABEL_POLICY.to_owned(), label_value(policy).into_owned());
    }
    if let (Some(labels), Some(epoch)) = (restore.metadata.labels.as_mut(), epoch) {
        labels.insert(LABEL_EPOCH.to_owned(), epoch.to_string());
    }
    restore.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_ATTEMPT.to_owned(),
        attempt.to_string(),
    )]));
    restore.data = json!({ "spec": spec });
    restore
}

/// The first messages of Velero's restore results, `namespace: message`.
pub(crate) fn summarize_results(results: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for kind in ["errors", "warnings"] {
        let Some(result) = results.get(kind) else {
            continue;
        };
        for scope in ["velero", "cluster"] {
            for message in result
                .get(scope)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                lines.push(format!(
                    "{kind}: {scope}: {}",
                    message.as_str().unwrap_or_default()
                ));
            }
        }
        if let Some(namespaces) = result.get("namespaces").and_then(Value::as_object) {
            for (namespace, messages) in namespaces {
                for message in messages.as_array().into_iter().flatten() {
                    lines.push(format!(
                        "{kind}: {namespace}: {}",
                        message.as_str().unwrap_or_default()
                    ));
                }
            }
        }
    }
    lines.truncate(50);
    lines
}

/// Why Velero failed a Restore: `status.failureReason`, or for `FailedValidation` the
/// `status.validationErrors` Velero lists instead (the backup not found, a storage location not
/// available, ...).
fn failure_reason(restore: &Value) -> Option<String> {
    if let Some(reason) = restore
        .pointer("/status/failureReason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        return Some(reason.to_owned());
    }
    let errors: Vec<&str> = restore
        .pointer("/status/validationErrors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    (!errors.is_empty()).then(|| format!("validation errors: {}", errors.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `FailedValidation` Restore has no failureReason; its validationErrors say why.
    #[test]
    fn a_failed_validation_is_explained_by_its_validation_errors() {
        let failed = json!({"status": {"phase": "FailedValidation", "validationErrors": [
            "backup not found", "storage location default is unavailable"]}});
        assert_eq!(
            failure_reason(&failed).as_deref(),
            Some("validation errors: backup not found; storage location default is unavailable")
        );
        let reasoned = json!({"status": {"failureReason": "found a restore with status InProgress", "validationErrors": ["x"]}});
        assert_eq!(
            failure_reason(&reasoned).as_deref(),
            Some("found a restore with status InProgress")
        );
        assert_eq!(
            failure_reason(&json!({"status": {"validationErrors": []}})),
            None
        );
    }

    #[test]
    fn restore_names_fit_a_label_and_number_attempts() {
        assert_eq!(
            restore_name(Operation::Failover, "dr", "vms-20261122-1800", 1),
            "failover-dr-vms-20261122-1800"
        );
        assert_eq!(
            restore_name(Operation::Failback, "primary", "b", 3),
            "failback-primary-b-3"
        );
        let long = restore_name(Operation::Failover, "dr", &"x".repeat(80), 12);
        assert_eq!(long.len(), 63, "{long}");
        assert!(long.ends_with("-12"), "{long}");
    }

    /// The longest backup names a policy makes (a 41-character policy name, the longest
    /// accepted) differ only in their timestamps: each gets a Restore name of its own, a valid
    /// DNS label, and its attempts stay apart.
    #[test]
    fn restore_names_of_long_backups_that_differ_at_the_end_stay_apart() {
        let policy = "p".repeat(crate::policy::MAX_POLICY_NAME);
        let first = format!("{policy}-manual-20261122180000");
        let second = format!("{policy}-manual-20261122180001");
        assert_eq!(first.len(), names::MAX_LABEL_VALUE);
        let names: Vec<String> = [(&first, 1), (&second, 1), (&first, 2), (&second, 10)]
            .into_iter()
            .map(|(backup, attempt)| restore_name(Operation::Failback, "primary", backup, attempt))
            .collect();
        for name in &names {
            assert!(name.len() <= names::MAX_LABEL_VALUE, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
            assert!(name.starts_with("failback-primary-ppp"), "{name}");
        }
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:#?}");
        assert!(
            names[2].ends_with("-2") && names[3].ends_with("-10"),
            "{names:#?}"
        );
        assert_eq!(names[0][..55], names[2][..55]);
    }

    #[test]
    fn a_standby_restore_updates_and_leaves_out_whatever_runs_a_pod() {
        let mut options = Options::new(Operation::Standby, "dr");
        options.policy = Some("vms".into());
        let standby = build_restore("standby-dr-b", "velero", &options, "b", 1, true, None);
        assert_eq!(standby.data["spec"]["existingResourcePolicy"], "update");
        let included = standby.data["spec"]["includedResources"].to_string();
        for kind in [
            "virtualmachines.kubevirt.io",
            "persistentvolumeclaims",
            "secrets",
        ] {
            assert!(included.contains(kind), "{included}");
        }
        for kind in [
            "pods",
            "deployments.apps",
            "services",
            "virtualmachineinstances",
        ] {
            assert!(!included.contains(kind), "{included}");
        }
        let excluded = standby.data["spec"]["excludedResources"].to_string();
        assert!(excluded.contains("volumesnapshots.snapshot.storage.k8s.io"));
        let labels = standby.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[LABEL_OPERATION], "standby");
        assert_eq!(labels[LABEL_POLICY], "vms");
        assert_eq!(
            standby.data["spec"]["resourceModifier"]["name"],
            HALT_VMS_CONFIGMAP
        );

        let failover = build_restore(
            "failover-dr-b",
            "velero",
            &Options::new(Operation::Failover, "dr"),
            "b",
            1,
            true,
            Some(2),
        );
        assert_eq!(failover.data["spec"]["existingResourcePolicy"], "none");
        assert!(
            !failover.data["spec"]["excludedResources"]
                .to_string()
                .contains("pods")
        );
        assert!(failover.data["spec"].get("includedResources").is_none());

        let mut left_out = Options::new(Operation::Failover, "dr");
        left_out.scope = RestoreScope::AllButStandby;
        let complement =
            build_restore("failover-dr-b", "velero", &left_out, "b", 1, false, Some(2));
        assert!(complement.data["spec"].get("includedResources").is_none());
        let excluded = complement.data["spec"]["excludedResources"].to_string();
        assert!(
            excluded.contains("virtualmachines.kubevirt.io")
                && excluded.contains("persistentvolumes"),
            "{excluded}"
        );
        assert_eq!(complement.data["spec"]["existingResourcePolicy"], "none");
    }

    #[test]
    fn the_halt_rules_parse_as_velero_reads_them() {
        let rules: Value = serde_yaml_ng::from_str(HALT_VMS_RULES).expect("yaml");
        assert_eq!(rules["version"], "v1");
        let rule = &rules["resourceModifierRules"][0];
        assert_eq!(
            rule["conditions"]["groupResource"],
            "virtualmachines.kubevirt.io"
        );
        let patch: Value = serde_json::from_str(
            rule["mergePatches"][0]["patchData"]
                .as_str()
                .expect("patchData"),
        )
        .expect("json");
        assert_eq!(patch["spec"]["runStrategy"], "Halted");
        assert!(patch["spec"]["running"].is_null());
    }

    #[test]
    fn results_are_flattened_errors_first() {
        let results = json!({
            "warnings": {"namespaces": {"vms": ["could not restore, PersistentVolumeClaim \"a\" already exists"]}},
            "errors": {"velero": ["boom"], "namespaces": {"vms": ["bad pv"]}},
        });
        assert_eq!(
            summarize_results(&results),
            [
                "errors: velero: boom",
                "errors: vms: bad pv",
                "warnings: vms: could not restore, PersistentVolumeClaim \"a\" already exists"
            ]
        );
    }
}

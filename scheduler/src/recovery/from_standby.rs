//! A failover or failback at a site with a warm standby of the run's policy
//! ([`super::standby`]). Whatever state the standby is in, the run ends with the planned backup's
//! objects at the site, or fails saying why:
//! 1. a standby Restore still running (a refresh the scheduler started before the takeover) is
//!    waited for;
//! 2. unless the newest standby Restore restored exactly the planned backup, the standby is
//!    brought to it first (an update restore of that backup, with pruning), and it must then hold
//!    it;
//! 3. its objects count as restored by this run; what a standby does not restore (Services,
//!    Deployments, custom resources, ...) is restored by a Restore of every other kind; when the
//!    standby's Restore did not complete cleanly, or an object the plan needs is missing here, the
//!    whole backup is restored instead — Velero keeps what exists (`existingResourcePolicy:
//!    none`), so only what is missing comes back;
//! 4. the failover's checks follow, as on the cold path.

use std::collections::BTreeSet;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt};

use replicadr_core::contents::BackupContents;
use replicadr_core::wire::{PHASE_COMPLETED, PHASE_PARTIALLY_FAILED};

use super::failover::{Options, Run};
use super::plan::VolumeAction;
use super::report::{PhaseTime, StandbyUse};
use super::restore::{RestoreScope, Restores, standby_kinds};
use super::site::{RecoveryError, names_in};
use super::standby::{self, Refresh, StandbyOptions};
use super::vm_start::{data_volume_resource, vm_resource};
use crate::verify::Verifier;

/// Kinds no Restore takes, or that are there already: not a reason to restore the rest.
const NEVER_RESTORED: [&str; 4] = [
    "namespaces",
    "volumesnapshots.snapshot.storage.k8s.io",
    "volumesnapshotcontents.snapshot.storage.k8s.io",
    "customresourcedefinitions.apiextensions.k8s.io",
];

/// Uses the warm standby for `run`, when its policy has one at this site; whether it did
/// (`false` leaves the run to the cold path). A failure is in the report.
pub(crate) async fn restore(
    client: &Client,
    namespace: &str,
    options: &Options,
    run: &mut Run,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<bool, RecoveryError> {
    let Some(policy) = standby_policy(options, run) else {
        return Ok(false);
    };
    let started = Instant::now();
    let every = match settled(client, namespace, options, &policy, progress).await? {
        Ok(every) if every.is_empty() => return Ok(false),
        Ok(every) => every,
        Err(failure) => {
            run.report.fail(failure);
            return Ok(true);
        }
    };
    let backup = run.planned.backup.name.clone();
    let before = standby::held(client, namespace, &options.site, &policy).await?;
    let lag_seconds = match &before {
        Some(held) => standby_lag(client, namespace, &held.backup).await,
        None => None,
    };
    let newest = every.last().map(|r| r.name.clone());
    let current = before
        .as_ref()
        .is_some_and(|h| h.backup == backup && Some(&h.restore) == newest.as_ref());
    let mut problems = Vec::new();
    let mut updated_from = None;
    if !current {
        let was = before
            .as_ref()
            .map_or_else(|| "nothing".to_owned(), |h| format!("backup {}", h.backup));
        progress(format!(
            "the warm standby here holds {was}, not backup {backup} as restored by its newest Restore: bringing it up to date first"
        ));
        match catch_up(client, namespace, options, run, &policy, progress).await? {
            Ok(found) => problems = found,
            Err(failure) => {
                run.report.fail(format!(
                    "the warm standby could not be brought from {was} to backup {backup}: {failure}"
                ));
                return Ok(true);
            }
        }
        updated_from = before.as_ref().map(|h| h.backup.clone());
    }
    let Some(held) = standby::held(client, namespace, &options.site, &policy)
        .await?
        .filter(|h| h.backup == backup)
    else {
        run.report.fail(format!(
            "the warm standby does not hold backup {backup} after it was brought up to date: another standby Restore ran since; re-run the same command"
        ));
        return Ok(true);
    };
    let view = Restores::new(client, namespace)
        .standby(&options.site, &policy)
        .await?
        .into_iter()
        .find(|r| r.name == held.restore);
    account(&mut run.report, &held.restore, view.as_ref(), &problems);
    run.own_restores.clone_from(&held.restores);
    progress(format!(
        "using the warm standby: Restore {namespace}/{} holds backup {backup}; its objects are this run's",
        held.restore
    ));
    let clean = problems.is_empty()
        && view.as_ref().is_some_and(|v| {
            v.phase.as_deref() == Some(PHASE_COMPLETED) && v.errors == 0 && v.warnings == 0
        });
    let complement = restore_besides(client, namespace, options, run, clean, progress).await?;
    if !clean {
        let failure = unclean(
            namespace,
            options,
            &policy,
            &held.restore,
            &backup,
            &problems,
            &run.report,
        );
        run.report.fail(failure);
    }
    run.report.standby = Some(StandbyUse {
        restore: held.restore.clone(),
        backup,
        updated_from,
        lag_seconds,
        complement,
    });
    run.report
        .phase(PhaseTime::new("restore", started.elapsed()));
    Ok(true)
}

/// The policy whose standby a takeover run may use: the run's, when it is the backup's.
fn standby_policy(options: &Options, run: &Run) -> Option<String> {
    options.operation.takeover()?;
    let policy = run.policy.clone()?;
    // `--policy` names another policy than the backup's: its standby is not this backup's.
    let other = run
        .planned
        .backup
        .policy
        .as_ref()
        .is_some_and(|p| *p != policy);
    (!other).then_some(policy)
}

/// The policy's standby Restores here once none is running (a refresh begun before the takeover
/// is waited for); why not, when it did not end in time.
async fn settled(
    client: &Client,
    namespace: &str,
    options: &Options,
    policy: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Result<Vec<super::restore::RestoreView>, String>, RecoveryError> {
    let restores = Restores::new(client, namespace);
    let every = restores.standby(&options.site, policy).await?;
    let Some(running) = every.iter().rev().find(|r| !r.finished()) else {
        return Ok(Ok(every));
    };
    progress(format!(
        "the warm standby's Restore {namespace}/{} is still running (a refresh begun before this takeover): waiting for it",
        running.name
    ));
    let name = running.name.clone();
    if let Err(message) = restores
        .watch(&name, options.restore_timeout, options.poll, progress)
        .await
    {
        return Ok(Err(message));
    }
    Ok(Ok(restores.standby(&options.site, policy).await?))
}

/// Why a standby that did not restore cleanly fails the run: a patch Velero could not apply
/// leaves an object with an older backup's content, which neither the Restore that keeps what
/// exists nor the checks would notice.
fn unclean(
    namespace: &str,
    options: &Options,
    policy: &str,
    restore: &str,
    backup: &str,
    problems: &[String],
    report: &super::report::RecoveryReport,
) -> String {
    let what = if problems.is_empty() {
        report.restore_phase.as_ref().map_or_else(
            || "its state cannot be read".to_owned(),
            |phase| {
                format!(
                    "{phase}, {} warnings, {} errors",
                    report.restore_warnings, report.restore_errors
                )
            },
        )
    } else {
        problems.join("; ")
    };
    format!(
        "the warm standby's Restore {namespace}/{restore} did not restore backup {backup} cleanly ({what}): an object it could not update may still hold an older backup's content. Check the objects its results name; for a cold restore instead, run `replicadr clean --site {} --standby --policy {policy} --apply` and then the same command again",
        options.site
    )
}

/// A standby Restore of `policy` made since `known` was listed (a refresh the scheduler began as
/// this run took over): it would patch the VMs halted after they start. The failure, if so.
pub(crate) async fn refreshed_since(
    client: &Client,
    namespace: &str,
    site: &str,
    policy: &str,
    known: &[String],
) -> Result<Option<String>, kube::Error> {
    let new: Vec<String> = Restores::new(client, namespace)
        .standby(site, policy)
        .await?
        .into_iter()
        .map(|r| r.name)
        .filter(|r| !known.contains(r))
        .collect();
    Ok((!new.is_empty()).then(|| {
        format!(
            "a warm standby refresh began during this run (Restore {namespace}/{}): it would halt the VMs again; re-run the same command, which waits for it and brings the standby to the planned backup",
            new.join(", ")
        )
    }))
}

/// The standby's Restore as the report's: its real phase, counts and the refresh's problems.
fn account(
    report: &mut super::report::RecoveryReport,
    restore: &str,
    view: Option<&super::restore::RestoreView>,
    problems: &[String],
) {
    report.restore = Some(restore.to_owned());
    if let Some(view) = view {
        report.restore_phase.clone_from(&view.phase);
        report.restore_warnings = view.warnings;
        report.restore_errors = view.errors;
        report.restore_items = view.items_restored;
    }
    report.restore_messages.extend(problems.iter().cloned());
}

/// Restores what the standby does not hold: every kind but the standby's, or — when the standby's
/// Restore was not `clean` or an object the plan needs is missing here — the whole backup, Velero
/// keeping what exists. The Restore's name, if one was needed.
async fn restore_besides(
    client: &Client,
    namespace: &str,
    options: &Options,
    run: &mut Run,
    clean: bool,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Option<String>, RecoveryError> {
    let missing = missing(client, &run.planned.contents, &run.planned.plan).await?;
    let scope = if !clean || !missing.is_empty() {
        progress(format!(
            "restoring the whole backup {} besides, keeping what exists: {}",
            run.planned.backup.name,
            if missing.is_empty() {
                "the standby's Restore did not complete without warnings".to_owned()
            } else {
                format!("missing here: {}", missing.join(", "))
            }
        ));
        RestoreScope::All
    } else if holds_other_kinds(&run.planned.contents) {
        RestoreScope::AllButStandby
    } else {
        return Ok(None);
    };
    Ok(Some(
        restore_rest(client, namespace, options, run, scope, progress).await?,
    ))
}

/// A standby refresh of exactly the run's backup (this site is active by now: the takeover was
/// recorded first). Its problems, or why it did not restore the backup.
async fn catch_up(
    client: &Client,
    namespace: &str,
    options: &Options,
    run: &Run,
    policy: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Result<Vec<String>, String>, RecoveryError> {
    let source = run
        .planned
        .plan
        .source
        .site
        .clone()
        .or_else(|| options.source_site.clone())
        .unwrap_or_default();
    let mut refresh = StandbyOptions::new(&options.site, policy, &source);
    refresh.backup = Some(run.planned.backup.name.clone());
    refresh.restore_timeout = options.restore_timeout;
    refresh.bind_timeout = options.bind_timeout;
    refresh.poll = options.poll;
    refresh.takeover = true;
    Ok(
        match Box::pin(standby::refresh(client, namespace, &refresh, progress)).await? {
            Refresh::Restored(done) if done.held => Ok(done.problems),
            Refresh::Restored(done) => Err(done.problems.join("; ")),
            Refresh::UpToDate { .. } => Ok(Vec::new()),
            Refresh::Refused { problems, .. } => Err(problems.join("; ")),
            Refresh::NoBackup { message } => Err(message),
        },
    )
}

/// Restores the run's backup in `scope`, named and continued as the failover's own Restore; its
/// name. A failure is in the report.
async fn restore_rest(
    client: &Client,
    namespace: &str,
    options: &Options,
    run: &mut Run,
    scope: RestoreScope,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<String, RecoveryError> {
    let mut scoped = options.clone();
    scoped.scope = scope;
    scoped.skip_kinds = all_left_out(&run.planned.contents);
    let restores = Restores::new(client, namespace);
    let backup = &run.planned.backup.name;
    let restore = restores
        .ensure(&scoped, backup, &run.planned.plan, run.epoch, progress)
        .await?;
    match restores
        .watch(&restore, options.restore_timeout, options.poll, progress)
        .await
    {
        Ok(view)
            if matches!(
                view.phase.as_deref(),
                Some(PHASE_COMPLETED | PHASE_PARTIALLY_FAILED)
            ) =>
        {
            run.report.restore_warnings += view.warnings;
            run.report.restore_errors += view.errors;
        }
        Ok(view) => run.report.fail(format!(
            "Velero finished Restore {namespace}/{restore} (what the warm standby does not hold) as {}; re-run the same command to retry",
            view.phase.as_deref().unwrap_or("?")
        )),
        Err(message) => run.report.fail(message),
    }
    run.own_restores.push(restore.clone());
    Ok(restore)
}

/// The kinds every item of which the restore plugin skips (each VM's VMI and launcher pods, when
/// the backup holds no other pod or VMI): a Restore that leaves them out restores the same, without
/// a plugin call per item.
fn all_left_out(contents: &BackupContents) -> Vec<String> {
    [
        ("pods", "Pod"),
        (
            "virtualmachineinstances.kubevirt.io",
            "VirtualMachineInstance",
        ),
    ]
    .into_iter()
    .filter(|(resource, kind)| {
        let held = contents.kinds.get(*resource).copied().unwrap_or_default();
        let skipped = contents.left_out.iter().filter(|i| i.kind == *kind).count() as u64;
        held > 0 && held == skipped
    })
    .map(|(resource, _)| resource.to_owned())
    .collect()
}

/// Whether the backup holds an item a standby does not restore and a restore would bring back
/// (VMIs and launcher pods, which the restore plugin skips on every path, do not count).
fn holds_other_kinds(contents: &BackupContents) -> bool {
    let standby: BTreeSet<String> = standby_kinds().into_iter().collect();
    let others: u64 = contents
        .kinds
        .iter()
        .filter(|(kind, _)| !standby.contains(*kind) && !NEVER_RESTORED.contains(&kind.as_str()))
        .map(|(_, count)| count)
        .sum();
    others > contents.left_out.len() as u64
}

/// The objects of the standby's kinds the plan needs that are not here: VMs, `DataVolumes`,
/// claims, PVs, and the objects VMs name that the backup holds. One list per kind and namespace.
async fn missing(
    client: &Client,
    contents: &BackupContents,
    plan: &super::plan::Plan,
) -> Result<Vec<String>, kube::Error> {
    let mut missing = Vec::new();
    let pvs: BTreeSet<String> = Api::<PersistentVolume>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    for volume in &plan.volumes {
        if volume.action != VolumeAction::Reprovisioned && !pvs.contains(&volume.name) {
            missing.push(format!("PersistentVolume {}", volume.name));
        }
    }
    let claim_resource = ApiResource::erase::<PersistentVolumeClaim>(&());
    for namespace in contents.namespaces() {
        let wanted: [(&str, ApiResource, Vec<&String>); 3] = [
            (
                "VirtualMachine",
                vm_resource(),
                (contents.vms.iter())
                    .filter(|v| v.namespace == namespace)
                    .map(|v| &v.name)
                    .collect(),
            ),
            (
                "DataVolume",
                data_volume_resource(),
                (contents.data_volumes.iter())
                    .filter(|d| d.namespace == namespace)
                    .map(|d| &d.name)
                    .collect(),
            ),
            (
                "PersistentVolumeClaim",
                claim_resource.clone(),
                (plan.claims())
                    .filter(|c| c.namespace == namespace)
                    .map(|c| &c.name)
                    .collect(),
            ),
        ];
        for (kind, resource, names) in wanted {
            let here = names_in(client, &namespace, &resource).await?;
            missing.extend(
                names
                    .into_iter()
                    .filter(|name| !here.contains(*name))
                    .map(|name| format!("{kind} {namespace}/{name}")),
            );
        }
    }
    for key in &contents.referenceable {
        if !referenced_here(client, key).await? {
            missing.push(key.clone());
        }
    }
    Ok(missing)
}

/// Whether the object of a [`replicadr_core::contents::reference_key`] exists here (its
/// metadata only is read).
async fn referenced_here(client: &Client, key: &str) -> Result<bool, kube::Error> {
    let Some((kind, namespace, name)) = replicadr_core::contents::parse_reference_key(key) else {
        return Ok(true);
    };
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(kind.group(), kind.version(), kind.kind()),
        kind.plural(),
    );
    let api: Api<DynamicObject> = if kind.namespaced() {
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    match api.get_metadata_opt(name).await {
        Ok(found) => Ok(found.is_some()),
        // The kind is not served here; the plan reported it.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
        Err(error) => Err(error),
    }
}

/// The age of `backup`'s recovery point now, from its Backup here.
async fn standby_lag(client: &Client, namespace: &str, backup: &str) -> Option<u64> {
    let (_, view) = Verifier::new(client.clone(), namespace)
        .backup(backup)
        .await
        .ok()?;
    let point = view.recovery_point()?;
    u64::try_from(Timestamp::now().duration_since(point).as_secs()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use replicadr_lab::fixture::{self, ArchiveWriter};
    use serde_json::{Value, json};

    fn contents(extra: Vec<(&'static str, Value)>) -> BackupContents {
        let mut writer = ArchiveWriter::new(Vec::new()).expect("writer");
        for (group_resource, object) in fixture::healthy_vm_objects().into_iter().chain(extra) {
            writer.add(group_resource, &object).expect("add");
        }
        let (tarball, _) = writer.finish().expect("finish");
        BackupContents::read(tarball.as_slice()).expect("read")
    }

    #[test]
    fn only_kinds_a_standby_leaves_out_call_for_a_further_restore() {
        assert!(
            !holds_other_kinds(&contents(Vec::new())),
            "VMs, claims, PVs and namespaces: the standby holds it all"
        );
        let launcher = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "virt-launcher-db-x", "namespace": "vms",
            "labels": {"kubevirt.io": "virt-launcher"}}});
        assert!(
            !holds_other_kinds(&contents(vec![("pods", launcher)])),
            "a launcher pod is skipped on every path"
        );
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "vms"}});
        assert!(holds_other_kinds(&contents(vec![("services", service)])));
    }

    #[test]
    fn launcher_pods_are_left_out_only_when_no_other_pod_is_in_the_backup() {
        let launcher = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "virt-launcher-db-x", "namespace": "vms",
            "labels": {"kubevirt.io": "virt-launcher"}}});
        let app = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "vms"}});
        assert_eq!(
            all_left_out(&contents(vec![("pods", launcher.clone())])),
            ["pods"]
        );
        assert!(all_left_out(&contents(vec![("pods", launcher), ("pods", app)])).is_empty());
        assert!(all_left_out(&contents(Vec::new())).is_empty());
    }
}

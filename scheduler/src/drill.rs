//! `replicadr drill --dr-context <ctx> [--primary-context <ctx>]`: a drill on real clusters that
//! fails nothing over. At the DR site it plans the newest verified backup, restores it with
//! Velero into scratch namespaces (`namespaceMapping`, VMs halted, PVs rewritten onto the DR
//! exports by the restore plugin), checks the result against the plan, and deletes exactly what
//! that Restore created: the objects Velero labelled with its name, and the scratch namespaces,
//! which did not exist before. At the primary site, when given, it compares the VMs running now
//! with the backup's. No VM is started, so nothing mounts the replicated exports.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::{Client, ResourceExt as _};
use replicadr_core::names::label_value;
use serde::Serialize;

use crate::recovery::failover::{self, Operation, Restores, vm_resource};
use crate::recovery::plan::{self, Plan};
use crate::recovery::site::{self, BackupChoice, RecoveryError};
use crate::velero::LABEL_RESTORE_NAME;

/// One check of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// What to drill.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub backup: BackupChoice,
    pub policy: Option<String>,
    /// Leave the scratch namespaces and PVs in place.
    pub keep: bool,
    pub restore_timeout: Duration,
    pub poll: Duration,
}

/// The result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveReport {
    pub site: String,
    pub backup: String,
    pub restore: Option<String>,
    /// Backup namespace → scratch namespace.
    pub scratch_namespaces: BTreeMap<String, String>,
    pub plan: Plan,
    pub checks: Vec<Check>,
    /// What the cleanup deleted, `Kind namespace/name`.
    pub deleted: Vec<String>,
    pub restore_seconds: f64,
}

impl LiveReport {
    pub fn passed(&self) -> bool {
        self.plan.complete && !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

/// Runs the drill against the DR site `dr` (and compares with `primary` when given).
pub async fn run(
    primary: Option<&Client>,
    dr: &Client,
    namespace: &str,
    options: &LiveOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<LiveReport, RecoveryError> {
    let config = site::site_config(dr, namespace).await?;
    let site = config.local_site.clone();
    progress(format!(
        "drilling at site {site} (ConfigMap {namespace}/{})",
        config.configmap
    ));
    let planned = site::plan_at_site(
        dr,
        namespace,
        &site,
        &options.backup,
        site::Scope {
            policy: options.policy.as_deref(),
            source_site: None,
        },
        Timestamp::now(),
        progress,
    )
    .await?;
    let plan = planned.plan;
    let suffix = Timestamp::now().as_second().to_string();
    let scratch: BTreeMap<String, String> = plan
        .namespaces
        .iter()
        .map(|n| (n.name.clone(), scratch_name(&n.name, &suffix)))
        .collect();
    let namespaces: Api<Namespace> = Api::all(dr.clone());
    for target in scratch.values() {
        if namespaces.get_opt(target).await?.is_some() {
            return Err(RecoveryError::Refused(format!(
                "scratch namespace {target} already exists at site {site}; the drill only restores into namespaces it creates"
            )));
        }
    }
    let mut report = LiveReport {
        site: site.clone(),
        backup: plan.backup.clone(),
        restore: None,
        scratch_namespaces: scratch.clone(),
        plan: plan.clone(),
        checks: Vec::new(),
        deleted: Vec::new(),
        restore_seconds: 0.0,
    };
    if !plan.complete {
        progress("the plan is incomplete: no restore".to_owned());
        return Ok(report);
    }

    let mut recovery = failover::Options::new(Operation::Drill, &site);
    recovery.backup = BackupChoice::Named(plan.backup.clone());
    recovery.namespace_mapping = scratch.clone();
    recovery.restore_timeout = options.restore_timeout;
    recovery.poll = options.poll;
    let started = Instant::now();
    let restores = Restores::new(dr, namespace);
    let restore = restores
        .ensure(&recovery, &plan.backup, &plan, None, progress)
        .await?;
    report.restore = Some(restore.clone());
    let finished = restores
        .watch(&restore, options.restore_timeout, options.poll, progress)
        .await;
    report.restore_seconds = started.elapsed().as_secs_f64();
    let phase = finished
        .as_ref()
        .map_or_else(Clone::clone, |v| v.phase.clone().unwrap_or_default());
    report.checks.push(Check {
        name: format!("{site}: Velero restored the backup into scratch namespaces"),
        passed: matches!(phase.as_str(), "Completed" | "PartiallyFailed"),
        detail: format!("Restore {restore}: {phase}"),
    });
    report
        .checks
        .extend(check_restored(dr, &plan, &scratch, &restore).await?);
    if let Some(primary) = primary {
        report.checks.push(coverage(primary, &plan).await?);
    }
    if options.keep {
        progress(format!(
            "--keep: scratch namespaces {} and the PVs labelled {LABEL_RESTORE_NAME}={restore} are left in place",
            scratch.values().cloned().collect::<Vec<_>>().join(", ")
        ));
    } else {
        report.deleted = clean_up(dr, &scratch, &restore).await?;
        progress(format!(
            "cleaned up {} objects the drill's Restore created",
            report.deleted.len()
        ));
    }
    Ok(report)
}

/// `replicadr-drill-<suffix>-<namespace>`, at most 63 characters.
fn scratch_name(namespace: &str, suffix: &str) -> String {
    let mut name = format!("replicadr-drill-{suffix}-{namespace}");
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

/// The restored PVs point where the plan says; every claim and VM is in its scratch namespace,
/// and every VM is halted.
async fn check_restored(
    client: &Client,
    plan: &Plan,
    scratch: &BTreeMap<String, String>,
    restore: &str,
) -> Result<Vec<Check>, kube::Error> {
    let labelled =
        ListParams::default().labels(&format!("{LABEL_RESTORE_NAME}={}", label_value(restore)));
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&labelled)
        .await?
        .items;
    let expected: BTreeSet<&str> = plan
        .volumes
        .iter()
        .filter_map(|v| v.after.as_deref())
        .collect();
    let planned = plan.volumes.iter().filter(|v| v.after.is_some()).count();
    let mut wrong = Vec::new();
    for pv in &pvs {
        let location = serde_json::to_value(pv)
            .ok()
            .and_then(|v| plan::location(&v));
        if !location.as_deref().is_some_and(|l| expected.contains(l)) {
            wrong.push(format!(
                "{} → {}",
                pv.name_any(),
                location.as_deref().unwrap_or("not NFS")
            ));
        }
    }
    let mut checks = vec![Check {
        name: format!("{}: restored PVs on this site's exports", plan.site),
        passed: wrong.is_empty() && pvs.len() == planned,
        detail: if wrong.is_empty() {
            format!(
                "{} of {planned} PVs restored, each where the plan says",
                pvs.len()
            )
        } else {
            wrong.join(", ")
        },
    }];
    let mut missing = Vec::new();
    let mut running = Vec::new();
    for namespace in &plan.namespaces {
        let target = &scratch[&namespace.name];
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), target);
        for claim in &namespace.claims {
            if claims.get_opt(&claim.name).await?.is_none() {
                missing.push(format!("PersistentVolumeClaim {target}/{}", claim.name));
            }
        }
        let vms: Api<DynamicObject> = Api::namespaced_with(client.clone(), target, &vm_resource());
        for vm in &namespace.virtual_machines {
            match vms.get_opt(&vm.name).await? {
                None => missing.push(format!("VirtualMachine {target}/{}", vm.name)),
                Some(live)
                    if replicadr_core::contents::strategy_runs(
                        &replicadr_core::contents::run_strategy(&live.data),
                    ) =>
                {
                    running.push(format!("{target}/{}", vm.name));
                }
                Some(_) => {}
            }
        }
    }
    checks.push(Check {
        name: format!("{}: every claim and VM restored, VMs halted", plan.site),
        passed: missing.is_empty() && running.is_empty(),
        detail: if missing.is_empty() && running.is_empty() {
            format!(
                "{} claims, {} VMs",
                plan.claims().count(),
                plan.virtual_machines().count()
            )
        } else {
            format!("missing: {missing:?}; not halted: {running:?}")
        },
    });
    Ok(checks)
}

/// The VMs running at the primary site now, against the backup's.
async fn coverage(primary: &Client, plan: &Plan) -> Result<Check, kube::Error> {
    let mut uncovered = Vec::new();
    for namespace in &plan.namespaces {
        let vms: Api<DynamicObject> =
            Api::namespaced_with(primary.clone(), &namespace.name, &vm_resource());
        for vm in vms.list(&ListParams::default()).await?.items {
            let name = vm.name_any();
            if !namespace.virtual_machines.iter().any(|v| v.name == name) {
                uncovered.push(format!("{}/{name}", namespace.name));
            }
        }
    }
    Ok(Check {
        name: "primary: every VM there now is in the backup".to_owned(),
        passed: uncovered.is_empty(),
        detail: if uncovered.is_empty() {
            format!("{} VMs", plan.virtual_machines().count())
        } else {
            format!("created since the backup: {}", uncovered.join(", "))
        },
    })
}

/// Deletes what the Restore created: every labelled PV is set to `Retain` first, then the
/// labelled objects in the scratch namespaces, the labelled PVs, and the scratch namespaces.
async fn clean_up(
    client: &Client,
    scratch: &BTreeMap<String, String>,
    restore: &str,
) -> Result<Vec<String>, kube::Error> {
    let labelled =
        ListParams::default().labels(&format!("{LABEL_RESTORE_NAME}={}", label_value(restore)));
    let mut deleted = Vec::new();
    // Every restored PV keeps its data on the export whatever happens to its claim: Retain first.
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for pv in volumes.list(&labelled).await?.items {
        crate::gc::retain_volume(client, &pv.name_any()).await?;
    }
    for target in scratch.values() {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), target);
        let listed = claims.list(&ListParams::default()).await?.items;
        // A scratch claim may have bound to a PV the Restore did not create (Velero skips
        // existing PVs), and deleting the scratch namespace deletes every claim in it: Retain
        // those too, before anything goes.
        for claim in &listed {
            if let Some(volume) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
                crate::gc::retain_volume(client, volume).await?;
            }
        }
        let vms: Api<DynamicObject> = Api::namespaced_with(client.clone(), target, &vm_resource());
        for vm in vms.list(&labelled).await?.items {
            vms.delete(&vm.name_any(), &DeleteParams::default()).await?;
            deleted.push(format!("VirtualMachine {target}/{}", vm.name_any()));
        }
        let restored = listed.iter().filter(|c| {
            c.labels().get(LABEL_RESTORE_NAME).map(String::as_str) == Some(&label_value(restore))
        });
        for claim in restored {
            claims
                .delete(&claim.name_any(), &DeleteParams::default())
                .await?;
            deleted.push(format!(
                "PersistentVolumeClaim {target}/{}",
                claim.name_any()
            ));
        }
    }
    for pv in volumes.list(&labelled).await?.items {
        volumes
            .delete(&pv.name_any(), &DeleteParams::default())
            .await?;
        deleted.push(format!("PersistentVolume {}", pv.name_any()));
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for target in scratch.values() {
        if namespaces.get_opt(target).await?.is_some() {
            namespaces.delete(target, &DeleteParams::default()).await?;
            deleted.push(format!("Namespace {target}"));
        }
    }
    Ok(deleted)
}

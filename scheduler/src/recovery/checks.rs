//! After a restore: what Velero restored, read back from the API server and compared with the
//! plan. Every mismatch is a failure in the report, naming the object and why.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use replicadr_core::invariants::Severity;
use replicadr_core::nfs::location;
use replicadr_core::wire::PHASE_BOUND;

use super::failover::Options;
use super::plan::{Plan, VolumeAction};
use super::report::RecoveryReport;
use super::site::names_in;
use super::vm_start::vm_resource;

/// Every planned PV exists, is claimed by the claim the backup's is, and points where the plan
/// says. A PV Velero re-provisions is a
/// failure only when the backup invariant it breaks is blocking (an NFS PV backed up `Delete`);
/// one of another driver was a warning in the plan and is expected.
pub(crate) async fn check_volumes(
    client: &Client,
    plan: &Plan,
    report: &mut RecoveryReport,
) -> Result<(), kube::Error> {
    // One list, not a read per PV: a failover of 500 VMs checks a thousand.
    let mut live: HashMap<String, PersistentVolume> = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|pv| (pv.name_any(), pv))
        .collect();
    for volume in &plan.volumes {
        if volume.action == VolumeAction::Reprovisioned {
            if let Some(reason) = volume
                .problems
                .iter()
                .find(|r| r.severity() == Severity::Blocking)
            {
                report.fail(format!(
                    "PersistentVolume {} was not restored ({reason}: reclaim policy Delete in the backup): Velero provisions a new, empty volume for claim {}",
                    volume.name,
                    volume.claim.as_deref().unwrap_or("-")
                ));
            }
            continue;
        }
        let Some(pv) = live.remove(&volume.name) else {
            report.fail(format!(
                "PersistentVolume {} was not restored; see the Restore's errors",
                volume.name
            ));
            continue;
        };
        let pv = serde_json::to_value(pv).unwrap_or_default();
        let claimed_by =
            replicadr_core::objects::claim_ref(&pv).map(|(ns, name)| format!("{ns}/{name}"));
        if let (Some(expected), Some(actual)) = (&volume.claim, &claimed_by)
            && expected != actual
        {
            report.fail(format!(
                "PersistentVolume {} is claimed by {actual}, but the backup's is claimed by {expected}: it is not the volume the backup holds",
                volume.name
            ));
            continue;
        }
        let now = location(&pv);
        if volume.after.is_some() && now != volume.after {
            report.fail(format!(
                "PersistentVolume {} points at {}, not at this site's {}",
                volume.name,
                now.as_deref().unwrap_or("a non-NFS volume"),
                volume.after.as_deref().unwrap_or("-")
            ));
        } else if volume.action == VolumeAction::Rewrite {
            report.rewritten.push(volume.clone());
        }
    }
    Ok(())
}

/// Every planned PVC exists and is Bound to the PV the backup binds it to, waiting up to the bind
/// timeout; names why not for each one that is not.
pub(crate) async fn check_claims(
    client: &Client,
    plan: &Plan,
    options: &Options,
    report: &mut RecoveryReport,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), kube::Error> {
    let deadline = Instant::now() + options.bind_timeout;
    let mut announced = false;
    let mut wrong: Vec<(String, String)> = Vec::new();
    loop {
        let mut pending = Vec::new();
        for namespace in &plan.namespaces {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace.name);
            let mut live: HashMap<String, PersistentVolumeClaim> = api
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(|pvc| (pvc.name_any(), pvc))
                .collect();
            for claim in &namespace.claims {
                let bound = live.get(&claim.name).is_some_and(|pvc| {
                    pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(PHASE_BOUND)
                });
                if !bound {
                    pending.push((namespace.name.as_str(), claim, live.remove(&claim.name)));
                    continue;
                }
                let bound_to = live
                    .get(&claim.name)
                    .and_then(|pvc| pvc.spec.as_ref()?.volume_name.clone());
                if let Some(expected) = &claim.volume
                    && bound_to.as_ref() != Some(expected)
                    && !wrong.contains(&(namespace.name.clone(), claim.name.clone()))
                {
                    wrong.push((namespace.name.clone(), claim.name.clone()));
                    report.fail(format!(
                        "PersistentVolumeClaim {}/{} is Bound to {}, but the backup binds it to {expected}: it is not the claim the backup holds (it existed before the restore, or something else bound it)",
                        namespace.name,
                        claim.name,
                        bound_to.as_deref().unwrap_or("no volume")
                    ));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let volumes: Api<PersistentVolume> = Api::all(client.clone());
            for (namespace, claim, live) in pending {
                let why = match (&live, claim.volume.as_deref()) {
                    (None, _) => "it was not restored; see the Restore's errors".to_owned(),
                    (Some(_), None) => {
                        "it names no volume, so it waits for a provisioner".to_owned()
                    }
                    (Some(pvc), Some(volume)) => match volumes.get_opt(volume).await? {
                        None => format!("its PersistentVolume {volume} does not exist"),
                        Some(pv) => {
                            let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                            let bound_to = claim_ref.map(|r| {
                                format!(
                                    "{}/{}",
                                    r.namespace.as_deref().unwrap_or_default(),
                                    r.name.as_deref().unwrap_or_default()
                                )
                            });
                            format!(
                                "it is {} and PersistentVolume {volume} is {} with claimRef {}: the PV controller has not bound them",
                                pvc.status
                                    .as_ref()
                                    .and_then(|s| s.phase.as_deref())
                                    .unwrap_or("Pending"),
                                pv.status
                                    .as_ref()
                                    .and_then(|s| s.phase.as_deref())
                                    .unwrap_or("Pending"),
                                bound_to.as_deref().unwrap_or("<none>")
                            )
                        }
                    },
                };
                report.fail(format!(
                    "PersistentVolumeClaim {namespace}/{} is not Bound after {}: {why}",
                    claim.name,
                    crate::duration::human(options.bind_timeout)
                ));
            }
            return Ok(());
        }
        if !announced {
            progress(format!("waiting for {} PVCs to be Bound", pending.len()));
            announced = true;
        }
        tokio::time::sleep(options.poll).await;
    }
}

/// Every planned VM exists.
pub(crate) async fn check_vms(
    client: &Client,
    plan: &Plan,
    report: &mut RecoveryReport,
) -> Result<(), kube::Error> {
    let mut listed: HashMap<String, BTreeSet<String>> = HashMap::new();
    for vm in plan.virtual_machines() {
        if !listed.contains_key(&vm.namespace) {
            let names = names_in(client, &vm.namespace, &vm_resource()).await?;
            listed.insert(vm.namespace.clone(), names);
        }
        if !listed[&vm.namespace].contains(&vm.name) {
            report.fail(format!(
                "VirtualMachine {}/{} was not restored; see the Restore's errors",
                vm.namespace, vm.name
            ));
        }
    }
    Ok(())
}

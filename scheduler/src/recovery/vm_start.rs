//! Starting the restored VMs: halted by the restore, they get back the run strategy they had,
//! group by group in `replicadr.io/start-order` order across every backup restored, each group
//! once the one before it runs. A VM that does not come up is a failure of its run, and the later
//! groups start all the same, unless `--stop-on-failure`. A VM backed up with `runStrategy:
//! Manual` gets `Manual` back and is not started: KubeVirt starts such a VM only when asked.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};

use replicadr_core::contents::{VmItem, run_strategy};
use replicadr_core::wire::{ANNOTATION_HALTED_FOR_FAILBACK, ANNOTATION_STARTED_BY};

use super::failover::{Options, Run};
use super::plan::{LABEL_RESTORE_NAME, Plan};
use super::report::VmStart;

/// KubeVirt's `VirtualMachine`.
pub fn vm_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachine",
    ))
}

/// CDI's `DataVolume`.
pub fn data_volume_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cdi.kubevirt.io",
        "v1beta1",
        "DataVolume",
    ))
}

/// Whether to start the VMs: not with `--no-start`, nor when the policy says to leave them halted.
pub(crate) async fn start_wanted(
    client: &Client,
    namespace: &str,
    options: &Options,
    policy: Option<&str>,
    progress: &mut (dyn FnMut(String) + Send),
) -> bool {
    if !options.start_vms {
        progress("VMs left halted (--no-start)".to_owned());
        return false;
    }
    if policy_keeps_vms_halted(client, namespace, policy).await {
        progress(format!(
            "VMs left halted: BackupPolicy {} sets restoreVMsHalted",
            policy.unwrap_or_default()
        ));
        return false;
    }
    true
}

/// Whether the BackupPolicy `policy`, where it exists at this site, says to leave VMs halted.
async fn policy_keeps_vms_halted(client: &Client, namespace: &str, policy: Option<&str>) -> bool {
    let Some(policy) = policy else {
        return false;
    };
    Api::<crate::policy::BackupPolicy>::namespaced(client.clone(), namespace)
        .get_opt(policy)
        .await
        .ok()
        .flatten()
        .is_some_and(|p| p.spec.restore_vms_halted)
}

/// The VMs that run, grouped by start order (lower first, unordered last).
pub fn start_groups(plan: &Plan) -> Vec<(Option<i64>, Vec<&VmItem>)> {
    let mut groups: BTreeMap<(bool, i64), Vec<&VmItem>> = BTreeMap::new();
    for vm in plan.virtual_machines().filter(|vm| vm.runs()) {
        let key = (vm.start_order.is_none(), vm.start_order.unwrap_or_default());
        groups.entry(key).or_default().push(vm);
    }
    groups
        .into_iter()
        .map(|((unordered, order), vms)| ((!unordered).then_some(order), vms))
        .collect()
}

/// One start-order group (`None`: the VMs without a start order), each VM with the index of the
/// run it belongs to.
type Group = (Option<i64>, Vec<(usize, VmItem)>);

/// The VMs that run in every run restored, grouped by start order across all of them.
fn groups_of(runs: &[Run], wanted: &[usize]) -> Vec<Group> {
    let mut groups: BTreeMap<(bool, i64), Vec<(usize, VmItem)>> = BTreeMap::new();
    for &index in wanted {
        for vm in runs[index]
            .planned
            .plan
            .virtual_machines()
            .filter(|vm| vm.runs())
        {
            let key = (vm.start_order.is_none(), vm.start_order.unwrap_or_default());
            groups.entry(key).or_default().push((index, vm.clone()));
        }
    }
    groups
        .into_iter()
        .map(|((unordered, order), vms)| ((!unordered).then_some(order), vms))
        .collect()
}

/// Starts the VMs of the runs `wanted`, group by group across all of them, and waits for each
/// group to run before the next; stops at the first group that does not come up. Each start and
/// failure goes to the report of the run the VM belongs to.
pub(crate) async fn start_vms(
    client: &Client,
    options: &Options,
    runs: &mut [Run],
    wanted: &[usize],
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), kube::Error> {
    let started = start_each_group(client, options, runs, wanted, progress).await;
    // A group's VMs are listed by name, not in the order the polls happened to see them running
    // (each one's time says that), so that a report reads the same from run to run.
    for run in runs.iter_mut() {
        (run.report.vm_starts).sort_by(|a, b| {
            (a.group, &a.namespace, &a.name).cmp(&(b.group, &b.namespace, &b.name))
        });
    }
    started
}

/// [`start_vms`], the starts in the order they were seen.
async fn start_each_group(
    client: &Client,
    options: &Options,
    runs: &mut [Run],
    wanted: &[usize],
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), kube::Error> {
    restore_manual(client, runs, wanted, progress).await?;
    let groups = groups_of(runs, wanted);
    for (index, (order, vms)) in groups.iter().cloned().enumerate() {
        let group = order.map_or_else(|| "unordered".to_owned(), |o| o.to_string());
        progress(format!(
            "starting VM group {} (start-order {group}): {}",
            index + 1,
            vms.iter()
                .map(|(_, vm)| format!("{}/{}", vm.namespace, vm.name))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let group_started = Instant::now();
        let live = live_vms(client, &vms).await?;
        let mut started = Vec::new();
        let mut patches = Vec::new();
        for (run, vm) in vms {
            let key = (vm.namespace.clone(), vm.name.clone());
            match start_one(&mut runs[run], &vm, live.get(&key), progress) {
                Start::Not => {}
                Start::Wait => started.push((run, vm)),
                Start::Patch(patch) => {
                    patches.push((vm.clone(), patch));
                    started.push((run, vm));
                }
            }
        }
        // The patches of a group go out side by side: a large group starts in a second or two.
        futures::stream::iter(patches)
            .map(|(vm, patch)| {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &vm.namespace, &vm_resource());
                async move {
                    api.patch(&vm.name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                }
            })
            .buffer_unordered(PARALLEL_STARTS)
            .try_collect::<Vec<_>>()
            .await?;
        let deadline = Instant::now() + options.vm_timeout;
        let mut waiting: Vec<(usize, VmItem)> = started;
        // What KubeVirt last said of each VM not yet running, for the failure message.
        let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut pause = FIRST_PAUSE;
        while !waiting.is_empty() {
            let mut still = Vec::new();
            let live = live_vms(client, &waiting).await?;
            for (run, vm) in waiting {
                let live = live.get(&(vm.namespace.clone(), vm.name.clone()));
                let running = live.is_some_and(|live| vm_running(&live.data));
                if let Some(status) = live
                    .and_then(|l| l.data.pointer("/status/printableStatus"))
                    .and_then(Value::as_str)
                {
                    seen.insert((vm.namespace.clone(), vm.name.clone()), status.to_owned());
                }
                if running {
                    runs[run].report.vm_starts.push(VmStart {
                        namespace: vm.namespace.clone(),
                        name: vm.name.clone(),
                        group: index + 1,
                        start_order: vm.start_order,
                        running_after_seconds: group_started.elapsed().as_secs_f64(),
                    });
                } else {
                    still.push((run, vm));
                }
            }
            waiting = still;
            if waiting.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                if not_up(options, runs, &groups[index + 1..], index, &waiting, &seen) {
                    return Ok(());
                }
                progress(format!(
                    "VM group {} not all running after {}: going on with the next group",
                    index + 1,
                    crate::duration::human(options.vm_timeout)
                ));
                break;
            }
            tokio::time::sleep(pause.min(options.poll)).await;
            pause *= 2;
        }
        if waiting.is_empty() {
            progress(format!(
                "VM group {} running after {:.1}s",
                index + 1,
                group_started.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(())
}

/// Reports the VMs of group `index` still `waiting` after `--vm-timeout` as failures of their
/// runs, with what KubeVirt last said of each (`seen`); with `--stop-on-failure`, also every VM
/// of the `later` groups, which are then not started. Returns whether to stop.
fn not_up(
    options: &Options,
    runs: &mut [Run],
    later: &[Group],
    index: usize,
    waiting: &[(usize, VmItem)],
    seen: &BTreeMap<(String, String), String>,
) -> bool {
    let stop = options.stop_on_failure;
    let then = if stop {
        "later groups were not started (--stop-on-failure)"
    } else {
        "the later groups were started all the same"
    };
    for (run, vm) in waiting {
        let status = seen
            .get(&(vm.namespace.clone(), vm.name.clone()))
            .map_or("no status", String::as_str);
        runs[*run].report.fail(format!(
            "VirtualMachine {}/{} is not Running {} after it was started ({status}); {then}",
            vm.namespace,
            vm.name,
            crate::duration::human(options.vm_timeout)
        ));
    }
    if stop {
        // Every run with a VM in a later group says so: none of them succeeded.
        for (_, vms) in later {
            for (run, vm) in vms {
                runs[*run].report.fail(format!(
                    "VirtualMachine {}/{} was not started: start-order group {} did not come up and --stop-on-failure stops there",
                    vm.namespace,
                    vm.name,
                    index + 1
                ));
            }
        }
    }
    stop
}

/// Gives each restored VM of the runs `wanted` that was backed up with a run strategy that does
/// not start it by itself, other than `Halted` (that is, `Manual`), that strategy back.
async fn restore_manual(
    client: &Client,
    runs: &mut [Run],
    wanted: &[usize],
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), kube::Error> {
    for &index in wanted {
        let manual: Vec<VmItem> = runs[index]
            .planned
            .plan
            .virtual_machines()
            .filter(|vm| !vm.runs() && vm.run_strategy != "Halted")
            .cloned()
            .collect();
        for vm in manual {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &vm.namespace, &vm_resource());
            let live = api.get_opt(&vm.name).await?;
            let started = match start_one(&mut runs[index], &vm, live.as_ref(), progress) {
                Start::Not => false,
                Start::Wait => true,
                Start::Patch(patch) => {
                    api.patch(&vm.name, &PatchParams::default(), &Patch::Merge(patch))
                        .await?;
                    true
                }
            };
            if started {
                progress(format!(
                    "VirtualMachine {}/{}: runStrategy {} as backed up; not started (KubeVirt starts it when someone does)",
                    vm.namespace, vm.name, vm.run_strategy
                ));
            }
        }
    }
    Ok(())
}

/// How many start patches are in flight at once.
const PARALLEL_STARTS: usize = 16;
/// The first wait for a started group to run; it doubles up to `--poll`.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// What to do with one VM of a group.
enum Start {
    /// Not started (a failure in the report, or left as someone set it).
    Not,
    /// Already has its run strategy: wait for it to run.
    Wait,
    /// Patch it with this, then wait for it to run.
    Patch(Value),
}

/// The VMs of the namespaces of `vms`, by `(namespace, name)`: one list per namespace.
async fn live_vms(
    client: &Client,
    vms: &[(usize, VmItem)],
) -> Result<BTreeMap<(String, String), DynamicObject>, kube::Error> {
    let namespaces: BTreeSet<&str> = vms.iter().map(|(_, vm)| vm.namespace.as_str()).collect();
    let mut live = BTreeMap::new();
    for namespace in namespaces {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &vm_resource());
        for vm in api.list(&ListParams::default()).await?.items {
            live.insert((namespace.to_owned(), vm.name_any()), vm);
        }
    }
    Ok(live)
}

/// Whether and how to start one VM of `run` (`live`, as it is here) with the run strategy it had
/// when backed up. Not started: a VM this operation did not restore (a failure), and one an
/// earlier run of it started that is halted now (left as someone set it).
fn start_one(
    run: &mut Run,
    vm: &VmItem,
    live: Option<&DynamicObject>,
    progress: &mut (dyn FnMut(String) + Send),
) -> Start {
    let Some(live) = live else {
        return Start::Not;
    };
    let restore = run.report.restore.clone();
    let restored_by = live.labels().get(LABEL_RESTORE_NAME).cloned();
    if !restored_by
        .as_ref()
        .is_some_and(|r| run.own_restores.contains(r))
    {
        run.report.fail(format!(
            "VirtualMachine {}/{} was not started: it was not restored by Restore {} (it existed before{}), so it is not the backup's VM",
            vm.namespace,
            vm.name,
            restore.as_deref().unwrap_or("-"),
            restored_by
                .map(|r| format!("; Restore {r} made it"))
                .unwrap_or_default()
        ));
        return Start::Not;
    }
    if run_strategy(&live.data) == vm.run_strategy {
        return Start::Wait;
    }
    let started_by = live.annotations().get(ANNOTATION_STARTED_BY);
    if started_by.is_some_and(|r| run.own_restores.contains(r)) {
        // An earlier run of this operation started it; someone halted it since.
        progress(format!(
            "VirtualMachine {}/{} was started by an earlier run (Restore {}) and is {} now: left as it is",
            vm.namespace,
            vm.name,
            started_by.map(String::as_str).unwrap_or_default(),
            run_strategy(&live.data)
        ));
        return Start::Not;
    }
    Start::Patch(json!({
        "metadata": {"annotations": {
            ANNOTATION_STARTED_BY: restore,
            ANNOTATION_HALTED_FOR_FAILBACK: null,
        }},
        "spec": {"running": null, "runStrategy": vm.run_strategy},
    }))
}

/// Whether KubeVirt reports the VM running.
pub fn vm_running(vm: &Value) -> bool {
    vm.pointer("/status/printableStatus")
        .and_then(Value::as_str)
        == Some("Running")
        || vm.pointer("/status/ready").and_then(Value::as_bool) == Some(true)
}

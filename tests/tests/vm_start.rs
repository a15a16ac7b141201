//! Starting the restored VMs when one does not come up, in the two-site lab (real
//! kube-apiservers with etcd, s3s-fs, the real Velero server with the project's plugins). At
//! `primary`, `db` (start-order 1) asks for a node no site has, so the played KubeVirt leaves it
//! `ErrorUnschedulable` as the real one does, and `tools` runs with `runStrategy: Manual`. At `dr`,
//! a failover with `--stop-on-failure` reports `db` and leaves the later groups halted, naming
//! them; the next run, without it, reports `db` again and starts `app` and `web` all the same.
//! `tools` gets `Manual` back and is not started. Build the workspace binaries first.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use replicadr_e2e::lab_cli::{failover_at_dr, sites_with_workload, verified_backup};
use replicadr_scheduler::recovery::failover;
use serde_json::{Value, json};

const NAMESPACE: &str = "drill-vms";

/// How long each failover here waits for a VM to run.
const TIMEOUTS: &[&str] = &["--vm-timeout", "15s"];

/// The failures and the started VMs of the one policy's report.
fn outcome(out: &str) -> anyhow::Result<(String, Vec<String>, Vec<String>)> {
    let recovery: Value = serde_json::from_str(out)?;
    let report = &recovery["reports"][0];
    let strings = |value: &Value, field: Option<&str>| -> Vec<String> {
        value
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|v| match field {
                        Some(field) => v[field].as_str().map(str::to_owned),
                        None => v.as_str().map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok((
        report["outcome"].as_str().unwrap_or_default().to_owned(),
        strings(&report["failures"], None),
        strings(&report["vmStarts"], Some("name")),
    ))
}

#[tokio::test]
async fn a_vm_that_does_not_come_up_is_reported_and_the_later_groups_still_start()
-> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    let vms: Api<DynamicObject> = Api::namespaced_with(
        env.primary.client.clone(),
        NAMESPACE,
        &failover::vm_resource(),
    );
    vms.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {
            "nodeSelector": {"example.com/gpu": "a100"}
        }}}})),
    )
    .await?;
    vms.patch(
        "tools",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"running": null, "runStrategy": "Manual"}})),
    )
    .await?;
    let backup = verified_backup(&env.primary.client, &mut log).await?;
    env.move_velero(false, &[&backup], &mut log).await?;
    let dr = env.dr.cluster.kubeconfig_path().to_owned();
    let at_dr: Api<DynamicObject> =
        Api::namespaced_with(env.dr.client.clone(), NAMESPACE, &failover::vm_resource());
    let strategy = |vm: &DynamicObject| {
        vm.data["spec"]["runStrategy"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // --stop-on-failure: db is reported, app and web stay halted and are named.
    let (code, out, err) = failover_at_dr(&dr, TIMEOUTS, &["--stop-on-failure"]).await?;
    assert_eq!(code, 1, "a VM did not come up:\n{out}\n{err}");
    let (result, failures, started) = outcome(&out)?;
    assert_eq!(result, "Failed", "{out}");
    assert!(started.is_empty(), "{started:?}");
    let all = failures.join("\n");
    for expected in [
        "VirtualMachine drill-vms/db is not Running 15s after it was started (ErrorUnschedulable); later groups were not started (--stop-on-failure)",
        "VirtualMachine drill-vms/app was not started: start-order group 1 did not come up and --stop-on-failure stops there",
        "VirtualMachine drill-vms/web was not started",
        "VirtualMachine drill-vms/desktop was not started",
    ] {
        assert!(all.contains(expected), "{expected}:\n{all}");
    }
    for name in ["app", "desktop", "web"] {
        assert_eq!(strategy(&at_dr.get(name).await?), "Halted", "{name}");
    }
    // A Manual VM gets Manual back, and nobody starts it.
    assert_eq!(strategy(&at_dr.get("tools").await?), "Manual");
    assert!(!all.contains("tools"), "{all}");

    // Without it: db is reported again, and the later groups are started all the same.
    let (code, out, err) = failover_at_dr(&dr, TIMEOUTS, &[]).await?;
    assert_eq!(code, 1, "db still does not come up:\n{out}\n{err}");
    let (result, failures, started) = outcome(&out)?;
    assert_eq!(result, "Failed", "{out}");
    assert_eq!(started, ["app", "desktop", "web"], "{out}");
    let all = failures.join("\n");
    assert!(
        all.contains("VirtualMachine drill-vms/db is not Running 15s after it was started (ErrorUnschedulable); the later groups were started all the same"),
        "{all}"
    );
    assert!(!all.contains("was not started"), "{all}");
    for name in ["app", "desktop", "web"] {
        let vm = at_dr.get(name).await?;
        assert_ne!(strategy(&vm), "Halted", "{name}");
        assert_eq!(vm.data["status"]["printableStatus"], "Running", "{name}");
    }
    assert_eq!(strategy(&at_dr.get("tools").await?), "Manual");
    Ok(())
}

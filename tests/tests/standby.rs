//! The warm standby in the two-site lab (real kube-apiservers with etcd, s3s-fs, the real Velero
//! server with the project's plugins, the scheduler's reconcile at `dr`, the `replicadr` binary):
//! both drill policies have `spec.standby.enabled` at both sites, `primary` is active.
//!
//! 1. The first backups are restored at `dr` as standbys: every VM there, halted, none started; no
//!    Deployment, VMI or launcher pod; `StandbyReady` True; the lag metric exported.
//! 2. At `primary` a VM is added, one removed and one changed; the next backup's refresh at `dr`
//!    adds the new VM, patches the changed one and prunes the removed one (listed in the status and
//!    an Event), and still starts nothing.
//! 3. `clean --standby` is refused while a policy's standby is on; switched off for `drill-infra`,
//!    it removes everything that standby made and nothing else (the `drill` standby and an
//!    operator's own objects at `dr` stay).
//! 4. A third backup is made at `primary` and synced to `dr` without a refresh: `failover` brings
//!    the standby up to date first, says so, restores only what a standby leaves out (the
//!    Deployment), passes its checks and starts every VM in start order.
//!
//! Build the workspace binaries first.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use replicadr_drill as drill;
use replicadr_e2e::lab_cli::{failover_at_dr, replicadr, sites_with_workload};
use replicadr_scheduler::clock::{Clock, SystemClock};
use replicadr_scheduler::metrics::{self, Metrics};
use replicadr_scheduler::policy::{BackupPolicy, condition};
use replicadr_scheduler::publish::Publisher;
use replicadr_scheduler::recovery::failover::{vm_resource, vm_running};
use replicadr_scheduler::service::{Service, ServiceConfig};
use serde_json::{Value, json};

const VELERO: &str = "velero";
const NAMESPACE: &str = "drill-vms";
const INFRA: &str = "drill-infra";

/// `spec.standby.enabled` of `policy` at the site of `client`, creating the drill's policy first.
async fn standby(client: &Client, policy: &str, enabled: bool) -> anyhow::Result<()> {
    drill::ensure_policy(client, policy).await?;
    Api::<BackupPolicy>::namespaced(client.clone(), VELERO)
        .patch(
            policy,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"standby": {"enabled": enabled}}})),
        )
        .await?;
    Ok(())
}

/// The scheduler at `dr`: one reconcile of `policy` (the standby's refresh runs in it); the
/// policy afterwards.
async fn reconcile(
    service: &Service,
    client: &Client,
    policy: &str,
) -> anyhow::Result<BackupPolicy> {
    reconcile_at(service, client, policy, SystemClock.now()).await
}

/// [`reconcile`] as if the clock read `now`.
async fn reconcile_at(
    service: &Service,
    client: &Client,
    policy: &str,
    now: jiff::Timestamp,
) -> anyhow::Result<BackupPolicy> {
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), VELERO);
    let current = policies.get(policy).await?;
    let outcome = service.reconcile(&current, now).await?;
    eprintln!("lab: reconcile of {policy} at dr: {outcome:?}");
    Ok(policies.get(policy).await?)
}

fn standby_ready(policy: &BackupPolicy) -> (String, String, String) {
    policy
        .status
        .as_ref()
        .and_then(|s| s.condition(condition::STANDBY_READY))
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

fn held(policy: &BackupPolicy) -> Option<String> {
    policy.status.as_ref()?.standby.as_ref()?.backup.clone()
}

/// Every VM of `namespace`, by name.
async fn vms(client: &Client, namespace: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &vm_resource())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|vm| Ok((vm.name_any(), serde_json::to_value(&vm)?)))
        .collect()
}

/// Nothing at `dr` runs: every VM halted, no VMI, no pod, no Deployment.
async fn nothing_runs(client: &Client, context: &str) -> anyhow::Result<()> {
    for (name, vm) in vms(client, NAMESPACE).await? {
        anyhow::ensure!(
            vm.pointer("/spec/runStrategy") == Some(&json!("Halted")) && !vm_running(&vm),
            "{context}: VM {name} at dr is not halted: {}",
            vm["spec"]
        );
    }
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await?;
    anyhow::ensure!(
        pods.items.is_empty(),
        "{context}: pods at dr: {:?}",
        pods.items
            .iter()
            .map(kube::ResourceExt::name_any)
            .collect::<Vec<_>>()
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await?;
    anyhow::ensure!(
        deployments.items.is_empty(),
        "{context}: a standby restored a Deployment"
    );
    Ok(())
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn a_standby_follows_prunes_cleans_and_serves_the_failover() -> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    let (primary, dr) = (env.primary.client.clone(), env.dr.client.clone());
    for policy in [drill::POLICY, drill::POLICY_INFRA] {
        standby(&primary, policy, true).await?;
        standby(&dr, policy, true).await?;
    }
    let (first, _) = Box::pin(drill::verified_backup(&primary, drill::POLICY, &mut log)).await?;
    let (infra, _) = Box::pin(drill::verified_backup(
        &primary,
        drill::POLICY_INFRA,
        &mut log,
    ))
    .await?;
    env.move_velero(false, &[&first, &infra], &mut log).await?;

    let (registry, metrics) = Metrics::new_registry();
    let publisher = Arc::new(Publisher::new(dr.clone(), VELERO, "e2e-dr", metrics));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let service = Service::new(dr.clone(), ServiceConfig::new(VELERO), clock, publisher);

    // 0. A Secret of the backup's name that the standby did not make is never overwritten: the
    //    refresh is refused, naming it, and nothing is restored.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(dr.clone(), NAMESPACE);
    env.dr.cluster.create_namespace(NAMESPACE).await?;
    let local: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "desktop-cloudinit", "namespace": NAMESPACE},
        "stringData": {"userdata": "#cloud-config\n# this site's own"},
    }))?;
    secrets.create(&PostParams::default(), &local).await?;
    let policy = reconcile(&service, &dr, drill::POLICY).await?;
    let (status, reason, message) = standby_ready(&policy);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "StandbyBlocked"),
        "{message}"
    );
    assert!(
        message.contains("Secret drill-vms/desktop-cloudinit: exists here and was not made by this policy's warm standby"),
        "{message}"
    );
    assert!(vms(&dr, NAMESPACE).await?.is_empty(), "nothing restored");
    let kept = secrets.get("desktop-cloudinit").await?;
    assert!(
        kept.metadata.labels.is_none(),
        "the site's Secret is untouched"
    );
    secrets
        .delete("desktop-cloudinit", &kube::api::DeleteParams::default())
        .await?;

    // 1. The first backups become the standbys, halted (the refused backup is tried again after
    //    five minutes).
    let later = SystemClock.now() + std::time::Duration::from_mins(6);
    let policy = reconcile_at(&service, &dr, drill::POLICY, later).await?;
    let (status, reason, message) = standby_ready(&policy);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "StandbyRestored"),
        "{message}"
    );
    assert_eq!(held(&policy).as_deref(), Some(first.as_str()));
    let infra_policy = reconcile(&service, &dr, drill::POLICY_INFRA).await?;
    assert_eq!(held(&infra_policy).as_deref(), Some(infra.as_str()));
    let standing = vms(&dr, NAMESPACE).await?;
    assert_eq!(
        standing.keys().collect::<Vec<_>>(),
        ["app", "db", "desktop", "tools", "web"],
        "VMs of the standby at dr"
    );
    nothing_runs(&dr, "after the first refresh").await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(dr.clone(), NAMESPACE);
    let db_root = claims.get("db-root").await?;
    assert_eq!(
        db_root.spec.and_then(|s| s.volume_name).as_deref(),
        Some("drill-db-root")
    );
    let pv = Api::<PersistentVolume>::all(dr.clone())
        .get("drill-db-root")
        .await?;
    let server = pv
        .spec
        .and_then(|s| s.nfs)
        .map(|n| n.server)
        .unwrap_or_default();
    assert_eq!(
        server,
        drill::DR_EXPORT.server,
        "the standby's PV is remapped"
    );
    // A reconcile with nothing new restores nothing, and the lag is exported.
    let again = reconcile(&service, &dr, drill::POLICY).await?;
    assert_eq!(
        again.status.as_ref().and_then(|s| s.standby.clone()),
        policy.status.as_ref().and_then(|s| s.standby.clone())
    );
    let scraped = metrics::encode(&registry);
    assert!(
        scraped.contains("replicadr_standby_lag_seconds{policy=\"drill\"}")
            && scraped.contains("replicadr_standby_ready{policy=\"drill\"} 1")
            && scraped
                .contains("replicadr_standby_restore_duration_seconds_count{policy=\"drill\"} 1"),
        "{scraped}"
    );

    // 2. A VM added, one removed, one changed at primary; the next refresh follows.
    env.move_velero(true, &[&first], &mut log).await?;
    let at_primary: Api<DynamicObject> =
        Api::namespaced_with(primary.clone(), NAMESPACE, &vm_resource());
    at_primary
        .delete("tools", &kube::api::DeleteParams::default())
        .await?;
    let extra: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "extra", "namespace": NAMESPACE,
                     "annotations": {"replicadr.io/start-order": "4"}},
        "spec": {"runStrategy": "Always",
                 "template": {"spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "512Mi"}}}}}},
    }))?;
    at_primary.create(&PostParams::default(), &extra).await?;
    at_primary
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"domain": {"resources": {"requests": {"memory": "2Gi"}}}}}}})),
        )
        .await?;
    drill::wait_workload_ready(&primary, &mut log).await?;
    let (second, _) = Box::pin(drill::verified_backup(&primary, drill::POLICY, &mut log)).await?;
    env.move_velero(false, &[&second], &mut log).await?;
    let policy = reconcile(&service, &dr, drill::POLICY).await?;
    let (status, reason, message) = standby_ready(&policy);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "StandbyRestored"),
        "{message}"
    );
    assert_eq!(held(&policy).as_deref(), Some(second.as_str()));
    let standby_status = policy
        .status
        .as_ref()
        .and_then(|s| s.standby.clone())
        .unwrap_or_default();
    assert_eq!(
        standby_status.pruned,
        ["VirtualMachine drill-vms/tools"],
        "{standby_status:#?}"
    );
    let standing = vms(&dr, NAMESPACE).await?;
    assert_eq!(
        standing.keys().collect::<Vec<_>>(),
        ["app", "db", "desktop", "extra", "web"],
        "VMs of the standby at dr after the second backup"
    );
    assert_eq!(
        standing["web"].pointer("/spec/template/spec/domain/resources/requests/memory"),
        Some(&json!("2Gi")),
        "the changed VM is patched"
    );
    nothing_runs(&dr, "after the second refresh").await?;
    assert!(
        message.contains("pruned VirtualMachine drill-vms/tools"),
        "{message}"
    );

    // 3. clean --standby: refused while on; off for drill-infra, it removes that standby only.
    let kubeconfig = env.dr.cluster.kubeconfig_path().to_owned();
    let clean = |apply: bool| {
        let kubeconfig = kubeconfig.clone();
        async move {
            let mut args = vec![
                "clean",
                "--site",
                "dr",
                "--standby",
                "--policy",
                INFRA,
                "-o",
                "json",
            ];
            if apply {
                args.push("--apply");
            }
            replicadr(&kubeconfig, &args).await
        }
    };
    let (code, out, err) = clean(true).await?;
    assert_eq!(code, 3, "refused while the standby is on:\n{out}\n{err}");
    assert!(out.contains("spec.standby.enabled: true"), "{out}");
    let own = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("operators-own".into()),
            namespace: Some(INFRA.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(dr.clone(), INFRA)
        .create(&PostParams::default(), &own)
        .await?;
    standby(&dr, drill::POLICY_INFRA, false).await?;
    let infra_policy = reconcile(&service, &dr, drill::POLICY_INFRA).await?;
    assert_eq!(standby_ready(&infra_policy).1, "StandbyDisabled");
    let (code, out, err) = clean(false).await?;
    assert_eq!(code, 0, "{out}\n{err}");
    let listed: Value = serde_json::from_str(&out)?;
    let objects = listed["objects"].to_string();
    assert!(
        objects.contains("VirtualMachine drill-infra/dns")
            && objects.contains("PersistentVolume drill-dns-root"),
        "{out}"
    );
    assert!(
        !objects.contains("drill-vms"),
        "only drill-infra's standby: {out}"
    );
    let (code, out, err) = clean(true).await?;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        vms(&dr, INFRA).await?.is_empty(),
        "drill-infra's VM is gone"
    );
    let dns_pv = Api::<PersistentVolume>::all(dr.clone())
        .get_opt("drill-dns-root")
        .await?;
    assert!(dns_pv.is_none(), "drill-infra's PV is gone");
    assert!(
        Api::<ConfigMap>::namespaced(dr.clone(), INFRA)
            .get_opt("operators-own")
            .await?
            .is_some(),
        "the operator's own ConfigMap stays"
    );
    assert_eq!(vms(&dr, NAMESPACE).await?.len(), 5, "drill's standby stays");
    let restores = Api::<DynamicObject>::namespaced_with(
        dr.clone(),
        VELERO,
        &replicadr_scheduler::velero::restore_resource(),
    );
    // Velero removes a deleted Restore's logs and results from the bucket before it goes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_mins(1);
    loop {
        let left: Vec<String> = restores
            .list(&ListParams::default().labels("replicadr.io/operation=standby"))
            .await?
            .items
            .iter()
            .map(kube::ResourceExt::name_any)
            .collect();
        if left.iter().all(|r| !r.contains(&infra)) {
            assert!(
                left.iter().any(|r| r.contains(&second)),
                "drill's standby Restore stays: {left:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drill-infra's standby Restores are not removed: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    // 4. A third backup of each policy. drill-infra's standby, switched on again over the
    //    cleaned site, restores its third backup; drill's standby is left one backup behind. The
    //    failover uses the first as it is and catches the second up first.
    env.move_velero(true, &[&second], &mut log).await?;
    at_primary
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "gold"}}})),
        )
        .await?;
    let (third, _) = Box::pin(drill::verified_backup(&primary, drill::POLICY, &mut log)).await?;
    let (infra_third, _) = Box::pin(drill::verified_backup(
        &primary,
        drill::POLICY_INFRA,
        &mut log,
    ))
    .await?;
    env.move_velero(false, &[&third, &infra_third], &mut log)
        .await?;
    standby(&dr, drill::POLICY_INFRA, true).await?;
    let infra_policy = reconcile(&service, &dr, drill::POLICY_INFRA).await?;
    let (status, reason, message) = standby_ready(&infra_policy);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "StandbyRestored"),
        "drill-infra's standby starts over on the cleaned site: {message}"
    );
    assert_eq!(held(&infra_policy).as_deref(), Some(infra_third.as_str()));
    let (code, out, err) = failover_at_dr(
        &kubeconfig,
        &["--restore-timeout", "5m", "--bind-timeout", "30s"],
        &[],
    )
    .await?;
    assert_eq!(code, 0, "failover from the standby:\n{out}\n{err}");
    let recovery: Value = serde_json::from_str(&out)?;
    let report = recovery["reports"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["policy"] == drill::POLICY))
        .cloned()
        .unwrap_or_default();
    assert_eq!(report["outcome"], "Succeeded", "{out}");
    assert_eq!(report["backup"], third.as_str(), "{out}");
    assert_eq!(report["standby"]["updatedFrom"], second.as_str(), "{out}");
    assert!(
        report["standby"]["complement"].is_string(),
        "the Deployment is restored apart: {out}"
    );
    assert!(err.contains("bringing it up to date first"), "{err}");
    let infra_report = recovery["reports"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["policy"] == drill::POLICY_INFRA))
        .cloned()
        .unwrap_or_default();
    assert_eq!(infra_report["outcome"], "Succeeded", "{out}");
    assert_eq!(
        infra_report["standby"]["backup"],
        infra_third.as_str(),
        "drill-infra's standby is used as it is: {out}"
    );
    assert!(
        infra_report["standby"]["updatedFrom"].is_null()
            && infra_report["standby"]["complement"].is_null(),
        "nothing of drill-infra's backup is restored again: {out}"
    );
    assert_eq!(
        infra_report["vmStarts"][0]["name"], "dns",
        "drill-infra's VM starts: {out}"
    );
    let starts: Vec<(String, u64)> = report["vmStarts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["group"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let names: std::collections::BTreeSet<&str> = starts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["app", "db", "desktop", "extra", "web"],
        "{out}"
    );
    let group = |name: &str| {
        starts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| *g)
            .unwrap_or_default()
    };
    assert!(
        group("db") < group("app") && group("app") < group("web") && group("web") < group("extra"),
        "start order: {starts:?}"
    );
    let standing = vms(&dr, NAMESPACE).await?;
    assert_eq!(
        standing["db"].pointer("/metadata/labels/tier"),
        Some(&json!("gold")),
        "the third backup's change is there"
    );
    assert!(
        Api::<Deployment>::namespaced(dr.clone(), NAMESPACE)
            .get_opt(drill::workload::APP)
            .await?
            .is_some(),
        "the Deployment is restored"
    );
    Ok(())
}

//! Which backup a restore at `dr` takes, in the two-site lab (real kube-apiservers with etcd,
//! s3s-fs, the real Velero server with the project's plugins). At `primary`, a user's Velero
//! Schedule that a BackupPolicy follows makes a backup (with the real client's
//! `backup create --from-schedule`), someone makes an unlabelled backup by hand, and a newer backup
//! carries `dr`'s own site label. At `dr`: the plan passes over the one labelled `dr` and takes the
//! Schedule's as the policy's; the unlabelled one is planned only when named, with its source
//! site said to be assumed; `--source-site` is checked; and a failover that names no policy
//! restores the Schedule's backup. Dirtier still: a second Schedule's backup carrying the policy
//! label, and at `dr` itself a backup labelled `primary` (a Schedule applied at both sites) and an
//! unlabelled one made by hand: none of them is ever taken, `--source-site` included, and each
//! skip says why. A separate test binary from `drill.rs`: one Velero runs at a
//! time. Build the workspace binaries first (`cargo build --workspace --bins`).

use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use replicadr_drill as drill;
use replicadr_e2e::lab_cli::{replicadr, sites_with_workload};
use replicadr_e2e::velero as velero_peer;
use replicadr_scheduler::velero::{self, BackupView, PhaseClass};
use serde_json::{Value, json};

const POLICY: &str = "nightly-vms";

/// Runs the real `velero` client against the site of `kubeconfig`.
fn velero_cli(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new(velero_peer::velero_binary()?)
        .args(args)
        .args(["--namespace", drill::VELERO_NAMESPACE])
        .env("KUBECONFIG", kubeconfig)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "velero {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Waits until Velero finished `name`, which must complete.
async fn completed(backups: &Api<DynamicObject>, name: &str) -> anyhow::Result<BackupView> {
    let deadline = Instant::now() + Duration::from_mins(3);
    loop {
        if let Some(object) = backups.get_opt(name).await? {
            let view = BackupView::from_object(&object);
            if view.class != PhaseClass::Running {
                anyhow::ensure!(
                    view.phase.as_deref() == Some("Completed"),
                    "backup {name} ended {view:?}"
                );
                return Ok(view);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "backup {name} did not finish");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A metadata-only Backup of `namespace` with `labels`, created through the API as a Velero
/// Schedule or a hand would.
async fn backup_labelled(
    backups: &Api<DynamicObject>,
    name: &str,
    namespace: &str,
    labels: &Value,
) -> anyhow::Result<BackupView> {
    let backup: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1", "kind": "Backup",
        "metadata": {"name": name, "namespace": drill::VELERO_NAMESPACE, "labels": labels},
        "spec": {
            "includedNamespaces": [namespace],
            "snapshotVolumes": false,
            "defaultVolumesToFsBackup": false,
            "snapshotMoveData": false,
        },
    }))?;
    backups.create(&PostParams::default(), &backup).await?;
    completed(backups, name).await
}

fn reasons(plan: &Value) -> Vec<&str> {
    plan["problems"]
        .as_array()
        .map(|all| all.iter().filter_map(|p| p["reason"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn dr_restores_the_schedules_backup_never_its_own_and_names_an_assumed_source()
-> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    let primary = env.primary.cluster.kubeconfig_path().to_owned();
    let backups: Api<DynamicObject> = Api::namespaced_with(
        env.primary.client.clone(),
        drill::VELERO_NAMESPACE,
        &velero::backup_resource(),
    );

    // The user's Schedule, as the policy's Ready condition asks for it, and the policy.
    let schedule: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1", "kind": "Schedule",
        "metadata": {"name": "nightly", "namespace": drill::VELERO_NAMESPACE},
        "spec": {
            "schedule": "0 2 * * *",
            "skipImmediately": true,
            "template": {
                "includedNamespaces": ["drill-vms"],
                "snapshotVolumes": false,
                "defaultVolumesToFsBackup": false,
                "snapshotMoveData": false,
                "metadata": {"labels": {
                    "replicadr.io/policy": POLICY,
                    "replicadr.io/site": "primary",
                    "velero.kubevirt.io/metadataBackup": "true",
                }},
            },
        },
    }))?;
    Api::<DynamicObject>::namespaced_with(
        env.primary.client.clone(),
        drill::VELERO_NAMESPACE,
        &velero::schedule_resource(),
    )
    .create(&PostParams::default(), &schedule)
    .await?;
    let policy: replicadr_scheduler::policy::BackupPolicy = serde_json::from_value(json!({
        "apiVersion": "replicadr.io/v1alpha1", "kind": "BackupPolicy",
        "metadata": {"name": POLICY, "namespace": drill::VELERO_NAMESPACE},
        "spec": {"schedule": "0 2 * * *", "veleroSchedule": "nightly"},
    }))?;
    Api::<replicadr_scheduler::policy::BackupPolicy>::namespaced(
        env.primary.client.clone(),
        drill::VELERO_NAMESPACE,
    )
    .create(&PostParams::default(), &policy)
    .await?;

    velero_cli(
        &primary,
        &[
            "backup",
            "create",
            "nightly-1",
            "--from-schedule",
            "nightly",
        ],
    )?;
    let scheduled = completed(&backups, "nightly-1").await?;
    assert_eq!(
        (scheduled.policy.as_deref(), scheduled.site.as_deref()),
        (Some(POLICY), Some("primary"))
    );
    velero_cli(
        &primary,
        &[
            "backup",
            "create",
            "by-hand",
            "--include-namespaces",
            "drill-vms",
            "--snapshot-volumes=false",
            "--default-volumes-to-fs-backup=false",
        ],
    )?;
    completed(&backups, "by-hand").await?;
    // Newer than both, of the same policy, but labelled with dr's own name (as dr's scheduler
    // labels what it makes): dr must never restore it as the policy's newest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let own: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1", "kind": "Backup",
        "metadata": {
            "name": "dr-labelled",
            "namespace": drill::VELERO_NAMESPACE,
            "labels": {
                "replicadr.io/policy": POLICY,
                "replicadr.io/site": "dr",
                "velero.io/schedule-name": "nightly",
                "velero.kubevirt.io/metadataBackup": "true",
            },
        },
        "spec": {
            "includedNamespaces": ["drill-vms"],
            "snapshotVolumes": false,
            "defaultVolumesToFsBackup": false,
            "snapshotMoveData": false,
        },
    }))?;
    backups.create(&PostParams::default(), &own).await?;
    completed(&backups, "dr-labelled").await?;
    // Newer still: a second Schedule's backup that carries the policy label.
    backup_labelled(
        &backups,
        "second-schedule",
        "drill-vms",
        &json!({
            "replicadr.io/policy": POLICY,
            "replicadr.io/site": "primary",
            "velero.io/schedule-name": "hourly",
        }),
    )
    .await?;

    env.move_velero(
        false,
        &["nightly-1", "by-hand", "dr-labelled", "second-schedule"],
        &mut log,
    )
    .await?;
    let dr = env.dr.cluster.kubeconfig_path().to_owned();
    // The policy exists at dr too, as the installation leaves it; and dr makes two backups of
    // its own (of a namespace it has before any failover): one through a copy of the Schedule
    // that kept primary's label, one by hand.
    Api::<replicadr_scheduler::policy::BackupPolicy>::namespaced(
        env.dr.client.clone(),
        drill::VELERO_NAMESPACE,
    )
    .create(&PostParams::default(), &policy)
    .await?;
    let at_dr: Api<DynamicObject> = Api::namespaced_with(
        env.dr.client.clone(),
        drill::VELERO_NAMESPACE,
        &velero::backup_resource(),
    );
    backup_labelled(
        &at_dr,
        "dr-made",
        "default",
        &json!({
            "replicadr.io/policy": POLICY,
            "replicadr.io/site": "primary",
            "velero.io/schedule-name": "nightly",
        }),
    )
    .await?;
    backup_labelled(&at_dr, "dr-by-hand", "default", &json!({})).await?;

    // The policy's newest backup labelled dr is passed over, naming why; the Schedule's is taken.
    let (code, out, err) = replicadr(
        &dr,
        &["plan", "--site", "dr", "--policy", POLICY, "-o", "json"],
    )
    .await?;
    let plan: Value =
        serde_json::from_str(&out).map_err(|e| anyhow::anyhow!("{e}: {out}\n{err}"))?;
    assert_eq!(plan["backup"], "nightly-1", "{out}\n{err}");
    assert_eq!(code, 0, "a complete plan:\n{out}\n{err}");
    assert_eq!(
        plan["source"],
        json!({"site": "primary", "assumed": false, "how": "its label replicadr.io/site=primary"})
    );
    for skipped in [
        "skipped dr-labelled: made at site dr itself (its label replicadr.io/site=dr)",
        "skipped dr-made: made at site dr itself (its label says replicadr.io/site=primary, but its Backup object was created in this cluster before it completed",
        "skipped second-schedule: labelled replicadr.io/policy=nightly-vms but not made by the policy (Velero Schedule nightly, velero.io/schedule-name=nightly)",
    ] {
        assert!(err.contains(skipped), "{skipped}:\n{err}");
    }
    // --source-site primary never takes what dr made itself for primary's.
    let (_, out, err) = replicadr(
        &dr,
        &[
            "plan",
            "--site",
            "dr",
            "--source-site",
            "primary",
            "-o",
            "json",
        ],
    )
    .await?;
    let plan: Value =
        serde_json::from_str(&out).map_err(|e| anyhow::anyhow!("{e}: {out}\n{err}"))?;
    assert_eq!(
        plan["backup"], "second-schedule",
        "the newest made at primary:\n{err}"
    );
    assert!(
        err.contains("skipped dr-by-hand: made at site dr itself (backup dr-by-hand has no replicadr.io/site label")
            && err.contains("so site dr made it, whatever --source-site primary says"),
        "{err}"
    );

    // The unlabelled one is planned when named, its source site assumed and said so.
    let (code, out, err) = replicadr(
        &dr,
        &["plan", "--site", "dr", "--backup", "by-hand", "-o", "json"],
    )
    .await?;
    let plan: Value =
        serde_json::from_str(&out).map_err(|e| anyhow::anyhow!("{e}: {out}\n{err}"))?;
    assert_eq!(code, 0, "warnings only:\n{out}\n{err}");
    assert_eq!(plan["source"]["site"], "primary", "{out}");
    assert_eq!(plan["source"]["assumed"], true, "{out}");
    assert_eq!(reasons(&plan), ["SourceSiteAssumed"], "{out}");
    let how = plan["source"]["how"].as_str().unwrap_or_default();
    assert!(
        how.contains("backup by-hand has no replicadr.io/site label")
            && how.contains("Velero synced it from object storage")
            && how.contains("taken as made at site primary"),
        "{how}"
    );
    let (_, table, _) = replicadr(&dr, &["plan", "--site", "dr", "--backup", "by-hand"]).await?;
    assert!(
        table.contains("Made at:       site primary (assumed: the warnings below say why)"),
        "{table}"
    );
    let (_, out, _) = replicadr(
        &dr,
        &[
            "plan",
            "--site",
            "dr",
            "--backup",
            "by-hand",
            "--source-site",
            "primary",
            "-o",
            "json",
        ],
    )
    .await?;
    let plan: Value = serde_json::from_str(&out)?;
    assert!(
        plan["source"]["how"]
            .as_str()
            .is_some_and(|h| h.contains("--source-site primary says site primary made it")),
        "{out}"
    );
    // --source-site names the other site, one of the site map's.
    for (source, expected) in [
        ("dr", "--source-site dr is the site this restore runs at"),
        ("moon", "--source-site \"moon\""),
    ] {
        let (code, out, err) =
            replicadr(&dr, &["plan", "--site", "dr", "--source-site", source]).await?;
        assert_ne!(code, 0, "{out}");
        assert!(err.contains(expected), "{expected}: {err}");
    }

    // A failover that names no policy restores the Schedule's backup as the policy's, and says
    // that the unlabelled one is not restored unless named.
    let (code, out, err) =
        replicadr(&dr, &["failover", "--site", "dr", "--yes", "-o", "json"]).await?;
    let recovery: Value =
        serde_json::from_str(&out).map_err(|e| anyhow::anyhow!("{e}: {out}\n{err}"))?;
    assert_eq!(code, 0, "{out}\n{err}");
    let reports = recovery["reports"].as_array().cloned().unwrap_or_default();
    assert_eq!(reports.len(), 1, "{out}");
    assert_eq!(reports[0]["policy"], POLICY, "{out}");
    assert_eq!(reports[0]["backup"], "nightly-1", "{out}");
    assert_eq!(reports[0]["outcome"], "Succeeded", "{out}");
    assert!(
        err.contains("backup by-hand has no replicadr.io/policy label"),
        "{err}"
    );
    Ok(())
}

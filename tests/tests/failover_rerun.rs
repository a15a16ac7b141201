//! Re-runs re-restore, in the two-site lab (real kube-apiservers with etcd, s3s-fs, the real
//! Velero server with the project's plugins): after a failover to `dr`, a claim and its PV are
//! lost there. Running the failover again first continues with its completed Restore, whose
//! checks now fail, naming the PV and the claim; the run after that starts a new Restore attempt,
//! which restores what was lost; `--new-attempt` asks for one more. After another site took over
//! in between, a failover of the same backup is refused on the earlier takeover's objects instead
//! of continuing its Restore. Build the workspace binaries first.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams};
use replicadr_drill as drill;
use replicadr_e2e::lab_cli::{failover_at_dr, sites_with_workload, verified_backup};
use replicadr_scheduler::active_site::{Record, Takeover};
use serde_json::Value;

const NAMESPACE: &str = "drill-vms";

/// How long each failover here waits for its Restore and its claims.
const TIMEOUTS: &[&str] = &["--restore-timeout", "5m", "--bind-timeout", "15s"];

#[tokio::test]
async fn a_rerun_after_failed_checks_restores_what_was_lost() -> anyhow::Result<()> {
    let mut log = |line: String| eprintln!("lab: {line}");
    let mut env = sites_with_workload(0, &mut log).await?;
    let backup = verified_backup(&env.primary.client, &mut log).await?;
    env.move_velero(false, &[&backup], &mut log).await?;
    let dr = env.dr.cluster.kubeconfig_path().to_owned();
    let (code, out, err) = failover_at_dr(&dr, TIMEOUTS, &[]).await?;
    assert_eq!(code, 0, "failover:\n{out}\n{err}");

    // A claim and its (Retain) PV are lost at dr.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.dr.client.clone(), NAMESPACE);
    let volumes: Api<PersistentVolume> = Api::all(env.dr.client.clone());
    claims.delete("web-root", &DeleteParams::default()).await?;
    volumes
        .delete("drill-web-root", &DeleteParams::default())
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
    while claims.get_opt("web-root").await?.is_some()
        || volumes.get_opt("drill-web-root").await?.is_some()
    {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The re-run continues with the completed Restore: its checks fail and name what is lost.
    let (code, out, err) = failover_at_dr(&dr, TIMEOUTS, &[]).await?;
    assert_eq!(code, 1, "the checks fail:\n{out}\n{err}");
    assert!(err.contains("continuing with Restore"), "{err}");
    let recovery: Value = serde_json::from_str(&out)?;
    let failures = recovery["reports"][0]["failures"].to_string();
    assert!(
        failures.contains("PersistentVolume drill-web-root was not restored")
            && failures.contains("PersistentVolumeClaim drill-vms/web-root is not Bound"),
        "{failures}"
    );
    let first = recovery["reports"][0]["restore"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // The next run restores again with a new attempt, and what was lost is back.
    let (code, out, err) = failover_at_dr(&dr, TIMEOUTS, &[]).await?;
    assert_eq!(code, 0, "the run after failed checks:\n{out}\n{err}");
    assert!(
        err.contains("the run that followed it failed its checks"),
        "{err}"
    );
    let recovery: Value = serde_json::from_str(&out)?;
    let second = recovery["reports"][0]["restore"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(second, format!("{first}-2"), "{out}");
    let claim = claims.get("web-root").await?;
    assert_eq!(
        claim.spec.and_then(|s| s.volume_name).as_deref(),
        Some("drill-web-root")
    );

    // A run after a success continues with it; --new-attempt restores once more.
    let (code, _, err) = failover_at_dr(&dr, TIMEOUTS, &[]).await?;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("continuing with Restore velero/{second}")),
        "{err}"
    );
    let (code, out, err) = failover_at_dr(&dr, TIMEOUTS, &["--new-attempt"]).await?;
    assert_eq!(code, 0, "--new-attempt:\n{out}\n{err}");
    assert!(err.contains("--new-attempt asks for a new one"), "{err}");
    let recovery: Value = serde_json::from_str(&out)?;
    assert_eq!(
        recovery["reports"][0]["restore"].as_str(),
        Some(format!("{first}-3").as_str()),
        "{out}"
    );

    // The primary takes over again (as a failback does), then dr fails over once more while the
    // primary's newest backup is still the same one: what the earlier takeover restored at dr is
    // stale now, and its Completed Restores are not continued.
    let record = Record::open(&env.dr.client, drill::VELERO_NAMESPACE, None, "the test").await?;
    record
        .take_over("primary", Takeover::Failback, None, jiff::Timestamp::now())
        .await?;
    let (code, out, err) = failover_at_dr(&dr, TIMEOUTS, &[]).await?;
    assert_eq!(
        code, 3,
        "a new takeover over an old one's objects:\n{out}\n{err}"
    );
    let recovery: Value = serde_json::from_str(&out)?;
    let failures = recovery["reports"][0]["failures"].to_string();
    assert!(
        failures.contains("ObjectExists VirtualMachine drill-vms/db"),
        "{failures}"
    );
    Ok(())
}

//! The `replicadr` binary itself, as an operator and a Deployment run it: `verify -o json`,
//! `status`, `crd`, and `scheduler` serving its endpoints, creating a backup, and shutting down
//! cleanly on SIGTERM (releasing its Lease). Build it first: `cargo build -p replicadr-cli`.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use replicadr_e2e::backup_env::BackupEnv;
use replicadr_e2e::workspace::workspace_binary;
use replicadr_lab::fixture;
use replicadr_scheduler::velero::{self, BackupRequest};
use serde_json::json;

fn replicadr(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let output = Command::new(workspace_binary("replicadr")?)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("VELERO_NAMESPACE", "velero")
        .output()?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[tokio::test]
async fn the_binary_verifies_reports_status_and_prints_its_crd() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    let kubeconfig = env.cluster.kubeconfig_path().to_owned();
    let policy =
        replicadr_scheduler::policy::ValidPolicy::from_policy(&serde_json::from_value(json!({
            "apiVersion": "replicadr.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "vms", "namespace": "velero", "uid": "u"},
            "spec": {"schedule": "@hourly"},
        }))?)?;
    for name in ["good", "bad"] {
        let object = velero::build_backup(&BackupRequest {
            policy: &policy,
            site: "primary",
            name: name.into(),
            slot: None,
            attempt: 0,
        });
        env.backups()
            .create(&PostParams::default(), &object)
            .await?;
    }
    let (tarball, list) = fixture::healthy_vm_backup()?;
    env.complete_backup("good", &tarball, &list, "Completed", Timestamp::now())
        .await?;
    env.complete_backup(
        "bad",
        &tarball[..tarball.len() / 2],
        &list,
        "Completed",
        Timestamp::now(),
    )
    .await?;

    let (code, stdout, stderr) = replicadr(&kubeconfig, &["verify", "good", "-o", "json"])?;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(report["verified"], true, "{stdout}");
    assert_eq!(report["stats"]["items"], 9);

    let (code, stdout, stderr) = replicadr(&kubeconfig, &["verify", "bad"])?;
    assert_eq!(code, 1, "a failed verification exits 1: {stdout}{stderr}");
    // Piped, as into `tee`: no colour codes on either stream.
    assert!(
        !stdout.contains('\x1b') && !stderr.contains('\x1b'),
        "{stdout:?}{stderr:?}"
    );
    assert!(stdout.starts_with("BACKUP"), "{stdout}");
    assert!(stdout.contains("TarballTruncated"), "{stdout}");

    let (code, _, stderr) = replicadr(&kubeconfig, &["verify", "missing"])?;
    assert_eq!(code, 2, "a command that cannot run exits 2: {stderr}");
    assert!(
        stderr.contains("backup velero/missing does not exist"),
        "{stderr}"
    );

    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let (code, stdout, stderr) = replicadr(&kubeconfig, &["status"])?;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("This site: primary\n"), "{stdout}");
    assert!(
        stdout.contains("velero/default")
            && stdout.contains("site primary, active since")
            && stdout.contains("(activate, epoch 1)")
            && stdout.contains("[s3://velero-backups/site-a/metadata/replicadr-active-site.json]"),
        "{stdout}"
    );
    assert!(stdout.contains("\nPOLICY"), "{stdout}");
    assert!(
        stdout.contains("vms") && stdout.contains("@hourly") && stdout.contains("none"),
        "{stdout}"
    );
    let (code, stdout, stderr) = replicadr(&kubeconfig, &["status", "-o", "json"])?;
    assert_eq!(code, 0, "{stderr}");
    let overview: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(overview["localSite"], "primary", "{stdout}");
    assert_eq!(
        overview["activeSite"][0]["record"]["site"], "primary",
        "{stdout}"
    );
    assert_eq!(overview["policies"][0]["policy"], "vms", "{stdout}");

    let (code, stdout, _) = replicadr(&kubeconfig, &["crd"])?;
    assert_eq!(code, 0);
    assert_eq!(stdout, replicadr_scheduler::policy::crd_yaml());
    Ok(())
}

#[tokio::test]
async fn the_scheduler_serves_metrics_backs_up_and_stops_cleanly_on_sigterm() -> anyhow::Result<()>
{
    let env = BackupEnv::start("velero").await?;
    // @every 1m: the first slot comes within a minute of real time.
    env.create_policy(
        "vms",
        json!({"schedule": "@every 1m", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let log = env.cluster.dir().join("scheduler.log");
    let mut child = Command::new(workspace_binary("replicadr")?)
        .args([
            "scheduler",
            "--metrics-address",
            &format!("127.0.0.1:{port}"),
            "--identity",
            "replica-a",
            "--tick-seconds",
            "1",
            "--lease-seconds",
            "5",
        ])
        .env("KUBECONFIG", env.cluster.kubeconfig_path())
        .env("VELERO_NAMESPACE", "velero")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(
            env.cluster.dir().join("scheduler.err"),
        )?)
        .spawn()?;
    let result = async {
        let started = Instant::now();
        while !http_get(port, "/readyz")
            .is_ok_and(|r| r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
        {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(http_get(port, "/healthz")?.contains("ok"));
        // The first slot's backup, created by the real binary against the real clock.
        let deadline = Instant::now() + Duration::from_secs(75);
        loop {
            if !env.backup_views().await?.is_empty() {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "no backup within 75s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let backups = env.backup_views().await?;
        assert_eq!(backups.len(), 1, "{backups:?}");
        assert!(backups[0].name.starts_with("vms-"), "{backups:?}");
        let metrics = http_get(port, "/metrics")?;
        assert!(
            metrics.contains("replicadr_backup_runs_total{policy=\"vms\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("replicadr_expected_interval_seconds{policy=\"vms\"} 60.0"),
            "{metrics}"
        );
        let lease = Api::<Lease>::namespaced(env.client.clone(), "velero")
            .get("replicadr-scheduler")
            .await?;
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity).as_deref(),
            Some("replica-a")
        );
        anyhow::Ok(())
    }
    .await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait()? {
            break exit;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill()?;
            anyhow::bail!("the scheduler did not stop within 20s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    result?;
    assert!(exit.success(), "exit status {exit}");
    let lease = Api::<Lease>::namespaced(env.client.clone(), "velero")
        .get("replicadr-scheduler")
        .await?;
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert!(
        holder.as_deref().is_none_or(str::is_empty),
        "lease released on shutdown, held by {holder:?}"
    );
    Ok(())
}

#[test]
fn plan_from_a_file_needs_no_cluster_and_its_exit_code_says_if_the_restore_is_complete()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let map = dir.path().join("site-map.yaml");
    std::fs::write(&map, fixture::SITE_MAP)?;
    let healthy = dir.path().join("healthy.tar.gz");
    std::fs::write(&healthy, fixture::healthy_vm_backup()?.0)?;
    // No kubeconfig at all: the offline plan must not need one.
    let nowhere = dir.path().join("no-kubeconfig");
    let offline_plan = |tarball: &Path, site: &str, extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--from-file",
            tarball.to_str().expect("utf-8"),
            "--site-map",
            map.to_str().expect("utf-8"),
            "--site",
            site,
        ];
        args.extend_from_slice(extra);
        replicadr(&nowhere, &args)
    };
    let (code, stdout, stderr) = offline_plan(&healthy, "dr", &["-o", "json"])?;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(plan["complete"], true);
    assert_eq!(plan["verification"]["result"], "NotRun");
    assert!(
        plan["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .all(|v| v["after"]
                .as_str()
                .is_some_and(|a| a.starts_with("nfs-b.example.com:/replica/vms/"))),
        "{stdout}"
    );

    let mut writer = fixture::ArchiveWriter::new(Vec::new())?;
    for (group_resource, mut object) in fixture::healthy_vm_objects() {
        if object["metadata"]["name"] == "pv-root" {
            object["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
        }
        writer.add(group_resource, &object)?;
    }
    let broken = dir.path().join("broken.tar.gz");
    std::fs::write(&broken, writer.finish()?.0)?;
    let (code, stdout, stderr) = offline_plan(&broken, "dr", &[])?;
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    for needle in [
        "PvNotRetain",
        "PersistentVolume pv-root",
        "INCOMPLETE: 1 blocking problem(s)",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing from\n{stdout}");
    }

    let (code, _, stderr) = offline_plan(&healthy, "elsewhere", &[])?;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("elsewhere") && stderr.contains("primary"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn activate_writes_the_record_once_and_never_for_another_site() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    let kubeconfig = env.cluster.kubeconfig_path().to_owned();
    // A location with no record yet, as at installation.
    env.s3.create_bucket("fresh")?;
    env.put_storage_location("default", "fresh", Some(("cloud-credentials", "cloud")))
        .await?;
    let (code, stdout, stderr) = replicadr(&kubeconfig, &["status"])?;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("UNKNOWN")
            && stdout.contains("there is no active-site record at s3://fresh/"),
        "{stdout}"
    );
    let (code, stdout, stderr) = replicadr(&kubeconfig, &["activate", "--site", "primary"])?;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("written: site primary, active since")
            && stdout.contains("(activate, epoch 1)"),
        "{stdout}"
    );
    let written: serde_json::Value =
        serde_json::from_slice(&env.s3.get("fresh", &BackupEnv::active_site_key())?)?;
    assert_eq!(written["site"], "primary");
    assert_eq!(written["format"], "replicadr.io/active-site/v1");
    // `activate` again at the same site changes nothing; for another site it is refused.
    let (code, stdout, stderr) = replicadr(&kubeconfig, &["activate", "--site", "primary"])?;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("already names site primary"), "{stdout}");
    let (code, _, stderr) = replicadr(&kubeconfig, &["activate", "--site", "dr"])?;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--site is \"dr\" but this cluster's plugin ConfigMap velero/replicadr-plugins names localSite \"primary\""),
        "{stderr}"
    );
    env.put_local_site("dr").await?;
    let (code, _, stderr) = replicadr(&kubeconfig, &["activate", "--site", "dr"])?;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("already names site primary")
            && stderr.contains(
                "a site becomes active only by `replicadr failover` or `replicadr failback`"
            ),
        "{stderr}"
    );
    Ok(())
}

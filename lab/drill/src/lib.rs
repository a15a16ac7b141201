//! `replicadr-drill`: a complete DR drill on a local two-site environment. Two control planes
//! (real etcd + kube-apiserver: sites `primary` and `dr`), one real S3 server both sites' Velero
//! use, a real Velero server per site with the project's plugin binary and
//! velero-plugin-for-aws, the CRDs, a sample workload at `primary`, the plugin ConfigMaps with the
//! site map; then the scheduler's verified backup at `primary`, `failover` at `dr`, the drill's
//! checks, optionally `failback` to `primary`, and the report. No pods run, so the drill plays the
//! PV controller, the NFS provisioner, the snapshot controller and KubeVirt ([`controllers`]).

pub mod controllers;
pub mod workload;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use replicadr_lab::TestCluster;
use replicadr_lab::s3::S3Server;
use replicadr_lab::tls_front::TlsFront;
use replicadr_lab::velero::{self as velero_peer, ObjectStorage, VeleroServer};
use serde::Serialize;
use serde_json::{Value, json};

use controllers::{Export, Played};
use replicadr_cli::render;
use replicadr_scheduler::active_site::{self, Record};
use replicadr_scheduler::clock::{Clock, SystemClock};
pub use replicadr_scheduler::drill::Check;
use replicadr_scheduler::metrics::Metrics;
use replicadr_scheduler::publish::Publisher;
use replicadr_scheduler::recovery::clean;
use replicadr_scheduler::recovery::every_policy::{self, Recovery};
use replicadr_scheduler::recovery::failover::{self, Operation, vm_resource};
use replicadr_scheduler::recovery::report::{Outcome, RecoveryReport, VmStart};
use replicadr_scheduler::recovery::site::BackupChoice;
use replicadr_scheduler::velero::{self, BackupView, PhaseClass};
use replicadr_scheduler::verify::Report;
use workload::SiteExport;

/// The Velero namespace at both sites.
pub const VELERO_NAMESPACE: &str = "velero";
/// The drill's main BackupPolicy: the fixed and the scale VMs. Short on purpose: s3s-fs keeps
/// each object's metadata in a file named after the base64 of bucket and key, and the keys Velero
/// writes hold the backup or Restore name twice (`backups/<b>/<b>-podvolumebackups.json.gz`), so
/// long names pass the 255-byte file name limit there (a 63-character backup name does; real S3
/// takes keys of 1024 bytes).
pub const POLICY: &str = "drill";
/// The second BackupPolicy: the `drill-infra` namespace.
pub const POLICY_INFRA: &str = "drill-infra";

/// Each policy and the namespaces it backs up.
const POLICIES: [(&str, &[&str]); 2] = [
    (POLICY, &[workload::NAMESPACE, workload::SCALE_NAMESPACE]),
    (POLICY_INFRA, &[workload::INFRA_NAMESPACE]),
];
const BUCKET: &str = "replicadr-drill";
const PREFIX: &str = "velero";
const CREDENTIALS: (&str, &str) = ("cloud-credentials", "cloud");

/// The NFS exports of the two sites, as the array would replicate them.
pub const PRIMARY_EXPORT: SiteExport<'static> = SiteExport {
    server: "nfs-primary.drill.internal",
    base: "/exports/vms",
};
/// The replica at `dr`.
pub const DR_EXPORT: SiteExport<'static> = SiteExport {
    server: "nfs-dr.drill.internal",
    base: "/replica/vms",
};

/// The site map both sites share.
pub fn site_map() -> String {
    format!(
        "sites: [primary, dr]\nexports:\n  - name: vm-disks\n    primary: {{server: {}, path: {}}}\n    dr: {{server: {}, path: {}}}\nunmapped: fail\n",
        PRIMARY_EXPORT.server, PRIMARY_EXPORT.base, DR_EXPORT.server, DR_EXPORT.base
    )
}

/// What to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The plugin binary Velero runs at both sites.
    pub plugin_binary: PathBuf,
    /// Further VMs (two PVs each) in `drill-scale`.
    pub scale_vms: usize,
    /// Fail back to `primary` after the failover.
    pub failback: bool,
    /// Kill the DR site's Velero while it restores, then run the failover again.
    pub kill_velero_mid_restore: bool,
    /// Velero's log level at both sites.
    pub velero_log_level: String,
    /// Velero's API client limits (`--client-qps`, `--client-burst`) at both sites.
    pub velero_client: (u32, u32),
    /// Before the failover, keep a warm standby of every policy at `dr` and refresh it with a
    /// second round of backups; the failover then uses it.
    pub standby: bool,
}

/// The limits the shipped installs set (manifests/oadp, manifests/velero) and the drill uses.
pub const SHIPPED_VELERO_CLIENT: (u32, u32) = (100, 200);

/// The drill's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    /// The main policy's backup at primary.
    pub backup: String,
    /// Every policy's backup at primary.
    pub backups: Vec<String>,
    pub backup_verified: bool,
    pub backup_seconds: f64,
    /// One report per policy.
    pub failover: Option<Recovery>,
    /// The failover interrupted by the fault, when one was injected.
    pub interrupted_failover: Option<String>,
    pub failback: Option<Recovery>,
    pub checks: Vec<Check>,
    /// The failover's Restore, as Velero's log at `dr` accounts it.
    pub plugin_time: Option<PluginTime>,
    /// The warm standby at `dr` before the failover, when asked for.
    pub standby: Option<StandbyTimes>,
    pub setup_seconds: f64,
    pub total_seconds: f64,
}

impl DrillReport {
    /// Every check passed and every recovery succeeded.
    pub fn passed(&self) -> bool {
        self.backup_verified
            && self.checks.iter().all(|c| c.passed)
            && self
                .failover
                .as_ref()
                .is_some_and(|r| r.outcome == Outcome::Succeeded)
            && self
                .failback
                .as_ref()
                .is_none_or(|r| r.outcome == Outcome::Succeeded)
    }

    /// The failover's report for `policy`.
    pub fn failover_of(&self, policy: &str) -> Option<&RecoveryReport> {
        report_of(self.failover.as_ref()?, policy)
    }

    /// The failback's report for `policy`.
    pub fn failback_of(&self, policy: &str) -> Option<&RecoveryReport> {
        report_of(self.failback.as_ref()?, policy)
    }
}

fn report_of<'a>(recovery: &'a Recovery, policy: &str) -> Option<&'a RecoveryReport> {
    recovery
        .reports
        .iter()
        .find(|r| r.policy.as_deref() == Some(policy))
}

/// One local site: a control plane, its Velero, its played controllers.
pub struct Site {
    pub name: &'static str,
    pub cluster: TestCluster,
    pub client: Client,
    velero: Option<VeleroServer>,
    _played: Played,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.name)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Site {
    /// Fails, quoting Velero's log, when Velero at this site has exited.
    fn velero_is_running(&mut self) -> anyhow::Result<()> {
        if let Some(velero) = self.velero.as_mut()
            && let Some(status) = velero.exited()
        {
            anyhow::bail!(
                "Velero at site {} exited ({status}):\n{}",
                self.name,
                velero.log_tail()
            );
        }
        Ok(())
    }

    /// Hands Velero's error lines at this site to `progress`.
    fn report_velero_errors(&self, progress: &mut (dyn FnMut(String) + Send)) {
        if let Some(velero) = &self.velero {
            progress(format!(
                "Velero's errors at {}:\n{}",
                self.name,
                velero.errors()
            ));
        }
    }

    /// Velero's log at this site, if it runs.
    pub fn velero_log(&self) -> Option<PathBuf> {
        self.velero.as_ref().map(VeleroServer::log_path)
    }
}

/// The two sites and the object store, up and configured.
#[derive(Debug)]
pub struct Environment {
    pub s3: S3Server,
    /// HTTPS in front of `s3`, with a CA of its own that both BSLs carry: Velero and the verifier
    /// reach object storage over TLS, as in production.
    pub s3_tls: TlsFront,
    pub primary: Site,
    pub dr: Site,
    options: DrillOptions,
}

impl Environment {
    /// Starts both sites and the object store and configures them; `progress` gets a line per
    /// step.
    pub async fn start(
        options: DrillOptions,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            options.plugin_binary.is_file(),
            "the plugin binary {} does not exist: build it with `cargo build -p replicadr-velero-plugins`, or pass --plugin-binary",
            options.plugin_binary.display()
        );
        progress("starting the object store and two control planes (etcd + kube-apiserver)".into());
        let (s3, primary, dr) = tokio::try_join!(
            S3Server::start(),
            TestCluster::start(),
            TestCluster::start()
        )?;
        s3.create_bucket(BUCKET)?;
        let s3_tls = s3.serve_tls().await?;
        progress(format!(
            "object store: s3s-fs behind {} (a throwaway CA, given to both sites' BackupStorageLocation as caCert)",
            s3_tls.endpoint()
        ));
        let velero_crds = velero_peer::velero_crds()?;
        let mut sites = Vec::new();
        for (name, cluster, export) in [("primary", primary, PRIMARY_EXPORT), ("dr", dr, DR_EXPORT)]
        {
            let client = cluster.client().await?;
            progress(format!(
                "site {name}: {} (kubeconfig {})",
                cluster.server_url(),
                cluster.kubeconfig_path().display()
            ));
            cluster
                .apply_yaml(&velero_crds)
                .await
                .context("Velero's CRDs")?;
            for crds in replicadr_lab::crds::WORKLOAD {
                cluster.apply_yaml(crds).await.context("workload CRDs")?;
            }
            cluster
                .apply_yaml(&replicadr_scheduler::policy::crd_yaml())
                .await
                .context("BackupPolicy CRD")?;
            cluster.create_namespace(VELERO_NAMESPACE).await?;
            velero_peer::put_credentials(
                &client,
                VELERO_NAMESPACE,
                CREDENTIALS.0,
                CREDENTIALS.1,
                &s3.credentials_file(),
            )
            .await?;
            let endpoint = s3_tls.endpoint();
            velero_peer::put_storage_location(
                &client,
                VELERO_NAMESPACE,
                "default",
                &ObjectStorage {
                    endpoint: &endpoint,
                    bucket: BUCKET,
                    prefix: PREFIX,
                    ca_cert: Some(s3_tls.ca_cert()),
                },
                Some(CREDENTIALS),
            )
            .await?;
            velero_peer::put_server_deployment(&client, VELERO_NAMESPACE).await?;
            let map = site_map();
            velero_peer::put_plugin_config(
                &client,
                VELERO_NAMESPACE,
                &[("siteMap", &map), ("localSite", name)],
            )
            .await?;
            let played = Played::start(
                client.clone(),
                Export {
                    server: export.server.to_owned(),
                    share: export.base.to_owned(),
                },
            );
            sites.push(Site {
                name,
                cluster,
                client,
                velero: None,
                _played: played,
            });
        }
        let dr = sites.pop().expect("two sites");
        let primary = sites.pop().expect("two sites");
        let mut environment = Self {
            s3,
            s3_tls,
            primary,
            dr,
            options,
        };
        environment.start_velero(true).await?;
        environment.activate_primary(progress).await?;
        Ok(environment)
    }

    /// As at installation: `replicadr activate --site primary`, once.
    async fn activate_primary(
        &self,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> anyhow::Result<()> {
        for change in active_site::activate(
            &self.primary.client,
            VELERO_NAMESPACE,
            "primary",
            None,
            jiff::Timestamp::now(),
        )
        .await?
        {
            progress(format!(
                "replicadr activate --site primary: {} ({})",
                change.record.describe(),
                change.url
            ));
        }
        Ok(())
    }

    /// Starts Velero at a site and waits for its storage location to be Available. One Velero runs
    /// at a time: its controller manager binds port 8080 whatever the flags say, and a failover
    /// happens when the other site's Velero is gone anyway.
    pub async fn start_velero(&mut self, primary: bool) -> anyhow::Result<()> {
        let plugins = [
            velero_peer::plugin_for_aws_binary()?,
            self.options.plugin_binary.clone(),
        ];
        self.start_velero_with_plugins(primary, &plugins).await
    }

    /// [`Self::start_velero`] with these plugin binaries only (a Velero without ReplicaDR's
    /// plugins, for one).
    pub async fn start_velero_with_plugins(
        &mut self,
        primary: bool,
        plugins: &[PathBuf],
    ) -> anyhow::Result<()> {
        let args = [
            "--backup-sync-period=2s".to_owned(),
            "--item-operation-sync-frequency=1s".to_owned(),
            // Each validation rewrites the credentials file a restore may be reading (Velero
            // truncates it first): validate rarely, as production's 1 minute does.
            "--store-validation-frequency=1m".to_owned(),
            // Velero's default API client limit (20 requests/s) would make the restore, not
            // ReplicaDR, the measure of a large drill; production installs raise it the same way.
            format!("--client-qps={}", self.options.velero_client.0),
            format!("--client-burst={}", self.options.velero_client.1),
            format!("--log-level={}", self.options.velero_log_level),
        ];
        let site = if primary {
            &mut self.primary
        } else {
            &mut self.dr
        };
        if let Err(error) = std::net::TcpListener::bind(("0.0.0.0", 8080)) {
            anyhow::bail!(
                "cannot start Velero at site {}: port 8080, which Velero's controller manager always binds, is taken ({error}); is another Velero or drill running?",
                site.name
            );
        }
        site.velero = Some(VeleroServer::start_with(
            site.cluster.kubeconfig_path(),
            VELERO_NAMESPACE,
            plugins,
            &args,
        )?);
        let locations: Api<DynamicObject> = Api::namespaced_with(
            site.client.clone(),
            VELERO_NAMESPACE,
            &velero::storage_location_resource(),
        );
        let deadline = Instant::now() + Duration::from_mins(2);
        loop {
            let phase = locations
                .get("default")
                .await?
                .data
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if phase.as_deref() == Some("Available") {
                return Ok(());
            }
            site.velero_is_running()?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "Velero at site {} never marked its BackupStorageLocation Available:\n{}",
                site.name,
                site.velero
                    .as_ref()
                    .map(VeleroServer::log_tail)
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The only Velero moves to the primary site (`to_primary`) or to dr: the other site's stops,
    /// this one starts and syncs `backups` from object storage.
    pub async fn move_velero<S: AsRef<str>>(
        &mut self,
        to_primary: bool,
        backups: &[S],
        progress: &mut (dyn FnMut(String) + Send),
    ) -> anyhow::Result<()> {
        self.kill_velero(!to_primary);
        self.start_velero(to_primary).await?;
        let site = if to_primary { &self.primary } else { &self.dr };
        for backup in backups {
            wait_synced(site, backup.as_ref(), progress).await?;
        }
        Ok(())
    }

    /// Kills Velero at a site.
    pub fn kill_velero(&mut self, primary: bool) {
        let site = if primary {
            &mut self.primary
        } else {
            &mut self.dr
        };
        if let Some(velero) = site.velero.as_mut() {
            velero.kill();
        }
    }
}

/// Runs the drill in a fresh environment, handing it back (for `--keep`) with the report.
#[expect(clippy::too_many_lines, reason = "the drill's steps, in order")]
pub async fn run(
    options: DrillOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<(Environment, DrillReport)> {
    let started = Instant::now();
    let mut env = Environment::start(options.clone(), progress).await?;
    let setup_seconds = started.elapsed().as_secs_f64();
    progress(format!(
        "both sites up in {setup_seconds:.1}s; creating the sample workload at primary ({} VMs)",
        6 + options.scale_vms
    ));
    create_workload(&env.primary.client, options.scale_vms).await?;
    wait_workload_ready(&env.primary.client, progress).await?;

    let backup_started = Instant::now();
    let verified = every_policy_backed_up(&env.primary.client, progress).await?;
    env.primary.velero_is_running()?;
    let backup_seconds = backup_started.elapsed().as_secs_f64();
    let mut report = DrillReport {
        backup: verified[0].0.clone(),
        backups: verified.iter().map(|(b, _)| b.clone()).collect(),
        backup_verified: verified.iter().all(|(_, v)| v.verified),
        backup_seconds,
        failover: None,
        interrupted_failover: None,
        failback: None,
        checks: Vec::new(),
        plugin_time: None,
        standby: None,
        setup_seconds,
        total_seconds: 0.0,
    };
    if !report.backup_verified {
        for (backup, verification) in &verified {
            progress(format!("backup {backup}: {}", verification.summary()));
        }
        env.primary.report_velero_errors(progress);
        report.total_seconds = started.elapsed().as_secs_f64();
        return Ok((env, report));
    }
    progress(
        "the primary site is lost: its Velero stops; Velero at dr starts and syncs the backups"
            .to_owned(),
    );
    env.move_velero(false, &report.backups, progress).await?;

    if options.kill_velero_mid_restore {
        report.interrupted_failover = Some(interrupted_failover(&mut env, progress).await?);
    }
    if options.standby {
        let standby = Box::pin(standby_stage(&mut env, &report.backups, progress)).await?;
        report
            .checks
            .push(standby_check(&standby, options.scale_vms));
        report.standby = Some(standby);
    }
    progress("failover to site dr: every policy".to_owned());
    let failover = recover_every(&env.dr.client, Operation::Failover, "dr", progress).await?;
    let primary_names = workload_pv_names(&env.primary.client).await?;
    report
        .checks
        .extend(check_site(&env.dr.client, "dr", &failover, &DR_EXPORT, &primary_names).await?);
    report
        .checks
        .extend(check_kubevirt(&env.dr.client, "dr").await?);
    report.checks.push(check_every_policy("dr", &failover));
    report.checks.push(check_start_order(&failover));
    if options.kill_velero_mid_restore {
        report
            .checks
            .push(check_attempts(&env.dr.client, &report.backup).await?);
    }
    let main = report_of(&failover, POLICY);
    report.plugin_time = match (main.and_then(|r| r.restore.as_ref()), env.dr.velero_log()) {
        (Some(restore), Some(log)) => main.and_then(|r| plugin_time(&log, restore, r)),
        _ => None,
    };
    report
        .checks
        .push(active_site_check(&env.dr.client, "dr", "dr").await);
    let failed_over = failover.outcome == Outcome::Succeeded;
    if failed_over {
        report
            .checks
            .push(standby_refuses_backups(&env.primary.client).await);
    } else {
        progress(format!(
            "the failover did not succeed: {}",
            failover
                .reports
                .iter()
                .map(RecoveryReport::summary)
                .collect::<Vec<_>>()
                .join("; ")
        ));
        env.dr.report_velero_errors(progress);
    }
    report.failover = Some(failover);

    if options.failback && failed_over {
        progress("failback: the dr site backs up, the old primary's VMs are halted and `replicadr clean` removes its stale workload, primary restores".to_owned());
        let dr_verified = every_policy_backed_up(&env.dr.client, progress).await?;
        for (dr_backup, dr_verification) in &dr_verified {
            report.checks.push(Check {
                name: format!("dr: backup {dr_backup} for the failback verified"),
                passed: dr_verification.verified,
                detail: dr_verification.summary(),
            });
        }
        if !dr_verified.iter().all(|(_, v)| v.verified) {
            env.dr.report_velero_errors(progress);
            report.total_seconds = started.elapsed().as_secs_f64();
            return Ok((env, report));
        }
        let dr_backups: Vec<&str> = dr_verified.iter().map(|(b, _)| b.as_str()).collect();
        env.move_velero(true, &dr_backups, progress).await?;
        report
            .checks
            .push(halt_and_clean(&env.primary.client, progress).await?);
        let failback = recover_every(
            &env.primary.client,
            Operation::Failback,
            "primary",
            progress,
        )
        .await?;
        report.checks.extend(
            check_site(
                &env.primary.client,
                "primary",
                &failback,
                &PRIMARY_EXPORT,
                &primary_names,
            )
            .await?,
        );
        report
            .checks
            .extend(check_kubevirt(&env.primary.client, "primary").await?);
        report.checks.push(check_every_policy("primary", &failback));
        report
            .checks
            .push(active_site_check(&env.primary.client, "primary", "primary").await);
        report.failback = Some(failback);
    }
    for site in [&env.primary, &env.dr] {
        if let Some(log) = site.velero_log() {
            let errors = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("level=error"))
                .count();
            progress(format!(
                "Velero at {} logged {errors} error line(s) ({})",
                site.name,
                log.display()
            ));
        }
    }
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok((env, report))
}

/// How the warm standby at `dr` came to be, timed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StandbyTimes {
    /// The first refresh of the main policy: the whole backup restored, halted.
    pub first: StandbyRefreshTime,
    /// The refresh after a second backup of an unchanged workload: every item compared and
    /// relabelled.
    pub unchanged: StandbyRefreshTime,
    /// The backups the standby holds at the failover.
    pub backups: Vec<String>,
}

/// One refresh of the main policy's standby.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StandbyRefreshTime {
    pub backup: String,
    pub seconds: f64,
    pub items: u64,
    pub pruned: usize,
    pub problems: Vec<String>,
}

/// Turns the standby of every policy on at `dr` and refreshes it with `backups` (synced there),
/// then with a second round of backups of the unchanged workload at primary, as the scheduler at
/// `dr` would; Velero is at `dr` again at the end.
async fn standby_stage(
    env: &mut Environment,
    backups: &[String],
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<StandbyTimes> {
    for (policy, _) in POLICIES {
        ensure_policy(&env.dr.client, policy).await?;
        Api::<replicadr_scheduler::policy::BackupPolicy>::namespaced(
            env.dr.client.clone(),
            VELERO_NAMESPACE,
        )
        .patch(
            policy,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"standby": {"enabled": true}}})),
        )
        .await?;
    }
    progress(format!(
        "warm standby at dr: restoring {} as the standbys",
        backups.join(", ")
    ));
    let first = refresh_every(&env.dr.client, progress).await?;
    progress("a second round of backups of the unchanged workload at primary".to_owned());
    env.move_velero(true, backups, progress).await?;
    let second: Vec<String> = every_policy_backed_up(&env.primary.client, progress)
        .await?
        .into_iter()
        .map(|(backup, _)| backup)
        .collect();
    env.move_velero(false, &second, progress).await?;
    let unchanged = refresh_every(&env.dr.client, progress).await?;
    Ok(StandbyTimes {
        first,
        unchanged,
        backups: second,
    })
}

/// One standby refresh of every policy at `dr`; the main policy's, timed.
async fn refresh_every(
    client: &Client,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<StandbyRefreshTime> {
    use replicadr_scheduler::recovery::standby::{self, Refresh, StandbyOptions};
    let mut main = None;
    for (policy, _) in POLICIES {
        let started = Instant::now();
        let options = StandbyOptions::new("dr", policy, "primary");
        let refreshed = Box::pin(standby::refresh(
            client,
            VELERO_NAMESPACE,
            &options,
            progress,
        ))
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        let Refresh::Restored(restored) = refreshed else {
            anyhow::bail!("the standby of {policy} at dr was not restored: {refreshed:?}");
        };
        progress(format!(
            "standby of {policy} at dr: backup {} in {seconds:.1}s, {} items, {} pruned, problems: {:?}",
            restored.backup,
            restored.items,
            restored.pruned.len(),
            restored.problems
        ));
        if policy == POLICY {
            main = Some(StandbyRefreshTime {
                backup: restored.backup,
                seconds,
                items: restored.items,
                pruned: restored.pruned.len(),
                problems: restored.problems,
            });
        }
    }
    main.context("the main policy is one of the drill's")
}

/// Both refreshes restored every item without problems.
fn standby_check(standby: &StandbyTimes, scale_vms: usize) -> Check {
    let clean = standby.first.problems.is_empty() && standby.unchanged.problems.is_empty();
    Check {
        name: "dr: the warm standby restored both backups without problems".to_owned(),
        passed: clean && standby.unchanged.pruned == 0,
        detail: format!(
            "first {} items in {:.1}s, unchanged {} items in {:.1}s ({} further VMs), {} pruned; problems: {:?} {:?}",
            standby.first.items,
            standby.first.seconds,
            standby.unchanged.items,
            standby.unchanged.seconds,
            scale_vms,
            standby.unchanged.pruned,
            standby.first.problems,
            standby.unchanged.problems
        ),
    }
}

/// Backs up every policy at a site and verifies each backup: (backup, verification), the main
/// policy's first.
pub async fn every_policy_backed_up(
    client: &Client,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<Vec<(String, Report)>> {
    let mut verified = Vec::new();
    for (policy, _) in POLICIES {
        verified.push(verified_backup(client, policy, progress).await?);
    }
    Ok(verified)
}

/// Every policy was restored, each by its own Restore, and each succeeded.
fn check_every_policy(site: &str, recovery: &Recovery) -> Check {
    let restored: Vec<String> = recovery
        .reports
        .iter()
        .map(|r| {
            format!(
                "{} ← {} ({:?})",
                r.policy.as_deref().unwrap_or("-"),
                r.restore.as_deref().unwrap_or("no Restore"),
                r.outcome
            )
        })
        .collect();
    let every = POLICIES.iter().all(|(policy, _)| {
        report_of(recovery, policy)
            .is_some_and(|r| r.outcome == Outcome::Succeeded && r.restore.is_some())
    });
    Check {
        name: format!("{site}: every BackupPolicy restored"),
        passed: every && recovery.reports.len() == POLICIES.len(),
        detail: restored.join(", "),
    }
}

/// The active-site record, read at `at`, names `site`.
async fn active_site_check(client: &Client, at: &str, site: &str) -> Check {
    let read = match Record::open(client, VELERO_NAMESPACE, None, "the drill").await {
        Ok(record) => record.read().await,
        Err(error) => Err(error),
    };
    let (passed, detail) = match read {
        Ok(Some(record)) => (record.site == site, record.describe()),
        Ok(None) => (false, "no record".to_owned()),
        Err(error) => (false, error.to_string()),
    };
    Check {
        name: format!("{at}: the active-site record names {site}"),
        passed,
        detail,
    }
}

/// While dr is the active site, `backup now` at the returning primary is refused and creates
/// nothing.
async fn standby_refuses_backups(primary: &Client) -> Check {
    let backups: Api<DynamicObject> = Api::namespaced_with(
        primary.clone(),
        VELERO_NAMESPACE,
        &velero::backup_resource(),
    );
    let count = |list: Result<kube::core::ObjectList<DynamicObject>, kube::Error>| {
        list.map_or(usize::MAX, |l| l.items.len())
    };
    let before = count(backups.list(&ListParams::default()).await);
    let mut ignored = |_: String| {};
    let outcome = verified_backup(primary, POLICY, &mut ignored).await;
    let after = count(backups.list(&ListParams::default()).await);
    let (passed, detail) = match outcome {
        Err(error) => {
            let text = format!("{error:#}");
            (
                text.contains("makes no backup here") && before == after,
                format!("refused: {text}"),
            )
        }
        Ok((backup, _)) => (
            false,
            format!("backup {backup} was made at the standby site"),
        ),
    };
    Check {
        name: "primary: makes no backup while dr is active".to_owned(),
        passed,
        detail,
    }
}

pub async fn create_workload(client: &Client, scale_vms: usize) -> anyhow::Result<()> {
    workload::apply(client, &workload::objects(&PRIMARY_EXPORT, scale_vms)).await?;
    workload::own_desktop(client).await
}

/// Waits until every claim is Bound and every running VM Running (the played controllers), then
/// takes the snapshot.
pub async fn wait_workload_ready(
    client: &Client,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<()> {
    wait_claims_bound(client, Duration::from_mins(5)).await?;
    wait_launched(client, Duration::from_mins(1)).await?;
    workload::apply(client, &[workload::snapshot()]).await?;
    progress(
        "workload ready: claims Bound, VMs Running with their VMIs and launcher pods, VolumeSnapshot app-data-snap taken".to_owned(),
    );
    Ok(())
}

/// Waits until every running VM of the workload has its instance and launcher pod (the played
/// KubeVirt), so that a backup holds them as it would on a real cluster.
async fn wait_launched(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let kubevirt = KubevirtObjects::list(client).await?;
        let unlaunched: Vec<String> = kubevirt
            .vms
            .iter()
            .filter(|vm| {
                replicadr_core::contents::strategy_runs(&replicadr_core::contents::run_strategy(
                    &vm.data,
                ))
            })
            .filter(|vm| {
                let key = (vm.namespace(), vm.name_any());
                !kubevirt
                    .instances
                    .iter()
                    .any(|i| (i.namespace(), i.name_any()) == key)
                    || !kubevirt.launchers.iter().any(|pod| {
                        pod.namespace() == key.0
                            && pod.labels().get("vm.kubevirt.io/name") == Some(&key.1)
                    })
            })
            .map(|vm| format!("{}/{}", vm.namespace().unwrap_or_default(), vm.name_any()))
            .collect();
        if unlaunched.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "running VMs without a VMI and launcher pod after {timeout:?}: {}",
            unlaunched.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The workload's VMs, instances and launcher pods at a site.
struct KubevirtObjects {
    vms: Vec<DynamicObject>,
    instances: Vec<DynamicObject>,
    launchers: Vec<Pod>,
}

impl KubevirtObjects {
    async fn list(client: &Client) -> anyhow::Result<Self> {
        let mut objects = Self {
            vms: Vec::new(),
            instances: Vec::new(),
            launchers: Vec::new(),
        };
        let launchers = ListParams::default().labels(&format!(
            "{}={}",
            replicadr_core::wire::LABEL_KUBEVIRT,
            controllers::LAUNCHER
        ));
        for namespace in workload::NAMESPACES {
            let in_namespace = |resource: kube::api::ApiResource| {
                Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
            };
            objects.vms.extend(
                in_namespace(vm_resource())
                    .list(&ListParams::default())
                    .await?
                    .items,
            );
            objects.instances.extend(
                in_namespace(controllers::instance_resource())
                    .list(&ListParams::default())
                    .await?
                    .items,
            );
            objects.launchers.extend(
                Api::<Pod>::namespaced(client.clone(), namespace)
                    .list(&launchers)
                    .await?
                    .items,
            );
        }
        Ok(objects)
    }
}

/// After a recovery at a site, what KubeVirt and CDI would make of it: no VMI or launcher pod was
/// restored (Velero labels what it restores), no halted VM has one; `desktop`'s `DataVolume` was
/// adopted with its claim on the restored PV, not imported anew; the VM's Secret, instance type,
/// preference, `ControllerRevisions` and network, and the container app, are there.
pub async fn check_kubevirt(client: &Client, site: &str) -> anyhow::Result<Vec<Check>> {
    let kubevirt = KubevirtObjects::list(client).await?;
    let restored = |meta: &kube::api::ObjectMeta| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(replicadr_core::wire::LABEL_VELERO_RESTORE_NAME))
            .cloned()
    };
    let halted: BTreeSet<(Option<String>, String)> = kubevirt
        .vms
        .iter()
        .filter(|vm| {
            !replicadr_core::contents::strategy_runs(&replicadr_core::contents::run_strategy(
                &vm.data,
            ))
        })
        .map(|vm| (vm.namespace(), vm.name_any()))
        .collect();
    let mut wrong = Vec::new();
    for instance in &kubevirt.instances {
        let key = (instance.namespace(), instance.name_any());
        let what = format!(
            "VirtualMachineInstance {}/{}",
            key.0.as_deref().unwrap_or_default(),
            key.1
        );
        if let Some(restore) = restored(&instance.metadata) {
            wrong.push(format!("{what} was restored by {restore}"));
        } else if halted.contains(&key) {
            wrong.push(format!("{what} exists while its VM is halted"));
        }
    }
    for pod in &kubevirt.launchers {
        if let Some(restore) = restored(&pod.metadata) {
            wrong.push(format!(
                "virt-launcher pod {}/{} was restored by {restore}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            ));
        }
    }
    let mut checks = vec![Check {
        name: format!("{site}: no VMI or launcher pod restored, none for a halted VM"),
        passed: wrong.is_empty(),
        detail: if wrong.is_empty() {
            format!(
                "{} VMIs and {} launcher pods, all made at {site} for running VMs",
                kubevirt.instances.len(),
                kubevirt.launchers.len()
            )
        } else {
            wrong.join("; ")
        },
    }];
    checks.push(data_volume_adopted(client, site, Duration::from_secs(30)).await?);
    let mut missing = Vec::new();
    for (kind, resource, name) in workload::desktop_companions() {
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), workload::NAMESPACE, &resource);
        if api.get_metadata_opt(&name).await?.is_none() {
            missing.push(format!("{kind} {}/{name}", workload::NAMESPACE));
        }
    }
    checks.push(Check {
        name: format!("{site}: desktop's Secret, instance type, preference, revisions and network, and the container app, restored"),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("{} objects", workload::desktop_companions().len())
        } else {
            format!("missing: {}", missing.join(", "))
        },
    });
    Ok(checks)
}

/// Whether the played CDI adopted `desktop`'s claim (within `timeout`): the `DataVolume`
/// Succeeded, controller of the claim, the claim bound to the restored PV.
async fn data_volume_adopted(
    client: &Client,
    site: &str,
    timeout: Duration,
) -> anyhow::Result<Check> {
    let name = format!(
        "{site}: DataVolume {}/{} adopted its restored claim, no import",
        workload::NAMESPACE,
        workload::DESKTOP_DISK
    );
    let data_volumes = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        workload::NAMESPACE,
        &failover::data_volume_resource(),
    );
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), workload::NAMESPACE);
    let deadline = Instant::now() + timeout;
    loop {
        let dv = data_volumes.get_opt(workload::DESKTOP_DISK).await?;
        let claim = claims.get_opt(workload::DESKTOP_DISK).await?;
        let phase = dv
            .as_ref()
            .and_then(|dv| dv.data.pointer("/status/phase"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let owned = match (&dv, &claim) {
            (Some(dv), Some(claim)) => claim
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == dv.metadata.uid.as_ref()),
            _ => false,
        };
        let volume = claim
            .as_ref()
            .and_then(|c| c.spec.as_ref()?.volume_name.clone())
            .unwrap_or_default();
        if phase == "Succeeded" && owned && volume == workload::DESKTOP_PV {
            return Ok(Check {
                name,
                passed: true,
                detail: format!("Succeeded, the claim owned by it on {volume}"),
            });
        }
        if Instant::now() >= deadline {
            let message = dv
                .as_ref()
                .and_then(|dv| dv.data.pointer("/status/conditions/0/message"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let detail = match (&dv, &claim) {
                (None, _) => "the DataVolume is missing".to_owned(),
                (_, None) => format!("the claim is missing; the DataVolume is {phase:?}"),
                _ => format!(
                    "after {timeout:?} the DataVolume is {phase:?} ({message}), the claim is {}owned by it, on {volume:?}",
                    if owned { "" } else { "not " }
                ),
            };
            return Ok(Check {
                name,
                passed: false,
                detail,
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_claims_bound(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let claims = Api::<PersistentVolumeClaim>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let pending: Vec<String> = claims
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound"))
            .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "claims not Bound after {timeout:?}: {}",
            pending.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The scheduler's path for one backup: the policy, `backup now`, verification.
/// Creates the drill's BackupPolicy `policy_name` at the site of `client` unless it is there.
pub async fn ensure_policy(client: &Client, policy_name: &str) -> anyhow::Result<()> {
    let policies: Api<replicadr_scheduler::policy::BackupPolicy> =
        Api::namespaced(client.clone(), VELERO_NAMESPACE);
    if policies.get_opt(policy_name).await?.is_none() {
        let namespaces = POLICIES
            .iter()
            .find(|(name, _)| *name == policy_name)
            .map(|(_, namespaces)| namespaces.to_vec())
            .with_context(|| format!("{policy_name} is not one of the drill's policies"))?;
        let policy: replicadr_scheduler::policy::BackupPolicy = serde_json::from_value(json!({
            "apiVersion": "replicadr.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": policy_name, "namespace": VELERO_NAMESPACE},
            "spec": {
                "schedule": "0 2 * * *", "rpo": "26h",
                "template": {"includedNamespaces": namespaces, "ttl": "72h"},
            },
        }))?;
        policies.create(&PostParams::default(), &policy).await?;
    }
    Ok(())
}

/// `replicadr backup now <policy>` at a site (creating the drill's policy there first if
/// needed): the backup's name and its verification.
pub async fn verified_backup(
    client: &Client,
    policy_name: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<(String, Report)> {
    ensure_policy(client, policy_name).await?;
    let (_, metrics) = Metrics::new_registry();
    let publisher = Publisher::new(client.clone(), VELERO_NAMESPACE, "replicadr-drill", metrics);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut lines = Vec::new();
    let report = replicadr_scheduler::manual::backup_now(
        client,
        VELERO_NAMESPACE,
        policy_name,
        clock,
        &publisher,
        Duration::from_millis(500),
        |line| {
            lines.push(line.to_owned());
        },
    )
    .await?;
    for line in lines {
        progress(line);
    }
    progress(format!("verification: {}", report.summary()));
    Ok((report.backup.clone(), report))
}

/// Waits until Velero at a site has synced `backup` from object storage.
pub async fn wait_synced(
    site: &Site,
    backup: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        site.client.clone(),
        VELERO_NAMESPACE,
        &velero::backup_resource(),
    );
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        if let Some(object) = api.get_opt(backup).await?
            && BackupView::from_object(&object).class == PhaseClass::Succeeded
        {
            progress(format!("backup {backup} synced to this site by Velero"));
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Velero at site {} did not sync backup {backup} from object storage within 2 minutes; its errors:\n{}",
            site.name,
            site.velero
                .as_ref()
                .map(VeleroServer::errors)
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn recover(
    client: &Client,
    operation: Operation,
    site: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<RecoveryReport> {
    let mut options = failover::Options::new(operation, site);
    options.backup = BackupChoice::LatestVerified;
    options.policy = Some(POLICY.to_owned());
    options.replication_confirmed = true;
    options.restore_timeout = Duration::from_mins(30);
    options.bind_timeout = Duration::from_mins(5);
    options.vm_timeout = Duration::from_mins(5);
    options.poll = Duration::from_millis(500);
    let report = failover::run(client, VELERO_NAMESPACE, &options, progress).await?;
    Ok(report)
}

/// A failover or failback of every policy, as `replicadr failover --site <site> --yes` runs it.
async fn recover_every(
    client: &Client,
    operation: Operation,
    site: &str,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<Recovery> {
    let mut options = failover::Options::new(operation, site);
    options.replication_confirmed = true;
    options.restore_timeout = Duration::from_mins(30);
    options.bind_timeout = Duration::from_mins(5);
    options.vm_timeout = Duration::from_mins(5);
    options.poll = Duration::from_millis(500);
    Ok(Box::pin(every_policy::run(
        client,
        VELERO_NAMESPACE,
        &options,
        progress,
    ))
    .await?)
}

/// Starts the failover, kills Velero at dr once the Restore is `InProgress`, drops the failover
/// (the operator's session died with it), and starts Velero again.
async fn interrupted_failover(
    env: &mut Environment,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<String> {
    progress("fault: failover at dr with Velero killed mid-restore".to_owned());
    let client = env.dr.client.clone();
    let restores: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        VELERO_NAMESPACE,
        &velero::restore_resource(),
    );
    let attempt = tokio::spawn(async move {
        let mut lines = Vec::new();
        let result = recover(&client, Operation::Failover, "dr", &mut |line| {
            lines.push(line);
        })
        .await;
        (result, lines)
    });
    let deadline = Instant::now() + Duration::from_mins(3);
    let killed = loop {
        let in_progress = restores
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .find(|r| r.data.pointer("/status/phase").and_then(Value::as_str) == Some("InProgress"))
            .map(ResourceExt::name_any);
        if let Some(name) = in_progress {
            env.kill_velero(false);
            break name;
        }
        if attempt.is_finished() || Instant::now() > deadline {
            attempt.abort();
            anyhow::bail!(
                "the restore never was InProgress while the fault could be injected (it finished first: use more --vms)"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    progress(format!(
        "fault: killed Velero at dr while Restore {killed} was InProgress"
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    attempt.abort();
    progress(
        "fault: the interrupted failover was abandoned; starting Velero at dr again".to_owned(),
    );
    env.start_velero(false).await?;
    Ok(killed)
}

/// The names of the workload's PVs at a site.
async fn workload_pv_names(client: &Client) -> anyhow::Result<BTreeSet<String>> {
    Ok(Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|r| r.namespace.as_deref())
                .is_some_and(|ns| workload::NAMESPACES.contains(&ns))
        })
        .map(ResourceExt::name_any)
        .collect())
}

/// After a recovery at a site: every workload PV there points at this site's exports, the
/// provisioned (Delete) PV was restored rather than re-provisioned, the snapshot's replica claim
/// exists, every PVC is Bound, every VM exists, nothing is duplicated.
#[expect(clippy::too_many_lines, reason = "one check after the other")]
async fn check_site(
    client: &Client,
    site: &str,
    recovery: &Recovery,
    export: &SiteExport<'_>,
    expected_pvs: &BTreeSet<String>,
) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    let started = vm_starts(recovery).len();
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut wrong = Vec::new();
    let mut names = BTreeSet::new();
    for pv in &pvs {
        let value = serde_json::to_value(pv)?;
        let Some(location) = replicadr_scheduler::recovery::plan::location(&value) else {
            continue;
        };
        let name = pv.name_any();
        if !location.starts_with(&format!("{}:{}", export.server, export.base)) {
            wrong.push(format!("{name} → {location}"));
        }
        names.insert(name);
    }
    checks.push(Check {
        name: format!("{site}: PVs on {site}'s exports"),
        passed: wrong.is_empty() && !names.is_empty(),
        detail: if wrong.is_empty() {
            format!(
                "{} NFS PVs, all on {}:{}",
                names.len(),
                export.server,
                export.base
            )
        } else {
            wrong.join(", ")
        },
    });
    let missing: Vec<&String> = expected_pvs
        .iter()
        .filter(|n| !names.contains(*n))
        .collect();
    checks.push(Check {
        name: format!("{site}: every primary PV restored under its name"),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            format!("{} PVs, none re-provisioned", expected_pvs.len())
        } else {
            format!("missing: {missing:?}")
        },
    });
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), workload::NAMESPACE)
        .list(&ListParams::default())
        .await?
        .items;
    let app_data = claims.iter().find(|c| c.name_any() == "app-data");
    let delete_pv = app_data.and_then(|c| c.spec.as_ref()?.volume_name.clone());
    let delete_restored = match &delete_pv {
        Some(volume) => pvs
            .iter()
            .any(|pv| &pv.name_any() == volume && expected_pvs.contains(volume)),
        None => false,
    };
    checks.push(Check {
        name: format!("{site}: Delete-policy PV restored, not re-provisioned"),
        passed: delete_restored,
        detail: format!(
            "app-data is bound to {}",
            delete_pv.as_deref().unwrap_or("<none>")
        ),
    });
    let replicas: Vec<String> = claims
        .iter()
        .filter(|c| {
            c.labels()
                .contains_key(replicadr_core::wire::LABEL_REPLICA_OF_SNAPSHOT_UID)
        })
        .map(ResourceExt::name_any)
        .collect();
    checks.push(Check {
        name: format!("{site}: replica PVC of the VolumeSnapshot restored"),
        passed: !replicas.is_empty(),
        detail: if replicas.is_empty() {
            "no replica PVC in drill-vms".to_owned()
        } else {
            replicas.join(", ")
        },
    });
    let all_claims = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let unbound: Vec<String> = all_claims
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound"))
        .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    checks.push(Check {
        name: format!("{site}: every PVC Bound"),
        passed: unbound.is_empty(),
        detail: if unbound.is_empty() {
            format!("{} PVCs", all_claims.len())
        } else {
            format!("not Bound: {}", unbound.join(", "))
        },
    });
    let vms = Api::<DynamicObject>::all_with(client.clone(), &vm_resource())
        .list(&ListParams::default())
        .await?
        .items;
    let halted_ok = vms
        .iter()
        .filter(|vm| vm.name_any() == "tools")
        .all(|vm| !failover::vm_running(&vm.data));
    checks.push(Check {
        name: format!("{site}: VMs restored, the halted one left halted"),
        passed: !vms.is_empty() && halted_ok && started + 1 == vms.len(),
        detail: format!("{} VMs, {started} started", vms.len()),
    });
    Ok(checks)
}

/// Every VM start of every policy, in the order of their groups.
fn vm_starts(recovery: &Recovery) -> Vec<&VmStart> {
    let mut starts: Vec<&VmStart> = recovery.reports.iter().flat_map(|r| &r.vm_starts).collect();
    starts.sort_by(|a, b| {
        a.group
            .cmp(&b.group)
            .then(a.running_after_seconds.total_cmp(&b.running_after_seconds))
    });
    starts
}

/// VMs came up group by group in ascending start order, across every policy.
fn check_start_order(recovery: &Recovery) -> Check {
    let starts = vm_starts(recovery);
    let orders: Vec<Option<i64>> = starts.iter().map(|s| s.start_order).collect();
    let ordered = orders.windows(2).all(|w| match (w[0], w[1]) {
        (Some(a), Some(b)) => a <= b,
        (None, Some(_)) => false,
        _ => true,
    });
    let first: Vec<String> = starts
        .iter()
        .take(4)
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect();
    Check {
        name: "dr: VMs started in start order".to_owned(),
        passed: ordered && !orders.is_empty(),
        detail: format!(
            "{} VMs in {} groups; first: {}",
            orders.len(),
            starts.iter().map(|s| s.group).max().unwrap_or_default(),
            first.join(", ")
        ),
    }
}

/// After the fault: the first Restore of `backup` failed, a second one completed, and nothing is
/// duplicated.
async fn check_attempts(client: &Client, backup: &str) -> anyhow::Result<Check> {
    let restores: Vec<(String, String)> = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        VELERO_NAMESPACE,
        &velero::restore_resource(),
    )
    .list(
        &ListParams::default().labels(&format!("{}={backup}", replicadr_core::wire::LABEL_BACKUP)),
    )
    .await?
    .items
    .iter()
    .map(|r| {
        (
            r.name_any(),
            r.data
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("New")
                .to_owned(),
        )
    })
    .collect();
    let failed = restores.iter().filter(|(_, p)| p == "Failed").count();
    let completed = restores
        .iter()
        .filter(|(_, p)| p == "Completed" || p == "PartiallyFailed")
        .count();
    let vms = Api::<DynamicObject>::all_with(client.clone(), &vm_resource())
        .list(&ListParams::default())
        .await?
        .items
        .len();
    let pvcs = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .len();
    Ok(Check {
        name: "dr: re-run after Velero was killed mid-restore".to_owned(),
        passed: failed == 1 && completed == 1,
        detail: format!("restores {restores:?}; {vms} VMs, {pvcs} PVCs after both attempts"),
    })
}

/// Halts every VM of the workload's namespaces at the site of `client` and waits (a minute at
/// most) until none runs: an operator's step before `clean`, which refuses while one runs.
pub async fn halt_all(client: &Client) -> anyhow::Result<()> {
    for namespace in workload::NAMESPACES {
        let vms: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &vm_resource());
        for vm in vms.list(&ListParams::default()).await?.items {
            vms.patch(
                &vm.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"running": null, "runStrategy": "Halted"}})),
            )
            .await?;
        }
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let mut running = 0;
        for namespace in workload::NAMESPACES {
            let vms: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &vm_resource());
            running += vms
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|vm| failover::vm_running(&vm.data))
                .count();
            // KubeVirt deletes a stopped VM's instance: the VM is halted once it is gone.
            running += Api::<DynamicObject>::namespaced_with(
                client.clone(),
                namespace,
                &controllers::instance_resource(),
            )
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        }
        if running == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{running} VMs still run a minute after they were halted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// Readies the old primary for the failback as the runbook says: its old VMs halted (an
/// operator's step: `clean` refuses while one runs), then `replicadr clean --site primary
/// --apply`, which removes the stale workload under the names of the backups the failback
/// restores, PVs set to Retain first.
pub async fn halt_and_clean(
    client: &Client,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<Check> {
    halt_all(client).await?;
    progress("halted the old VMs at primary".to_owned());
    let options = clean::CleanOptions {
        site: "primary".to_owned(),
        backup: BackupChoice::LatestVerified,
        policy: None,
        apply: true,
        force: false,
        include_absent: false,
        timeout: Duration::from_mins(2),
        poll: Duration::from_millis(300),
    };
    let cleaned = Box::pin(clean::clean(client, VELERO_NAMESPACE, &options, progress)).await?;
    Ok(Check {
        name: "primary: replicadr clean removed the stale workload".to_owned(),
        passed: cleaned.refused.is_none()
            && cleaned.failures.is_empty()
            && !cleaned.removed.is_empty(),
        detail: format!(
            "{} removed (report {}), {} in the namespaces but not in the backups left{}{}",
            cleaned.removed.len(),
            cleaned.report_configmap.as_deref().unwrap_or("-"),
            cleaned.absent.len(),
            cleaned
                .refused
                .map(|r| format!("; refused: {r}"))
                .unwrap_or_default(),
            if cleaned.failures.is_empty() {
                String::new()
            } else {
                format!("; failures: {}", cleaned.failures.join("; "))
            }
        ),
    })
}

/// The time the project's plugins spent serving a restore, against the restore's duration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginTime {
    /// Execute calls served, over every plugin process of the restore.
    pub calls: u64,
    /// Time inside those calls (decode, action, encode), as the plugin measured it.
    pub execute_seconds: f64,
    /// The failover's restore phase (create to Velero finishing).
    pub restore_seconds: f64,
    /// `execute_seconds / restore_seconds`.
    pub share: f64,
}

/// Sums the plugin's own "execute time served by this process" lines Velero logged for `restore`.
fn plugin_time(
    log: &std::path::Path,
    restore: &str,
    report: &RecoveryReport,
) -> Option<PluginTime> {
    let text = std::fs::read_to_string(log).ok()?;
    let tag = format!("restore={VELERO_NAMESPACE}/{restore}");
    let field = |line: &str, key: &str| -> Option<f64> {
        let start = line.find(&format!(" {key}="))? + key.len() + 2;
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .parse()
            .ok()
    };
    let (mut calls, mut millis) = (0_u64, 0.0_f64);
    for line in text
        .lines()
        .filter(|l| l.contains("execute time served by this process") && l.contains(&tag))
    {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a call count"
        )]
        {
            calls += field(line, "calls").unwrap_or_default() as u64;
        }
        millis += field(line, "execute_ms").unwrap_or_default();
    }
    let restore_seconds = report.phases.iter().find(|p| p.name == "restore")?.seconds;
    (calls > 0).then(|| PluginTime {
        calls,
        execute_seconds: millis / 1000.0,
        restore_seconds,
        share: millis / 1000.0 / restore_seconds,
    })
}

/// The drill's report for a terminal.
pub fn render(report: &DrillReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n=== ReplicaDR drill: {} ===",
        if report.passed() { "PASSED" } else { "FAILED" }
    );
    let _ = writeln!(
        out,
        "The drill played the PV controller, the NFS provisioner, the snapshot controller and KubeVirt by writing status: no pods ran.\n"
    );
    for recovery in [&report.failover, &report.failback].into_iter().flatten() {
        out.push_str(&render::recoveries(recovery));
        let _ = writeln!(out);
    }
    out.push_str(&render::checks(&report.checks));
    if let Some(time) = &report.plugin_time {
        let _ = writeln!(
            out,
            "\nReplicaDR plugins during the failover restore: {} Execute calls, {:.3}s of {:.1}s ({:.2}% of the restore)",
            time.calls,
            time.execute_seconds,
            time.restore_seconds,
            time.share * 100.0
        );
    }
    let _ = writeln!(
        out,
        "\nsetup {:.1}s, backup + verification {:.1}s, total {:.1}s",
        report.setup_seconds, report.backup_seconds, report.total_seconds
    );
    out
}

//! `replicadr failover` and `failback`: one command that checks its preconditions, restores the
//! chosen backup with Velero at this site, checks the result against the plan, starts the VMs in
//! order and stores a report. Safe to re-run: it finds its own Restore of the same backup at the
//! same site and continues from it; it never deletes and never overwrites what exists (Velero's
//! `existingResourcePolicy: none`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};

use replicadr_core::names::{self, label_value};
use replicadr_core::wire::{
    LABEL_BACKUP, LABEL_MANAGED_BY, LABEL_OPERATION, LABEL_SITE, MANAGED_BY, PHASE_AVAILABLE,
    PHASE_COMPLETED, PHASE_FAILED, PHASE_FAILED_VALIDATION, PHASE_PARTIALLY_FAILED,
    POINTER_STATUS_PHASE,
};

use super::plan::{self, Plan, VolumePlan};
use super::report::{Outcome, PhaseTime, Precondition, RecoveryReport};
use super::site::{self, BackupChoice, Planned, RecoveryError};
use super::{checks, vm_start};
use crate::active_site::{Record, Takeover};
use crate::velero;
use crate::verify::Verifier;

/// On our Restores: the attempt number, 1 for the first Restore of a backup at a site.
pub use replicadr_core::wire::{ANNOTATION_ATTEMPT, ANNOTATION_OUTCOME};

/// The field manager and event reporter of what the recovery commands write.
pub const FIELD_MANAGER: &str = "replicadr-recovery";
/// The port `--check-exports` connects to on each NFS server.
const NFS_PORT: u16 = 2049;
/// How many times one run starts a new Restore after Velero restarted during the previous one.
const MAX_RESTARTS: u32 = 3;
pub use super::vm_start::{vm_resource, vm_running};

/// The resource-modifier ConfigMap that restores VMs halted, so they start in order afterwards.
pub const HALT_VMS_CONFIGMAP: &str = "replicadr-restore-vms-halted";

/// Which way the sites swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Failover,
    Failback,
    /// A restore into scratch namespaces, to prove a backup restorable at a live site.
    Drill,
}

impl Operation {
    /// How this operation makes its site the active one; drills take nothing over.
    pub fn takeover(self) -> Option<Takeover> {
        match self {
            Operation::Failover => Some(Takeover::Failover),
            Operation::Failback => Some(Takeover::Failback),
            Operation::Drill => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Failover => "failover",
            Operation::Failback => "failback",
            Operation::Drill => "drill",
        }
    }
}

/// What the operator asked for.
#[derive(Debug, Clone)]
#[expect(clippy::struct_excessive_bools, reason = "the command's switches")]
pub struct Options {
    pub operation: Operation,
    /// The site this runs at (the restore plugin's `localSite` must say the same).
    pub site: String,
    pub backup: BackupChoice,
    pub policy: Option<String>,
    /// Go on although preconditions fail (each is logged and reported), except one that
    /// `--force` never overrides ([`Forcing::Never`](super::report::Forcing::Never)).
    pub force: bool,
    /// The operator confirmed that replication to this site was stopped and its exports promoted.
    pub replication_confirmed: bool,
    /// Connect to port 2049 of each of this site's NFS servers before restoring.
    pub check_exports: bool,
    /// Start a new Restore attempt even when the last one completed (`--new-attempt`).
    pub new_attempt: bool,
    /// Leave the VMs halted.
    pub start_vms: bool,
    pub restore_timeout: Duration,
    pub bind_timeout: Duration,
    pub vm_timeout: Duration,
    pub poll: Duration,
    /// Velero's `namespaceMapping` (drills restore into scratch namespaces).
    pub namespace_mapping: BTreeMap<String, String>,
    /// How the report reads as text in the stored report's `summary.txt` (the CLI's renderer);
    /// without one the report's one-line summary is stored.
    pub summary: Option<fn(&RecoveryReport) -> String>,
}

impl Options {
    /// Defaults for `operation` at `site`: newest verified backup, VMs started, generous timeouts.
    pub fn new(operation: Operation, site: &str) -> Self {
        Self {
            operation,
            site: site.to_owned(),
            backup: BackupChoice::LatestVerified,
            policy: None,
            force: false,
            replication_confirmed: false,
            check_exports: false,
            new_attempt: false,
            start_vms: true,
            restore_timeout: Duration::from_hours(1),
            bind_timeout: Duration::from_mins(5),
            vm_timeout: Duration::from_mins(10),
            poll: Duration::from_secs(1),
            namespace_mapping: BTreeMap::new(),
            summary: None,
        }
    }
}

/// Runs a failover or failback of one backup; `progress` receives a line per step. The report
/// is returned whatever happened after the preconditions (and stored in the cluster once a
/// Restore exists). [`super::every_policy::run`] runs one of these per policy.
pub async fn run(
    client: &Client,
    namespace: &str,
    options: &Options,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<RecoveryReport, RecoveryError> {
    let mut run = Box::pin(prepare(client, namespace, options, progress)).await?;
    if !admit(client, namespace, options, &mut run, progress).await {
        return Ok(run.report);
    }
    Box::pin(restore_and_check(
        client, namespace, options, &mut run, progress,
    ))
    .await?;
    let mut runs = [run];
    start_every(client, namespace, options, &mut runs, progress).await?;
    let [run] = runs;
    finish(client, namespace, options, run.report, run.started).await
}

/// One backup's restore on its way: what was planned, its report, and how far it got.
pub(crate) struct Run {
    pub planned: Planned,
    pub report: RecoveryReport,
    /// The policy whose backup this is, if any.
    pub policy: Option<String>,
    pub started: Instant,
    /// Restored and checked: its VMs may start.
    pub restored: bool,
    /// Every attempt's Restore of this operation on the backup here: the objects labelled with
    /// one of them are the ones this operation restored.
    pub own_restores: Vec<String>,
}

/// Plans the restore and checks every precondition, into the run's report.
pub(crate) async fn prepare(
    client: &Client,
    namespace: &str,
    options: &Options,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Run, RecoveryError> {
    let started = Instant::now();
    let mut report =
        RecoveryReport::new(options.operation.as_str(), &options.site, Timestamp::now());
    let planned =
        plan_with_preconditions(client, namespace, options, &mut report, progress).await?;
    report.phase(PhaseTime::new("plan", started.elapsed()));
    let policy = options
        .policy
        .clone()
        .or_else(|| planned.backup.policy.clone());
    report.policy.clone_from(&policy);
    Ok(Run {
        planned,
        report,
        policy,
        started,
        restored: false,
        own_restores: Vec::new(),
    })
}

/// Whether the run may restore: its preconditions hold (or `--force`), and this site is recorded
/// as the active one. A refusal is in the report.
pub(crate) async fn admit(
    client: &Client,
    namespace: &str,
    options: &Options,
    run: &mut Run,
    progress: &mut (dyn FnMut(String) + Send),
) -> bool {
    preconditions_allow(options, &mut run.report, progress)
        && take_over(
            client,
            namespace,
            options,
            &run.planned.backup.name,
            &mut run.report,
            progress,
        )
        .await
}

/// Restores the run's backup with Velero (following a Restore Velero's restart failed into the
/// next attempt) and checks what was restored against the plan. A restore that did not finish
/// is a failure in the report, and the run is not `restored`.
pub(crate) async fn restore_and_check(
    client: &Client,
    namespace: &str,
    options: &Options,
    run: &mut Run,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), RecoveryError> {
    let Planned { backup, plan, .. } = &run.planned;
    let report = &mut run.report;
    let restore_started = Instant::now();
    let restores = Restores::new(client, namespace);
    let mut restarts = 0;
    let (restore, finished) = loop {
        let restore = restores
            .ensure(options, &backup.name, plan, progress)
            .await?;
        let finished = restores
            .watch(&restore, options.restore_timeout, options.poll, progress)
            .await;
        // Velero marks the restore it was running Failed when it restarts: that attempt is
        // over, not wrong, so the next one starts (what is restored already is skipped).
        let restarted = finished.as_ref().is_ok_and(|view| {
            view.failed()
                && view
                    .failure_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("during the server starting"))
        });
        if restarted && restarts < MAX_RESTARTS {
            restarts += 1;
            progress(format!(
                "Velero restarted during Restore {restore}; starting the next attempt"
            ));
            continue;
        }
        break (restore, finished);
    };
    report.restore = Some(restore.clone());
    run.own_restores = restores
        .attempts(options, &backup.name)
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    report.phase(PhaseTime::new("restore", restore_started.elapsed()));
    let view = match finished {
        Ok(view) => view,
        Err(message) => {
            report.fail(message);
            return Ok(());
        }
    };
    report.restore_phase.clone_from(&view.phase);
    report.restore_warnings = view.warnings;
    report.restore_errors = view.errors;
    if let Ok(results) = Verifier::new(client.clone(), namespace)
        .restore_results(backup, &restore)
        .await
    {
        report.restore_messages = summarize_results(&results);
    }
    if !matches!(
        view.phase.as_deref(),
        Some(PHASE_COMPLETED | PHASE_PARTIALLY_FAILED)
    ) {
        report.fail(format!(
            "Velero finished Restore {namespace}/{restore} as {}{}; re-run the same command to retry with a new Restore",
            view.phase.as_deref().unwrap_or("?"),
            view.failure_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        return Ok(());
    }

    // Check what was restored against the plan.
    let binding_started = Instant::now();
    checks::check_volumes(client, plan, report).await?;
    checks::check_claims(client, plan, options, report, progress).await?;
    checks::check_vms(client, plan, report).await?;
    report.phase(PhaseTime::new("binding", binding_started.elapsed()));
    run.restored = true;
    Ok(())
}

/// Starts the VMs of every run restored (unless `--no-start`, or its policy keeps them halted),
/// group by group across all runs; each run's report gets its VMs' starts and the phase's time.
pub(crate) async fn start_every(
    client: &Client,
    namespace: &str,
    options: &Options,
    runs: &mut [Run],
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), RecoveryError> {
    let start_started = Instant::now();
    let mut wanted = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        if run.restored
            && vm_start::start_wanted(client, namespace, options, run.policy.as_deref(), progress)
                .await
        {
            wanted.push(index);
        }
    }
    vm_start::start_vms(client, options, runs, &wanted, progress).await?;
    for run in runs.iter_mut().filter(|r| r.restored) {
        run.report
            .phase(PhaseTime::new("vm-start", start_started.elapsed()));
    }
    Ok(())
}

/// Checks and reports every precondition and plans the restore.
async fn plan_with_preconditions(
    client: &Client,
    namespace: &str,
    options: &Options,
    report: &mut RecoveryReport,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Planned, RecoveryError> {
    let config = site::site_config(client, namespace).await?;
    let local_site = config.local_site.as_str();
    report.precondition(Precondition::new(
        "PluginConfig",
        local_site == options.site,
        format!(
            "ConfigMap {namespace}/{} names localSite {local_site:?}{}",
            config.configmap,
            if local_site == options.site {
                String::new()
            } else {
                format!(
                    ": the restore plugin would rewrite PVs onto {local_site}'s exports, not {}'s; run this where localSite is {}, or restore to this site with --site {local_site}",
                    options.site, options.site
                )
            }
        ),
    ));
    report.precondition(storage_location_available(client, namespace).await);
    let planned = site::plan_at_site(
        client,
        namespace,
        &options.site,
        &options.backup,
        options.policy.as_deref(),
        Timestamp::now(),
        progress,
    )
    .await?;
    report.set_backup(&planned.backup, &planned.plan);
    let (backup, plan) = (&planned.backup, &planned.plan);
    report.precondition(Precondition::new(
        "BackupVerified",
        matches!(plan.verification, plan::Verification::Passed),
        format!("backup {}: {:?}", backup.name, plan.verification),
    ));
    let blocking: Vec<String> = plan
        .blocking()
        .map(|p| format!("{} {}: {}", p.reason, p.object, p.message))
        .collect();
    report.precondition(Precondition::new(
        "PlanComplete",
        blocking.is_empty(),
        if blocking.is_empty() {
            format!(
                "{} VMs, {} PVCs, {} PVs would be restored",
                plan.virtual_machines().count(),
                plan.claims().count(),
                plan.volumes.len()
            )
        } else {
            blocking.join("; ")
        },
    ));
    if options.backup == BackupChoice::LatestVerified
        && let Some(shrank) = plan
            .blocking()
            .find(|p| p.reason == replicadr_core::invariants::Reason::BackupShrank.as_str())
    {
        // A shrunken backup is restored only when the operator names it: --force alone would
        // restore the backup the failover chose, which nobody chose.
        report.precondition(Precondition::new(
            "BackupNamed",
            false,
            format!(
                "the newest verified backup {} shrank, and a shrunken backup is restored only when named with --backup: {}",
                backup.name, shrank.message
            ),
        ));
    }
    if plan.virtual_machines().next().is_some() {
        report.precondition(vm_api_served(client).await);
    }
    report.precondition(if options.check_exports {
        exports_reachable(&plan.volumes, NFS_PORT).await
    } else {
        Precondition::skipped(
            "ExportsReachable",
            "not checked (pass --check-exports to connect to each NFS server of this site)",
        )
    });
    report.precondition(Precondition::new(
        "ReplicationPromoted",
        options.replication_confirmed,
        if options.replication_confirmed {
            "the operator confirmed replication to this site is stopped and its exports are promoted read-write".to_owned()
        } else {
            "not confirmed: ReplicaDR does not drive the storage array; stop replication and promote this site's exports, then confirm".to_owned()
        },
    ));
    Ok(planned)
}

/// Whether to go on after the preconditions: not when one failed, unless `--force` (then each
/// failure is a warning and the report is marked forced). A refusal is written to the report.
fn preconditions_allow(
    options: &Options,
    report: &mut RecoveryReport,
    progress: &mut (dyn FnMut(String) + Send),
) -> bool {
    if let Some(failures) = report.refusal(options.force) {
        report.outcome = Outcome::Refused;
        report.failures = failures;
        return false;
    }
    let failed: Vec<Precondition> = report
        .preconditions
        .iter()
        .filter(|p| p.failed())
        .cloned()
        .collect();
    for precondition in &failed {
        tracing::warn!(precondition = precondition.name, detail = %precondition.detail, "--force: going on although a precondition failed");
        progress(format!(
            "WARNING --force: going on although precondition {} failed: {}",
            precondition.name, precondition.detail
        ));
    }
    report.forced |= !failed.is_empty();
    true
}

/// Makes this site the active one in the active-site record of every storage location, before
/// anything is restored: from then on the site that was active makes no backups, even if it comes
/// back. Whether to go on: a record that cannot be written refuses the run, unless `--force`.
async fn take_over(
    client: &Client,
    namespace: &str,
    options: &Options,
    backup: &str,
    report: &mut RecoveryReport,
    progress: &mut (dyn FnMut(String) + Send),
) -> bool {
    let Some(takeover) = options.operation.takeover() else {
        return true;
    };
    let Err(failure) = record_takeover(
        client, namespace, options, takeover, backup, report, progress,
    )
    .await
    else {
        return true;
    };
    if !options.force {
        report.outcome = Outcome::Refused;
        report.failures = vec![failure];
        return false;
    }
    tracing::warn!(%failure, "--force: going on without recording the active site");
    progress(format!("WARNING --force: going on although {failure}"));
    report.forced = true;
    true
}

/// Writes the takeover to every storage location's record; the failure as the report says it.
async fn record_takeover(
    client: &Client,
    namespace: &str,
    options: &Options,
    takeover: Takeover,
    backup: &str,
    report: &mut RecoveryReport,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), String> {
    let consequence = "without it, the site that was active would make backups again as soon as it is back; fix access to the bucket, or pass --force to restore anyway and run the same command again later to record the takeover";
    let records = Record::every(client, namespace)
        .await
        .map_err(|e| format!("{e}; {consequence}"))?;
    for record in records {
        let change = record
            .take_over(&options.site, takeover, Some(backup), Timestamp::now())
            .await
            .map_err(|e| format!("{e}; {consequence}"))?;
        let line = format!(
            "{} is the active site (epoch {}{}) in {} (BackupStorageLocation {})",
            change.record.site,
            change.record.epoch,
            match (&change.previous, change.written) {
                (_, false) => ", unchanged".to_owned(),
                (Some(previous), true) => format!(", was {previous}"),
                (None, true) => ", first record".to_owned(),
            },
            change.url,
            change.location
        );
        progress(line.clone());
        report.active_site.push(line);
    }
    Ok(())
}

/// Ends the report, stores it, records an Event on the Restore.
pub(crate) async fn finish(
    client: &Client,
    namespace: &str,
    options: &Options,
    mut report: RecoveryReport,
    started: Instant,
) -> Result<RecoveryReport, RecoveryError> {
    if report.outcome == Outcome::Running {
        report.outcome = if report.failures.is_empty() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
    }
    report.total_seconds = started.elapsed().as_secs_f64();
    report.finished = Some(Timestamp::now());
    let summary = options
        .summary
        .map_or_else(|| report.summary(), |render| render(&report));
    store(client, namespace, &report, &summary).await?;
    record_outcome(client, namespace, &report).await;
    Ok(report)
}

/// Writes how the run ended onto its Restore, so that a re-run after failed checks restores
/// again. A failure to write it is logged: the next run then continues with this Restore.
async fn record_outcome(client: &Client, namespace: &str, report: &RecoveryReport) {
    let Some(restore) = &report.restore else {
        return;
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &velero::restore_resource());
    let patch =
        json!({"metadata": {"annotations": {ANNOTATION_OUTCOME: format!("{:?}", report.outcome)}}});
    if let Err(error) = api
        .patch(restore, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(%restore, %error, "cannot record the run's outcome on its Restore; a re-run continues with it");
    }
}

/// Velero's BSL at this site must be Available, or Velero cannot read the backup.
async fn storage_location_available(client: &Client, namespace: &str) -> Precondition {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &velero::storage_location_resource(),
    );
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            let phases: Vec<String> = list
                .items
                .iter()
                .map(|bsl| {
                    format!(
                        "{}={}",
                        bsl.name_any(),
                        bsl.data
                            .pointer(POINTER_STATUS_PHASE)
                            .and_then(Value::as_str)
                            .unwrap_or("Unknown")
                    )
                })
                .collect();
            let ok = phases.iter().any(|p| {
                p.strip_suffix(PHASE_AVAILABLE)
                    .is_some_and(|p| p.ends_with('='))
            });
            Precondition::new(
                "StorageLocationAvailable",
                ok,
                if phases.is_empty() {
                    format!(
                        "no BackupStorageLocation in namespace {namespace}: Velero at this site cannot read backups"
                    )
                } else {
                    format!("BackupStorageLocations: {}", phases.join(", "))
                },
            )
        }
        Err(error) => Precondition::new(
            "StorageLocationAvailable",
            false,
            format!("cannot list BackupStorageLocations: {error}"),
        ),
    }
}

/// KubeVirt's VirtualMachine API must be served here, or Velero cannot restore the VMs.
async fn vm_api_served(client: &Client) -> Precondition {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &vm_resource());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Precondition::new(
            "VirtualMachineApi",
            true,
            "kubevirt.io/v1 VirtualMachines are served",
        ),
        Err(kube::Error::Api(status)) if status.code == 404 => Precondition::new(
            "VirtualMachineApi",
            false,
            "kubevirt.io/v1 VirtualMachine is not served at this site: install OpenShift Virtualization (KubeVirt) before failing over",
        ),
        Err(error) => Precondition::new(
            "VirtualMachineApi",
            false,
            format!("cannot list VirtualMachines: {error}"),
        ),
    }
}

/// Connects to `port` (NFS: 2049) of every NFS server the plan puts PVs on, each once; the
/// detail names each server that did not answer, its PVs, and the error.
async fn exports_reachable(volumes: &[VolumePlan], port: u16) -> Precondition {
    let mut servers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for volume in volumes {
        if let Some(server) = volume.after.as_deref().and_then(export_server) {
            servers.entry(server).or_default().push(&volume.name);
        }
    }
    let mut reached = Vec::new();
    let mut unreachable = Vec::new();
    for (server, volumes) in &servers {
        match reach_nfs_server(server, port, Duration::from_secs(3)).await {
            Ok(endpoint) => reached.push(endpoint),
            Err(error) => unreachable.push(format!(
                "NFS server {server} (PV {}): {error}",
                volumes.join(", ")
            )),
        }
    }
    Precondition::new(
        "ExportsReachable",
        unreachable.is_empty(),
        if unreachable.is_empty() {
            format!("NFS answers on {}", reached.join(", "))
        } else {
            unreachable.join("; ")
        },
    )
}

/// The server of a `server:path` location. The path is absolute and a server holds no `/`, so
/// the server ends at the `:` before the first `/`, however many colons an IPv6 address has.
fn export_server(location: &str) -> Option<&str> {
    let slash = location.find('/')?;
    location[..slash].strip_suffix(':')
}

/// Connects to an NFS server as a PV names it; returns the address it connected to.
async fn reach_nfs_server(server: &str, port: u16, timeout: Duration) -> Result<String, String> {
    let endpoint = NfsEndpoint::parse(server, port)?;
    let connect = async {
        match &endpoint.host {
            NfsHost::Ip(ip) => tokio::net::TcpStream::connect((*ip, endpoint.port)).await,
            NfsHost::Name(name) => {
                tokio::net::TcpStream::connect((name.as_str(), endpoint.port)).await
            }
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => Ok(endpoint.to_string()),
        Ok(Err(error)) => Err(format!("cannot connect to {endpoint}: {error}")),
        Err(_) => Err(format!(
            "no answer from {endpoint} in {}",
            crate::duration::human(timeout)
        )),
    }
}

/// Where an NFS server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NfsEndpoint {
    host: NfsHost,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NfsHost {
    Ip(std::net::IpAddr),
    Name(String),
}

impl NfsEndpoint {
    /// Reads an NFS server as PVs write it (`spec.nfs.server`, the CSI driver's `server`): an
    /// IPv4 address, an IPv6 address bare (`fd00::5`) or in brackets (`[fd00::5]`), or a
    /// hostname; `default_port` unless a port follows a bracketed address, an IPv4 address or a
    /// hostname (`[fd00::5]:2049`, `nfs-a:2049`). A bare IPv6 address never reads as one with a
    /// port: `fd00::5:2049` is the address `fd00::5:2049`.
    fn parse(server: &str, default_port: u16) -> Result<Self, String> {
        const ACCEPTED: &str = "expected an IPv4 address, an IPv6 address (fd00::5 or [fd00::5]), or a hostname, each optionally with a port in the form [fd00::5]:2049 or nfs-a:2049";
        let server = server.trim();
        let port_of = |text: &str| {
            text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                format!("{server:?} has port {text:?}; expected a number from 1 to 65535")
            })
        };
        if server.is_empty() {
            return Err(format!("the server is empty; {ACCEPTED}"));
        }
        if let Some(rest) = server.strip_prefix('[') {
            let (address, after) = rest.split_once(']').ok_or_else(|| {
                format!("{server:?} opens a bracket it does not close; {ACCEPTED}")
            })?;
            let ip = address
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{server:?} holds {address:?} in brackets, which is not an IPv6 address; {ACCEPTED}"))?;
            let port = match after {
                "" => default_port,
                _ => port_of(after.strip_prefix(':').ok_or_else(|| {
                    format!("{server:?} has {after:?} after the brackets; {ACCEPTED}")
                })?)?,
            };
            return Ok(Self {
                host: NfsHost::Ip(ip.into()),
                port,
            });
        }
        if let Ok(ip) = server.parse::<std::net::IpAddr>() {
            return Ok(Self {
                host: NfsHost::Ip(ip),
                port: default_port,
            });
        }
        let (host, port) = match server.split_once(':') {
            None => (server, default_port),
            Some((host, port)) if !port.contains(':') => (host, port_of(port)?),
            Some(_) => {
                return Err(format!(
                    "{server:?} is not an IPv6 address, nor a host and port; {ACCEPTED}"
                ));
            }
        };
        if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            return Ok(Self {
                host: NfsHost::Ip(ip.into()),
                port,
            });
        }
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(format!("{server:?} is not a hostname; {ACCEPTED}"));
        }
        Ok(Self {
            host: NfsHost::Name(host.to_owned()),
            port,
        })
    }
}

impl std::fmt::Display for NfsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            NfsHost::Ip(std::net::IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            NfsHost::Ip(std::net::IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            NfsHost::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// A Restore as the failover reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreView {
    pub name: String,
    pub phase: Option<String>,
    pub attempt: u32,
    pub items_restored: u64,
    pub total_items: u64,
    pub warnings: u64,
    pub errors: u64,
    pub failure_reason: Option<String>,
    /// How the run that followed it ended ([`ANNOTATION_OUTCOME`]).
    pub outcome: Option<String>,
}

impl RestoreView {
    fn from_object(object: &DynamicObject) -> Self {
        let number = |pointer: &str| {
            object
                .data
                .pointer(pointer)
                .and_then(Value::as_u64)
                .unwrap_or_default()
        };
        Self {
            name: object.name_any(),
            phase: object
                .data
                .pointer(POINTER_STATUS_PHASE)
                .and_then(Value::as_str)
                .map(str::to_owned),
            attempt: object
                .annotations()
                .get(ANNOTATION_ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(1),
            items_restored: number("/status/progress/itemsRestored"),
            total_items: number("/status/progress/totalItems"),
            warnings: number("/status/warnings"),
            errors: number("/status/errors"),
            failure_reason: object
                .data
                .pointer("/status/failureReason")
                .and_then(Value::as_str)
                .map(str::to_owned),
            outcome: object.annotations().get(ANNOTATION_OUTCOME).cloned(),
        }
    }

    /// Velero is done with it.
    pub fn finished(&self) -> bool {
        matches!(
            self.phase.as_deref(),
            Some(PHASE_COMPLETED | PHASE_PARTIALLY_FAILED | PHASE_FAILED | PHASE_FAILED_VALIDATION)
        )
    }

    /// Finished without restoring (a new attempt is needed).
    pub fn failed(&self) -> bool {
        matches!(
            self.phase.as_deref(),
            Some(PHASE_FAILED | PHASE_FAILED_VALIDATION)
        )
    }
}

/// The Restores of one Velero namespace.
pub(crate) struct Restores {
    client: Client,
    namespace: String,
    api: Api<DynamicObject>,
}

impl Restores {
    pub(crate) fn new(client: &Client, namespace: &str) -> Self {
        Self {
            client: client.clone(),
            namespace: namespace.to_owned(),
            api: Api::namespaced_with(client.clone(), namespace, &velero::restore_resource()),
        }
    }

    /// Every attempt of this operation on `backup` at this site, the first first.
    pub(crate) async fn attempts(
        &self,
        options: &Options,
        backup: &str,
    ) -> Result<Vec<RestoreView>, kube::Error> {
        let selector = format!(
            "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_SITE}={},{LABEL_BACKUP}={},{LABEL_OPERATION}={}",
            options.site,
            label_value(backup),
            options.operation.as_str()
        );
        let mut attempts: Vec<RestoreView> = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .map(RestoreView::from_object)
            .collect();
        attempts.sort_by_key(|r| r.attempt);
        Ok(attempts)
    }

    /// The Restore to follow: the newest attempt of this backup at this site unless it failed
    /// (or its run failed its checks, or `--new-attempt`), else a new attempt.
    pub(crate) async fn ensure(
        &self,
        options: &Options,
        backup: &str,
        plan: &Plan,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<String, RecoveryError> {
        let attempts = self.attempts(options, backup).await?;
        // A drill proves the backup restorable again each time: only a drill still running is
        // followed. A failover continues with an attempt still running, or one that finished
        // and whose run did not fail its checks, unless --new-attempt asks for a new one.
        let reusable = |last: &RestoreView| {
            if last.failed() {
                return false;
            }
            if !last.finished() {
                return true;
            }
            options.operation != Operation::Drill
                && !options.new_attempt
                && last.outcome.as_deref() != Some("Failed")
        };
        let attempt = match attempts.last() {
            Some(last) if reusable(last) => {
                progress(format!(
                    "continuing with Restore {}/{} (attempt {}, {})",
                    self.namespace,
                    last.name,
                    last.attempt,
                    last.phase.as_deref().unwrap_or("New")
                ));
                return Ok(last.name.clone());
            }
            Some(last) => {
                let why = if last.failed() {
                    last.failure_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                } else if last.outcome.as_deref() == Some("Failed") {
                    ", and the run that followed it failed its checks".to_owned()
                } else if options.new_attempt {
                    ", and --new-attempt asks for a new one".to_owned()
                } else {
                    String::new()
                };
                progress(format!(
                    "Restore {} ended {}{why}: starting attempt {}",
                    last.name,
                    last.phase.as_deref().unwrap_or("?"),
                    last.attempt + 1
                ));
                last.attempt + 1
            }
            None => 1,
        };
        let name = restore_name(options.operation, &options.site, backup, attempt);
        let halt = plan.virtual_machines().next().is_some();
        if halt {
            self.put_halt_modifier().await?;
        }
        let restore = build_restore(&name, &self.namespace, options, backup, attempt, halt);
        self.api.create(&PostParams::default(), &restore).await?;
        progress(format!(
            "created Restore {}/{name} of backup {backup}",
            self.namespace
        ));
        Ok(name)
    }

    /// The resource modifier that restores every VM with `runStrategy: Halted`.
    async fn put_halt_modifier(&self) -> Result<(), kube::Error> {
        let configmap: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": HALT_VMS_CONFIGMAP, "namespace": self.namespace,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY},
            },
            "data": {"rules.yaml": HALT_VMS_RULES},
        }))
        .expect("a valid ConfigMap");
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                HALT_VMS_CONFIGMAP,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&configmap),
            )
            .await?;
        Ok(())
    }

    /// Follows the Restore until Velero finishes it, printing phase and progress changes.
    pub(crate) async fn watch(
        &self,
        name: &str,
        timeout: Duration,
        poll: Duration,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<RestoreView, String> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            match self.api.get_opt(name).await {
                Ok(Some(object)) => {
                    let view = RestoreView::from_object(&object);
                    let line = format!(
                        "Restore {name}: {} {}/{} items, {} warnings, {} errors",
                        view.phase.as_deref().unwrap_or("New"),
                        view.items_restored,
                        view.total_items,
                        view.warnings,
                        view.errors
                    );
                    if last.as_ref() != Some(&line) {
                        progress(line.clone());
                        last = Some(line);
                    }
                    if view.finished() {
                        return Ok(view);
                    }
                }
                Ok(None) => return Err(format!("Restore {}/{name} disappeared", self.namespace)),
                Err(error) => progress(format!("cannot read Restore {name} (retrying): {error}")),
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Restore {}/{name} did not finish within {}: is Velero running at this site? Re-run the same command to continue following it (Velero marks a restore it was running when it restarted as Failed; the re-run then starts a new attempt)",
                    self.namespace,
                    crate::duration::human(timeout)
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// Merge patches leave no error when `running` is absent; Velero applies the rule to every VM the
/// restore creates (resource modifiers need Velero 1.13 or later).
const HALT_VMS_RULES: &str = r#"version: v1
resourceModifierRules:
  - conditions:
      groupResource: virtualmachines.kubevirt.io
    mergePatches:
      - patchData: '{"spec": {"running": null, "runStrategy": "Halted"}}'
"#;

/// `<operation>-<site>-<backup>[-<attempt>]`, at most 63 characters: Velero writes the restore
/// name into the `velero.io/restore-name` label of everything it restores. A longer name keeps
/// its attempt suffix and is cut before it, ending in a hash of the uncut name
/// ([`names::fitted`]), so that backups differing only after the cut (their timestamps) get
/// Restores of their own.
pub fn restore_name(operation: Operation, site: &str, backup: &str, attempt: u32) -> String {
    let suffix = if attempt > 1 {
        format!("-{attempt}")
    } else {
        String::new()
    };
    let name = format!("{}-{site}-{backup}", operation.as_str());
    names::fitted(&name, names::MAX_LABEL_VALUE - suffix.len()).into_owned() + &suffix
}

/// The Restore: the whole backup, PVs restored as backed up (the site-remap plugin rewrites
/// them), nothing that exists overwritten, VMs halted until started in order.
fn build_restore(
    name: &str,
    namespace: &str,
    options: &Options,
    backup: &str,
    attempt: u32,
    halt: bool,
) -> DynamicObject {
    let mut spec = json!({
        "backupName": backup,
        // Metadata-only backups have no volume snapshots: `restorePVs` only matters for those;
        // PVs are restored as objects because the backed-up copies are Retain.
        "restorePVs": true,
        // Never patch an object that exists (it may be the operator's); Velero reports each one
        // as a warning, and a re-run after a partial restore skips what is already there.
        "existingResourcePolicy": "none",
        // Arrays do not replicate snapshots, so a VolumeSnapshot restored here would name a
        // snapshot handle that does not exist at this site; its data came over as the replica PVC.
        // CRDs belong to their operators at this site (KubeVirt's, the CSI snapshotter's); a
        // backed-up copy would only differ from them. The VirtualMachineApi precondition checks
        // that the VM API is served here.
        "excludedResources": [
            "volumesnapshots.snapshot.storage.k8s.io",
            "volumesnapshotcontents.snapshot.storage.k8s.io",
            "customresourcedefinitions.apiextensions.k8s.io",
        ],
    });
    if halt {
        spec["resourceModifier"] = json!({"kind": "ConfigMap", "name": HALT_VMS_CONFIGMAP});
    }
    if !options.namespace_mapping.is_empty() {
        spec["namespaceMapping"] = json!(options.namespace_mapping);
    }
    let mut restore = DynamicObject::new(name, &velero::restore_resource()).within(namespace);
    restore.metadata.labels = Some(BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (
            LABEL_OPERATION.to_owned(),
            options.operation.as_str().to_owned(),
        ),
        (LABEL_SITE.to_owned(), options.site.clone()),
        (LABEL_BACKUP.to_owned(), label_value(backup).into_owned()),
    ]));
    restore.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_ATTEMPT.to_owned(),
        attempt.to_string(),
    )]));
    restore.data = json!({ "spec": spec });
    restore
}

/// The first messages of Velero's restore results, `namespace: message`.
fn summarize_results(results: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for kind in ["errors", "warnings"] {
        let Some(result) = results.get(kind) else {
            continue;
        };
        for scope in ["velero", "cluster"] {
            for message in result
                .get(scope)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                lines.push(format!(
                    "{kind}: {scope}: {}",
                    message.as_str().unwrap_or_default()
                ));
            }
        }
        if let Some(namespaces) = result.get("namespaces").and_then(Value::as_object) {
            for (namespace, messages) in namespaces {
                for message in messages.as_array().into_iter().flatten() {
                    lines.push(format!(
                        "{kind}: {namespace}: {}",
                        message.as_str().unwrap_or_default()
                    ));
                }
            }
        }
    }
    lines.truncate(50);
    lines
}

/// The report ConfigMap of a Restore: `<restore>-report`, at most 63 characters like the Restore
/// name, cut with a hash ([`names::fitted`]) so that Restores alike in their first 56 characters
/// keep reports of their own.
pub fn report_name(restore: &str) -> String {
    const SUFFIX: &str = "-report";
    names::fitted(restore, names::MAX_LABEL_VALUE - SUFFIX.len()).into_owned() + SUFFIX
}

/// Stores the report as a ConfigMap named after the Restore and records an Event on the Restore.
async fn store(
    client: &Client,
    namespace: &str,
    report: &RecoveryReport,
    summary: &str,
) -> Result<(), kube::Error> {
    let Some(restore) = &report.restore else {
        return Ok(());
    };
    let name = report_name(restore);
    let configmap: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {
                LABEL_MANAGED_BY: MANAGED_BY,
                LABEL_OPERATION: report.operation,
                LABEL_SITE: report.site,
                LABEL_BACKUP: label_value(&report.backup),
            },
        },
        "data": {
            "report.json": serde_json::to_string_pretty(report).unwrap_or_default(),
            "summary.txt": summary,
        },
    }))
    .expect("a valid ConfigMap");
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&configmap),
        )
        .await?;
    let restores: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &velero::restore_resource());
    if let Some(object) = restores.get_opt(restore).await? {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: None,
            },
        );
        let reference = object.object_ref(&velero::restore_resource());
        let succeeded = report.outcome == Outcome::Succeeded;
        let event = Event {
            type_: if succeeded {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: format!(
                "{}{}",
                capitalize(&report.operation),
                if succeeded { "Succeeded" } else { "Failed" }
            ),
            note: Some(report.summary().chars().take(1000).collect()),
            action: capitalize(&report.operation),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(%error, "cannot record the report Event");
        }
    }
    Ok(())
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::plan::VolumeAction;

    #[test]
    fn restore_names_fit_a_label_and_number_attempts() {
        assert_eq!(
            restore_name(Operation::Failover, "dr", "vms-20261122-1800", 1),
            "failover-dr-vms-20261122-1800"
        );
        assert_eq!(
            restore_name(Operation::Failback, "primary", "b", 3),
            "failback-primary-b-3"
        );
        let long = restore_name(Operation::Failover, "dr", &"x".repeat(80), 12);
        assert_eq!(long.len(), 63, "{long}");
        assert!(long.ends_with("-12"), "{long}");
    }

    /// The longest backup names a policy makes (a 41-character policy name, the longest
    /// accepted) differ only in their timestamps: each gets a Restore name of its own, a valid
    /// DNS label, and its attempts stay apart.
    #[test]
    fn restore_names_of_long_backups_that_differ_at_the_end_stay_apart() {
        let policy = "p".repeat(crate::policy::MAX_POLICY_NAME);
        let first = format!("{policy}-manual-20261122180000");
        let second = format!("{policy}-manual-20261122180001");
        assert_eq!(first.len(), names::MAX_LABEL_VALUE);
        let names: Vec<String> = [(&first, 1), (&second, 1), (&first, 2), (&second, 10)]
            .into_iter()
            .map(|(backup, attempt)| restore_name(Operation::Failback, "primary", backup, attempt))
            .collect();
        for name in &names {
            assert!(name.len() <= names::MAX_LABEL_VALUE, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
            assert!(name.starts_with("failback-primary-ppp"), "{name}");
        }
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:#?}");
        assert!(
            names[2].ends_with("-2") && names[3].ends_with("-10"),
            "{names:#?}"
        );
        assert_eq!(names[0][..55], names[2][..55]);
    }

    fn endpoint(server: &str) -> Result<String, String> {
        NfsEndpoint::parse(server, 2049).map(|e| e.to_string())
    }

    #[test]
    fn nfs_servers_parse_as_pvs_write_them() {
        for (server, parsed) in [
            ("10.0.0.5", "10.0.0.5:2049"),
            ("10.0.0.5:2050", "10.0.0.5:2050"),
            ("fd00::5", "[fd00::5]:2049"),
            ("::1", "[::1]:2049"),
            ("[::1]", "[::1]:2049"),
            ("[fd00::5]:2050", "[fd00::5]:2050"),
            // A bare IPv6 address has no port: its last group is part of the address.
            ("fd00::5:2049", "[fd00::5:2049]:2049"),
            ("FD00:0:0::5", "[fd00::5]:2049"),
            ("nfs-a.dr.example.com", "nfs-a.dr.example.com:2049"),
            ("nfs-a:111", "nfs-a:111"),
            (" nfs-a ", "nfs-a:2049"),
        ] {
            assert_eq!(endpoint(server).as_deref(), Ok(parsed), "{server}");
        }
    }

    #[test]
    fn bad_nfs_servers_are_named_with_what_is_accepted() {
        for (server, says) in [
            ("", "the server is empty"),
            ("[fd00::5", "\"[fd00::5\" opens a bracket it does not close"),
            (
                "[nfs-a]",
                "holds \"nfs-a\" in brackets, which is not an IPv6 address",
            ),
            ("[::1]2049", "has \"2049\" after the brackets"),
            (
                "[::1]:0",
                "has port \"0\"; expected a number from 1 to 65535",
            ),
            ("nfs-a:99999", "has port \"99999\""),
            (
                "nfs-a:b:c",
                "\"nfs-a:b:c\" is not an IPv6 address, nor a host and port",
            ),
            ("nfs a", "\"nfs a\" is not a hostname"),
        ] {
            let error = endpoint(server).expect_err(server);
            assert!(error.contains(says), "{server}: {error}");
            assert!(error.contains("expected"), "{server}: {error}");
        }
    }

    #[test]
    fn the_server_of_a_location_ends_before_its_path() {
        for (location, server) in [
            ("nfs-a:/exports/vms", Some("nfs-a")),
            ("10.0.0.5:/", Some("10.0.0.5")),
            ("fd00::5:/exports/vms", Some("fd00::5")),
            ("fd00:::/exports", Some("fd00::")),
            ("[fd00::5]:/exports/a:b", Some("[fd00::5]")),
            ("nfs-a", None),
            ("nfs-a/exports", None),
        ] {
            assert_eq!(export_server(location), server, "{location}");
        }
    }

    fn volume_at(name: &str, after: &str) -> VolumePlan {
        VolumePlan {
            name: name.to_owned(),
            claim: None,
            reclaim_policy: "Retain".to_owned(),
            action: VolumeAction::Rewrite,
            problems: Vec::new(),
            before: None,
            after: Some(after.to_owned()),
        }
    }

    /// A real listener on the IPv6 loopback stands in for an NFS server: the check connects to
    /// it however the PVs spell the address, and names server, PVs and error once it is gone.
    #[tokio::test]
    async fn exports_on_ipv6_servers_are_reached() {
        let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("SKIPPED: this machine has no IPv6 loopback ([::1]: {error})");
                return;
            }
        };
        let port = listener.local_addr().expect("bound").port();
        let volumes = [
            volume_at("pv-bare", "::1:/exports/a"),
            volume_at("pv-bracketed", "[::1]:/exports/b"),
            volume_at("pv-bare-2", "::1:/exports/c"),
        ];
        let reached = exports_reachable(&volumes, port).await;
        assert_eq!(reached.passed, Some(true), "{}", reached.detail);
        assert_eq!(
            reached.detail,
            format!("NFS answers on [::1]:{port}, [::1]:{port}")
        );
        assert_eq!(
            reach_nfs_server(&format!("[::1]:{port}"), 1, Duration::from_secs(3)).await,
            Ok(format!("[::1]:{port}"))
        );

        drop(listener);
        let refused = exports_reachable(&volumes, port).await;
        assert_eq!(refused.passed, Some(false), "{}", refused.detail);
        let expected =
            format!("NFS server ::1 (PV pv-bare, pv-bare-2): cannot connect to [::1]:{port}: ");
        assert!(refused.detail.starts_with(&expected), "{}", refused.detail);
        assert!(
            refused.detail.contains(&format!(
                "; NFS server [::1] (PV pv-bracketed): cannot connect to [::1]:{port}: "
            )),
            "{}",
            refused.detail
        );
        assert!(refused.detail.contains("refused"), "{}", refused.detail);
    }

    #[test]
    fn report_names_stay_apart_when_restore_names_are_long() {
        assert_eq!(report_name("failover-dr-b"), "failover-dr-b-report");
        let first = restore_name(Operation::Failover, "dr", &"b".repeat(60), 1);
        let second = restore_name(Operation::Failover, "dr", &"b".repeat(60), 2);
        let (first, second) = (report_name(&first), report_name(&second));
        assert_eq!((first.len(), second.len()), (63, 63));
        assert_ne!(first, second);
        assert!(first.ends_with("-report"), "{first}");
    }

    #[test]
    fn the_halt_rules_parse_as_velero_reads_them() {
        let rules: Value = serde_yaml_ng::from_str(HALT_VMS_RULES).expect("yaml");
        assert_eq!(rules["version"], "v1");
        let rule = &rules["resourceModifierRules"][0];
        assert_eq!(
            rule["conditions"]["groupResource"],
            "virtualmachines.kubevirt.io"
        );
        let patch: Value = serde_json::from_str(
            rule["mergePatches"][0]["patchData"]
                .as_str()
                .expect("patchData"),
        )
        .expect("json");
        assert_eq!(patch["spec"]["runStrategy"], "Halted");
        assert!(patch["spec"]["running"].is_null());
    }

    #[test]
    fn results_are_flattened_errors_first() {
        let results = json!({
            "warnings": {"namespaces": {"vms": ["could not restore, PersistentVolumeClaim \"a\" already exists"]}},
            "errors": {"velero": ["boom"], "namespaces": {"vms": ["bad pv"]}},
        });
        assert_eq!(
            summarize_results(&results),
            [
                "errors: velero: boom",
                "errors: vms: bad pv",
                "warnings: vms: could not restore, PersistentVolumeClaim \"a\" already exists"
            ]
        );
    }
}

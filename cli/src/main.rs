//! `replicadr`: the scheduler service (`replicadr scheduler`) and the operator commands
//! (`activate`, `backup now`, `verify`, `status`, `gc`, `clean`, `crd`, `plan`, `failover`, `failback`,
//! `drill --dr-context`). Parses arguments, wires the library's parts together, renders their
//! results, and maps outcomes to exit codes: 0 success, 1 a backup failed verification / a plan
//! is incomplete / a recovery failed, 2 the command could not run, 3 a recovery was refused by a
//! precondition.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::Client;
use replicadr_cli::output::{self, Output};
use replicadr_cli::render;
use replicadr_scheduler::clock::{Clock, SystemClock};
use replicadr_scheduler::duration::GoDuration;
use replicadr_scheduler::leader::Election;
use replicadr_scheduler::metrics::Metrics;
use replicadr_scheduler::publish::Publisher;
use replicadr_scheduler::recovery::failover::{self, Operation};
use replicadr_scheduler::recovery::plan;
use replicadr_scheduler::recovery::report::Outcome;
use replicadr_scheduler::recovery::site::{self, BackupChoice};
use replicadr_scheduler::recovery::{clean, every_policy, planned, standby};
use replicadr_scheduler::server::Health;
use replicadr_scheduler::service::{Service, ServiceConfig};
use replicadr_scheduler::{active_site, gc, manual, policy, status};
use tokio_util::sync::CancellationToken;

/// musl's allocator is slow under many small allocations (about a quarter of the plugin's
/// throughput, measured by `hack/bench/plugin-bench.sh`); the static image builds use mimalloc.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "replicadr",
    version,
    about = "ReplicaDR: scheduled, verified metadata-only Velero backups for KubeVirt VMs"
)]
struct Args {
    /// The Velero namespace: BackupPolicies, Backups and `BackupStorageLocations` live there.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "VELERO_NAMESPACE",
        default_value = "velero"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scheduler service.
    Scheduler(SchedulerArgs),
    /// Start a backup of a policy now, wait for it, verify it.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Verify a finished backup from object storage (writes nothing).
    Verify {
        backup: String,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
    /// Policies, their newest verified backups and RPO.
    Status {
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
    /// Once, at installation: record this site as the active one in the shared bucket (the
    /// active-site record every scheduler reads before it makes a backup). Refused when a record
    /// names another site: sites change only by failover and failback.
    Activate {
        /// This site; the plugin ConfigMap's localSite must name it.
        #[arg(long)]
        site: String,
        /// Only this BackupStorageLocation; every one in the namespace by default.
        #[arg(long)]
        storage_location: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
    /// List replica PVCs whose VolumeSnapshot is gone; delete them with --apply (each PV is set
    /// to Retain first; claims a Velero restore created are never deleted).
    Gc {
        #[arg(long)]
        apply: bool,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
    /// Print the BackupPolicy CRD.
    Crd,
    /// Dry run: what restoring a backup at a site would do, and every problem (exit 1 when the
    /// restore would be incomplete).
    Plan(PlanArgs),
    /// Restore the newest verified backup at this site, check it, start the VMs in order.
    Failover(RecoveryArgs),
    /// The same as failover, back to the original site after it is repaired. With --from-context
    /// (both sites reachable), a planned failback: halt the VMs at the site being left, take and
    /// verify a final backup there, confirm the array steps, clean this site, restore, check,
    /// start; a re-run continues where the last one stopped.
    Failback(FailbackArgs),
    /// Before a failback: list the stale workload at this site — VMs, PVCs and PVs under the
    /// names of the backup a failback would restore that no failover or failback of it restored
    /// here — and with --apply remove it (PVs set to Retain first; refused at the active site).
    Clean(CleanArgs),
    /// Drill real clusters: restore a backup at the DR site into scratch namespaces, check it
    /// against the plan, delete what it restored; nothing fails over. (The local two-site drill
    /// is `replicadr-drill`, run by `hack/drill.sh`.)
    Drill(DrillArgs),
}

#[derive(Debug, clap::Args)]
struct DrillArgs {
    /// The kubeconfig context of the DR site. Restores into scratch namespaces there, checks,
    /// and deletes what it restored; nothing fails over.
    #[arg(long)]
    dr_context: String,
    /// The primary site's context, to compare its VMs with the backup's.
    #[arg(long)]
    primary_context: Option<String>,
    /// The backup; the newest one that verifies at the DR site by default.
    #[arg(long)]
    backup: Option<String>,
    /// Only this BackupPolicy's backups.
    #[arg(long)]
    policy: Option<String>,
    /// Leave the scratch namespaces and what was restored into them.
    #[arg(long)]
    keep: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, clap::Args)]
#[expect(clippy::struct_excessive_bools, reason = "the command's switches")]
struct CleanArgs {
    /// This site; its plugin ConfigMap must name it, and the active-site record must not.
    #[arg(long)]
    site: String,
    /// The backup the failback will restore; by default the same as `plan` chooses, per policy.
    #[arg(long)]
    backup: Option<String>,
    /// Only this BackupPolicy's backup.
    #[arg(long)]
    policy: Option<String>,
    /// Remove what is listed (without it, nothing changes).
    #[arg(long)]
    apply: bool,
    /// Remove although a listed VM runs or a pod mounts a listed claim.
    #[arg(long)]
    force: bool,
    /// Also remove the VMs, claims and their PVs in the backup's namespaces that the backup does
    /// not hold (deleted at the other site during the outage).
    #[arg(long)]
    include_absent: bool,
    /// How long each kind's removals (VMs, `DataVolumes`, claims, PVs) may take to finish.
    #[arg(long, default_value = "5m")]
    timeout: GoDuration,
    /// Instead of a stale workload: everything the warm standby of --policy made at this site
    /// (and its Restores), once the policy's spec.standby.enabled is false.
    #[arg(long, requires = "policy", conflicts_with_all = ["backup", "include_absent", "force"])]
    standby: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// The site the restore would run at.
    #[arg(long)]
    site: String,
    /// The backup; the newest one that verifies at this site when not given.
    #[arg(long, conflicts_with = "latest_verified")]
    backup: Option<String>,
    /// Choose the newest backup that verifies at this site (the default).
    #[arg(long)]
    latest_verified: bool,
    /// Only this BackupPolicy's backups; its RPO judges the backup's age.
    #[arg(long)]
    policy: Option<String>,
    /// The site the backups come from: backups labelled with another site are passed over, and
    /// those without a replicadr.io/site label (a Velero Schedule's, or made by hand) are taken
    /// as made there.
    #[arg(long)]
    source_site: Option<String>,
    /// Plan a `<backup>.tar.gz` on disk instead, with no cluster (needs --site-map).
    #[arg(long, requires = "site_map", conflicts_with_all = ["backup", "policy", "source_site"])]
    from_file: Option<std::path::PathBuf>,
    /// The site map file for --from-file.
    #[arg(long)]
    site_map: Option<std::path::PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, clap::Args)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
struct RecoveryArgs {
    /// The site this runs at; the restore plugin's ConfigMap must name it as localSite.
    #[arg(long)]
    site: String,
    /// The backup to restore; the newest one that verifies at this site when not given.
    #[arg(long)]
    backup: Option<String>,
    /// Only this BackupPolicy's backups.
    #[arg(long)]
    policy: Option<String>,
    /// The site the backups come from: backups labelled with another site are passed over, and
    /// those without a replicadr.io/site label (a Velero Schedule's, or made by hand) are taken
    /// as made there.
    #[arg(long)]
    source_site: Option<String>,
    /// Go on although preconditions fail (each one is logged and reported); never past
    /// a plugin ConfigMap whose localSite names another site.
    #[arg(long)]
    force: bool,
    /// Confirm without a prompt that replication to this site is stopped and its exports promoted.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Connect to port 2049 of each of this site's NFS servers first.
    #[arg(long)]
    check_exports: bool,
    /// Leave the restored VMs halted.
    #[arg(long)]
    no_start: bool,
    /// Stop at the first start-order group whose VMs do not come up (by default the later
    /// groups are started all the same, and the VMs that did not come up are reported).
    #[arg(long, conflicts_with = "no_start")]
    stop_on_failure: bool,
    /// Restore again with a new Restore attempt, even when the last one completed (a re-run
    /// after failed checks does so by itself).
    #[arg(long)]
    new_attempt: bool,
    /// How long Velero may take to restore.
    #[arg(long, default_value = "1h")]
    restore_timeout: GoDuration,
    /// How long restored PVCs may take to be Bound.
    #[arg(long, default_value = "5m")]
    bind_timeout: GoDuration,
    /// How long each group of VMs may take to be Running.
    #[arg(long, default_value = "10m")]
    vm_timeout: GoDuration,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, clap::Args)]
struct FailbackArgs {
    #[command(flatten)]
    recovery: RecoveryArgs,
    /// The kubeconfig context of the site being left (it must be reachable): makes this a
    /// planned failback. Its Velero namespace is the same as this site's.
    #[arg(long)]
    from_context: Option<String>,
    /// The kubeconfig file --from-context is read from (by default the one this command uses);
    /// given alone, its current context.
    #[arg(long)]
    from_kubeconfig: Option<std::path::PathBuf>,
    /// Planned failback: how long the VMs at the site being left may take to stop.
    #[arg(long, default_value = "5m")]
    halt_timeout: GoDuration,
    /// Planned failback: how long this site's Velero may take to list the final backups.
    #[arg(long, default_value = "5m")]
    sync_timeout: GoDuration,
}

#[derive(Debug, clap::Args)]
struct SchedulerArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "REPLICADR_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_address: SocketAddr,
    /// This replica's name in the leader Lease and in Events (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Run without leader election (a single replica).
    #[arg(long)]
    no_leader_election: bool,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Longest pause between passes, in seconds.
    #[arg(long, default_value_t = 15)]
    tick_seconds: u64,
    /// Wait between verification attempts that failed transiently, in seconds.
    #[arg(long, default_value_t = 30)]
    verify_backoff_seconds: u64,
    /// Attempts before a transient verification failure becomes final.
    #[arg(long, default_value_t = 5)]
    verify_attempts: u32,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Back up `policy` now.
    Now {
        policy: String,
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // The service logs what it does; an operator command shows progress lines instead and logs
    // only warnings, on the other stream.
    let default_filter = if matches!(args.command, Command::Scheduler(_)) {
        "info,kube_lease_manager=warn"
    } else {
        "warn"
    };
    output::init_logging(default_filter);
    Box::pin(run(args))
        .await
        .unwrap_or_else(|error| output::could_not_run(&error))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let namespace = args.namespace;
    if let Command::Crd = args.command {
        print!("{}", policy::crd_yaml());
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Drill(options) = args.command {
        return Box::pin(drill_live(options, &namespace)).await;
    }
    if let Command::Plan(PlanArgs {
        from_file: Some(tarball),
        site_map: Some(site_map),
        site,
        output,
        ..
    }) = &args.command
    {
        let plan = site::plan_from_file(tarball, site_map, site, jiff::Timestamp::now())?;
        return Ok(print_plan(&plan, *output));
    }
    let client = Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (kubeconfig or in-cluster config)")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match args.command {
        Command::Crd | Command::Drill(_) => unreachable!("handled above"),
        Command::Plan(options) => {
            let choice = options
                .backup
                .map_or(BackupChoice::LatestVerified, BackupChoice::Named);
            let planned = site::plan_at_site(
                &client,
                &namespace,
                &options.site,
                &choice,
                site::Scope {
                    policy: options.policy.as_deref(),
                    source_site: options.source_site.as_deref(),
                },
                clock.now(),
                &mut |line| options.output.progress(&line),
            )
            .await?;
            Ok(print_plan(&planned.plan, options.output))
        }
        Command::Clean(args) => clean(&client, &namespace, args).await,
        Command::Failover(options) => {
            recover(&client, &namespace, Operation::Failover, options).await
        }
        Command::Failback(options)
            if options.from_context.is_some() || options.from_kubeconfig.is_some() =>
        {
            planned_failback(&client, &namespace, clock, options).await
        }
        Command::Failback(options) => {
            recover(&client, &namespace, Operation::Failback, options.recovery).await
        }
        Command::Scheduler(options) => run_scheduler(client, &namespace, clock, options).await,
        Command::Backup {
            command: BackupCommand::Now { policy, output },
        } => backup_now(&client, &namespace, &policy, clock, output).await,
        Command::Verify { backup, output } => {
            let report = manual::verify(&client, &namespace, &backup).await?;
            print!("{}", output.render(&report, render::verification));
            Ok(exit_for(report.verified))
        }
        Command::Status { output } => {
            let overview = status::overview(&client, &namespace, clock.now()).await?;
            print!("{}", output.render(&overview, render::overview));
            Ok(ExitCode::SUCCESS)
        }
        Command::Activate {
            site,
            storage_location,
            output,
        } => {
            activate(
                &client,
                &namespace,
                &site,
                storage_location.as_deref(),
                output,
            )
            .await
        }
        Command::Gc { apply, output } => {
            let orphans = gc::gc(&client, apply).await?;
            print!("{}", output.render(&orphans, |o| render::gc(o)));
            let failed = orphans
                .iter()
                .any(|o| matches!(o.action, gc::GcAction::Failed(_)));
            Ok(exit_for(!failed))
        }
    }
}

/// `replicadr backup now`: one backup of `policy`, waited for and verified.
async fn backup_now(
    client: &Client,
    namespace: &str,
    policy: &str,
    clock: Arc<dyn Clock>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let (_, metrics) = Metrics::new_registry();
    let publisher = Publisher::new(client.clone(), namespace, "replicadr-cli", metrics);
    let report = manual::backup_now(
        client,
        namespace,
        policy,
        clock,
        &publisher,
        Duration::from_secs(2),
        |line| output.progress(line),
    )
    .await?;
    print!("{}", output.render(&report, render::verification));
    Ok(exit_for(report.verified))
}

/// `replicadr clean`: exit 0 when listed or removed, 1 when a removal failed, 3 when refused.
async fn clean(client: &Client, namespace: &str, args: CleanArgs) -> anyhow::Result<ExitCode> {
    if args.standby {
        let output = args.output;
        let policy = args.policy.unwrap_or_default();
        let result = Box::pin(standby::clean_standby(
            client,
            namespace,
            &args.site,
            &policy,
            args.apply,
            &mut |line| output.progress(&line),
        ))
        .await?;
        print!("{}", output.render(&result, render::clean_standby));
        return Ok(if result.refused.is_some() {
            ExitCode::from(3)
        } else if result.report.failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let options = clean::CleanOptions {
        site: args.site,
        backup: args
            .backup
            .map_or(BackupChoice::LatestVerified, BackupChoice::Named),
        policy: args.policy,
        apply: args.apply,
        force: args.force,
        include_absent: args.include_absent,
        timeout: args.timeout.as_std(),
        poll: Duration::from_secs(1),
    };
    let output = args.output;
    let report = Box::pin(clean::clean(client, namespace, &options, &mut |line| {
        output.progress(&line);
    }))
    .await?;
    print!("{}", output.render(&report, render::clean));
    Ok(if report.refused.is_some() {
        ExitCode::from(3)
    } else if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `replicadr activate`: the first active-site record, naming this site.
async fn activate(
    client: &Client,
    namespace: &str,
    site: &str,
    storage_location: Option<&str>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let changes = active_site::activate(
        client,
        namespace,
        site,
        storage_location,
        jiff::Timestamp::now(),
    )
    .await?;
    print!("{}", output.render(&changes, |c| render::activated(c)));
    Ok(ExitCode::SUCCESS)
}

/// The service: metrics endpoints, leader election, the loop; stops on SIGTERM.
async fn run_scheduler(
    client: Client,
    namespace: &str,
    clock: Arc<dyn Clock>,
    options: SchedulerArgs,
) -> anyhow::Result<ExitCode> {
    let SchedulerArgs {
        metrics_address,
        identity,
        no_leader_election,
        lease_seconds,
        tick_seconds,
        verify_backoff_seconds,
        verify_attempts,
    } = options;
    let identity = identity.unwrap_or_else(|| format!("replicadr-{}", std::process::id()));
    let (registry, metrics) = Metrics::new_registry();
    let publisher = Arc::new(Publisher::new(
        client.clone(),
        namespace,
        &identity,
        metrics,
    ));
    let mut config = ServiceConfig::new(namespace);
    config.tick = Duration::from_secs(tick_seconds.max(1));
    config.verify_backoff = Duration::from_secs(verify_backoff_seconds);
    config.verify_attempts = verify_attempts.max(1);
    let service = Arc::new(Service::new(client.clone(), config, clock, publisher));
    let shutdown = CancellationToken::new();
    let health = Health::new(registry);
    let server = {
        let health = health.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { health.serve(metrics_address, shutdown).await })
    };
    let election = if no_leader_election {
        None
    } else {
        Some(
            Election::start(
                client.clone(),
                namespace,
                &identity,
                Duration::from_secs(lease_seconds),
            )
            .await
            .context("cannot join the leader election")?,
        )
    };
    let leader = match &election {
        Some(election) => election.is_leader.clone(),
        None => tokio::sync::watch::channel(true).1,
    };
    health.set_ready(true);
    let runner = tokio::spawn(Arc::clone(&service).run(leader, shutdown.clone()));
    wait_for_signal().await;
    tracing::info!("shutting down");
    health.set_ready(false);
    shutdown.cancel();
    let _ = runner.await;
    // The lease goes only once the service has stopped writing.
    if let Some(election) = election {
        election.stop().await;
    }
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}

/// `drill --dr-context`: the drill on real clusters.
async fn drill_live(args: DrillArgs, namespace: &str) -> anyhow::Result<ExitCode> {
    let context_client = |context: String| async move {
        let options = kube::config::KubeConfigOptions {
            context: Some(context.clone()),
            ..Default::default()
        };
        let config = kube::Config::from_kubeconfig(&options)
            .await
            .with_context(|| format!("cannot read kubeconfig context {context}"))?;
        anyhow::Ok(Client::try_from(config)?)
    };
    let dr = context_client(args.dr_context.clone()).await?;
    let primary = match args.primary_context.clone() {
        Some(context) => Some(context_client(context).await?),
        None => None,
    };
    let options = replicadr_scheduler::drill::LiveOptions {
        backup: args
            .backup
            .map_or(BackupChoice::LatestVerified, BackupChoice::Named),
        policy: args.policy,
        keep: args.keep,
        restore_timeout: Duration::from_hours(1),
        poll: Duration::from_secs(1),
    };
    let output = args.output;
    let report = Box::pin(replicadr_scheduler::drill::run(
        primary.as_ref(),
        &dr,
        namespace,
        &options,
        &mut |line| output.progress(&format!("drill: {line}")),
    ))
    .await?;
    print!("{}", output.render(&report, render::live_drill));
    Ok(exit_for(report.passed()))
}

fn print_plan(plan: &plan::Plan, output: Output) -> ExitCode {
    print!("{}", output.render(plan, render::plan));
    exit_for(plan.complete)
}

/// `failback --from-context`: 0 succeeded, 1 failed (a re-run continues), 3 refused.
async fn planned_failback(
    client: &Client,
    namespace: &str,
    clock: Arc<dyn Clock>,
    args: FailbackArgs,
) -> anyhow::Result<ExitCode> {
    let context = kube::config::KubeConfigOptions {
        context: args.from_context.clone(),
        ..Default::default()
    };
    let config = match &args.from_kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--from-kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &context).await
        }
        None => kube::Config::from_kubeconfig(&context).await,
    }
    .with_context(|| {
        format!(
            "--from-context {}: cannot read the site being left from the kubeconfig",
            args.from_context.as_deref().unwrap_or("(current)")
        )
    })?;
    let from = Client::try_from(config).context("a client for the site being left")?;
    if let Some(flag) = [
        ("--backup", args.recovery.backup.is_some()),
        ("--policy", args.recovery.policy.is_some()),
        ("--source-site", args.recovery.source_site.is_some()),
    ]
    .into_iter()
    .find_map(|(flag, given)| given.then_some(flag))
    {
        anyhow::bail!(
            "{flag} cannot be given with --from-context: a planned failback restores the final backup it takes of every BackupPolicy at the site being left"
        );
    }
    let output = args.recovery.output;
    let options = planned::PlannedOptions {
        recovery: recovery_options(Operation::Failback, &args.recovery, true),
        halt_timeout: args.halt_timeout.as_std(),
        sync_timeout: args.sync_timeout.as_std(),
    };
    let (_, metrics) = Metrics::new_registry();
    let publisher = Publisher::new(from.clone(), namespace, "replicadr-cli", metrics);
    let report = Box::pin(planned::run(
        client,
        &from,
        namespace,
        &options,
        (&publisher, clock),
        &mut |from_site, site| confirm_reversed(from_site, site),
        &mut |line| output.progress(&line),
    ))
    .await?;
    print!("{}", output.render(&report, render::planned));
    Ok(exit_for_outcome(report.outcome))
}

/// The failover options of the command line. The prompt about the array comes now unless
/// `planned` (a planned failback asks after its final backup).
fn recovery_options(operation: Operation, args: &RecoveryArgs, planned: bool) -> failover::Options {
    let mut options = failover::Options::new(operation, &args.site);
    options.backup = args
        .backup
        .clone()
        .map_or(BackupChoice::LatestVerified, BackupChoice::Named);
    options.policy.clone_from(&args.policy);
    options.source_site.clone_from(&args.source_site);
    options.force = args.force;
    options.check_exports = args.check_exports;
    options.stop_on_failure = args.stop_on_failure;
    options.start_vms = !args.no_start;
    options.new_attempt = args.new_attempt;
    options.restore_timeout = args.restore_timeout.as_std();
    options.bind_timeout = args.bind_timeout.as_std();
    options.vm_timeout = args.vm_timeout.as_std();
    options.replication_confirmed = args.yes || (!planned && confirm_replication(&args.site));
    options.summary = Some(render::recovery);
    if args.force {
        tracing::warn!(
            "--force given: failed preconditions are reported, not enforced, except PluginConfig naming another site"
        );
    }
    options
}

/// `failover` / `failback`: 0 succeeded, 1 failed, 3 refused by a precondition.
async fn recover(
    client: &Client,
    namespace: &str,
    operation: Operation,
    args: RecoveryArgs,
) -> anyhow::Result<ExitCode> {
    let options = recovery_options(operation, &args, false);
    let output = args.output;
    let recovery = Box::pin(every_policy::run(
        client,
        namespace,
        &options,
        &mut |line| {
            output.progress(&line);
        },
    ))
    .await?;
    print!("{}", output.render(&recovery, render::recoveries));
    Ok(exit_for_outcome(recovery.outcome))
}

/// A recovery's exit code: 0 succeeded, 1 failed (or still running), 3 refused.
fn exit_for_outcome(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Succeeded => ExitCode::SUCCESS,
        Outcome::Refused => ExitCode::from(3),
        Outcome::Running | Outcome::Failed => ExitCode::from(1),
    }
}

/// Asks whether replication was reversed (`from_site` → `site`), caught up after the final
/// backup, stopped, and `site`'s exports promoted; without a terminal the answer is no.
fn confirm_reversed(from_site: &str, site: &str) -> bool {
    ask(&format!(
        "The VMs at site {from_site} are halted and their final backup is verified. ReplicaDR does not drive the storage array. Has replication {from_site} -> {site} caught up since, been stopped, and have {site}'s exports been promoted read-write? Type yes to continue: "
    ))
}

/// Asks on the terminal whether replication to `site` was stopped and its exports promoted;
/// without a terminal the answer is no (pass --yes).
fn confirm_replication(site: &str) -> bool {
    ask(&format!(
        "ReplicaDR does not drive the storage array. Has replication to site {site} been stopped and have {site}'s exports been promoted read-write? Type yes to continue: "
    ))
}

/// A yes/no question on the terminal; without one the answer is no (pass --yes).
fn ask(question: &str) -> bool {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok() && answer.trim() == "yes"
}

fn exit_for(verified: bool) -> ExitCode {
    if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the scheduler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

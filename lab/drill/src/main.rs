//! `replicadr-drill`: the local two-site DR drill (`hack/drill.sh`). Starts both sites, runs the
//! drill, prints its report; exit 0 when every check passed and both recoveries succeeded, 1
//! otherwise, 2 when the drill could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use replicadr_cli::output::{self, Output};
use replicadr_drill::DrillOptions;

#[derive(Debug, Parser)]
#[command(
    name = "replicadr-drill",
    version,
    about = "A complete DR drill on a local two-site environment it starts and tears down: backup at primary, verification, failover to dr, checks, failback"
)]
#[expect(clippy::struct_excessive_bools, reason = "the command's switches")]
struct Args {
    /// Leave both sites running after the drill, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Further VMs, with two NFS PVs each, for scale runs.
    #[arg(long, default_value_t = 0)]
    vms: usize,
    /// Stop after the failover.
    #[arg(long)]
    no_failback: bool,
    /// Kill the dr site's Velero while it restores, then run the failover again.
    #[arg(long)]
    kill_velero_mid_restore: bool,
    /// The plugin binary; `replicadr-velero-plugins` next to this binary by default.
    #[arg(long, env = "REPLICADR_PLUGIN_BINARY")]
    plugin_binary: Option<PathBuf>,
    /// Velero's log level at both sites.
    #[arg(long, default_value = "info")]
    velero_log_level: String,
    /// Velero's `--client-qps` at both sites (Velero's own default is 20).
    #[arg(long, default_value_t = replicadr_drill::SHIPPED_VELERO_CLIENT.0)]
    velero_client_qps: u32,
    /// Velero's `--client-burst` at both sites (Velero's own default is 30).
    #[arg(long, default_value_t = replicadr_drill::SHIPPED_VELERO_CLIENT.1)]
    velero_client_burst: u32,
    /// Keep a warm standby at dr before the failover (two refreshes), and fail over from it.
    #[arg(long)]
    standby: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // The drill probes control planes while they start; their refusals are expected.
    output::init_logging("warn,kube_client=off");
    Box::pin(run(args))
        .await
        .unwrap_or_else(|error| output::could_not_run(&error))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plugin_binary = match args.plugin_binary {
        Some(path) => path,
        None => std::env::current_exe()
            .context("cannot locate this binary")?
            .with_file_name("replicadr-velero-plugins"),
    };
    let options = DrillOptions {
        plugin_binary,
        scale_vms: args.vms,
        failback: !args.no_failback,
        kill_velero_mid_restore: args.kill_velero_mid_restore,
        velero_log_level: args.velero_log_level,
        velero_client: (args.velero_client_qps, args.velero_client_burst),
        standby: args.standby,
    };
    let output = args.output;
    let (environment, report) = Box::pin(replicadr_drill::run(options, &mut |line| {
        output.progress(&format!("drill: {line}"));
    }))
    .await?;
    print!("{}", output.render(&report, replicadr_drill::render));
    if args.keep {
        eprintln!(
            "drill: both sites stay up until Ctrl-C\n  primary: KUBECONFIG={}\n  dr:      KUBECONFIG={}\n  S3:      {} (plain HTTP: {})",
            environment.primary.cluster.kubeconfig_path().display(),
            environment.dr.cluster.kubeconfig_path().display(),
            environment.s3_tls.endpoint(),
            environment.s3.endpoint()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(environment);
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

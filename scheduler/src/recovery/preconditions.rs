//! The failover's preconditions, each checked and reported before anything is written: the plugin
//! ConfigMap names this site, Velero's storage location is available, the backup verifies here
//! and its plan is complete, KubeVirt's API is served, the NFS servers answer (with
//! `--check-exports`), and the operator confirmed replication was stopped. Which of them
//! `--force` may override is [`super::report::Forcing`]'s one table.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt as _};
use replicadr_core::wire::{PHASE_AVAILABLE, POINTER_STATUS_PHASE};
use serde_json::Value;

use super::failover::Options;
use super::plan::{self, VolumePlan};
use super::report::{Outcome, Precondition, RecoveryReport};
use super::site::{self, BackupChoice, Planned, RecoveryError};
use super::vm_start::vm_resource;
use crate::velero;

/// The port `--check-exports` connects to on each NFS server.
const NFS_PORT: u16 = 2049;

/// Checks and reports every precondition and plans the restore.
pub(crate) async fn plan_with_preconditions(
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
        site::Scope {
            policy: options.policy.as_deref(),
            source_site: options.source_site.as_deref(),
        },
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
pub(crate) fn preconditions_allow(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::plan::VolumeAction;
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
}

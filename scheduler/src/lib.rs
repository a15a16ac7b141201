//! ReplicaDR's scheduler and recovery as a library: `BackupPolicy` resources ([`policy`]), when
//! they run ([`schedule`]), the metadata-only Velero backups they create ([`velero`]) and the site
//! that made each one ([`backup_site`]), what must exist before a backup is worth creating
//! ([`environment`]), a backup's life from creation to its published verification
//! ([`lifecycle`]), the verification of each backup from object storage ([`verify`]), where
//! results are written ([`publish`]), the service's controller ([`service`]) with its leader
//! election ([`leader`]), metrics ([`metrics`]) and HTTP endpoints ([`server`]); the operator's
//! operations: backups started by hand ([`manual`]), [`status`], [`gc`], failover and failback
//! ([`recovery`]) and the drill on real clusters ([`drill`]). Everything returns data; the
//! `replicadr` CLI crate renders it.

pub mod active_site;
pub mod backup_site;
pub mod clock;
pub mod drill;
pub mod duration;
pub mod environment;
pub mod gc;
pub mod leader;
pub mod lifecycle;
pub mod manual;
pub mod metrics;
pub mod policy;
pub mod publish;
pub mod recovery;
pub mod schedule;
pub mod server;
pub mod service;
pub mod status;
pub mod velero;
pub mod velero_schedule;
pub mod verify;

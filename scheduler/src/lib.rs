//! ReplicaDR's scheduler and operator CLI as a library: `BackupPolicy` resources ([`policy`]),
//! when they run ([`schedule`]), the metadata-only Velero backups they create ([`velero`]) and
//! the site that made each one ([`backup_site`]), a backup's life from creation to its published
//! verification ([`lifecycle`]), the verification of each backup from object storage
//! ([`verify`]), where results are written ([`publish`]), the service's controller ([`service`])
//! with its leader election ([`leader`]), metrics ([`metrics`]) and HTTP endpoints ([`server`]),
//! and the operator commands ([`cli`]).
//! `src/main.rs` only parses arguments and wires these together.

pub mod backup_site;
pub mod cli;
pub mod clock;
pub mod drill;
pub mod duration;
pub mod environment;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod publish;
pub mod recovery;
pub mod schedule;
pub mod server;
pub mod service;
pub mod velero;
pub mod verify;

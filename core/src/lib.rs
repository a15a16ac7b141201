//! ReplicaDR's facts about backups, shared by the Velero plugins and the scheduler: what the
//! project's wire names are ([`wire`]), where sites and their replicated NFS exports are
//! ([`sitemap`]), what an NFS volume is ([`nfs`]) and how a PV is rewritten onto another site's
//! export ([`remap`]), how a long name becomes a valid label value ([`names`]), how the plugin ConfigMap is read ([`plugin_config`]), how a Velero backup
//! tarball is read ([`tarball`], [`contents`]), what a backup must hold for a failover to
//! restore it ([`invariants`]), and what KubeVirt and CDI do with what a restore brings back
//! ([`kubevirt`]).
//!
//! Pure code over JSON values and readers: nothing here knows gRPC, the cluster client or a
//! command line, so verification, `replicadr plan` and the restore plugin run the same checks and
//! the same rewrite.

pub mod contents;
pub mod invariants;
pub mod kubevirt;
pub mod names;
pub mod nfs;
pub mod objects;
pub mod plugin_config;
pub mod remap;
pub mod sitemap;
pub mod tarball;
pub mod wire;

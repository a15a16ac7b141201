//! ReplicaDR's Velero plugins: the go-plugin process contract and kind services (`framework`) and
//! the actions themselves (`actions`). The site map, the NFS rewrite and the wire names they share
//! with the scheduler are in `replicadr-core`.

// stdout carries the go-plugin handshake and nothing else; the one print is in `framework`.
#![deny(clippy::print_stdout)]

pub mod actions;
pub mod framework;

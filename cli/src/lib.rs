//! The `replicadr` operator CLI's presentation: output formats and streams ([`output`]) and every
//! table it prints ([`render`]). `src/main.rs` parses arguments, calls the scheduler library and
//! maps outcomes to exit codes; the local drill (`replicadr-drill`) renders its reports here too.

pub mod output;
pub mod render;

//! The names this action derives from a snapshot: the replica PVC's name and the operation ID
//! Velero hands back on every progress poll. Both are pure functions of the snapshot's
//! namespace, name and UID, so a new plugin process (Velero starts one per poll) and a later
//! backup find the same replica without keeping any state.

use std::fmt;
use std::str::FromStr;

/// Every replica PVC name starts with this.
pub const NAME_PREFIX: &str = "replica-";
/// Hex digits of the UID hash in the name: 48 bits, so distinct snapshots in one namespace do not
/// collide in practice; a collision would still be caught by the ownership check, never reused.
const HASH_DIGITS: usize = 12;
/// Longest DNS-1123 label, the limit for a PVC name that is also used as a label value.
const MAX_NAME: usize = 63;

/// The replica PVC's name for a snapshot: `replica-<snapshot name, sanitised and truncated>-<12
/// hex digits of FNV-1a-64(uid)>`. Always a valid DNS-1123 label of at most 63 characters; the
/// same snapshot always gets the same name, and snapshots with different UIDs get different names
/// even when their names are equal or share a long prefix.
pub fn replica_pvc_name(snapshot_name: &str, snapshot_uid: &str) -> String {
    let hash = format!("{:016x}", fnv1a64(snapshot_uid.as_bytes()));
    let hash = &hash[..HASH_DIGITS];
    let budget = MAX_NAME - NAME_PREFIX.len() - 1 - HASH_DIGITS;
    let mut stem: String = snapshot_name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .take(budget)
        .collect();
    while stem.ends_with('-') {
        stem.pop();
    }
    let stem = stem.trim_start_matches('-');
    if stem.is_empty() {
        format!("{NAME_PREFIX}{hash}")
    } else {
        format!("{NAME_PREFIX}{stem}-{hash}")
    }
}

/// FNV-1a, 64 bit: tiny, and stable across Rust releases and platforms (std's hasher is neither
/// guaranteed), which the name needs because it must never change for a given snapshot.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// Whether `value` is a valid DNS-1123 label (what Kubernetes requires of most names).
pub fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_NAME
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// Whether `value` can be a label value: at most 63 characters of alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= MAX_NAME
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && value
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// The operation Velero tracks for one snapshot: `<namespace>/<snapshot name>/<snapshot uid>`.
/// None of the three can contain `/`, so the ID splits back unambiguously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationId {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl OperationId {
    /// The replica PVC's name for this snapshot.
    pub fn replica_name(&self) -> String {
        replica_pvc_name(&self.name, &self.uid)
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.name, self.uid)
    }
}

/// An operation ID this action did not issue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "operation ID {0:?} is not one this action issues; expected <namespace>/<VolumeSnapshot name>/<VolumeSnapshot uid>"
)]
pub struct BadOperationId(pub String);

impl FromStr for OperationId {
    type Err = BadOperationId;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = value.split('/').collect();
        match parts.as_slice() {
            [namespace, name, uid] if [namespace, name, uid].iter().all(|p| !p.is_empty()) => {
                Ok(Self {
                    namespace: (*namespace).to_owned(),
                    name: (*name).to_owned(),
                    uid: (*uid).to_owned(),
                })
            }
            _ => Err(BadOperationId(value.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_names_keep_the_snapshot_name() {
        let name = replica_pvc_name("vm-disk-snap", "6f1c0b8e-2d4a-4c3b-9f1e-0a1b2c3d4e5f");
        assert!(name.starts_with("replica-vm-disk-snap-"), "{name}");
        assert_eq!(name.len(), "replica-vm-disk-snap-".len() + HASH_DIGITS);
        // Pinned: the scheme is a contract with PVCs created by earlier releases.
        assert_eq!(name, "replica-vm-disk-snap-5520cacc7a95");
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn subdomain_names_and_odd_edges_become_labels() {
        assert_eq!(
            replica_pvc_name("snap.v1.daily", "u"),
            format!(
                "replica-snap-v1-daily-{}",
                &format!("{:016x}", fnv1a64(b"u"))[..12]
            )
        );
        let dotted = replica_pvc_name("...", "u");
        assert!(
            is_dns_label(&dotted) && dotted.starts_with("replica-"),
            "{dotted}"
        );
        assert!(!dotted.contains("--"), "{dotted}");
        let long = replica_pvc_name(&"a".repeat(253), "u");
        assert_eq!(long.len(), 63);
        assert!(is_dns_label(&long), "{long}");
    }

    #[test]
    fn kubevirt_style_names_are_distinguished_by_uid() {
        // KubeVirt names volume snapshots vmsnapshot-<vmsnapshot uid>-volume-<volume>: long, and
        // equal up to the truncation point for two volumes of one VM snapshot.
        let a = replica_pvc_name(
            "vmsnapshot-2b3f5bd4-8c2a-4a57-9d6e-3d1c5b7a9e10-volume-rootdisk",
            "uid-a",
        );
        let b = replica_pvc_name(
            "vmsnapshot-2b3f5bd4-8c2a-4a57-9d6e-3d1c5b7a9e10-volume-datadisk",
            "uid-b",
        );
        assert_ne!(a, b);
        assert!(is_dns_label(&a) && is_dns_label(&b));
    }

    #[test]
    fn operation_ids_round_trip_and_reject_foreign_ones() {
        let id = OperationId {
            namespace: "vms".into(),
            name: "snap-1".into(),
            uid: "1234".into(),
        };
        assert_eq!(id.to_string(), "vms/snap-1/1234");
        assert_eq!("vms/snap-1/1234".parse::<OperationId>(), Ok(id));
        for bad in [
            "",
            "vms/snap-1",
            "vms//1234",
            "a/b/c/d",
            "vms/snap-1/2024-01-01T00:00:00Z/x",
        ] {
            let error = bad.parse::<OperationId>().expect_err(bad);
            assert!(
                error
                    .to_string()
                    .contains("<namespace>/<VolumeSnapshot name>"),
                "{error}"
            );
        }
    }

    #[test]
    fn label_values() {
        assert!(is_label_value("vm-1.a_b"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-vm"));
        assert!(!is_label_value(&"a".repeat(64)));
    }

    fn snapshot_name() -> impl Strategy<Value = String> {
        // DNS-1123 subdomains as Kubernetes allows for VolumeSnapshot names, up to 253 characters.
        proptest::string::string_regex("[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?").expect("regex")
    }

    proptest! {
        #[test]
        fn names_are_dns_labels_and_deterministic(name in snapshot_name(), uid in "[-a-f0-9]{1,40}") {
            let first = replica_pvc_name(&name, &uid);
            prop_assert!(is_dns_label(&first), "{} is not a DNS label", first);
            prop_assert!(first.len() <= 63);
            prop_assert!(first.starts_with(NAME_PREFIX));
            prop_assert_eq!(&first, &replica_pvc_name(&name, &uid));
        }

        #[test]
        fn distinct_uids_give_distinct_names_for_equal_long_names(
            name in "[a-z]{60,200}",
            uid_a in "[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}",
            uid_b in "[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}",
        ) {
            prop_assume!(uid_a != uid_b);
            prop_assert_ne!(replica_pvc_name(&name, &uid_a), replica_pvc_name(&name, &uid_b));
        }

        #[test]
        fn any_input_gives_a_label(name in any::<String>(), uid in any::<String>()) {
            prop_assert!(is_dns_label(&replica_pvc_name(&name, &uid)));
        }

        #[test]
        fn operation_ids_round_trip(ns in "[a-z0-9-]{1,63}", name in snapshot_name(), uid in "[-a-f0-9]{1,40}") {
            let id = OperationId { namespace: ns, name, uid };
            prop_assert_eq!(id.to_string().parse::<OperationId>(), Ok(id));
        }
    }
}

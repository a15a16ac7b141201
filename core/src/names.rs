//! Names that must fit Kubernetes' limits: label values and DNS-1123 labels hold at most 63
//! characters. A longer name is cut and made unique again by a short hash of the whole name, by
//! the rule Velero applies to the label values it writes (`velero.io/backup-name`,
//! `velero.io/restore-name`), so a selector built here finds what Velero labelled.

use std::borrow::Cow;
use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

/// The longest label value, and the longest DNS-1123 label (a Restore's name is used as one).
pub const MAX_LABEL_VALUE: usize = 63;

/// How many hex digits of the SHA-256 stand in for what was cut.
const HASH_DIGITS: usize = 6;

/// `name` as a label value: itself when at most [`MAX_LABEL_VALUE`] characters, otherwise its
/// first 57 characters followed by the first six hex digits of the SHA-256 of the whole name.
/// This is Velero's `label.GetValidName`, so the value equals the one Velero writes for the same
/// backup or restore name.
pub fn label_value(name: &str) -> Cow<'_, str> {
    fitted(name, MAX_LABEL_VALUE)
}

/// `name` in at most `max` bytes (`max` at least 7): itself when it fits, otherwise cut to
/// `max - 6` bytes (on a character boundary) and ended with six hex digits of the SHA-256 of the
/// whole name, so that two names cut to the same prefix stay apart. Hex digits are lowercase
/// alphanumerics: the result ends as a DNS label and a label value must.
pub fn fitted(name: &str, max: usize) -> Cow<'_, str> {
    assert!(max > HASH_DIGITS, "room for more than the hash");
    if name.len() <= max {
        return Cow::Borrowed(name);
    }
    let kept = name.floor_char_boundary(max - HASH_DIGITS);
    let mut short = String::with_capacity(max);
    short.push_str(&name[..kept]);
    let digest = Sha256::digest(name.as_bytes());
    for byte in &digest[..HASH_DIGITS / 2] {
        let _ = write!(short, "{byte:02x}");
    }
    Cow::Owned(short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        let longest = "a".repeat(MAX_LABEL_VALUE);
        assert!(matches!(label_value(&longest), Cow::Borrowed(v) if v == longest));
        assert_eq!(label_value(""), "");
    }

    /// The expected values are what Velero v1.18.3's `label.GetValidName` returns for the same
    /// inputs (run with Go against the module).
    #[test]
    fn long_names_are_cut_as_velero_cuts_them() {
        assert_eq!(
            label_value(&"b".repeat(64)),
            format!("{}a0fab1", "b".repeat(57))
        );
        assert_eq!(
            label_value("failover-dr-vms-a-rather-long-backup-name-made-by-hand-20261122180000"),
            "failover-dr-vms-a-rather-long-backup-name-made-by-hand-207bb474"
        );
    }

    #[test]
    fn names_cut_to_the_same_prefix_stay_apart() {
        let base = "p".repeat(70);
        let (one, two) = (format!("{base}-1"), format!("{base}-2"));
        let (first, second) = (fitted(&one, 40), fitted(&two, 40));
        assert_eq!((first.len(), second.len()), (40, 40));
        assert_ne!(first, second);
        assert_eq!(first[..34], second[..34]);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let name = format!("{}é{}", "a".repeat(56), "z".repeat(10));
        let short = fitted(&name, MAX_LABEL_VALUE);
        assert!(short.len() <= MAX_LABEL_VALUE, "{short}");
        assert!(short.starts_with(&"a".repeat(56)), "{short}");
    }
}

//! The backup tarball readers: the verifier's `archive::inspect` (with its cross-checks) and the
//! recovery plan's `BackupContents::read`. The first input byte picks the layer: odd bytes give
//! the rest as the `.tar.gz` itself (gzip framing), even bytes as the tar stream, gzipped here.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use replicadr_core::sitemap::SiteMap;
use replicadr_core::contents::BackupContents;
use replicadr_scheduler::verify::archive::{self, PvChecks};

static CHECKS: LazyLock<PvChecks> = LazyLock::new(|| {
    PvChecks::for_every_site(
        &SiteMap::from_yaml(replicadr_fuzz::SITE_MAP).expect("fixture site map"),
    )
});

fuzz_target!(|data: &[u8]| {
    let Some((&layer, rest)) = data.split_first() else {
        return;
    };
    let tarball = if layer % 2 == 1 {
        rest.to_vec()
    } else {
        replicadr_fuzz::gzip(rest)
    };
    if let Ok(mut inventory) = archive::inspect(&tarball[..], &CHECKS) {
        archive::cross_check(&mut inventory, None, &[], || Ok(&tarball[..]));
    }
    let _ = BackupContents::read(&tarball[..]);
});

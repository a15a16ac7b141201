//! Velero's `<backup>-resource-list.json.gz` reader, and the cross-check of a healthy backup's
//! inventory against it. The first input byte picks the layer as in `backup_tarball`.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use replicadr_core::sitemap::SiteMap;
use replicadr_scheduler::verify::archive::{self, PvChecks, ResourceList};
use replicadr_lab::fixture;

/// The healthy fixture backup's tarball and the checks it is read with.
static HEALTHY: LazyLock<(Vec<u8>, PvChecks)> = LazyLock::new(|| {
    let checks =
        PvChecks::for_every_site(&SiteMap::from_yaml(fixture::SITE_MAP).expect("fixture site map"));
    let (tarball, _) = fixture::healthy_vm_backup().expect("fixture backup");
    (tarball, checks)
});

fuzz_target!(|data: &[u8]| {
    let Some((&layer, rest)) = data.split_first() else {
        return;
    };
    let gzipped = if layer % 2 == 1 {
        rest.to_vec()
    } else {
        replicadr_fuzz::gzip(rest)
    };
    let Ok(list) = ResourceList::parse(gzipped) else {
        return;
    };
    let mut entries = 0u64;
    list.for_each(|_, _| entries += 1);
    assert_eq!(
        entries,
        list.len(),
        "for_each visits every entry parse counted"
    );
    let (tarball, checks) = &*HEALTHY;
    // Inventory is not Clone: the fixture (nine items) is read again, which costs little.
    let mut inventory = archive::inspect(&tarball[..], checks).expect("fixture backup reads");
    archive::cross_check(&mut inventory, Some(&list), &[], || Ok(&tarball[..]));
});

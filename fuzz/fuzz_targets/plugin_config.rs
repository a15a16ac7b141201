//! The plugin ConfigMap reader: every action's configuration built from arbitrary ConfigMap data,
//! its keys drawn mostly from the ones the actions read.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use replicadr_plugins::actions::PluginConfig;
use replicadr_plugins::actions::pv_retain::PvRetain;
use replicadr_plugins::actions::pv_site_remap::PvSiteRemap;
use replicadr_plugins::actions::snapshot_to_pvc::SnapshotToPvcConfig;

#[derive(Debug, Arbitrary)]
enum Key {
    SiteMap,
    LocalSite,
    RestoreReclaimPolicy,
    RetainUnmapped,
    StorageClassMap,
    CreatedNotBoundIsDone,
    ReplicaBindWaitSeconds,
    Other(String),
}

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::SiteMap => "siteMap",
            Key::LocalSite => "localSite",
            Key::RestoreReclaimPolicy => "restoreReclaimPolicy",
            Key::RetainUnmapped => "retainUnmapped",
            Key::StorageClassMap => "storageClassMap",
            Key::CreatedNotBoundIsDone => "createdNotBoundIsDone",
            Key::ReplicaBindWaitSeconds => "replicaBindWaitSeconds",
            Key::Other(name) => name,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Start from the fixture's valid site map and local site, or from nothing.
    from_valid: bool,
    entries: Vec<(Key, String)>,
}

fuzz_target!(|input: Input| {
    let mut config = if input.from_valid {
        replicadr_fuzz::plugin_config(&[])
    } else {
        PluginConfig {
            origin: "velero/replicadr-plugins".to_owned(),
            data: BTreeMap::new(),
        }
    };
    for (key, value) in &input.entries {
        config.data.insert(key.name().to_owned(), value.clone());
    }
    for config in [None, Some(&config)] {
        let _ = PvSiteRemap::from_config(config);
        let _ = PvRetain::from_config(config);
        let _ = SnapshotToPvcConfig::from_config(config);
    }
});

//! What the fuzz targets share: the site map the actions are configured with (the verifier's own
//! fixture, two sites and NFS exports) and gzip, so that a target can fuzz the tar and JSON layers
//! under Velero's compression instead of stopping at the gzip header.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
pub use replicadr_lab::fixture::SITE_MAP;

/// `bytes` gzipped at the fastest level (the fuzzer's input is the uncompressed stream).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 2 + 64),
        Compression::fast(),
    );
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// The plugin ConfigMap data every item-action target runs with: the fixture site map, `dr` as the
/// local site.
pub fn plugin_config(extra: &[(&str, &str)]) -> replicadr_plugins::actions::PluginConfig {
    let mut data = std::collections::BTreeMap::from([
        ("siteMap".to_owned(), SITE_MAP.to_owned()),
        ("localSite".to_owned(), "dr".to_owned()),
    ]);
    for (key, value) in extra {
        data.insert((*key).to_owned(), (*value).to_owned());
    }
    replicadr_plugins::actions::PluginConfig {
        origin: "velero/replicadr-plugins".to_owned(),
        data,
    }
}

/// The output of an action's `execute` future. The actions the targets drive make no API calls,
/// so their futures finish on the first poll; one that does not is a finding of its own.
pub fn first_poll<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("an action without I/O waited on its first poll"),
    }
}

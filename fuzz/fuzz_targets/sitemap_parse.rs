//! The site map parser on arbitrary text; a map it accepts is then asked to place locations built
//! from the same input, on every site.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replicadr_core::sitemap::{ExportPath, NfsServer, SiteMap};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(map) = SiteMap::from_yaml(&text) else {
        return;
    };
    // Locations from the input's own words, so accepted maps get lookups near their exports.
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || "{},:'\"[]".contains(c))
        .collect();
    for server in words
        .iter()
        .filter_map(|w| NfsServer::parse(w).ok())
        .take(4)
    {
        for path in words
            .iter()
            .filter_map(|w| ExportPath::parse(w).ok())
            .take(4)
        {
            for site in map.sites() {
                let _ = map.place(site, &server, &path);
            }
            let _ = map.export_of(&server, &path);
        }
    }
});

//! ReplicaDR's Velero plugins: the go-plugin process contract and kind services (`framework`),
//! the actions themselves (`actions`), and the site map they and the scheduler share (`sitemap`).

pub mod actions;
pub mod framework;
pub mod sitemap;

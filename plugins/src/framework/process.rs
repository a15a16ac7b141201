//! The go-plugin process contract on the plugin side: refuse to run without Velero's magic
//! cookie, pick out the few host flags we use from Velero's argv, listen on a Unix socket and
//! announce it with the one handshake line stdout ever carries.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Velero's go-plugin handshake cookie.
pub const MAGIC_COOKIE_KEY: &str = "VELERO_PLUGIN";
/// The value Velero sets for [`MAGIC_COOKIE_KEY`].
pub const MAGIC_COOKIE_VALUE: &str = "hello";
/// The only application protocol version Velero speaks.
pub const APP_PROTOCOL_VERSION: u32 = 2;
/// go-plugin's core protocol version.
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// The host flags the plugin honours. Velero ≥ 1.15 passes every flag of `velero server` to
/// plugins, in `--flag value` and `--flag=value` forms, and a plugin must accept all of them, so
/// this picks known flags out of an argv it otherwise ignores rather than parsing it strictly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostArgs {
    /// `argv[0]` exactly: Velero execs the `command` we list, so it must be the path we ran as.
    pub command: String,
    pub log_level: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub namespace: Option<String>,
}

impl HostArgs {
    /// Reads the flags we use from `argv` (`argv[0]` first); everything else is ignored.
    pub fn from_argv<I: IntoIterator<Item = OsString>>(argv: I) -> Self {
        let words: Vec<String> = argv
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut host = HostArgs {
            command: words.first().cloned().unwrap_or_default(),
            ..HostArgs::default()
        };
        let mut rest = words.iter().skip(1).peekable();
        while let Some(arg) = rest.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            let slot = match flag {
                "--log-level" => &mut host.log_level,
                "--namespace" | "-n" => &mut host.namespace,
                "--kubeconfig" => {
                    let value = inline.or_else(|| take_value(&mut rest));
                    host.kubeconfig = value.map(PathBuf::from);
                    continue;
                }
                _ => continue,
            };
            *slot = inline.or_else(|| take_value(&mut rest));
        }
        host
    }
}

/// The next argument, if it is a value rather than another flag.
fn take_value<'a>(
    rest: &mut std::iter::Peekable<impl Iterator<Item = &'a String>>,
) -> Option<String> {
    rest.next_if(|next| !next.starts_with('-')).cloned()
}

/// Checks that Velero started us. Run by hand, the plugin explains itself and exits 1.
pub fn check_started_by_velero(
    cookie: Option<&str>,
    protocol_versions: Option<&str>,
) -> Result<(), String> {
    if cookie != Some(MAGIC_COOKIE_VALUE) {
        return Err(format!(
            "this binary is a Velero plugin and is not meant to be run by hand: Velero starts it with {MAGIC_COOKIE_KEY}={MAGIC_COOKIE_VALUE} set. \
             Install it in Velero's plugin directory (velero plugin add <image>, or OADP customPlugins)."
        ));
    }
    if let Some(versions) = protocol_versions {
        let supported = versions
            .split(',')
            .any(|v| v.trim().parse() == Ok(APP_PROTOCOL_VERSION));
        if !supported {
            return Err(format!(
                "the plugin host offers protocol versions {versions:?}; this plugin speaks only version {APP_PROTOCOL_VERSION}"
            ));
        }
    }
    Ok(())
}

/// Where Velero's plugin init container mounts the shared plugins volume.
pub const DEFAULT_INSTALL_DIR: &str = "/target";

/// The image entrypoint's job (`replicadr-velero-plugins install [DIR]`): copy this binary into
/// the plugins volume that Velero scans, executable, replacing any older copy atomically. Needs no
/// shell or `cp` in the image and writes nothing but the target file.
pub fn install_self(source: &Path, dir: &Path) -> io::Result<PathBuf> {
    let name = source.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the running binary has no file name",
        )
    })?;
    let target = dir.join(name);
    let staging = dir.join(format!(".{}.partial", name.to_string_lossy()));
    std::fs::copy(source, &staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&staging, &target)?;
    Ok(target)
}

/// The directory for the plugin socket: go-plugin's `PLUGIN_UNIX_SOCKET_DIR`, else the temp dir.
pub fn socket_dir(unix_socket_dir: Option<OsString>) -> PathBuf {
    unix_socket_dir
        .filter(|d| !d.is_empty())
        .map_or_else(std::env::temp_dir, PathBuf::from)
}

/// A listening Unix socket whose file is removed when this is dropped.
#[derive(Debug)]
pub struct PluginSocket {
    pub listener: std::os::unix::net::UnixListener,
    pub path: tempfile::TempPath,
}

/// Binds a new socket named like go-plugin's (`plugin…`) in `dir`, and hands it to `group`
/// (go-plugin's `PLUGIN_UNIX_SOCKET_GROUP`, a group name or id) with mode 0660 when given.
pub fn bind_socket(dir: &Path, group: Option<&str>) -> io::Result<PluginSocket> {
    let file = tempfile::Builder::new()
        .prefix("plugin")
        .make_in(dir, |path| std::os::unix::net::UnixListener::bind(path))?;
    let (listener, path) = file.into_parts();
    if let Some(group) = group.filter(|g| !g.is_empty()) {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(&path, None, Some(gid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    }
    Ok(PluginSocket { listener, path })
}

/// Resolves a group name or numeric id through /etc/group.
fn group_id(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    std::fs::read_to_string("/etc/group")?
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            (name == group).then_some(gid)
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("PLUGIN_UNIX_SOCKET_GROUP: no group named {group:?}"),
            )
        })
}

/// The handshake line: `CORE|APP|unix|<path>|grpc|`, an empty certificate field (Velero runs
/// without TLS) and no multiplexing field.
pub fn handshake_line(socket: &Path) -> String {
    format!(
        "{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|unix|{}|grpc|",
        socket.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> HostArgs {
        HostArgs::from_argv(argv.iter().map(OsString::from))
    }

    #[test]
    fn picks_known_flags_in_both_forms_and_ignores_the_rest() {
        let parsed = args(&[
            "/plugins/replicadr-velero-plugins",
            "--uploader-type=kopia",
            "--features",
            "EnableCSI",
            "--log-level",
            "debug",
            "--default-volumes-to-fs-backup",
            "-n",
            "openshift-adp",
            "--kubeconfig=/k/config",
            "--client-qps",
            "50",
        ]);
        assert_eq!(parsed.command, "/plugins/replicadr-velero-plugins");
        assert_eq!(parsed.log_level.as_deref(), Some("debug"));
        assert_eq!(parsed.namespace.as_deref(), Some("openshift-adp"));
        assert_eq!(parsed.kubeconfig, Some(PathBuf::from("/k/config")));
    }

    #[test]
    fn a_flag_without_value_does_not_swallow_the_next_flag() {
        let parsed = args(&["p", "--log-level", "--namespace=velero"]);
        assert_eq!(parsed.log_level, None);
        assert_eq!(parsed.namespace.as_deref(), Some("velero"));
    }

    #[test]
    fn argv0_is_kept_verbatim() {
        assert_eq!(
            args(&["./relative/../plugin"]).command,
            "./relative/../plugin"
        );
    }

    #[test]
    fn the_cookie_is_required() {
        let err = check_started_by_velero(None, None).expect_err("refused");
        assert!(err.contains("VELERO_PLUGIN=hello") && err.contains("not meant to be run by hand"));
        assert!(check_started_by_velero(Some("bye"), None).is_err());
        assert!(check_started_by_velero(Some("hello"), Some("2")).is_ok());
        assert!(check_started_by_velero(Some("hello"), Some("1, 2")).is_ok());
        assert!(
            check_started_by_velero(Some("hello"), Some("3"))
                .expect_err("version")
                .contains("only version 2")
        );
    }

    #[test]
    fn handshake_has_the_go_plugin_shape() {
        assert_eq!(
            handshake_line(Path::new("/tmp/plugin123")),
            "1|2|unix|/tmp/plugin123|grpc|"
        );
    }

    #[test]
    fn socket_files_are_created_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = bind_socket(dir.path(), None).expect("bind");
        let path = socket.path.to_path_buf();
        assert!(
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .starts_with("plugin")
        );
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        drop(socket);
        assert!(!path.exists());
    }

    #[test]
    fn install_copies_an_executable_and_replaces_older_copies() {
        let from = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        let source = from.path().join("replicadr-velero-plugins");
        std::fs::write(&source, b"new").expect("write");
        std::fs::write(to.path().join("replicadr-velero-plugins"), b"old").expect("write");
        let installed = install_self(&source, to.path()).expect("install");
        assert_eq!(std::fs::read(&installed).expect("read"), b"new");
        let mode = std::fs::metadata(&installed)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_dir(to.path()).expect("list").count(),
            1,
            "no staging file left behind"
        );
    }

    #[test]
    fn socket_dir_prefers_go_plugins_variable() {
        assert_eq!(socket_dir(Some("/run/x".into())), PathBuf::from("/run/x"));
        assert_eq!(socket_dir(Some(OsString::new())), std::env::temp_dir());
        assert_eq!(socket_dir(None), std::env::temp_dir());
    }
}

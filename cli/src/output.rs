//! Where the operator commands write: the result on stdout in the format asked for, progress
//! lines on stdout with a table and on stderr with JSON or YAML (so that stdout stays parseable),
//! and the library's logs on stderr, coloured only on a terminal and never with `NO_COLOR` set.

use std::io::{IsTerminal as _, Write as _};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

impl Output {
    /// `value` as JSON or YAML; `None` for a table, which each command renders itself.
    pub fn structured<T: serde::Serialize>(self, value: &T) -> Option<String> {
        match self {
            Output::Table => None,
            Output::Json => {
                Some(serde_json::to_string_pretty(value).expect("reports serialise") + "\n")
            }
            Output::Yaml => Some(serde_yaml_ng::to_string(value).expect("reports serialise")),
        }
    }

    /// `value` in this format, or `table(value)` for a table.
    pub fn render<T: serde::Serialize>(
        self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> String {
        self.structured(value).unwrap_or_else(|| table(value))
    }

    /// Writes one progress line where this format keeps it apart from the result.
    pub fn progress(self, line: &str) {
        if self == Output::Table {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else {
            eprintln!("{line}");
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` or else `default_filter`, coloured only where
/// [`colour_logs`] allows.
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_ansi(colour_logs())
        .with_writer(std::io::stderr)
        .init();
}

/// The exit code of a command that could not run (2), after printing why.
pub fn could_not_run(error: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {error:#}");
    std::process::ExitCode::from(2)
}

/// Whether log lines on stderr may carry ANSI colours: only on a terminal, and never when
/// `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
pub fn colour_logs() -> bool {
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_colour && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_output_is_complete_json_and_yaml() {
        let value = serde_json::json!({"backup": "b1", "verified": false});
        let json = Output::Json.structured(&value).expect("json");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).expect("parses"),
            value
        );
        let yaml = Output::Yaml.structured(&value).expect("yaml");
        assert!(yaml.contains("backup: b1"), "{yaml}");
        assert_eq!(Output::Table.structured(&value), None);
    }
}

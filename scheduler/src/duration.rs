//! Durations written the way Go's `time.ParseDuration` and Velero (`ttl: 720h0m0s`) write them:
//! a sequence of `<number><unit>` with units `h`, `m`, `s`, `ms`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration parsed from Go syntax; displays back in Go's canonical form (`1h30m0s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a duration ({problem}); write e.g. \"30m\", \"6h\", \"1h30m\" or \"720h0m0s\""
)]
pub struct DurationError {
    pub value: String,
    pub problem: &'static str,
}

impl GoDuration {
    /// The duration as a standard one.
    pub fn as_std(self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(duration: Duration) -> Self {
        Self(duration)
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, DurationError> {
        let error = |problem| DurationError {
            value: text.to_owned(),
            problem,
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(error("empty"));
        }
        if rest == "0" {
            return Ok(Self(Duration::ZERO));
        }
        let mut total_ms: u128 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .ok_or_else(|| error("a number lacks its unit"))?;
            if digits == 0 {
                return Err(error("expected a number"));
            }
            let number: f64 = rest[..digits]
                .parse()
                .map_err(|_| error("malformed number"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit_ms: f64 = match &rest[..unit_len] {
                "h" => 3_600_000.0,
                "m" => 60_000.0,
                "s" => 1_000.0,
                "ms" => 1.0,
                _ => return Err(error("units are h, m, s and ms")),
            };
            rest = &rest[unit_len..];
            let part = number * unit_ms;
            if !part.is_finite() || part > 1e15 {
                return Err(error("too large"));
            }
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "checked finite, non-negative and below 1e15 above"
            )]
            let part = part.round() as u128;
            total_ms += part;
        }
        let millis = u64::try_from(total_ms).map_err(|_| error("too large"))?;
        Ok(Self(Duration::from_millis(millis)))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
        let millis = self.0.subsec_millis();
        let seconds = if millis == 0 {
            format!("{seconds}s")
        } else {
            format!("{seconds}.{millis:03}s")
        };
        if hours > 0 {
            write!(f, "{hours}h{minutes}m{seconds}")
        } else if minutes > 0 {
            write!(f, "{minutes}m{seconds}")
        } else {
            f.write_str(&seconds)
        }
    }
}

/// A duration as kubectl prints ages: `45s`, `12m`, `3h20m`, `2d4h`. The one formatter of short
/// durations, for messages and for the CLI's tables alike.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Duration {
        text.parse::<GoDuration>().expect(text).as_std()
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_mins(10)), "10m");
        assert_eq!(human(Duration::from_mins(200)), "3h20m");
        assert_eq!(human(Duration::from_hours(52)), "2d4h");
    }

    #[test]
    fn parses_go_forms() {
        assert_eq!(parse("30m"), Duration::from_mins(30));
        assert_eq!(parse("720h0m0s"), Duration::from_hours(720));
        assert_eq!(parse("1h30m"), Duration::from_mins(90));
        assert_eq!(parse("1.5h"), Duration::from_mins(90));
        assert_eq!(parse("250ms"), Duration::from_millis(250));
        assert_eq!(parse("0"), Duration::ZERO);
    }

    #[test]
    fn rejects_with_the_value_and_examples() {
        for bad in ["", "5", "5d", "m", "1h-2m", "abc"] {
            let error = bad.parse::<GoDuration>().expect_err(bad).to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
            assert!(error.contains("720h0m0s"), "{error}");
        }
    }

    #[test]
    fn displays_like_go() {
        assert_eq!(
            GoDuration(Duration::from_hours(720)).to_string(),
            "720h0m0s"
        );
        assert_eq!(GoDuration(Duration::from_secs(90)).to_string(), "1m30s");
        assert_eq!(
            GoDuration(Duration::from_millis(1500)).to_string(),
            "1.500s"
        );
    }
}

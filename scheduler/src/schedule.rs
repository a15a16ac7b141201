//! When a policy runs: its schedule (5-field cron as Velero and `CronJob` write it, the `@hourly`
//! family, or `@every <duration>`), its time zone, the slot a moment belongs to, the backup name of
//! a slot, the deterministic jitter of a slot, and what to do about slots missed while nothing ran.
//!
//! Everything here is pure: the caller passes the current time in.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::duration::GoDuration;

/// The forms `spec.schedule` accepts, quoted in every rejection.
pub const ACCEPTED_FORMS: &str = "a 5-field cron expression \"MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK\" \
     (e.g. \"0 2 * * *\" or \"*/30 * * * 1-5\"), one of @hourly, @daily, @midnight, @weekly, @monthly, \
     @yearly, @annually, or \"@every <duration>\" with a whole number of minutes (e.g. \"@every 30m\", \
     \"@every 6h\")";

const CRON_FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
/// How many upcoming occurrences the expected interval looks at: enough to see a weekly gap in
/// a weekday-only schedule.
const INTERVAL_SAMPLES: usize = 64;

/// A validated `spec.schedule`.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Cron(Box<Cron>),
    /// Slots every `interval`, aligned to the Unix epoch so every replica computes the same ones.
    Every(Duration),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why `spec.schedule` or `spec.timeZone` was rejected. Messages name the field, the value and
/// what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("spec.schedule {value:?}: {problem}; accepted: {ACCEPTED_FORMS}")]
    InvalidSchedule { value: String, problem: String },
    #[error(
        "spec.timeZone {value:?} is not a known IANA time zone; use a name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\""
    )]
    UnknownTimeZone { value: String },
}

impl ScheduleError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ScheduleError::InvalidSchedule { .. } => "InvalidSchedule",
            ScheduleError::UnknownTimeZone { .. } => "UnknownTimeZone",
        }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, ScheduleError> {
        let trimmed = text.trim();
        let invalid = |problem: String| ScheduleError::InvalidSchedule {
            value: text.to_owned(),
            problem,
        };
        if let Some(rest) = trimmed.strip_prefix("@every") {
            let rest = rest.trim();
            let interval = rest
                .parse::<GoDuration>()
                .map_err(|e| invalid(format!("@every {e}")))?
                .as_std();
            if interval < Duration::from_mins(1) || interval.as_secs() % 60 != 0 {
                return Err(invalid(format!(
                    "@every {rest} is not a whole number of minutes (at least 1m): backups are named by the minute"
                )));
            }
            return Ok(Self {
                text: trimmed.to_owned(),
                kind: Kind::Every(interval),
            });
        }
        let expression = match trimmed.to_ascii_lowercase().as_str() {
            "@midnight" => "@daily".to_owned(),
            _ => trimmed.to_owned(),
        };
        if !expression.starts_with('@') {
            let fields: Vec<&str> = expression.split_whitespace().collect();
            if fields.len() != CRON_FIELDS.len() {
                return Err(invalid(format!(
                    "has {} fields, expected 5 (seconds and years are not accepted)",
                    fields.len()
                )));
            }
            // croner names no field in its errors: find the first field that fails on its own.
            for (index, field) in fields.iter().enumerate() {
                let mut alone = ["*"; 5];
                alone[index] = field;
                if let Err(error) = parser().parse(&alone.join(" ")) {
                    return Err(invalid(format!(
                        "{} field {field:?} is invalid ({error})",
                        CRON_FIELDS[index]
                    )));
                }
            }
        }
        let cron = parser()
            .parse(&expression)
            .map_err(|error| invalid(error.to_string()))?;
        Ok(Self {
            text: trimmed.to_owned(),
            kind: Kind::Cron(Box::new(cron)),
        })
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// Parses `spec.timeZone`; empty means UTC.
pub fn parse_time_zone(name: Option<&str>) -> Result<TimeZone, ScheduleError> {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|_| ScheduleError::UnknownTimeZone {
            value: name.to_owned(),
        }),
    }
}

impl Schedule {
    /// The newest slot at or before `now`, or `None` if the schedule never fired before `now`.
    pub fn slot_at_or_before(&self, now: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(interval) => {
                let step = i64::try_from(interval.as_secs()).ok()?;
                let secs = now.as_second();
                Timestamp::from_second(secs - secs.rem_euclid(step)).ok()
            }
            Kind::Cron(cron) => {
                let zoned = now.to_zoned(zone.clone());
                cron.find_previous_occurrence(&zoned, true)
                    .ok()
                    .map(|z| z.timestamp())
            }
        }
    }

    /// The first slot strictly after `after`.
    pub fn next_slot(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(interval) => {
                let step = i64::try_from(interval.as_secs()).ok()?;
                let secs = after.as_second();
                Timestamp::from_second(secs - secs.rem_euclid(step) + step).ok()
            }
            Kind::Cron(cron) => {
                let zoned: Zoned = after.to_zoned(zone.clone());
                cron.find_next_occurrence(&zoned, false)
                    .ok()
                    .map(|z| z.timestamp())
            }
        }
    }

    /// The longest gap between consecutive slots over the next 64 slots from
    /// `from`: the interval an RPO alert should compare against (a weekday-only schedule expects
    /// a weekend gap).
    pub fn expected_interval(&self, from: Timestamp, zone: &TimeZone) -> Duration {
        if let Kind::Every(interval) = &self.kind {
            return *interval;
        }
        let mut longest = 0_i64;
        let mut previous = self.slot_at_or_before(from, zone).unwrap_or(from);
        for _ in 0..INTERVAL_SAMPLES {
            let Some(next) = self.next_slot(previous, zone) else {
                break;
            };
            longest = longest.max(next.as_second() - previous.as_second());
            previous = next;
        }
        Duration::from_secs(u64::try_from(longest).unwrap_or_default())
    }

    /// Slots strictly after `after` and strictly before `before`, counted up to `cap`.
    pub fn count_slots_between(
        &self,
        after: Timestamp,
        before: Timestamp,
        zone: &TimeZone,
        cap: u32,
    ) -> u32 {
        let mut count = 0;
        let mut cursor = after;
        while count < cap {
            match self.next_slot(cursor, zone) {
                Some(next) if next < before => {
                    count += 1;
                    cursor = next;
                }
                _ => break,
            }
        }
        count
    }
}

/// The backup name of a scheduled slot: `<policy>-<YYYYMMDDHHMM>` in UTC. UTC, not the policy's
/// zone, because a wall clock hour repeats when daylight saving time ends and two slots would
/// share a name.
pub fn slot_backup_name(policy: &str, slot: Timestamp) -> String {
    format!("{policy}-{}", slot.strftime("%Y%m%d%H%M"))
}

/// The name of retry `attempt` (1-based) of a slot's backup.
pub fn retry_backup_name(policy: &str, slot: Timestamp, attempt: u32) -> String {
    format!("{}-r{attempt}", slot_backup_name(policy, slot))
}

/// The name of a backup started by hand at `now`: seconds resolution, and a word that no slot
/// name contains.
pub fn manual_backup_name(policy: &str, now: Timestamp) -> String {
    format!("{policy}-manual-{}", now.strftime("%Y%m%d%H%M%S"))
}

/// The most a backup name adds to its policy's name: a manual backup's
/// `-manual-YYYYMMDDHHMMSS`. A slot's `-YYYYMMDDHHMM` and a retry's `-YYYYMMDDHHMM-r10`
/// (`retries.limit` is at most 10) are shorter.
pub const LONGEST_BACKUP_NAME_SUFFIX: usize = "-manual-".len() + "YYYYMMDDHHMMSS".len();

/// The delay after a slot before its backup starts, the same on every replica: a hash of the
/// policy's UID and the slot, in `0..=max_seconds`. Spreads policies sharing a schedule.
pub fn jitter(policy_uid: &str, slot: Timestamp, max_seconds: u32) -> Duration {
    if max_seconds == 0 {
        return Duration::ZERO;
    }
    // FNV-1a: stable across Rust releases, unlike `DefaultHasher`.
    let mut hasher = Fnv1a::default();
    policy_uid.hash(&mut hasher);
    slot.as_second().hash(&mut hasher);
    Duration::from_secs(hasher.finish() % (u64::from(max_seconds) + 1))
}

#[derive(Debug)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What to do about slots that passed while no backup ran (scheduler down, policy paused).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum MissedRunPolicy {
    /// Run the newest missed slot once, however late; older missed slots are counted, not run.
    #[default]
    RunOnce,
    /// Run a slot only within its starting deadline; otherwise wait for the next slot.
    Skip,
}

/// What the scheduler should do now for one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due; wake again at `next`.
    Wait { next: Option<Timestamp> },
    /// Start the backup of `slot` now. `missed` slots before it were never run.
    Run { slot: Timestamp, missed: u32 },
    /// The slot is due but its jitter has not passed yet.
    Jitter { slot: Timestamp, at: Timestamp },
    /// The newest slot is too late to run under `Skip`; `missed` counts it and older ones.
    Skip {
        slot: Timestamp,
        missed: u32,
        next: Option<Timestamp>,
    },
}

/// The inputs of [`decide`] besides the time.
#[derive(Debug, Clone)]
pub struct SlotState<'a> {
    pub schedule: &'a Schedule,
    pub zone: &'a TimeZone,
    /// The slot last started (status `lastScheduleTime`); `None` for a new policy.
    pub last_slot: Option<Timestamp>,
    /// When the policy was created: a new policy does not run slots from before it existed.
    pub created: Timestamp,
    pub missed_run_policy: MissedRunPolicy,
    /// How late a slot may start under `Skip`.
    pub starting_deadline: Duration,
    pub jitter: Duration,
}

/// Decides whether the newest slot at or before `now` should run.
pub fn decide(state: &SlotState<'_>, now: Timestamp) -> Decision {
    let next = state.schedule.next_slot(now, state.zone);
    let Some(slot) = state.schedule.slot_at_or_before(now, state.zone) else {
        return Decision::Wait { next };
    };
    let floor = state.last_slot.unwrap_or(state.created);
    let already = match state.last_slot {
        Some(last) => slot <= last,
        // A new policy runs its first slot at or after creation, never one from before it.
        None => slot < state.created,
    };
    if already {
        return Decision::Wait { next };
    }
    let missed = state
        .schedule
        .count_slots_between(floor, slot, state.zone, 10_000);
    let late = now.duration_since(slot).unsigned_abs();
    if state.missed_run_policy == MissedRunPolicy::Skip && late > state.starting_deadline {
        return Decision::Skip {
            slot,
            missed: missed + 1,
            next,
        };
    }
    let at = slot + state.jitter;
    if now < at {
        return Decision::Jitter { slot, at };
    }
    Decision::Run { slot, missed }
}

#[cfg(test)]
mod tests;

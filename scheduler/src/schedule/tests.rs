use super::*;

fn ts(text: &str) -> Timestamp {
    text.parse().expect(text)
}

fn schedule(text: &str) -> Schedule {
    text.parse().expect(text)
}

#[test]
fn accepts_velero_and_cronjob_forms() {
    for text in [
        "0 2 * * *",
        "*/15 * * * *",
        "0 6 * * 1-5",
        "30 3 1 * *",
        "0 0 * * SUN",
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@every 30m",
        "@every 6h",
        "@every 1h30m",
    ] {
        text.parse::<Schedule>()
            .unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[test]
fn rejections_name_the_field_and_show_accepted_forms() {
    let cases = [
        ("0 25 * * *", "hour field \"25\""),
        ("61 * * * *", "minute field \"61\""),
        ("0 2 32 * *", "day-of-month field \"32\""),
        ("0 2 * 13 *", "month field \"13\""),
        ("0 2 * * 9", "day-of-week field \"9\""),
        ("0 0 2 * * *", "has 6 fields, expected 5"),
        ("0 2 * *", "has 4 fields, expected 5"),
        ("@every 30s", "whole number of minutes"),
        ("@every 5x", "not a duration"),
        ("@fortnightly", "Invalid"),
    ];
    for (text, needle) in cases {
        let error = text.parse::<Schedule>().expect_err(text).to_string();
        assert!(error.contains(needle), "{text}: {error}");
        assert!(
            error.starts_with(&format!("spec.schedule {text:?}")),
            "{error}"
        );
        assert!(
            error.contains("@every 30m") && error.contains("0 2 * * *"),
            "{error}"
        );
    }
}

#[test]
fn time_zones_are_iana_names() {
    assert_eq!(parse_time_zone(None).expect("utc"), TimeZone::UTC);
    assert!(parse_time_zone(Some("Europe/Berlin")).is_ok());
    let error = parse_time_zone(Some("Mars/Olympus")).expect_err("unknown");
    assert_eq!(error.reason(), "UnknownTimeZone");
    assert!(error.to_string().contains("\"Mars/Olympus\""), "{error}");
}

#[test]
fn cron_slots_follow_the_time_zone() {
    let daily = schedule("0 2 * * *");
    let berlin = parse_time_zone(Some("Europe/Berlin")).expect("zone");
    // 02:00 in Berlin (CET, +01:00) is 01:00 UTC in January.
    let slot = daily
        .slot_at_or_before(ts("2026-01-10T05:00:00Z"), &berlin)
        .expect("slot");
    assert_eq!(slot, ts("2026-01-10T01:00:00Z"));
    assert_eq!(
        daily.next_slot(slot, &berlin),
        Some(ts("2026-01-11T01:00:00Z"))
    );
    // A slot time itself is its own slot.
    assert_eq!(
        daily.slot_at_or_before(ts("2026-01-10T01:00:00Z"), &berlin),
        Some(slot)
    );
}

#[test]
fn every_slots_are_epoch_aligned() {
    let every = schedule("@every 30m");
    let utc = TimeZone::UTC;
    assert_eq!(
        every.slot_at_or_before(ts("2026-03-01T10:47:13Z"), &utc),
        Some(ts("2026-03-01T10:30:00Z"))
    );
    assert_eq!(
        every.next_slot(ts("2026-03-01T10:30:00Z"), &utc),
        Some(ts("2026-03-01T11:00:00Z"))
    );
}

#[test]
fn expected_interval_is_the_longest_gap() {
    let utc = TimeZone::UTC;
    let now = ts("2026-03-04T12:00:00Z");
    assert_eq!(
        schedule("@hourly").expected_interval(now, &utc),
        Duration::from_hours(1)
    );
    assert_eq!(
        schedule("@every 30m").expected_interval(now, &utc),
        Duration::from_mins(30)
    );
    // Weekdays at 06:00: Friday to Monday is three days.
    assert_eq!(
        schedule("0 6 * * 1-5").expected_interval(now, &utc),
        Duration::from_hours(72)
    );
}

#[test]
fn slot_names_are_utc_minutes_and_a_repeated_hour_runs_once() {
    assert_eq!(
        slot_backup_name("vms", ts("2026-03-01T02:05:00Z")),
        "vms-202603010205"
    );
    assert_eq!(
        retry_backup_name("vms", ts("2026-03-01T02:05:00Z"), 2),
        "vms-202603010205-r2"
    );
    assert_eq!(
        manual_backup_name("vms", ts("2026-03-01T02:05:09Z")),
        "vms-manual-20260301020509"
    );
    // The longest policy name accepted makes backup names that are still label values.
    let longest = "p".repeat(crate::policy::MAX_POLICY_NAME);
    let slot = ts("2026-12-31T23:59:59Z");
    let manual = manual_backup_name(&longest, slot);
    assert_eq!(
        manual.len(),
        replicadr_core::names::MAX_LABEL_VALUE,
        "{manual}"
    );
    assert!(slot_backup_name(&longest, slot).len() < manual.len());
    assert!(retry_backup_name(&longest, slot, 10).len() < manual.len());
    // Berlin's clocks go back at 03:00 CEST on 2026-10-25: 02:30 happens twice.
    let berlin = parse_time_zone(Some("Europe/Berlin")).expect("zone");
    let half_past = schedule("30 2 * * *");
    let first = half_past
        .slot_at_or_before(ts("2026-10-25T00:45:00Z"), &berlin)
        .expect("first 02:30");
    let second = half_past
        .slot_at_or_before(ts("2026-10-25T01:45:00Z"), &berlin)
        .expect("second 02:30");
    // croner, like cron, runs a wall clock time that happens twice once: one slot, one name.
    assert_eq!(first, ts("2026-10-25T00:30:00Z"));
    assert_eq!(second, first);
}

#[test]
fn jitter_is_bounded_deterministic_and_spread() {
    let slot = ts("2026-03-01T02:00:00Z");
    assert_eq!(jitter("uid", slot, 0), Duration::ZERO);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..200 {
        let uid = format!("uid-{i}");
        let value = jitter(&uid, slot, 60);
        assert!(value <= Duration::from_mins(1), "{value:?}");
        assert_eq!(value, jitter(&uid, slot, 60), "same on every replica");
        seen.insert(value);
    }
    assert!(seen.len() > 30, "spread over the window: {}", seen.len());
}

fn state<'a>(
    schedule: &'a Schedule,
    zone: &'a TimeZone,
    last: Option<&str>,
    policy: MissedRunPolicy,
) -> SlotState<'a> {
    SlotState {
        schedule,
        zone,
        last_slot: last.map(ts),
        created: ts("2026-01-01T00:00:00Z"),
        missed_run_policy: policy,
        starting_deadline: Duration::from_mins(5),
        jitter: Duration::ZERO,
    }
}

#[test]
fn a_due_slot_runs_once() {
    let hourly = schedule("@hourly");
    let utc = TimeZone::UTC;
    let s = state(
        &hourly,
        &utc,
        Some("2026-03-01T09:00:00Z"),
        MissedRunPolicy::RunOnce,
    );
    assert_eq!(
        decide(&s, ts("2026-03-01T10:00:30Z")),
        Decision::Run {
            slot: ts("2026-03-01T10:00:00Z"),
            missed: 0
        }
    );
    let done = state(
        &hourly,
        &utc,
        Some("2026-03-01T10:00:00Z"),
        MissedRunPolicy::RunOnce,
    );
    assert_eq!(
        decide(&done, ts("2026-03-01T10:20:00Z")),
        Decision::Wait {
            next: Some(ts("2026-03-01T11:00:00Z"))
        }
    );
}

#[test]
fn run_once_runs_the_newest_missed_slot_and_counts_the_rest() {
    let hourly = schedule("@hourly");
    let utc = TimeZone::UTC;
    let s = state(
        &hourly,
        &utc,
        Some("2026-03-01T06:00:00Z"),
        MissedRunPolicy::RunOnce,
    );
    assert_eq!(
        decide(&s, ts("2026-03-01T10:40:00Z")),
        Decision::Run {
            slot: ts("2026-03-01T10:00:00Z"),
            missed: 3
        }
    );
}

#[test]
fn skip_runs_only_within_the_starting_deadline() {
    let hourly = schedule("@hourly");
    let utc = TimeZone::UTC;
    let s = state(
        &hourly,
        &utc,
        Some("2026-03-01T06:00:00Z"),
        MissedRunPolicy::Skip,
    );
    assert_eq!(
        decide(&s, ts("2026-03-01T10:40:00Z")),
        Decision::Skip {
            slot: ts("2026-03-01T10:00:00Z"),
            missed: 4,
            next: Some(ts("2026-03-01T11:00:00Z"))
        }
    );
    assert_eq!(
        decide(&s, ts("2026-03-01T10:04:00Z")),
        Decision::Run {
            slot: ts("2026-03-01T10:00:00Z"),
            missed: 3
        }
    );
}

#[test]
fn a_new_policy_does_not_run_slots_from_before_it_existed() {
    let daily = schedule("0 2 * * *");
    let utc = TimeZone::UTC;
    let mut s = state(&daily, &utc, None, MissedRunPolicy::RunOnce);
    s.created = ts("2026-03-01T10:00:00Z");
    assert_eq!(
        decide(&s, ts("2026-03-01T10:00:05Z")),
        Decision::Wait {
            next: Some(ts("2026-03-02T02:00:00Z"))
        }
    );
    assert_eq!(
        decide(&s, ts("2026-03-02T02:00:01Z")),
        Decision::Run {
            slot: ts("2026-03-02T02:00:00Z"),
            missed: 0
        }
    );
}

#[test]
fn jitter_delays_the_start_not_the_slot() {
    let hourly = schedule("@hourly");
    let utc = TimeZone::UTC;
    let mut s = state(
        &hourly,
        &utc,
        Some("2026-03-01T09:00:00Z"),
        MissedRunPolicy::RunOnce,
    );
    s.jitter = Duration::from_secs(40);
    assert_eq!(
        decide(&s, ts("2026-03-01T10:00:10Z")),
        Decision::Jitter {
            slot: ts("2026-03-01T10:00:00Z"),
            at: ts("2026-03-01T10:00:40Z")
        }
    );
    assert!(matches!(
        decide(&s, ts("2026-03-01T10:00:40Z")),
        Decision::Run { .. }
    ));
}

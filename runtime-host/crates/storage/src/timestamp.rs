//! Point timestamps: the range storage accepts, conversions to the driver's time type, and the
//! calendar months that `points` is partitioned by.
//!
//! Timestamps cross the crate boundary as milliseconds since the Unix epoch (UTC) and reach
//! PostgreSQL as `timestamptz` through `SystemTime`, which the driver encodes exactly (no float
//! arithmetic in SQL). Months are integers (the `time` crate finds a timestamp's month, integer
//! civil-calendar arithmetic a month's first day), so the partition DDL, the only SQL built from
//! text, is built from integers alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// The earliest timestamp storage accepts: 1900-01-01T00:00:00Z, in ms since the Unix epoch.
pub const MIN_TIMESTAMP_MS: i64 = -2_208_988_800_000;
/// The first timestamp storage no longer accepts: 10000-01-01T00:00:00Z (partition names have
/// four-digit years). The ingest layer is expected to reject implausible timestamps long before.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_800_000;

const MS_PER_DAY: i64 = 86_400_000;

/// Whether storage can hold a point at `ts_ms`.
pub fn timestamp_in_range(ts_ms: i64) -> bool {
    (MIN_TIMESTAMP_MS..MAX_TIMESTAMP_MS).contains(&ts_ms)
}

/// The current time in ms since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    from_system_time(SystemTime::now())
}

/// `ts_ms` as the driver's `timestamptz` value.
pub(crate) fn to_system_time(ts_ms: i64) -> SystemTime {
    let offset = Duration::from_millis(ts_ms.unsigned_abs());
    if ts_ms >= 0 {
        UNIX_EPOCH + offset
    } else {
        UNIX_EPOCH - offset
    }
}

/// A `timestamptz` read back, floored to whole milliseconds.
pub(crate) fn from_system_time(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let mut ms = before.as_millis();
            if before.subsec_nanos() % 1_000_000 != 0 {
                ms += 1;
            }
            i64::try_from(ms).map_or(i64::MIN, |ms| -ms)
        }
    }
}

/// A calendar month in UTC: the unit of `points` partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Month {
    /// Months since year 0: `year * 12 + (month - 1)`.
    ordinal: i64,
}

impl Month {
    /// The month `ts_ms` falls in; a timestamp outside the range storage accepts counts as in
    /// its first or last month (callers check the range first).
    pub(crate) fn of_ms(ts_ms: i64) -> Month {
        // Clamped, the sum stays well within the years `time` represents (±9999).
        let ts_ms = ts_ms.clamp(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS - 1);
        let date = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ts_ms);
        Month::new(i64::from(date.year()), u32::from(u8::from(date.month())))
    }

    fn new(year: i64, month: u32) -> Month {
        Month {
            ordinal: year * 12 + i64::from(month) - 1,
        }
    }

    /// The year, e.g. 2024.
    pub(crate) fn year(self) -> i64 {
        self.ordinal.div_euclid(12)
    }

    /// The month of the year, 1 to 12.
    pub(crate) fn month(self) -> u32 {
        // rem_euclid(12) is in 0..12, so the cast is lossless.
        self.ordinal.rem_euclid(12) as u32 + 1
    }

    /// The month `n` months later (earlier for negative `n`).
    pub(crate) fn plus(self, n: i64) -> Month {
        Month {
            ordinal: self.ordinal + n,
        }
    }

    /// The first millisecond of the month.
    pub(crate) fn start_ms(self) -> i64 {
        days_from_civil(self.year(), self.month(), 1) * MS_PER_DAY
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
/// Not `time`: its dates end at 9999-12-31, and the last partition ends at 10000-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_follow_the_calendar() {
        let march_2024 = Month::of_ms(1_709_251_200_000); // 2024-03-01T00:00:00Z
        assert_eq!((march_2024.year(), march_2024.month()), (2024, 3));
        assert_eq!(march_2024.start_ms(), 1_709_251_200_000);
        let last_ms_of_february = Month::of_ms(1_709_251_200_000 - 1);
        assert_eq!(
            (last_ms_of_february.year(), last_ms_of_february.month()),
            (2024, 2)
        );
        assert_eq!(march_2024.plus(10).year(), 2025);
        assert_eq!(march_2024.plus(10).month(), 1);
        assert_eq!(march_2024.plus(-3).month(), 12);
        assert_eq!(Month::of_ms(MIN_TIMESTAMP_MS).year(), 1900);
        assert_eq!(Month::of_ms(MAX_TIMESTAMP_MS - 1).year(), 9999);
        assert_eq!(
            Month::of_ms(MAX_TIMESTAMP_MS - 1).plus(1).start_ms(),
            MAX_TIMESTAMP_MS
        );
        assert_eq!(Month::of_ms(-1).start_ms(), -31 * MS_PER_DAY);
    }

    #[test]
    fn every_accepted_month_starts_where_the_previous_one_ends() {
        let mut month = Month::of_ms(MIN_TIMESTAMP_MS);
        assert_eq!(month.start_ms(), MIN_TIMESTAMP_MS);
        while month.start_ms() < MAX_TIMESTAMP_MS {
            let next = month.plus(1);
            assert_eq!(Month::of_ms(month.start_ms()), month);
            assert_eq!(Month::of_ms(next.start_ms() - 1), month);
            month = next;
        }
        assert_eq!(month.start_ms(), MAX_TIMESTAMP_MS);
    }

    #[test]
    fn timestamps_outside_the_range_count_as_its_first_or_last_month() {
        assert_eq!(Month::of_ms(i64::MIN), Month::of_ms(MIN_TIMESTAMP_MS));
        assert_eq!(Month::of_ms(i64::MAX), Month::of_ms(MAX_TIMESTAMP_MS - 1));
    }

    #[test]
    fn milliseconds_round_trip_through_system_time() {
        for ms in [
            0,
            1,
            -1,
            1_700_000_000_123,
            MIN_TIMESTAMP_MS,
            MAX_TIMESTAMP_MS - 1,
        ] {
            assert_eq!(from_system_time(to_system_time(ms)), ms);
        }
        let just_before_epoch = UNIX_EPOCH - Duration::from_micros(1);
        assert_eq!(from_system_time(just_before_epoch), -1);
    }
}

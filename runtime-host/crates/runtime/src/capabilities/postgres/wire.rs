//! PostgreSQL's binary wire formats for the types whose optional tokio-postgres crates do not
//! cover PostgreSQL's range: dates and times (PostgreSQL spans 4713 BC to 5874897 AD; `time`
//! stops at ±9999 years, ±999999 with `large-dates`), `numeric` (up to 131072 digits before the
//! point; `rust_decimal` holds 28), intervals and ranges (no maintained crate). UUIDs use the
//! `uuid` crate through tokio-postgres' `with-uuid-1`. Plain functions over bytes, so they are
//! tested without a server.

use std::fmt::Write as _;

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A calendar date `(year, month, day)` from days since 1970-01-01 (proleptic Gregorian).
///
/// Hand-written rather than `time`'s: PostgreSQL dates reach 4713 BC and 5874897 AD, far past
/// the ±9999 years `time` covers without its `large-dates` feature.
pub(super) fn civil_from_days(days: i64) -> (i64, u8, u8) {
    // Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a calendar date; `None` if it does not exist.
pub(super) fn days_from_civil(year: i64, month: u8, day: u8) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `date`: days since 2000-01-01 → `(year, month, day)`.
pub(super) fn date_from_pg(days: i32) -> Result<(i32, u8, u8), String> {
    if days == i32::MAX || days == i32::MIN {
        return Err("infinite dates have no calendar form".into());
    }
    let (year, month, day) = civil_from_days(i64::from(days) + PG_EPOCH_DAYS);
    Ok((year as i32, month, day))
}

/// `(year, month, day)` → `date`.
pub(super) fn date_to_pg((year, month, day): (i32, u8, u8)) -> Result<i32, String> {
    let days = days_from_civil(i64::from(year), month, day)
        .ok_or_else(|| format!("invalid date {year}-{month}-{day}"))?;
    i32::try_from(days - PG_EPOCH_DAYS)
        .map_err(|_| format!("date {year}-{month}-{day} out of range"))
}

/// `time`: microseconds since midnight → `(hour, minute, second, nanosecond)`.
pub(super) fn time_from_pg(micros: i64) -> Result<(u8, u8, u8, u32), String> {
    if !(0..MICROS_PER_DAY).contains(&micros) {
        return Err(format!("time of {micros} µs is not within a day"));
    }
    let seconds = micros / 1_000_000;
    Ok((
        (seconds / 3600) as u8,
        (seconds / 60 % 60) as u8,
        (seconds % 60) as u8,
        (micros % 1_000_000 * 1000) as u32,
    ))
}

/// `(hour, minute, second, nanosecond)` → `time` (sub-microsecond digits are dropped).
pub(super) fn time_to_pg((hour, minute, second, nanos): (u8, u8, u8, u32)) -> Result<i64, String> {
    if hour > 23 || minute > 59 || second > 59 || nanos > 999_999_999 {
        return Err(format!("invalid time {hour}:{minute}:{second}.{nanos:09}"));
    }
    let seconds = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Ok(seconds * 1_000_000 + i64::from(nanos / 1000))
}

/// A date-time tuple as the interface carries it.
pub(super) type DateTime = (i32, u8, u8, u8, u8, u8, u32);

/// `timestamp`/`timestamptz`: microseconds since 2000-01-01 00:00 UTC → date-time in UTC.
pub(super) fn datetime_from_pg(micros: i64) -> Result<DateTime, String> {
    if micros == i64::MAX || micros == i64::MIN {
        return Err("infinite timestamps have no calendar form".into());
    }
    let days = micros.div_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days + PG_EPOCH_DAYS);
    let (hour, minute, second, nanos) = time_from_pg(micros.rem_euclid(MICROS_PER_DAY))?;
    Ok((year as i32, month, day, hour, minute, second, nanos))
}

/// Date-time (UTC) → `timestamp` microseconds.
pub(super) fn datetime_to_pg((y, mo, d, h, mi, s, ns): DateTime) -> Result<i64, String> {
    let days = i64::from(date_to_pg((y, mo, d))?);
    Ok(days * MICROS_PER_DAY + time_to_pg((h, mi, s, ns))?)
}

/// Unix seconds → `timestamptz` microseconds.
pub(super) fn unix_seconds_to_pg(seconds: i64) -> Result<i64, String> {
    seconds
        .checked_sub(PG_EPOCH_DAYS * 86_400)
        .and_then(|s| s.checked_mul(1_000_000))
        .ok_or_else(|| format!("timestamp {seconds} s out of range"))
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

fn be_i16(raw: &[u8], at: usize) -> Result<i16, String> {
    raw.get(at..at + 2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| "truncated numeric".to_string())
}

/// `numeric` binary form → its decimal text, with as many fraction digits as its scale.
pub(super) fn numeric_to_text(raw: &[u8]) -> Result<String, String> {
    let ndigits = be_i16(raw, 0)?.max(0) as usize;
    let weight = i64::from(be_i16(raw, 2)?);
    let sign = be_i16(raw, 4)? as u16;
    let dscale = be_i16(raw, 6)?.max(0) as usize;
    let digits = (0..ndigits)
        .map(|i| be_i16(raw, 8 + 2 * i))
        .collect::<Result<Vec<_>, _>>()?;
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        _ => {}
    }
    // Group i is worth 10000^(weight - i).
    let group = |i: i64| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == NUMERIC_NEG {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for i in 0..=weight {
            let value = group(i);
            let _ = if i == 0 {
                write!(text, "{value}")
            } else {
                write!(text, "{value:04}")
            };
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut i = weight + 1;
        while fraction.len() < dscale {
            let _ = write!(fraction, "{:04}", group(i));
            i += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

/// Decimal text (`-12.340`, `+5`, `.5`, `NaN`) → `numeric` binary form, keeping its scale.
pub(super) fn numeric_from_text(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("invalid decimal {text}");
    let header = |ndigits: i16, weight: i16, sign: u16, dscale: u16| {
        let mut out = Vec::with_capacity(8 + 2 * ndigits as usize);
        for part in [ndigits as u16, weight as u16, sign, dscale] {
            out.extend_from_slice(&part.to_be_bytes());
        }
        out
    };
    match text {
        "NaN" => return Ok(header(0, 0, NUMERIC_NAN, 0)),
        "Infinity" => return Ok(header(0, 0, NUMERIC_PINF, 0)),
        "-Infinity" => return Ok(header(0, 0, NUMERIC_NINF, 0)),
        _ => {}
    }
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let dscale = u16::try_from(frac_part.len()).map_err(|_| invalid())?;
    let int_part = int_part.trim_start_matches('0');
    // Pad to whole base-10000 groups: the integer part on the left, the fraction on the right.
    let int_padded = format!("{}{int_part}", "0".repeat((4 - int_part.len() % 4) % 4));
    let frac_padded = format!("{frac_part}{}", "0".repeat((4 - frac_part.len() % 4) % 4));
    let mut groups: Vec<i16> = int_padded
        .as_bytes()
        .chunks(4)
        .chain(frac_padded.as_bytes().chunks(4))
        .map(|chunk| std::str::from_utf8(chunk).unwrap().parse().unwrap())
        .collect();
    let mut weight = (int_padded.len() / 4) as i64 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i64;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        return Ok(header(0, 0, 0, dscale));
    }
    let ndigits = i16::try_from(groups.len()).map_err(|_| invalid())?;
    let weight = i16::try_from(weight).map_err(|_| invalid())?;
    let mut out = header(
        ndigits,
        weight,
        if negative { NUMERIC_NEG } else { 0 },
        dscale,
    );
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
    Ok(out)
}

/// Whether a range bound is inclusive.
pub(super) type Inclusive = bool;
/// A range as `(lower, upper)` bounds, each absent when unbounded, holding the element's
/// binary form.
pub(super) type RawRange<'a> = (Option<(&'a [u8], Inclusive)>, Option<(&'a [u8], Inclusive)>);

const RANGE_EMPTY: u8 = 0x01;
const RANGE_LB_INC: u8 = 0x02;
const RANGE_UB_INC: u8 = 0x04;
const RANGE_LB_INF: u8 = 0x08;
const RANGE_UB_INF: u8 = 0x10;

/// A range's binary form → its bounds (an empty range has neither bound).
pub(super) fn range_from_pg(raw: &[u8]) -> Result<RawRange<'_>, String> {
    let flags = *raw.first().ok_or("truncated range")?;
    if flags & RANGE_EMPTY != 0 {
        return Ok((None, None));
    }
    let mut rest = &raw[1..];
    let mut bound = |infinite: u8, inclusive: u8| -> Result<_, String> {
        if flags & infinite != 0 {
            return Ok(None);
        }
        let len = rest
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("truncated range")?;
        let len = usize::try_from(len).map_err(|_| "range bound without a value")?;
        let value = rest.get(4..4 + len).ok_or("truncated range")?;
        rest = &rest[4 + len..];
        Ok(Some((value, flags & inclusive != 0)))
    };
    let lower = bound(RANGE_LB_INF, RANGE_LB_INC)?;
    let upper = bound(RANGE_UB_INF, RANGE_UB_INC)?;
    Ok((lower, upper))
}

/// Bounds → a range's binary form.
pub(super) fn range_to_pg(
    lower: Option<(Vec<u8>, Inclusive)>,
    upper: Option<(Vec<u8>, Inclusive)>,
    out: &mut Vec<u8>,
) {
    let mut flags = 0;
    match &lower {
        None => flags |= RANGE_LB_INF,
        Some((_, true)) => flags |= RANGE_LB_INC,
        Some(_) => {}
    }
    match &upper {
        None => flags |= RANGE_UB_INF,
        Some((_, true)) => flags |= RANGE_UB_INC,
        Some(_) => {}
    }
    out.push(flags);
    for (value, _) in lower.into_iter().chain(upper) {
        out.extend_from_slice(&(value.len() as i32).to_be_bytes());
        out.extend_from_slice(&value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip_across_eras() {
        for days in [-800_000, -1, 0, 1, 10_957, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days), "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(days_from_civil(2023, 2, 29), None);
    }

    #[test]
    fn dates_times_and_timestamps_map_like_spin() {
        assert_eq!(date_from_pg(0), Ok((2000, 1, 1)));
        assert_eq!(date_to_pg((1999, 12, 31)), Ok(-1));
        assert_eq!(time_from_pg(3_723_000_004), Ok((1, 2, 3, 4000)));
        assert_eq!(time_to_pg((1, 2, 3, 4999)), Ok(3_723_000_004));
        assert_eq!(
            datetime_from_pg(-1),
            Ok((1999, 12, 31, 23, 59, 59, 999_999_000))
        );
        let dt = (2026, 11, 26, 8, 30, 0, 123_000);
        assert_eq!(datetime_from_pg(datetime_to_pg(dt).unwrap()), Ok(dt));
        assert_eq!(unix_seconds_to_pg(946_684_800), Ok(0));
        assert!(date_from_pg(i32::MAX).is_err());
    }

    #[test]
    fn numerics_round_trip_with_their_scale() {
        for (input, text) in [
            ("0", "0"),
            ("12.30", "12.30"),
            ("-0.001", "-0.001"),
            ("0.00001", "0.00001"),
            ("18446744073709551615", "18446744073709551615"),
            ("+10000.5", "10000.5"),
            (".5", "0.5"),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
        ] {
            let raw = numeric_from_text(input).unwrap();
            assert_eq!(numeric_to_text(&raw).unwrap(), text, "{input}");
        }
        for bad in ["", "-", "1e5", "1.2.3", "x"] {
            assert!(numeric_from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numerics_decode_what_postgres_sends() {
        // 12.5 as PostgreSQL encodes it: 2 groups (12, 5000), weight 0, positive, scale 1.
        let raw = [0, 2, 0, 0, 0, 0, 0, 1, 0, 12, 0x13, 0x88];
        assert_eq!(numeric_to_text(&raw).unwrap(), "12.5");
        assert_eq!(numeric_from_text("12.5").unwrap(), raw);
    }

    #[test]
    fn ranges_round_trip() {
        let mut raw = Vec::new();
        range_to_pg(Some((vec![0, 0, 0, 1], true)), None, &mut raw);
        assert_eq!(
            range_from_pg(&raw).unwrap(),
            (Some((&[0u8, 0, 0, 1][..], true)), None)
        );
        assert_eq!(range_from_pg(&[RANGE_EMPTY]).unwrap(), (None, None));
    }
}

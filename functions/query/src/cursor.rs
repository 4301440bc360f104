//! Paging cursors: opaque to clients, a keyset position to the component. A history cursor is
//! the last returned point's timestamp in microseconds (16 hex digits); a device-list cursor is
//! the last returned device name (hex of its UTF-8). The next page starts strictly after it, so
//! paging never repeats or skips an item. A malformed cursor is `400 invalid_parameter`.

use crate::answer::Answer;

/// The cursor after a point at `ts_us` (unix microseconds).
pub fn encode_ts(ts_us: i64) -> String {
    format!("{:016x}", ts_us as u64)
}

/// The timestamp (unix microseconds) a history cursor stands for.
pub fn decode_ts(cursor: &str) -> Result<i64, Answer> {
    if cursor.len() != 16 {
        return Err(malformed());
    }
    u64::from_str_radix(cursor, 16)
        .map(|bits| bits as i64)
        .map_err(|_| malformed())
}

/// The cursor after device `name`.
pub fn encode_name(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The device name a device-list cursor stands for.
pub fn decode_name(cursor: &str) -> Result<String, Answer> {
    if !cursor.len().is_multiple_of(2) || !cursor.is_ascii() {
        return Err(malformed());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&cursor[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| malformed())?;
    String::from_utf8(bytes).map_err(|_| malformed())
}

fn malformed() -> Answer {
    Answer::invalid_parameter(
        "parameter `cursor` is malformed: pass the `next` value of the previous page unchanged",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for ts in [0, 1, 1_774_742_400_123_000, -5] {
            assert_eq!(decode_ts(&encode_ts(ts)).unwrap(), ts);
        }
        assert_eq!(encode_ts(255), "00000000000000ff");
    }

    #[test]
    fn names_round_trip() {
        for name in ["m1", "meter:ä/1", ""] {
            assert_eq!(decode_name(&encode_name(name)).unwrap(), name);
        }
    }

    #[test]
    fn malformed_cursors_are_invalid_parameters() {
        for bad in ["", "xyz", "00000000000000fg", "000000000000000001"] {
            let answer = decode_ts(bad).unwrap_err();
            assert_eq!(answer.status, 400, "{bad}");
            assert!(answer.body.contains("invalid_parameter") && answer.body.contains("cursor"));
        }
        for bad in ["a", "zz", "ff", "é1"] {
            assert_eq!(decode_name(bad).unwrap_err().status, 400, "{bad}");
        }
    }
}

//! How rejection messages show what a device sent. Keys and texts come from devices, so they are
//! quoted with escapes and cut short: one hostile point must not make a huge or misleading message.

use crate::Value;

/// How many characters of a device-supplied string a message shows before cutting it short.
const SHOWN_CHARS: usize = 40;

/// Quotes `text` with Rust string escapes, shortened to its first characters followed by `…`.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

/// Shows a value as a person would write it: `70000`, `12.0`, `NaN`, `true`, `"on"`.
pub(crate) fn show(value: &Value) -> String {
    match value {
        Value::Int(n) => n.to_string(),
        Value::Uint(n) => n.to_string(),
        Value::Float(v) => format!("{v:?}"),
        Value::Bool(b) => b.to_string(),
        Value::Text(text) => quote(text),
    }
}

/// Names the kind of value the device sent, for type mismatch messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Int(_) | Value::Uint(_) => "integer",
        Value::Float(_) => "float",
        Value::Bool(_) => "boolean",
        Value::Text(_) => "text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        assert_eq!(quote("on"), "\"on\"");
    }

    #[test]
    fn control_characters_and_quotes_are_escaped() {
        assert_eq!(quote("a\n\"b\""), r#""a\n\"b\"""#);
    }

    #[test]
    fn long_text_is_cut_after_forty_characters() {
        let text = "é".repeat(1000);
        assert_eq!(quote(&text), format!("\"{}\"…", "é".repeat(40)));
        assert_eq!(quote(&"x".repeat(40)), format!("\"{}\"", "x".repeat(40)));
    }

    #[test]
    fn floats_show_their_fraction_and_special_values() {
        assert_eq!(show(&Value::Float(12.0)), "12.0");
        assert_eq!(show(&Value::Float(f64::NAN)), "NaN");
        assert_eq!(show(&Value::Float(f64::NEG_INFINITY)), "-inf");
        assert_eq!(show(&Value::Uint(u64::MAX)), "18446744073709551615");
    }
}

//! Query parameters: parsing (percent-decoded, each name at most once, only the names an
//! endpoint takes), typed readers that name the parameter in their errors, and the canonical
//! query string written back in redirects.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::answer::Answer;

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 10_000;
/// Latest timestamp accepted: 9999-12-31T23:59:59.999Z in unix milliseconds.
pub const MAX_TS_MS: i64 = 253_402_300_799_999;
/// Latest end of a range accepted (`to`, exclusive): 10000-01-01T00:00:00Z, the end of the
/// millisecond [`MAX_TS_MS`]. It is a whole number of days, so it lies on the history grid and
/// on every fixed bucket grid: a `to` up to [`MAX_TS_MS`] ceils to an end that is accepted,
/// and the redirect to it is served.
pub const MAX_TO_MS: i64 = MAX_TS_MS + 1;

/// A request's query parameters, decoded, in the order they came.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Parses `raw` (the part after `?`), accepting only the names in `allowed`, each once.
    pub fn parse(raw: &str, allowed: &[&str]) -> Result<QueryParams, Answer> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let (Some(name), Some(value)) = (percent_decode(name), percent_decode(value)) else {
                return Err(Answer::invalid_parameter(&format!(
                    "`{part}` is not a valid percent-encoded query parameter"
                )));
            };
            if !allowed.contains(&name.as_str()) {
                let message = if allowed.is_empty() {
                    format!("unknown parameter `{name}`: this endpoint takes no parameters")
                } else {
                    format!(
                        "unknown parameter `{name}`: this endpoint takes {}",
                        allowed.join(", ")
                    )
                };
                return Err(Answer::invalid_parameter(&message));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(Answer::invalid_parameter(&format!(
                    "parameter `{name}` is given more than once"
                )));
            }
            if value.is_empty() {
                return Err(Answer::invalid_parameter(&format!(
                    "parameter `{name}` is empty"
                )));
            }
            pairs.push((name, value));
        }
        Ok(QueryParams { pairs })
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name` as a timestamp in unix milliseconds (0 to [`MAX_TS_MS`]), if given.
    pub fn timestamp(&self, name: &str) -> Result<Option<i64>, Answer> {
        self.millis(name, MAX_TS_MS)
    }

    /// `name` as the exclusive end of a range in unix milliseconds (0 to [`MAX_TO_MS`]), if
    /// given.
    pub fn range_end(&self, name: &str) -> Result<Option<i64>, Answer> {
        self.millis(name, MAX_TO_MS)
    }

    fn millis(&self, name: &str, max: i64) -> Result<Option<i64>, Answer> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        match raw.parse::<i64>() {
            Ok(ts) if (0..=max).contains(&ts) => Ok(Some(ts)),
            _ => Err(Answer::invalid_parameter(&format!(
                "parameter `{name}` must be unix milliseconds between 0 and {max}, not `{raw}`"
            ))),
        }
    }

    /// `limit` (1 to [`MAX_LIMIT`]), if given.
    pub fn limit(&self) -> Result<Option<usize>, Answer> {
        let Some(raw) = self.get("limit") else {
            return Ok(None);
        };
        match raw.parse::<usize>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(Some(limit)),
            _ => Err(Answer::invalid_parameter(&format!(
                "parameter `limit` must be a whole number from 1 to {MAX_LIMIT}, not `{raw}`"
            ))),
        }
    }
}

/// What a canonical query leaves as it is: RFC 3986 unreserved characters, `/` (which IANA time
/// zone names contain) and `,` (which separates aggregates).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b',');

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8. `+` stays `+`.
pub fn percent_decode(s: &str) -> Option<String> {
    weir_contract::routes::percent_decode(s)
}

/// Encodes everything but RFC 3986 unreserved characters, `/` and `,`: a query may hold those
/// as they are.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// `name=value&...` with values percent-encoded, in the order given.
pub fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::HISTORY_GRID_MS;

    fn code_and_message(answer: Answer) -> (u16, String) {
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_parameter");
        (
            answer.status,
            body["error"]["message"].as_str().unwrap().into(),
        )
    }

    #[test]
    fn parameters_are_decoded_and_read_by_name() {
        let params = QueryParams::parse("tz=Europe%2FStockholm&from=5", &["from", "tz"]).unwrap();
        assert_eq!(params.get("tz"), Some("Europe/Stockholm"));
        assert_eq!(params.timestamp("from").unwrap(), Some(5));
        assert_eq!(params.timestamp("to").unwrap(), None);
        assert_eq!(params.limit().unwrap(), None);
    }

    #[test]
    fn unknown_repeated_or_empty_parameters_are_refused_by_name() {
        let (status, message) =
            code_and_message(QueryParams::parse("form=1", &["from", "to"]).unwrap_err());
        assert_eq!(status, 400);
        assert!(
            message.contains("`form`") && message.contains("from, to"),
            "{message}"
        );
        let (_, message) =
            code_and_message(QueryParams::parse("from=1&from=2", &["from"]).unwrap_err());
        assert!(message.contains("more than once"), "{message}");
        let (_, message) = code_and_message(QueryParams::parse("from=", &["from"]).unwrap_err());
        assert!(message.contains("empty"), "{message}");
        let (_, message) = code_and_message(QueryParams::parse("from=%zz", &["from"]).unwrap_err());
        assert!(message.contains("percent"), "{message}");
    }

    #[test]
    fn timestamps_and_limits_are_range_checked() {
        for bad in ["x", "-1", "1.5", "253402300800000"] {
            let params = QueryParams::parse(&format!("to={bad}"), &["to"]).unwrap();
            let (_, message) = code_and_message(params.timestamp("to").unwrap_err());
            assert!(message.contains("`to`"), "{message}");
        }
        for bad in ["0", "10001", "ten"] {
            let params = QueryParams::parse(&format!("limit={bad}"), &["limit"]).unwrap();
            let (_, message) = code_and_message(params.limit().unwrap_err());
            assert!(message.contains("`limit`"), "{message}");
        }
        let params = QueryParams::parse("limit=10000", &["limit"]).unwrap();
        assert_eq!(params.limit().unwrap(), Some(10_000));
    }

    #[test]
    fn a_range_may_end_at_the_end_of_the_last_timestamp() {
        let params = QueryParams::parse("to=253402300800000", &["to"]).unwrap();
        assert_eq!(params.range_end("to").unwrap(), Some(MAX_TO_MS));
        assert!(params.timestamp("to").is_err());
        let params = QueryParams::parse("to=253402300800001", &["to"]).unwrap();
        let (_, message) = code_and_message(params.range_end("to").unwrap_err());
        assert!(message.contains("`to`"), "{message}");
        let buckets = crate::trend::BUCKETS.iter().map(|bucket| bucket.ms);
        for step in buckets.chain([HISTORY_GRID_MS]) {
            assert_eq!(MAX_TO_MS % step, 0, "{step}");
        }
    }

    #[test]
    fn canonical_queries_encode_only_what_they_must() {
        assert_eq!(
            query_string(&[
                ("tz", "America/Port-au-Prince".into()),
                ("x", "a b&,".into())
            ]),
            "tz=America/Port-au-Prince&x=a%20b%26,"
        );
        assert_eq!(percent_decode("a%20b%26").as_deref(), Some("a b&"));
        assert_eq!(percent_encode("é~"), "%C3%A9~");
    }

    #[test]
    fn broken_escapes_and_bad_utf8_are_refused() {
        assert_eq!(percent_decode("a+b%2fc").as_deref(), Some("a+b/c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        for broken in ["%", "a%2", "%zz", "%+f", "%%41", "%C3", "%FF"] {
            assert_eq!(percent_decode(broken), None, "{broken:?}");
        }
    }
}

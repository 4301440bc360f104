//! The alert events API, served by the host itself (acknowledging and clearing write, which the
//! read-only query component may not), authenticated like the query API: the token's
//! organisation is the only one whose events a caller sees; another organisation's event is
//! answered 404, exactly like a missing one.
//!
//! - `GET /v1/events?device=&key=&severity=&state=&from=&to=&limit=` → `{"events": [...]}`,
//!   newest raise first; `from`/`to` are unix milliseconds (`from` inclusive, `to` exclusive),
//!   `limit` 1 to 1000 (default 100). 400 `invalid_parameter` names the parameter at fault.
//! - `POST /v1/events/{id}/ack` → `{"event": ...}`: raised → acknowledged; acknowledging again
//!   changes nothing (200); a cleared event is 409 `event_cleared`.
//! - `POST /v1/events/{id}/clear` → `{"event": ...}`: ends the alert by hand, in PostgreSQL and
//!   in the alerter's state, so that a condition that still holds raises a new alert at the next
//!   point; clearing a cleared event changes nothing (200).
//!
//! An acknowledgement or a manual clear that changed the event goes to the organisation's
//! webhooks (queued in the same transaction) and its pub/sub channel and event streams, as a
//! change document with `kind` `acknowledge` or `clear` and `by` `api`.
//!
//! An unknown id is 404 `event_not_found`.

use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use serde_json::{Value as Json, json};
use weir_storage::{AlertAction, AlertEvent, AlertEventFilter, EventUpdate};

use std::sync::Arc;

use weir_contract::routes::percent_decode;
use weir_pipeline::alerting::Alerting;
use weir_storage::Storage;

use crate::http::{ApiError, Response, json_response};

/// The collection's path; events are below it.
pub const PATH: &str = "/v1/events";
/// Events listed when `limit` is absent.
const DEFAULT_LIMIT: i64 = 100;
/// The largest `limit`.
pub(crate) const MAX_LIMIT: i64 = 1000;
/// The parameters of the listing.
const LIST_PARAMETERS: &[&str] = &["device", "key", "severity", "state", "from", "to", "limit"];

/// Whether `path` belongs to this API.
pub fn handles(path: &str) -> bool {
    path == PATH || path.starts_with("/v1/events/")
}

/// What the events endpoints need: the events' storage and, when alerting is on, alerting (a
/// manual clear resets the alerter's state; changes are published).
pub struct EventsApi {
    /// Where events are recorded.
    pub storage: Storage,
    /// Alerting, when on.
    pub alerting: Option<Arc<Alerting>>,
    /// Who may read and act on them.
    pub auth: Arc<super::auth::Authenticator>,
}

impl EventsApi {
    /// Answers one request under [`PATH`].
    pub async fn handle(&self, request: hyper::Request<Incoming>) -> Response {
        self.serve(request)
            .await
            .unwrap_or_else(ApiError::into_response)
    }

    async fn serve(&self, request: hyper::Request<Incoming>) -> Result<Response, ApiError> {
        let path = request.uri().path().to_owned();
        let route = route(&path);
        let method = request.method().clone();
        match (&route, &method) {
            (Route::Unknown, _) => return Err(ApiError::not_found(&path)),
            (Route::List, &Method::GET) | (Route::Ack(_) | Route::Clear(_), &Method::POST) => {}
            _ => return Err(ApiError::method_not_allowed(&method, &path)),
        }
        let org = self.auth.authenticate(request.headers()).await?.org;
        match route {
            Route::List => {
                let filter = filter(request.uri().query().unwrap_or(""))?;
                let events = self.storage.list_alert_events(&org, &filter).await?;
                let events: Vec<Json> = events.iter().map(event_json).collect();
                Ok(json_response(StatusCode::OK, &json!({ "events": events })))
            }
            Route::Ack(id) => {
                let update = self.storage.acknowledge_alert_event(&org, id).await?;
                match update {
                    EventUpdate::Changed(event) => {
                        if let Some(alerting) = &self.alerting {
                            alerting
                                .publish_action(&event, AlertAction::Acknowledge)
                                .await;
                        }
                        Ok(answer(&event))
                    }
                    EventUpdate::Unchanged(event) => Ok(answer(&event)),
                    EventUpdate::Cleared(event) => Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "event_cleared",
                        format!("event {} has cleared and cannot be acknowledged", event.id),
                    )),
                    EventUpdate::NotFound => Err(not_found(id)),
                }
            }
            Route::Clear(id) => self.clear(&org, id).await,
            Route::Unknown => unreachable!("refused above"),
        }
    }

    /// A manual clear: the alerter's state first (so that a failure there changes nothing), then
    /// the event.
    async fn clear(&self, org: &str, id: i64) -> Result<Response, ApiError> {
        let event = self
            .storage
            .alert_event(org, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        if event.state == "cleared" {
            return Ok(answer(&event));
        }
        if let Some(alerting) = &self.alerting {
            alerting.manual_clear(&event).await.map_err(|error| {
                tracing::error!(id, code = error.code(), %error, "manual clear failed");
                let message = format!(
                    "the alert could not be cleared, nothing changed ({})",
                    error.code()
                );
                match &error {
                    weir_pipeline::alerting::AlertError::Refused(_) => {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.code(), message)
                    }
                    weir_pipeline::alerting::AlertError::Function(call)
                        if !matches!(call, weir_runtime::CallError::Busy { .. }) =>
                    {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.code(), message)
                    }
                    _ => ApiError::unavailable(error.code(), message, 2),
                }
            })?;
        }
        match self.storage.clear_alert_event(org, id).await? {
            EventUpdate::Changed(event) => {
                if let Some(alerting) = &self.alerting {
                    alerting.publish_action(&event, AlertAction::Clear).await;
                }
                Ok(answer(&event))
            }
            EventUpdate::Unchanged(event) | EventUpdate::Cleared(event) => Ok(answer(&event)),
            EventUpdate::NotFound => Err(not_found(id)),
        }
    }
}

/// Which endpoint a path is.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    List,
    Ack(i64),
    Clear(i64),
    Unknown,
}

fn route(path: &str) -> Route {
    if path == PATH {
        return Route::List;
    }
    let Some(rest) = path.strip_prefix("/v1/events/") else {
        return Route::Unknown;
    };
    let Some((text, action)) = rest.split_once('/') else {
        return Route::Unknown;
    };
    // Ids are positive decimal numbers written plainly; anything else names no event.
    let Some(id) = text
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0 && id.to_string() == text)
    else {
        return Route::Unknown;
    };
    match action {
        "ack" => Route::Ack(id),
        "clear" => Route::Clear(id),
        _ => Route::Unknown,
    }
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "event_not_found",
        format!("there is no event {id}"),
    )
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_parameter", message)
}

/// The listing's filter from the query string.
pub(crate) fn filter(query: &str) -> Result<AlertEventFilter, ApiError> {
    let mut filter = AlertEventFilter {
        limit: DEFAULT_LIMIT,
        ..AlertEventFilter::default()
    };
    let mut seen: Vec<String> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let (Some(name), Some(value)) = (percent_decode(name), percent_decode(value)) else {
            return Err(invalid(format!(
                "`{part}` is not a valid percent-encoded query parameter"
            )));
        };
        if !LIST_PARAMETERS.contains(&name.as_str()) {
            return Err(invalid(format!(
                "unknown parameter `{name}`: this endpoint takes {}",
                LIST_PARAMETERS.join(", ")
            )));
        }
        if seen.contains(&name) {
            return Err(invalid(format!(
                "parameter `{name}` is given more than once"
            )));
        }
        if value.is_empty() {
            return Err(invalid(format!("parameter `{name}` is empty")));
        }
        seen.push(name.clone());
        match name.as_str() {
            "device" => filter.device = Some(value),
            "key" => filter.key = Some(value),
            "severity" => filter.severity = Some(one_of(&name, value, &SEVERITIES)?),
            "state" => filter.state = Some(one_of(&name, value, &STATES)?),
            "from" => filter.from_ms = Some(millis(&name, &value)?),
            "to" => filter.to_ms = Some(millis(&name, &value)?),
            _ => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        invalid(format!(
                            "parameter `limit` must be a whole number from 1 to {MAX_LIMIT}, not `{value}`"
                        ))
                    })?;
            }
        }
    }
    Ok(filter)
}

pub(super) const SEVERITIES: [&str; 4] = ["critical", "major", "minor", "warning"];
const STATES: [&str; 3] = ["raised", "acknowledged", "cleared"];

fn one_of(name: &str, value: String, allowed: &[&str]) -> Result<String, ApiError> {
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(invalid(format!(
            "parameter `{name}` must be one of {}, not `{value}`",
            allowed.join(", ")
        )))
    }
}

fn millis(name: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|ms| (0..=weir_storage::MAX_TIMESTAMP_MS).contains(ms))
        .ok_or_else(|| {
            invalid(format!(
                "parameter `{name}` must be unix milliseconds, not `{value}`"
            ))
        })
}

fn answer(event: &AlertEvent) -> Response {
    json_response(StatusCode::OK, &json!({ "event": event_json(event) }))
}

/// An event as the API shows it; times in unix milliseconds.
fn event_json(event: &AlertEvent) -> Json {
    let value = event
        .value_json
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Json::Null);
    json!({
        "id": event.id,
        "device": event.device,
        "key": event.key,
        "rule_id": event.rule_id,
        "rule_version": event.rule_version,
        "severity": event.severity,
        "trigger": event.trigger,
        "state": event.state,
        "value": value,
        "message": event.message,
        "raised_at": event.raised_at_ms,
        "updated_at": event.updated_at_ms,
        "escalated_at": event.escalated_at_ms,
        "acknowledged_at": event.acknowledged_at_ms,
        "cleared_at": event.cleared_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_positive_decimal_ids() {
        assert_eq!(route("/v1/events"), Route::List);
        assert_eq!(route("/v1/events/12/ack"), Route::Ack(12));
        assert_eq!(route("/v1/events/12/clear"), Route::Clear(12));
        for path in [
            "/v1/events/",
            "/v1/events/12",
            "/v1/events/0/ack",
            "/v1/events/-1/ack",
            "/v1/events/012/ack",
            "/v1/events/+1/ack",
            "/v1/events/x/ack",
            "/v1/events/1/ack/",
            "/v1/events/1/delete",
        ] {
            assert_eq!(route(path), Route::Unknown, "{path}");
        }
    }

    #[test]
    fn filters_are_checked_and_named() {
        let f = filter("device=m%2D1&state=raised&from=5&limit=7").unwrap();
        assert_eq!(f.device.as_deref(), Some("m-1"));
        assert_eq!(f.state.as_deref(), Some("raised"));
        assert_eq!((f.from_ms, f.limit), (Some(5), 7));
        assert_eq!(filter("").unwrap().limit, DEFAULT_LIMIT);
        for (query, named) in [
            ("limit=1001", "`limit`"),
            ("severity=bad", "`severity`"),
            ("from=x", "`from`"),
            ("colour=red", "`colour`"),
            ("key=a&key=b", "`key`"),
        ] {
            let error = filter(query).unwrap_err();
            assert_eq!(error.code, "invalid_parameter");
            assert!(error.message.contains(named), "{query}: {}", error.message);
        }
    }
}

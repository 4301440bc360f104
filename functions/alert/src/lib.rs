//! Weir's alert evaluator: alert rules whose conditions are [CEL](https://cel.dev) expressions,
//! evaluated over a device's accepted points. Pure and deterministic: time comes only from the
//! points' timestamps and from the `now` of a staleness check, and everything remembered between
//! calls is in the per-(rule, device) state the host stores. Plain Rust, unit-tested natively; the
//! `component` module (wasm only) wraps it as the `weir:functions/alert` WIT interface.
//!
//! # Rule files
//!
//! A rule set is TOML (`[[rules]]` tables) or JSON (`{"rules": [...]}`; text whose first
//! non-blank character is `{` is read as JSON). The host scopes a rule set to one organisation;
//! rules say nothing about organisations.
//!
//! ```toml
//! [[rules]]
//! id = "meter-hot"                  # unique in the rule set
//! version = 3                       # bump on every change; events carry it
//! keys = "meter.*.temperature"      # or a list; `*` = one dotted segment, `**` = any number
//! context = ["meter.*.door"]        # optional: more keys the conditions may read via `keys`
//! devices = ["site-4-*"]            # optional device id globs (`*` = any characters)
//! clear = "value < 75"              # optional hysteresis; default: no level is met
//! for = "5m"                        # optional: a level must hold this long, without a break
//! stale_after = "15m"               # optional: no-data alert after this long without a point
//! stale_severity = "major"          # optional, default "warning"
//!
//! [rules.severity]                  # at least one level (or `stale_after`)
//! critical = "value > 90"
//! warning = "value > 80 && keys['meter.' + parts[1] + '.door'] == true"
//!
//! [[rules]]
//! id = "door-bounce"
//! version = 1
//! keys = "meter.*.door"
//! count = 3                         # "3 times in 10 minutes": with `within`, instead of or
//! within = "10m"                    # besides `for`
//! severity = { minor = "value == true && previous == false" }
//! ```
//!
//! Durations are `<n><unit>` groups, largest first: `d`, `h`, `m`, `s`, `ms` (`"1h30m"`).
//! [`check_rules`] refuses a file with a malformed rule, naming the rule and the field.
//!
//! # Condition variables
//!
//! Each condition is evaluated for one *alerting key* (a key matching `keys`; each has its own
//! alert) at one moment, and sees:
//!
//! | variable | CEL type | what |
//! |---|---|---|
//! | `value` | `int`, `uint`, `double`, `bool` or `string` | the key's latest value (an enumeration is its `int` code) |
//! | `previous` | same, or `null` | the key's value before that (`null` for its first point) |
//! | `key` | `string` | the alerting key, e.g. `"meter.1.temperature"` |
//! | `parts` | `list(string)` | `key` split at the dots, e.g. `["meter", "1", "temperature"]` |
//! | `device` | `string` | the device id |
//! | `ts` | `int` | the evaluated point's timestamp, unix milliseconds |
//! | `keys` | `map(string, dyn)` | the latest value of every key of the rule's scope (`keys` and `context`) seen so far |
//!
//! Numbers compare across types (`value > 80` holds for `80.5` and for `81`). A condition that
//! fails to evaluate (a key missing from `keys`, a string compared with a number) or does not
//! return a boolean does not hold: write `'meter.1.door' in keys && keys['meter.1.door']` to be
//! explicit. Conditions are compiled per call; a syntax error or an unknown variable is refused
//! by [`check_rules`], and so is a condition longer than [`MAX_CONDITION_BYTES`] or nested and
//! chained deeper than [`MAX_CONDITION_LEVELS`], which cel could not parse or evaluate without
//! risking the stack. The standard CEL functions and macros are there (`size`, `contains`,
//! `startsWith`, `exists`, `int()`, `double()`, ...), but no regular expressions (`matches`) nor
//! timestamps and durations, which would triple the component's size.
//!
//! # When alerts are raised and cleared
//!
//! At each point of an alerting key (and, for every alerting key of the device, at each point of
//! a context key), every severity level is evaluated. A level is **met** when its condition holds
//! and, with `for`, has held since a point at least `for` earlier without a break; with `count`
//! and `within`, when at least `count` points of the key at which the condition held lie within
//! the last `within` (a context point re-evaluates but is no such point). Then:
//!
//! - no active alert and a level is met → `raise` at the strongest met level;
//! - an active alert and a stronger level is met → `escalate` to it. Alerts never de-escalate:
//!   an alert keeps its strongest severity until it clears, so that a value hovering at a level's
//!   boundary does not flap between severities;
//! - an active alert, no level met and `clear` holds (or there is no `clear`) → `clear`. Between
//!   the raise and the clear condition (`> 80` / `< 75`) the alert stays as it is.
//!
//! No-data alerts are separate ([`Trigger::NoData`]): [`evaluate_stale`] raises one for every key
//! the state has seen whose newest point is at least `stale_after` older than `now`; the key's
//! next point clears it. Keys never seen cannot go stale.
//!
//! **Out of order points.** A batch is evaluated in timestamp order. A point no newer than the
//! newest point of its key that the state has seen is ignored altogether, as it is for the
//! latest values: durations and counts only move forward.
//!
//! **Lifecycle.** raised → acknowledged → cleared. Acknowledging is the host's business only
//! (it changes nothing here). A manual clear goes through [`manual_clear`], which ends the active
//! alert in the stored state but keeps its history: if the condition still holds, the next point
//! raises the alert again (deleting the state has the same effect, but forgets `for` streaks,
//! `count` hits and the latest values). A rule's state outlives its new versions: an alert raised
//! by version 2 is cleared by version 3, whose events carry version 3.

#![warn(missing_docs)]

// The bindings `wit_bindgen::generate!` writes export functions through the canonical ABI,
// which takes `unsafe` and `export_name`; the component glue is the only place allowed them.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;

mod condition;
mod depth;
mod duration;
mod evaluate;
mod event;
mod rule;
mod state;
mod types;

pub use condition::{MAX_CONDITION_BYTES, MAX_CONDITION_LEVELS, VARIABLES};
pub use duration::Span;
pub use evaluate::{
    Evaluation, RuleError, RuleInput, StateEntry, evaluate, evaluate_stale, manual_clear,
};
pub use event::{Event, EventKind, Trigger};
pub use rule::{AlertRule, RuleSummary, SeverityConditions, check_rules, parse_rules};
pub use types::{Point, Severity, Value};
pub use weir_contract::pattern::{KeyPattern, PatternError, device_matches};

#[cfg(test)]
mod tests;

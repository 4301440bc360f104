//! The alert rules of each organisation: one file per organisation in the rules directory,
//! `<org>.toml` or `<org>.json`, each checked by the alerter's `check-rules` when it is loaded.
//! A bad file is refused whole, with a message naming the file and the rule at fault.
//!
//! Besides the rules as the component wants them back (id, version, canonical source), the book
//! keeps each rule's key and device patterns, so that a batch no rule watches costs no call.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::functions::AlerterFunction;
use crate::functions::alerter::{Rule, RuleSummary};

/// The rules of every organisation, as loaded from the rules directory.
#[derive(Debug, Default)]
pub struct RuleBook {
    orgs: HashMap<String, Vec<LoadedRule>>,
}

/// One checked rule.
#[derive(Debug)]
struct LoadedRule {
    rule: Rule,
    /// Alerting and context key patterns: a point of any of them is evaluated.
    keys: Vec<Vec<Segment>>,
    /// Device id globs; empty means every device.
    devices: Vec<String>,
    /// Whether the rule raises no-data alerts (has a `stale_after`).
    stale: bool,
}

/// One segment of a key pattern (the alerter's syntax: `*` one segment, `**` any number).
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Any,
}

impl RuleBook {
    /// Loads and checks every rule file of `dir` with `function`. Files of other extensions are
    /// skipped; one organisation with two files is refused.
    pub async fn load(dir: &Path, function: &AlerterFunction) -> anyhow::Result<RuleBook> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading the alert rules directory {}", dir.display()))?;
        let mut paths: Vec<_> = entries
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading the alert rules directory {}", dir.display()))?;
        paths.sort();
        let mut orgs = HashMap::new();
        for path in paths {
            let (Some(org), Some("toml" | "json")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|e| e.to_str()),
            ) else {
                tracing::debug!(path = %path.display(), "not a rule file (<org>.toml or <org>.json); skipped");
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading alert rules {}", path.display()))?;
            let summaries = function
                .check_rules(&text)
                .await
                .with_context(|| format!("checking alert rules {}", path.display()))?
                .map_err(|message| {
                    anyhow::anyhow!("alert rules {} refused: {message}", path.display())
                })?;
            let rules = summaries
                .into_iter()
                .map(LoadedRule::new)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("alert rules {}", path.display()))?;
            if orgs.insert(org.to_owned(), rules).is_some() {
                bail!(
                    "organisation {org} has two alert rule files in {}; keep one",
                    dir.display()
                );
            }
        }
        Ok(RuleBook { orgs })
    }

    /// How many organisations and rules the book holds.
    pub fn size(&self) -> (usize, usize) {
        (self.orgs.len(), self.orgs.values().map(Vec::len).sum())
    }

    /// The rules of `org` for `device` watching any of `keys`.
    pub fn for_batch<'k>(
        &self,
        org: &str,
        device: &str,
        keys: impl IntoIterator<Item = &'k str> + Clone,
    ) -> Vec<Rule> {
        let Some(rules) = self.orgs.get(org) else {
            return Vec::new();
        };
        rules
            .iter()
            .filter(|r| r.watches_device(device))
            .filter(|r| keys.clone().into_iter().any(|key| r.watches_key(key)))
            .map(|r| r.rule.clone())
            .collect()
    }

    /// The organisations with rules that raise no-data alerts.
    pub fn orgs_with_stale_rules(&self) -> Vec<String> {
        let mut orgs: Vec<String> = self
            .orgs
            .iter()
            .filter(|(_, rules)| rules.iter().any(|r| r.stale))
            .map(|(org, _)| org.clone())
            .collect();
        orgs.sort();
        orgs
    }

    /// The rules of `org` for `device` that raise no-data alerts.
    pub fn stale_rules(&self, org: &str, device: &str) -> Vec<Rule> {
        self.orgs
            .get(org)
            .into_iter()
            .flatten()
            .filter(|r| r.stale && r.watches_device(device))
            .map(|r| r.rule.clone())
            .collect()
    }
}

impl LoadedRule {
    fn new(summary: RuleSummary) -> anyhow::Result<LoadedRule> {
        let keys = summary
            .keys
            .iter()
            .map(|pattern| parse_pattern(pattern))
            .collect::<Option<Vec<_>>>()
            .with_context(|| {
                format!(
                    "rule {:?}: the alerter returned an unreadable key pattern in {:?}",
                    summary.id, summary.keys
                )
            })?;
        Ok(LoadedRule {
            rule: Rule {
                id: summary.id,
                version: summary.version,
                source: summary.source,
            },
            keys,
            devices: summary.devices,
            stale: summary.stale_after_ms.is_some(),
        })
    }

    fn watches_device(&self, device: &str) -> bool {
        self.devices.is_empty() || self.devices.iter().any(|glob| glob_matches(glob, device))
    }

    fn watches_key(&self, key: &str) -> bool {
        let parts: Vec<&str> = key.split('.').collect();
        self.keys
            .iter()
            .any(|pattern| segments_match(pattern, &parts))
    }
}

fn parse_pattern(text: &str) -> Option<Vec<Segment>> {
    text.split('.')
        .map(|segment| match segment {
            "" => None,
            "*" => Some(Segment::One),
            "**" => Some(Segment::Any),
            s if s.contains('*') => None,
            s => Some(Segment::Literal(s.to_owned())),
        })
        .collect()
}

fn segments_match(pattern: &[Segment], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Segment::Any, rest)) => {
            (0..=parts.len()).any(|skip| segments_match(rest, &parts[skip..]))
        }
        Some((segment, rest)) => parts.split_first().is_some_and(|(part, parts)| {
            (match segment {
                Segment::Literal(literal) => literal == part,
                _ => true,
            }) && segments_match(rest, parts)
        }),
    }
}

/// Whether `text` matches `glob`, where `*` is any run of characters.
fn glob_matches(glob: &str, text: &str) -> bool {
    match glob.split_once('*') {
        None => glob == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&at| rest.is_char_boundary(at))
                .any(|at| glob_matches(tail, &rest[at..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watches(pattern: &str, key: &str) -> bool {
        let parts: Vec<&str> = key.split('.').collect();
        segments_match(&parse_pattern(pattern).unwrap(), &parts)
    }

    #[test]
    fn key_patterns_match_like_the_alerters() {
        assert!(watches("meter.*.temperature", "meter.1.temperature"));
        assert!(!watches("meter.*.temperature", "meter.temperature"));
        assert!(!watches("meter.*.temperature", "meter.1.a.temperature"));
        assert!(watches("meter.**", "meter"));
        assert!(watches("meter.**", "meter.a.b"));
        assert!(watches("**.temperature", "a.b.temperature"));
        assert!(!watches("meter.1.door", "meter.1.doors"));
        assert!(parse_pattern("a.b*").is_none());
    }

    #[test]
    fn device_globs_match_runs_of_characters() {
        assert!(glob_matches("site-4-*", "site-4-pump"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        assert!(!glob_matches("ab*ba", "aba"));
        assert!(!glob_matches("dev-1", "dev-10"));
    }
}

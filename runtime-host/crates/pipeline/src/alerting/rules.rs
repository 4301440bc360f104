//! The alert rules of each organisation, and the rule book a host evaluates batches with.
//!
//! An organisation's rules are one rule set: a rule file's text (TOML or JSON), checked whole by
//! the running alerter's `check-rules`. A host's rule sets come from two layers: the files of the
//! rules directory (`<org>.toml` or `<org>.json`, if one is configured) and the rule sets its
//! region is assigned in the function registry (`rules:<org>`, see `crate::registry`), which win
//! per organisation. [`RuleSets`] keeps both layers, the alerter that checked them, and the
//! [`RuleBook`] they make, which batches load once and keep (an update never splits a batch).
//! A bad file is refused whole, with a message naming the file and the rule at fault.
//!
//! Besides the rules as the component wants them back (id, version, canonical source), the book
//! keeps each rule's key and device patterns, so that a batch no rule watches costs no call.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_contract::pattern::{KeyPattern, device_matches};

use anyhow::{Context as _, bail};
use arc_swap::{ArcSwap, Guard};

use weir_runtime::alerter::{Rule, RuleSummary};
use weir_runtime::{AlerterFunction, FunctionSlot};

/// A rule set's text and where it comes from, before it is checked.
#[derive(Debug, Clone)]
pub struct RuleSource {
    /// The organisation whose devices the rules watch.
    pub org: String,
    /// Where the text comes from, for messages: a file's path, or `registry rules:<org>`.
    pub origin: String,
    /// The rule file's text, TOML or JSON.
    pub text: String,
}

/// One organisation's rules, checked by an alerter.
#[derive(Debug)]
pub struct RuleSet {
    source: RuleSource,
    /// SHA-256 of the text, hex: the version in the registry's terms.
    version: String,
    rules: Vec<LoadedRule>,
}

impl RuleSet {
    /// Checks `source` with `function`; the error names where it comes from and, from the
    /// component's message, the rule and field at fault.
    pub async fn check(source: RuleSource, function: &AlerterFunction) -> anyhow::Result<RuleSet> {
        let summaries = function
            .check_rules(&source.text)
            .await
            .with_context(|| format!("checking alert rules {}", source.origin))?
            .map_err(|message| {
                anyhow::anyhow!("alert rules {} refused: {message}", source.origin)
            })?;
        let rules = summaries
            .into_iter()
            .map(LoadedRule::new)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("alert rules {}", source.origin))?;
        Ok(RuleSet {
            version: weir_storage::artifact_sha256(source.text.as_bytes()),
            source,
            rules,
        })
    }

    /// SHA-256 of the rule file's text, hex (for a registry rule set, its registry version).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the rules come from: a file's path, or `registry rules:<org>`.
    pub fn origin(&self) -> &str {
        &self.source.origin
    }

    /// The id and version of every rule, in file order.
    pub fn rule_versions(&self) -> Vec<(String, u32)> {
        self.rules
            .iter()
            .map(|r| (r.rule.id.clone(), r.rule.version))
            .collect()
    }
}

/// Reads the rule files of `dir`: `<org>.toml` or `<org>.json`. Files of other extensions are
/// skipped; one organisation with two files is refused.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<RuleSource>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the alert rules directory {}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading the alert rules directory {}", dir.display()))?;
    paths.sort();
    let mut sources: Vec<RuleSource> = Vec::new();
    for path in paths {
        let (Some(org), Some("toml" | "json")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|e| e.to_str()),
        ) else {
            tracing::debug!(path = %path.display(), "not a rule file (<org>.toml or <org>.json); skipped");
            continue;
        };
        if sources.iter().any(|source| source.org == org) {
            bail!(
                "organisation {org} has two alert rule files in {}; keep one",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading alert rules {}", path.display()))?;
        sources.push(RuleSource {
            org: org.to_owned(),
            origin: path.display().to_string(),
            text,
        });
    }
    Ok(sources)
}

/// Checks every source with `function`; the first refusal fails them all.
async fn check_all(
    sources: Vec<RuleSource>,
    function: &AlerterFunction,
) -> anyhow::Result<HashMap<String, Arc<RuleSet>>> {
    let mut sets = HashMap::new();
    for source in sources {
        let org = source.org.clone();
        sets.insert(org, Arc::new(RuleSet::check(source, function).await?));
    }
    Ok(sets)
}

/// The sources of a layer's rule sets.
fn sources(layer: &HashMap<String, Arc<RuleSet>>) -> Vec<RuleSource> {
    layer.values().map(|set| set.source.clone()).collect()
}

/// The rules of every organisation, as a batch evaluates them.
#[derive(Debug, Default)]
pub struct RuleBook {
    orgs: HashMap<String, Arc<RuleSet>>,
}

/// One checked rule.
#[derive(Debug)]
struct LoadedRule {
    rule: Rule,
    /// Alerting and context key patterns: a point of any of them is evaluated.
    keys: Vec<KeyPattern>,
    /// Device id globs; empty means every device.
    devices: Vec<String>,
    /// Whether the rule raises no-data alerts (has a `stale_after`).
    stale: bool,
}

impl RuleBook {
    /// How many organisations and rules the book holds.
    pub fn size(&self) -> (usize, usize) {
        (
            self.orgs.len(),
            self.orgs.values().map(|set| set.rules.len()).sum(),
        )
    }

    /// The rule set of `org`, if it has one.
    pub fn rule_set(&self, org: &str) -> Option<&RuleSet> {
        self.orgs.get(org).map(Arc::as_ref)
    }

    /// The rules of `org` for `device` watching any of `keys`.
    pub fn for_batch<'k>(
        &self,
        org: &str,
        device: &str,
        keys: impl IntoIterator<Item = &'k str> + Clone,
    ) -> Vec<Rule> {
        let Some(set) = self.orgs.get(org) else {
            return Vec::new();
        };
        set.rules
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
            .filter(|(_, set)| set.rules.iter().any(|r| r.stale))
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
            .flat_map(|set| &set.rules)
            .filter(|r| r.stale && r.watches_device(device))
            .map(|r| r.rule.clone())
            .collect()
    }
}

/// The rule sets in force on a host: the rules directory's and the registry's (winning per
/// organisation), all checked by the running alerter, and the [`RuleBook`] they make. Every
/// change (a SIGHUP reload, a registry rule set, a new alerter) is checked and published under
/// one lock, so the book is always made of sets the running alerter accepted.
pub struct RuleSets {
    book: ArcSwap<RuleBook>,
    alerter: Arc<FunctionSlot<AlerterFunction>>,
    dir: Option<PathBuf>,
    layers: tokio::sync::Mutex<Layers>,
}

/// The two layers of rule sets, by organisation.
#[derive(Default)]
struct Layers {
    files: HashMap<String, Arc<RuleSet>>,
    registry: HashMap<String, Arc<RuleSet>>,
}

impl Layers {
    /// The book: the files, overlaid by the registry's rule sets.
    fn book(&self) -> RuleBook {
        let mut orgs = self.files.clone();
        orgs.extend(
            self.registry
                .iter()
                .map(|(org, set)| (org.clone(), set.clone())),
        );
        RuleBook { orgs }
    }
}

impl RuleSets {
    /// The files of `dir` (every one must pass `alerter`'s check) overlaid by `registry`'s
    /// rule sets, already checked by the same alerter.
    pub async fn start(
        alerter: Arc<FunctionSlot<AlerterFunction>>,
        dir: Option<PathBuf>,
        registry: Vec<RuleSet>,
    ) -> anyhow::Result<RuleSets> {
        let files = match &dir {
            Some(dir) => check_all(read_dir(dir)?, &alerter.current()).await?,
            None => HashMap::new(),
        };
        let layers = Layers {
            files,
            registry: registry
                .into_iter()
                .map(|set| (set.source.org.clone(), Arc::new(set)))
                .collect(),
        };
        Ok(RuleSets {
            book: ArcSwap::from_pointee(layers.book()),
            alerter,
            dir,
            layers: tokio::sync::Mutex::new(layers),
        })
    }

    /// The book in force; a batch keeps the one it loaded.
    pub fn load(&self) -> Guard<Arc<RuleBook>> {
        self.book.load()
    }

    /// The book in force, to keep.
    pub fn current(&self) -> Arc<RuleBook> {
        self.book.load_full()
    }

    /// The versions (SHA-256) of the registry's rule sets in force, by organisation.
    pub async fn registry_versions(&self) -> HashMap<String, String> {
        let layers = self.layers.lock().await;
        layers
            .registry
            .iter()
            .map(|(org, set)| (org.clone(), set.version.clone()))
            .collect()
    }

    /// Reads the rules directory again; the old files stay if any file is refused. Returns the
    /// book's size. Nothing to read without a directory.
    pub async fn reload_files(&self) -> anyhow::Result<(usize, usize)> {
        let mut layers = self.layers.lock().await;
        if let Some(dir) = &self.dir {
            layers.files = check_all(read_dir(dir)?, &self.alerter.current()).await?;
        }
        let book = layers.book();
        let size = book.size();
        self.book.store(Arc::new(book));
        Ok(size)
    }

    /// Checks `source`, the registry's rule set of its organisation, with the running alerter
    /// and puts it in force; refused, the organisation's rule set in force stays.
    pub async fn apply_registry(&self, source: RuleSource) -> anyhow::Result<()> {
        let mut layers = self.layers.lock().await;
        let set = RuleSet::check(source, &self.alerter.current()).await?;
        layers
            .registry
            .insert(set.source.org.clone(), Arc::new(set));
        self.book.store(Arc::new(layers.book()));
        Ok(())
    }

    /// Makes `alerter` the running alerter if it accepts every rule set in force (both layers),
    /// re-checked into the book with it; otherwise the running alerter and book stay. Returns
    /// the alerter it replaced.
    pub async fn switch_alerter(
        &self,
        alerter: AlerterFunction,
    ) -> anyhow::Result<Arc<AlerterFunction>> {
        let mut layers = self.layers.lock().await;
        let files = check_all(sources(&layers.files), &alerter)
            .await
            .context("the new alerter refuses a rule file in force")?;
        let registry = check_all(sources(&layers.registry), &alerter)
            .await
            .context("the new alerter refuses a rule set in force")?;
        *layers = Layers { files, registry };
        let old = self.alerter.replace(alerter);
        self.book.store(Arc::new(layers.book()));
        Ok(old)
    }
}

impl LoadedRule {
    fn new(summary: RuleSummary) -> anyhow::Result<LoadedRule> {
        let keys = summary
            .keys
            .iter()
            .map(|pattern| KeyPattern::parse(pattern))
            .collect::<Result<Vec<_>, _>>()
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
        self.devices.is_empty() || self.devices.iter().any(|glob| device_matches(glob, device))
    }

    fn watches_key(&self, key: &str) -> bool {
        self.keys.iter().any(|pattern| pattern.matches(key))
    }
}

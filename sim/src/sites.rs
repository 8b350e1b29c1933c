//! Fault sites: the places where the broker or storage met a fault and handled it mark it with a
//! `tracing` event carrying a `site` field (`site = "offsets-replay-reread"`: a replay of
//! `__consumer_offsets` read a batch again after a read error). A run counts them by name, and
//! the count is in its summary, so a regression seed can assert that it still meets the fault it
//! is named for: a change to the swarm or the workload must not quietly turn it into a seed that
//! tests nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Counts of each site, by name; shared by the layer and the run.
#[derive(Debug, Clone, Default)]
pub struct SiteCounts(Arc<Mutex<BTreeMap<String, u64>>>);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SiteCounts {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.0).clone()
    }

    /// A layer that counts every event with a `site` field into these counts.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let filter = tracing_subscriber::filter::filter_fn(|metadata| {
            metadata.is_event() && metadata.fields().field("site").is_some()
        });
        SiteLayer {
            counts: self.clone(),
        }
        .with_filter(filter)
    }
}

struct SiteLayer {
    counts: SiteCounts,
}

/// Finds the `site` field's value.
struct SiteVisit(Option<String>);

impl Visit for SiteVisit {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "site" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "site" && self.0.is_none() {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for SiteLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let mut visit = SiteVisit(None);
        event.record(&mut visit);
        if let Some(site) = visit.0 {
            *lock(&self.counts.0).entry(site).or_default() += 1;
        }
    }
}

/// `name=count` pairs, space separated, or `none`: the summary's `sites:` line, which
/// `parse` reads back.
pub fn render(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    let pairs: Vec<String> = counts
        .iter()
        .map(|(site, count)| format!("{site}={count}"))
        .collect();
    pairs.join(" ")
}

/// Reads back what `render` wrote; pairs that do not parse are left out.
pub fn parse(text: &str) -> BTreeMap<String, u64> {
    text.split_whitespace()
        .filter_map(|pair| {
            let (site, count) = pair.split_once('=')?;
            Some((site.to_string(), count.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn counts_events_with_a_site_by_name() {
        let counts = SiteCounts::default();
        let subscriber = tracing_subscriber::registry().with(counts.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(site = "a-site", attempt = 1, "met a fault");
            tracing::warn!(site = "a-site", "met it again");
            tracing::info!(site = "b-site", "another");
            tracing::warn!(attempt = 1, "no site: not counted");
        });
        let text = render(&counts.snapshot());
        insta::assert_snapshot!(text, @"a-site=2 b-site=1");
        assert_eq!(parse(&text), counts.snapshot());
        assert_eq!(render(&BTreeMap::new()), "none");
        assert!(parse("none").is_empty());
    }
}

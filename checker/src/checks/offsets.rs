//! Log agreement: inconsistent-offsets, duplicate and phantom-read.
//!
//! - inconsistent-offsets: one offset of a partition seen (by an acknowledged send of a committed
//!   operation, or by any poll) holding two different values.
//! - duplicate: one value seen at two different offsets of a partition.
//! - phantom-read: a poll returned a value no operation ever sent to that partition (corruption,
//!   or a record served from the wrong partition).

use crate::checks::Analysis;
use crate::report::Anomaly;
use std::collections::BTreeMap;

pub(crate) fn check(anomalies: &mut Vec<Anomaly>, analysis: &Analysis) {
    for (partition, index) in &analysis.index.partitions {
        let partition = (*partition).clone();
        // value -> [(offset, first event that saw it there)], in offset order.
        let mut placements: BTreeMap<i64, Vec<(i64, usize)>> = BTreeMap::new();
        for (offset, seen) in &index.log {
            if seen.len() > 1 {
                anomalies.push(Anomaly::InconsistentOffsets {
                    partition: partition.clone(),
                    offset: *offset,
                    values: seen.iter().map(|s| s.value).collect(),
                    events: seen.iter().map(|s| s.event).collect(),
                });
            }
            for s in seen {
                placements
                    .entry(s.value)
                    .or_default()
                    .push((*offset, s.event));
                if !index.writers.contains_key(&s.value) {
                    anomalies.push(Anomaly::PhantomRead {
                        partition: partition.clone(),
                        offset: *offset,
                        value: s.value,
                        reader: s.event,
                    });
                }
            }
        }
        for (value, places) in placements {
            if places.len() > 1 {
                anomalies.push(Anomaly::Duplicate {
                    partition: partition.clone(),
                    value,
                    offsets: places.iter().map(|p| p.0).collect(),
                    events: places.iter().map(|p| p.1).collect(),
                });
            }
        }
    }
}

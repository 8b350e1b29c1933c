//! Text rendering of one anomaly: a title line `kind: partition P, ...`, then indented proof lines
//! naming event indices as `event N`. Kept apart from `report.rs` so the types read on their own.

use crate::history::Record;
use crate::report::{Anomaly, PrecommitReason};

pub(crate) fn anomaly(anomaly: &Anomaly) -> String {
    let kind = anomaly.kind();
    let body = match anomaly {
        Anomaly::MalformedHistory { event, reason } => format!("event {event}: {reason}"),
        Anomaly::InconsistentOffsets {
            partition,
            offset,
            values,
            events,
        } => {
            let seen: Vec<String> = values
                .iter()
                .zip(events)
                .map(|(v, e)| format!("value {v} (event {e})"))
                .collect();
            format!(
                "partition {partition}, offset {offset}\n  holds {}",
                seen.join(", ")
            )
        }
        Anomaly::Duplicate {
            partition,
            value,
            offsets,
            events,
        } => {
            let seen: Vec<String> = offsets
                .iter()
                .zip(events)
                .map(|(o, e)| format!("offset {o} (event {e})"))
                .collect();
            format!(
                "partition {partition}, value {value}\n  at {}",
                seen.join(", ")
            )
        }
        Anomaly::PhantomRead {
            partition,
            offset,
            value,
            reader,
        } => format!(
            "partition {partition}, offset {offset}, value {value}\n  read by event {reader}, \
             but no operation sent it"
        ),
        Anomaly::LostWrite { .. } | Anomaly::Unseen { .. } => lost(anomaly),
        Anomaly::PollSkip { .. } | Anomaly::NonmonotonicPoll { .. } => poll(anomaly),
        Anomaly::NonmonotonicSend { .. } | Anomaly::SendRealtimeOrder { .. } => send(anomaly),
        Anomaly::SeekSkip { .. }
        | Anomaly::SeekWrongRecord { .. }
        | Anomaly::LookupWrong { .. } => seek(anomaly),
        Anomaly::OutputDuplicated { .. }
        | Anomaly::OutputMissing { .. }
        | Anomaly::OutputUncommittedInput { .. } => exactly_once(anomaly),
        _ => transaction(anomaly),
    };
    format!("{kind}: {body}\n")
}

fn lost(anomaly: &Anomaly) -> String {
    match anomaly {
        Anomaly::LostWrite {
            partition,
            offset,
            value,
            writer,
            bound_offset,
            bound_value,
            bound_reader,
        } => format!(
            "partition {partition}, offset {offset}, value {value}\n  sent by event {writer}, \
             never polled, but event {bound_reader} polled offset {bound_offset} value \
             {bound_value} after it"
        ),
        Anomaly::Unseen {
            partition,
            count,
            values,
            writers,
        } => format!(
            "partition {partition}: lag {count} after heal\n  acknowledged but never polled: \
             values {} (sent by events {}){}",
            join(values),
            join(writers),
            if *count > values.len() { ", ..." } else { "" },
        ),
        _ => unreachable!("lost() takes lost-write and unseen"),
    }
}

fn poll(anomaly: &Anomaly) -> String {
    match anomaly {
        Anomaly::PollSkip {
            partition,
            process,
            internal,
            previous,
            next,
            offset_previous,
            offset_next,
            skipped_count,
            skipped,
        } => format!(
            "partition {partition}, process {process}{}\n  read offset {offset_previous} (event \
             {previous}) then offset {offset_next} (event {next}), skipping {skipped_count}: {}",
            scope(*internal),
            records(skipped),
        ),
        Anomaly::NonmonotonicPoll {
            partition,
            process,
            internal,
            previous,
            next,
            offset_previous,
            offset_next,
        } => format!(
            "partition {partition}, process {process}{}\n  read offset {offset_previous} (event \
             {previous}) then offset {offset_next} (event {next})",
            scope(*internal),
        ),
        _ => unreachable!("poll() takes poll-skip and nonmonotonic-poll"),
    }
}

fn seek(anomaly: &Anomaly) -> String {
    match anomaly {
        Anomaly::SeekSkip {
            partition,
            process,
            seek,
            read,
            offset_sought,
            offset_read,
            skipped_count,
            skipped,
        } => format!(
            "partition {partition}, process {process}\n  sought offset {offset_sought} (event \
             {seek}), then first read offset {offset_read} (event {read}), skipping \
             {skipped_count}: {}",
            records(skipped),
        ),
        Anomaly::SeekWrongRecord {
            partition,
            process,
            seek,
            read,
            offset_sought,
            offset_read,
        } => format!(
            "partition {partition}, process {process}\n  sought offset {offset_sought} (event \
             {seek}), then first read offset {offset_read} (event {read}), below it"
        ),
        Anomaly::LookupWrong {
            partition,
            lookup,
            query,
            offset,
            rule,
            witness,
            record,
        } => format!(
            "partition {partition}, {rule:?}\n  list-offsets {query:?} answered {offset} (event \
             {lookup}); offset {} value {} (event {witness})",
            record.offset, record.value
        ),
        _ => unreachable!("seek() takes seek-skip, seek-wrong-record and lookup-wrong"),
    }
}

fn send(anomaly: &Anomaly) -> String {
    match anomaly {
        Anomaly::NonmonotonicSend {
            partition,
            process,
            internal,
            previous,
            next,
            send_previous,
            send_next,
        } => format!(
            "partition {partition}, process {process}{}\n  sent {} (event {previous}) then {} \
             (event {next})",
            scope(*internal),
            record(send_previous),
            record(send_next),
        ),
        Anomaly::SendRealtimeOrder {
            partition,
            earlier_complete,
            earlier_send,
            later_invoke,
            later_complete,
            later_send,
        } => format!(
            "partition {partition}\n  {} acknowledged at event {earlier_complete}, before {} was \
             invoked at event {later_invoke} (acknowledged at event {later_complete})",
            record(earlier_send),
            record(later_send),
        ),
        _ => unreachable!("send() takes nonmonotonic-send and send-realtime-order"),
    }
}

fn exactly_once(anomaly: &Anomaly) -> String {
    match anomaly {
        Anomaly::OutputDuplicated {
            input,
            input_value,
            outputs,
            readers,
        } => {
            let read: Vec<String> = outputs
                .iter()
                .zip(readers)
                .map(|((partition, output), reader)| {
                    format!("{partition} {} (event {reader})", record(output))
                })
                .collect();
            format!(
                "partition {input}, value {input_value}\n  processed into {} committed outputs: {}",
                outputs.len(),
                read.join(", ")
            )
        }
        Anomaly::OutputMissing {
            input,
            group,
            committed,
            list,
            count,
            offsets,
            values,
        } => {
            let inputs: Vec<String> = offsets
                .iter()
                .zip(values)
                .map(|(offset, value)| format!("offset {offset} value {value}"))
                .collect();
            format!(
                "partition {input}, group {group}\n  committed offset {committed} (event {list}) \
                 covers {count} inputs with no committed output: {}{}",
                inputs.join(", "),
                if *count > offsets.len() { ", ..." } else { "" },
            )
        }
        Anomaly::OutputUncommittedInput {
            input,
            input_offset,
            input_value,
            output,
            output_record,
            reader,
            group,
            committed,
            list,
        } => format!(
            "partition {input}, offset {input_offset}, value {input_value}\n  its output \
             {output} {} was read by event {reader}, but group {group} committed only up to \
             {committed} (event {list})",
            record(output_record)
        ),
        _ => unreachable!("exactly_once() takes the output-* anomalies"),
    }
}

fn transaction(anomaly: &Anomaly) -> String {
    match anomaly {
        Anomaly::AbortedRead {
            partition,
            offset,
            value,
            writer,
            reader,
            reader_count,
        } => format!(
            "partition {partition}, offset {offset}, value {value}\n  sent by failed event \
             {writer}, yet read by event {reader} ({reader_count} readers)"
        ),
        Anomaly::PrecommittedRead {
            partition,
            offset,
            value,
            writer,
            reader,
            reason,
        } => {
            let why = match reason {
                PrecommitReason::OwnWrite => "the reading transaction sent it itself".to_string(),
                PrecommitReason::ReadBeforeWriteInvoked => {
                    format!("the read completed before event {writer} was invoked")
                }
            };
            format!(
                "partition {partition}, offset {offset}, value {value}\n  sent by event {writer}, \
                 read by event {reader}: {why}"
            )
        }
        Anomaly::TornTransaction {
            writer,
            reader,
            observed_partition,
            observed,
            missed_partition,
            missed,
        } => format!(
            "partition {missed_partition}, offset {}, value {}\n  transaction event {writer}: \
             event {reader} read {observed_partition} {} and read across {missed_partition} \
             offset {} without it",
            missed.offset,
            missed.value,
            record(observed),
            missed.offset,
        ),
        Anomaly::CommittedOffsetRegression {
            group,
            partition,
            commit,
            offset_committed,
            list,
            offset_listed,
        } => format!(
            "partition {partition}, group {group}\n  offset {offset_committed} committed by \
             event {commit}, later listed as {offset_listed} by event {list}"
        ),
        Anomaly::StaleGenerationCommit {
            group,
            commit,
            generation,
            newer,
            generation_newer,
        } => format!(
            "group {group}\n  event {commit} committed under generation {generation} after event \
             {newer} had committed under generation {generation_newer}"
        ),
        Anomaly::MalformedAccepted {
            partition,
            poison,
            send,
        } => format!(
            "partition {partition}\n  event {send} acknowledged a batch poisoned with {poison}, \
             which the broker had to refuse"
        ),
        Anomaly::EarlyDeletion {
            partition,
            offset,
            value,
            timestamp,
            writer,
            observer,
            log_start,
        } => format!(
            "partition {partition}, value {value} at offset {offset} (timestamp {timestamp}, \
             written by event {writer})\n  event {observer} saw the log start at {log_start} \
             while neither retention.ms nor retention.bytes allowed deleting it"
        ),
        Anomaly::LatestValueLost {
            partition,
            key,
            offset,
            value,
            writer,
        } => format!(
            "partition {partition}, key {key}\n  event {writer} acknowledged value {value} at \
             offset {offset}, the key's latest, and no final poll returned it"
        ),
        _ => unreachable!("transaction() takes the remaining kinds"),
    }
}

fn scope(internal: bool) -> &'static str {
    if internal {
        " (within one operation)"
    } else {
        ""
    }
}

fn record(record: &Record) -> String {
    format!("value {} at offset {}", record.value, record.offset)
}

fn records(records: &[Record]) -> String {
    let listed: Vec<String> = records
        .iter()
        .map(|r| format!("{}:{}", r.offset, r.value))
        .collect();
    format!("[{}]", listed.join(" "))
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

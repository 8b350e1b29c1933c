//! The transactional processes of `txn_workload`: producers and consume-transform-produce
//! processors, both on the client's transactional producer.
//!
//! A transactional producer (processes 400..) sends 1..=`sends_max` unique values to random
//! partitions of `t` and `u` in one transaction, recorded as one `Txn` op: `Ok` (with the
//! acknowledged offsets) when the commit was acknowledged, `Fail` when an abort was, or when the
//! producer abandoned the transaction (dropped, never ended: only the coordinator's timeout can
//! end it, and Kafka never commits a transaction nobody asked to commit), `Info` when a commit or
//! abort failed without an answer. After anything but a clean commit or abort it starts over with
//! a new producer under a new transactional id, so an abandoned transaction is left to the
//! timeout rather than to fencing.
//!
//! A processor (processes 500..) owns the input partitions `p % processor_count == index` and a
//! transactional id that survives its restarts, so each restart fences the previous incarnation
//! (and aborts its open transaction). It reads its partitions committed from the group's committed
//! offsets (recorded as `ListCommitted`, then `Seek`), and per poll opens a transaction that sends
//! one output per input record to `out` (a new unique value, recorded with its source for the
//! exactly-once check), adds the consumed offsets (`send_offsets_to_transaction`), and commits,
//! aborts on purpose, or abandons it: then its next incarnation fences it while the transaction
//! is open, and the fenced one tries one more write and a commit as a zombie (processes 600..),
//! which the broker must refuse. After anything but a commit it restarts, so it rereads from the
//! committed offsets: an aborted input is processed again into a new output.

use crate::options::{Options, TxnPolicy};
use crate::recorder::Recorder;
use crate::txn_workload::{
    committed_list, consumer_config, partitions_of, poll_recorded, topic_partition, txn_id_set,
    TxnIds, PROCESSOR_GROUP, TOPIC_INPUT, TOPIC_OUTPUT, TOPIC_SECOND,
};
use crate::workload::{process_index, VALUES_PER_PROCESS};
use crate::world::TOPIC;
use bytes::Bytes;
use checker::{EventKind, MicroOp, Op, Partition, Source};
use client::{ClientConfig, Producer, ProducerRecord, TopicPartition};
use rand::Rng;
use runtime::rng::{stream_rng, ChaCha8Rng, Stream};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Process ids: transactional producers 400.., processors 500.., their fenced incarnations 600...
pub const PRODUCER_PROCESS_BASE: u64 = 400;
pub const PROCESSOR_PROCESS_BASE: u64 = 500;
const ZOMBIE_PROCESS_BASE: u64 = 600;
/// Pause after a failed operation, so a down broker is not hammered.
const BACKOFF: Duration = Duration::from_millis(200);

/// How a transaction is meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Commit,
    Abort,
    /// Never ended by its producer.
    Abandon,
}

fn fate_draw(rng: &mut ChaCha8Rng, policy: &TxnPolicy) -> Fate {
    let draw: f64 = rng.gen();
    if draw < policy.abandon_rate {
        Fate::Abandon
    } else if draw < policy.abandon_rate + policy.abort_rate {
        Fate::Abort
    } else {
        Fate::Commit
    }
}

fn producer_new(options: &Options, config: &ClientConfig, transactional_id: String) -> Producer {
    let policy = options.txn.as_ref().expect("transactional workload");
    let producer_config = client::ProducerConfig {
        acks: client::Acks::All,
        linger: Duration::ZERO,
        delivery_timeout: options.request_timeout * 2,
        idempotence: true,
        transactional_id: Some(transactional_id),
        transaction_timeout: policy.timeout,
        ..client::ProducerConfig::kafka_defaults()
    };
    Producer::new(config.clone(), producer_config)
}

/// `init_transactions`, bounded; `false` when it did not succeed (the producer is then dropped).
async fn init(producer: &Producer, options: &Options) -> bool {
    let deadline = options.request_timeout * 4;
    matches!(
        runtime::time::timeout(deadline, producer.init_transactions()).await,
        Ok(Ok(()))
    )
}

fn txn_op(sends: &[(Partition, i64)], offsets: &[Option<i64>]) -> Op {
    Op::Txn(
        sends
            .iter()
            .enumerate()
            .map(|(index, (partition, value))| MicroOp::Send {
                partition: partition.clone(),
                value: *value,
                offset: offsets.get(index).copied().flatten(),
                timestamp: None,
            })
            .collect(),
    )
}

/// Sends `sends` in the open transaction and ends it as `fate` says; returns the completion kind,
/// the acknowledged offsets, and whether the producer may carry on.
async fn transaction_run(
    producer: &Producer,
    options: &Options,
    sends: &[(Partition, i64)],
    fate: Fate,
    offsets_consumed: Option<&BTreeMap<TopicPartition, i64>>,
) -> (EventKind, Vec<Option<i64>>, bool) {
    let deadline = options.request_timeout * 2;
    if !matches!(
        runtime::time::timeout(deadline, producer.begin_transaction()).await,
        Ok(Ok(()))
    ) {
        // Nothing was sent in it.
        return (EventKind::Fail, Vec::new(), false);
    }
    let mut offsets = Vec::with_capacity(sends.len());
    let mut failed = false;
    for (partition, value) in sends {
        let record = ProducerRecord {
            partition: Some(partition.partition),
            ..ProducerRecord::new(
                partition.topic.as_str(),
                None,
                Some(Bytes::from(value.to_string())),
            )
        };
        match runtime::time::timeout(deadline, producer.send(record)).await {
            Ok(Ok(metadata)) => offsets.push(Some(metadata.offset)),
            Ok(Err(_)) | Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if !failed {
        if let Some(consumed) = offsets_consumed {
            let added = producer.send_offsets_to_transaction(PROCESSOR_GROUP, consumed);
            failed = !matches!(runtime::time::timeout(deadline, added).await, Ok(Ok(())));
        }
    }
    let fate = if failed && fate == Fate::Commit {
        Fate::Abort
    } else {
        fate
    };
    match fate {
        Fate::Abandon => (EventKind::Fail, Vec::new(), false),
        Fate::Abort => match runtime::time::timeout(deadline, producer.abort_transaction()).await {
            Ok(Ok(())) => (EventKind::Fail, Vec::new(), !failed),
            Ok(Err(_)) | Err(_) => (EventKind::Info, Vec::new(), false),
        },
        Fate::Commit => match runtime::time::timeout(deadline, producer.commit_transaction()).await
        {
            Ok(Ok(())) => (EventKind::Ok, offsets, true),
            // Its fate is unknown to the producer, which is not reused.
            Ok(Err(_)) | Err(_) => (EventKind::Info, Vec::new(), false),
        },
    }
}

/// A transactional producer: transactions across `t` and `u` until stopped. Each incarnation's
/// transactional id goes to `ids`.
pub async fn producer_run(
    process: u64,
    options: Options,
    config: ClientConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    ids: TxnIds,
) {
    let policy = options.txn.clone().expect("transactional workload");
    let mut rng = stream_rng(options.seed, Stream::Workload, process_index(process));
    let topics = [
        (TOPIC, options.topic_partitions),
        (TOPIC_SECOND, policy.data_partitions),
    ];
    let mut counter = 0;
    let mut incarnation = 0;
    while !stop.load(Ordering::SeqCst) {
        let transactional_id = format!("producer-{process}-{incarnation}");
        txn_id_set(&ids, process, &transactional_id);
        let producer = producer_new(&options, &config, transactional_id);
        incarnation += 1;
        if !init(&producer, &options).await {
            runtime::time::sleep(BACKOFF).await;
            continue;
        }
        while !stop.load(Ordering::SeqCst) {
            let count = rng.gen_range(1..=policy.sends_max);
            let sends: Vec<(Partition, i64)> = (0..count)
                .map(|_| {
                    let (topic, partitions) = topics[rng.gen_range(0..topics.len())];
                    let value = process as i64 * VALUES_PER_PROCESS + counter;
                    counter += 1;
                    (Partition::new(topic, rng.gen_range(0..partitions)), value)
                })
                .collect();
            let fate = fate_draw(&mut rng, &policy);
            recorder.event(process, EventKind::Invoke, txn_op(&sends, &[]));
            let (kind, offsets, carry_on) =
                transaction_run(&producer, &options, &sends, fate, None).await;
            recorder.event(process, kind, txn_op(&sends, &offsets));
            runtime::time::sleep(options.send_interval).await;
            if !carry_on {
                break;
            }
        }
    }
}

/// A consume-transform-produce processor over its share of the input partitions; its
/// transactional id goes to `ids`.
pub async fn processor_run(
    index: usize,
    options: Options,
    config: ClientConfig,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    ids: TxnIds,
) {
    let policy = options.txn.clone().expect("transactional workload");
    let process = PROCESSOR_PROCESS_BASE + index as u64;
    let mut rng = stream_rng(options.seed, Stream::Workload, process_index(process));
    let inputs: Vec<Partition> = partitions_of(&options, &[TOPIC_INPUT])
        .into_iter()
        .filter(|partition| partition.partition as usize % policy.processor_count == index)
        .collect();
    if inputs.is_empty() {
        return;
    }
    let transactional_id = format!("processor-{index}");
    txn_id_set(&ids, process, &transactional_id);
    let zombie = ZOMBIE_PROCESS_BASE + index as u64;
    let mut counter = 0;
    let mut successor: Option<Producer> = None;
    while !stop.load(Ordering::SeqCst) {
        // A new incarnation: fence the previous one, then resume from the committed offsets.
        let producer = match successor.take() {
            Some(producer) => producer,
            None => {
                let producer = producer_new(&options, &config, transactional_id.clone());
                if !init(&producer, &options).await {
                    runtime::time::sleep(BACKOFF).await;
                    continue;
                }
                producer
            }
        };
        let Some(mut consumer) =
            consumer_resume(process, &options, &config, &inputs, &recorder).await
        else {
            runtime::time::sleep(BACKOFF).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            let deadline = options.request_timeout * 2;
            let Some(records) = poll_recorded(process, &mut consumer, &recorder, deadline).await
            else {
                runtime::time::sleep(BACKOFF).await;
                continue;
            };
            if records.is_empty() {
                continue;
            }
            let mut sends = Vec::with_capacity(records.len());
            for record in &records {
                let input = Partition::new(&record.topic, record.partition);
                let output =
                    Partition::new(TOPIC_OUTPUT, record.partition % policy.output_partitions);
                let value = process as i64 * VALUES_PER_PROCESS + counter;
                counter += 1;
                let source = Source {
                    partition: input,
                    offset: record.offset,
                    value: crate::workload::record_value(record),
                };
                recorder.source(&output, value, source);
                sends.push((output, value));
            }
            let consumed: BTreeMap<TopicPartition, i64> = inputs
                .iter()
                .filter_map(|partition| {
                    let partition = topic_partition(partition);
                    let position = consumer.position(&partition)?;
                    Some((partition, position))
                })
                .collect();
            let fate = fate_draw(&mut rng, &policy);
            recorder.event(process, EventKind::Invoke, txn_op(&sends, &[]));
            let (kind, offsets, _) =
                transaction_run(&producer, &options, &sends, fate, Some(&consumed)).await;
            recorder.event(process, kind, txn_op(&sends, &offsets));
            if fate == Fate::Abandon {
                // The next incarnation fences this one while its transaction is open; this one
                // then carries on as a zombie, whose writes the broker must refuse.
                let next = producer_new(&options, &config, transactional_id.clone());
                if init(&next, &options).await {
                    let value = zombie as i64 * VALUES_PER_PROCESS + counter;
                    counter += 1;
                    let record = &records[0];
                    let source = Source {
                        partition: Partition::new(&record.topic, record.partition),
                        offset: record.offset,
                        value: crate::workload::record_value(record),
                    };
                    recorder.source(&sends[0].0, value, source);
                    zombie_write(zombie, &producer, &options, &recorder, (&sends[0].0, value))
                        .await;
                    successor = Some(next);
                }
            }
            if kind != EventKind::Ok {
                break; // Restart: reread from the committed offsets.
            }
        }
    }
}

/// A fenced producer's last try: one more record to a partition already in its open transaction,
/// then a commit. Both must be refused, so the transaction is recorded `Fail` unless the commit
/// is acknowledged; a broker that appends the record anyway leaves it in an open transaction no
/// marker ends (the last stable offset stalls) or shows an aborted read.
async fn zombie_write(
    process: u64,
    producer: &Producer,
    options: &Options,
    recorder: &Recorder,
    (partition, value): (&Partition, i64),
) {
    let sends = [(partition.clone(), value)];
    recorder.event(process, EventKind::Invoke, txn_op(&sends, &[]));
    let record = ProducerRecord {
        partition: Some(partition.partition),
        ..ProducerRecord::new(
            partition.topic.as_str(),
            None,
            Some(Bytes::from(value.to_string())),
        )
    };
    let deadline = options.request_timeout * 2;
    let offset = match runtime::time::timeout(deadline, producer.send(record)).await {
        Ok(Ok(metadata)) => Some(metadata.offset),
        Ok(Err(_)) | Err(_) => None,
    };
    let committed = offset.is_some()
        && matches!(
            runtime::time::timeout(deadline, producer.commit_transaction()).await,
            Ok(Ok(()))
        );
    let kind = match committed {
        true => EventKind::Ok,
        false => EventKind::Fail,
    };
    recorder.event(
        process,
        kind,
        txn_op(&sends, &[offset.filter(|_| committed)]),
    );
}

/// A read_committed consumer of `inputs` at the group's committed offsets (the log start where
/// none), each step recorded: the list, the assignment, the seek.
async fn consumer_resume(
    process: u64,
    options: &Options,
    config: &ClientConfig,
    inputs: &[Partition],
    recorder: &Recorder,
) -> Option<client::Consumer> {
    let mut cluster = client::Cluster::new(config.clone());
    let committed = committed_list(process, &mut cluster, inputs, recorder, options).await?;
    let mut consumer = client::Consumer::new(config.clone(), consumer_config());
    let positions: Vec<(TopicPartition, client::Offset)> = inputs
        .iter()
        .map(|partition| {
            let offset = committed.get(partition).copied().unwrap_or(-1).max(0);
            (topic_partition(partition), client::Offset::At(offset))
        })
        .collect();
    let assign = Op::Assign {
        partitions: inputs.to_vec(),
        seek_to_beginning: false,
    };
    recorder.event(process, EventKind::Invoke, assign.clone());
    let deadline = options.request_timeout * 2;
    match runtime::time::timeout(deadline, consumer.assign(positions.clone())).await {
        Ok(Ok(())) => recorder.event(process, EventKind::Ok, assign),
        Ok(Err(_)) | Err(_) => {
            recorder.event(process, EventKind::Fail, assign);
            return None;
        }
    }
    // The assignment moved every position to the committed offset: a seek, for the checker.
    let offsets: BTreeMap<Partition, i64> = inputs
        .iter()
        .zip(&positions)
        .map(|(partition, (_, offset))| {
            let client::Offset::At(offset) = offset else {
                unreachable!("positions are explicit")
            };
            (partition.clone(), *offset)
        })
        .collect();
    let seek = Op::Seek { offsets };
    recorder.event(process, EventKind::Invoke, seek.clone());
    recorder.event(process, EventKind::Ok, seek);
    Some(consumer)
}

//! Startup replay of `__consumer_offsets` under read errors (issue 9): a transient error is read
//! again and loses nothing; an error that persists, or a record that does not decode, fails the
//! coordinator's load instead of serving a group from part of its history.

use broker::cluster_mode::Placement;
use broker::group::records::{record_encode, OffsetsRecord};
use broker::group::shell::GroupCoordinator;
use broker::group::{Committed, GroupConfig, TopicPartition, OFFSETS_TOPIC};
use broker::topics::{TopicError, Topics};
use bytes::Bytes;
use kafka_protocol::records::Compression;
use runtime::{Clock, MemDisk, ReadFaults};
use std::fmt::Write;
use std::sync::Arc;
use wire::batch::build::{batch_encode, RecordSpec};

const GROUP: &str = "g";

fn config() -> GroupConfig {
    GroupConfig {
        offsets_topic_partitions: 4,
        ..GroupConfig::kafka_defaults()
    }
}

/// Opens the data dir, then (after the logs' recovery) fails the next `fail_reads` reads of
/// `__consumer_offsets`, then opens the coordinator, which replays it.
fn open(
    disk: &Arc<ReadFaults>,
    fail_reads: u64,
) -> (Topics, Result<Arc<GroupCoordinator>, TopicError>) {
    let mut topics = Topics::open(disk.clone(), "data".into(), 0, None).expect("topics open");
    disk.fail_next(OFFSETS_TOPIC, fail_reads);
    let rng = runtime::rng::stream_rng(1, runtime::rng::Stream::Groups, 0);
    let groups = GroupCoordinator::open(
        &mut topics,
        config(),
        Placement::Local,
        Clock::system(),
        rng,
        None,
    );
    (topics, groups)
}

/// Writes `commits` offset commits of group `g` (offsets 1..=commits, one batch each), then
/// appends `extra` raw records (key, value), then reopens with the next `fail_reads` reads of
/// `__consumer_offsets` failing, and renders what the coordinator recovered.
async fn replayed(commits: i64, extra: &[(&[u8], &[u8])], fail_reads: u64) -> String {
    let disk = ReadFaults::new(MemDisk::new());
    {
        let (topics, groups) = open(&disk, 0);
        let groups = groups.expect("first open");
        let index = groups.read(|core| core.partition_for(GROUP));
        let partition = topics.partition(OFFSETS_TOPIC, index).expect("exists");
        let append = |key: Bytes, value: Option<Bytes>| {
            let spec = RecordSpec {
                key: Some(key),
                value,
                headers: Vec::new(),
                timestamp: 0,
            };
            let batch = batch_encode(&[spec], Compression::None);
            partition.log().append(batch, 0, 0).expect("append");
        };
        for offset in 1..=commits {
            let (key, value) = record_encode(&OffsetsRecord::Offset {
                group_id: GROUP.into(),
                partition: TopicPartition {
                    topic: "t".into(),
                    partition: 0,
                },
                committed: Some(Committed {
                    offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: 0,
                }),
            });
            append(key, value);
        }
        for (key, value) in extra {
            append(
                Bytes::copy_from_slice(key),
                Some(Bytes::copy_from_slice(value)),
            );
        }
    }
    let (_topics, groups) = open(&disk, fail_reads);
    let mut text = format!("reads failed: {}\n", disk.failed());
    match groups {
        Err(error) => writeln!(text, "load failed: {error}").unwrap(),
        Ok(groups) => groups.read(|core| {
            let offsets = core.group(GROUP).map(|group| group.offsets().clone());
            match offsets {
                None => writeln!(text, "group {GROUP}: none"),
                Some(offsets) => offsets.iter().try_for_each(|(partition, committed)| {
                    let (topic, index) = (&partition.topic, partition.partition);
                    writeln!(
                        text,
                        "group {GROUP}: {topic}-{index} at {}",
                        committed.offset
                    )
                }),
            }
            .unwrap()
        }),
    }
    text
}

#[tokio::test]
async fn replays_every_commit() {
    insta::assert_snapshot!(replayed(5, &[], 0).await, @r"
    reads failed: 0
    group g: t-0 at 5
    ");
}

#[tokio::test]
async fn a_transient_read_error_is_read_again() {
    insta::assert_snapshot!(replayed(5, &[], 3).await, @r"
    reads failed: 3
    group g: t-0 at 5
    ");
}

#[tokio::test]
async fn a_persistent_read_error_fails_the_load() {
    insta::assert_snapshot!(replayed(5, &[], 1_000).await, @r"
    reads failed: 4
    load failed: replaying __consumer_offsets-3 failed at offset 0 after 4 reads: read header data/__consumer_offsets-3/00000000000000000000.log: injected EIO on read
    ");
}

#[tokio::test]
async fn a_record_that_does_not_decode_fails_the_load() {
    // Key version 1 (an offset commit) cut short after its group id's length.
    insta::assert_snapshot!(replayed(5, &[(&[0, 1, 0, 1], b"")], 0).await, @r"
    reads failed: 0
    load failed: replaying __consumer_offsets-3 failed at offset 0 after 4 reads: record at offset 5: record truncated
    ");
}

#[tokio::test]
async fn a_record_of_an_unknown_kind_is_skipped() {
    // Key version 7: a record kind a newer broker wrote.
    insta::assert_snapshot!(replayed(5, &[(&[0, 7], b"")], 0).await, @r"
    reads failed: 0
    group g: t-0 at 5
    ");
}

//! A data dir written by a gregor from before the metadata log (issue 12): topics in
//! `gregor-topics.json` alone, every partition hosted, producer ids in `producer-id-block`, no
//! `__cluster_metadata/`. The first start imports it through the controller (`legacy_import`):
//! the same names, topic ids, partition counts, configs and records; producer ids above the old
//! ones. A restart changes nothing, and a crash anywhere around the import loses or duplicates
//! no topic.

mod common;

use broker::cluster_mode::{topic_id_bytes, Access};
use broker::topics::{Topics, METADATA_FILE};
use broker::{Broker, BrokerConfig};
use bytes::Bytes;
use kafka_protocol::records::Compression;
use rand::SeedableRng;
use runtime::disk::CrashOptions;
use runtime::{Disk, MemDisk};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use wire::batch::build::{batch_encode, RecordSpec};

/// `(name, topic id, partition count, configs)` for each topic.
type Described = Vec<(String, [u8; 16], i32, BTreeMap<String, String>)>;

const OLD_ID: [u8; 16] = [0xa1; 16];
const OLDER_ID: [u8; 16] = [0xb2; 16];

/// Writes what an old single-node gregor left: two topics through `Topics` with no hosted set
/// (the old path), records in every partition, and a producer-id block file.
fn legacy_dir_write(disk: &Arc<MemDisk>) -> BTreeMap<(String, i32), Bytes> {
    let dyn_disk: Arc<dyn Disk> = disk.clone();
    let mut topics = Topics::open(dyn_disk, "data".into(), 0, None).unwrap();
    let configs = BTreeMap::from([("retention.ms".to_string(), "86400000".to_string())]);
    topics.create("old", 3, &configs, OLD_ID, 0).unwrap();
    topics
        .create("older", 1, &BTreeMap::new(), OLDER_ID, 0)
        .unwrap();
    let mut written = BTreeMap::new();
    for (name, count) in [("old", 3), ("older", 1)] {
        for index in 0..count {
            let partition = topics.partition(name, index).unwrap();
            let mut log = partition.log();
            for n in 0..3 {
                let value = format!("{name}-{index}-{n}");
                let records = [RecordSpec {
                    value: Some(Bytes::from(value)),
                    timestamp: 1_700_000_000_000,
                    ..Default::default()
                }];
                log.append(batch_encode(&records, Compression::None), 0, 0)
                    .unwrap();
            }
            log.flush().unwrap();
            let read = log.read(0, 1 << 20, log.log_end_offset()).unwrap();
            written.insert((name.to_string(), index), read.bytes);
        }
    }
    let block = storage::crc_framed("gregor-producer-id-block 1\nblock_end 2000\n");
    let path = Path::new("data").join(broker::producer_ids::FILE_NAME);
    runtime::disk::write_atomic(&**disk, &path, block.as_bytes()).unwrap();
    written
}

async fn open(disk: &Arc<MemDisk>, seed: u64) -> Arc<Broker> {
    let mut config = BrokerConfig::zero_config();
    config.data_dir = "data".into();
    common::broker_open(config, disk.clone(), seed).await
}

/// The image's topics, checked against the node's local record of them.
fn described(broker: &Broker) -> Described {
    let image = broker.cluster().image();
    let topics = broker.topics();
    image
        .topics()
        .map(|topic| {
            let id = topic_id_bytes(topic.topic_id);
            let count = topic.partitions.len() as i32;
            let configs = image.topic(topic.topic_id).unwrap().configs.clone();
            let local = topics.get(topic.name).expect("hosted here");
            assert_eq!((local.topic_id, local.partition_count), (id, count));
            assert_eq!(local.hosted_indices(), (0..count).collect::<Vec<_>>());
            (topic.name.to_string(), id, count, configs)
        })
        .collect()
}

fn records(broker: &Broker) -> BTreeMap<(String, i32), Bytes> {
    [("old", 0), ("old", 1), ("old", 2), ("older", 0)]
        .into_iter()
        .map(|(name, index)| {
            let partition = broker.partition_serving(name, index, Access::Read).unwrap();
            let log = partition.log();
            let read = log.read(0, 1 << 20, log.log_end_offset()).unwrap();
            ((name.to_string(), index), read.bytes)
        })
        .collect()
}

fn expected() -> Described {
    let configs = BTreeMap::from([("retention.ms".to_string(), "86400000".to_string())]);
    vec![
        ("old".to_string(), OLD_ID, 3, configs),
        ("older".to_string(), OLDER_ID, 1, BTreeMap::new()),
    ]
}

#[tokio::test]
async fn an_old_data_dir_opens_with_every_topic_id_config_and_record() {
    let disk = MemDisk::new();
    let written = legacy_dir_write(&disk);
    let broker = open(&disk, 1).await;
    assert_eq!(described(&broker), expected());
    assert_eq!(records(&broker), written);
    let first_id = broker.producer_id_new().unwrap();
    assert!(
        first_id >= 2000,
        "producer id {first_id} may repeat an old one"
    );
    // The local record now names the hosted partitions: no later start sees an old-style
    // topic, so none imports again.
    let recorded = broker
        .topics()
        .list()
        .filter(|topic| !broker::topics::is_internal(&topic.name))
        .all(|topic| topic.hosted.is_some());
    assert!(recorded, "an old-style topic is left");
    drop(broker);

    let broker = open(&disk, 2).await;
    assert_eq!(described(&broker), expected());
    assert_eq!(records(&broker), written);
}

/// The crash between the import's commit and the reconcile that records it: the next start
/// finds the old-style file again and imports again, which the controller answers without a
/// second copy of anything.
#[tokio::test]
async fn an_import_repeated_after_a_crash_duplicates_nothing() {
    let disk = MemDisk::new();
    let written = legacy_dir_write(&disk);
    let path = Path::new("data").join(METADATA_FILE);
    let legacy_file = runtime::disk::read_all_stable(&*disk, &path).unwrap();
    let broker = open(&disk, 1).await;
    drop(broker);
    runtime::disk::write_atomic(&*disk, &path, &legacy_file).unwrap();
    let broker = open(&disk, 2).await;
    assert_eq!(described(&broker), expected());
    assert_eq!(records(&broker), written);
}

/// Power losses, torn or clean, right after the first start: whatever the disk kept, the next
/// start has every topic once, with its records.
#[tokio::test]
async fn a_power_loss_around_the_import_loses_no_topic() {
    for seed in 0..6u64 {
        let disk = MemDisk::new();
        let written = legacy_dir_write(&disk);
        let broker = open(&disk, seed * 10 + 1).await;
        drop(broker);
        let options = match seed % 2 {
            0 => CrashOptions::LoseUnsynced,
            _ => CrashOptions::Tear,
        };
        disk.crash(options, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let broker = open(&disk, seed * 10 + 2).await;
        assert_eq!(described(&broker), expected(), "seed {seed}");
        assert_eq!(records(&broker), written, "seed {seed}");
    }
}

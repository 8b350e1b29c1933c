//! Startup loads under transient read faults: the topic metadata file has no checksum, so a bit
//! flipped on the way from the disk must not be believed (it could rename a topic, and the real
//! topic's directories would then be removed as orphans).

use broker::topics::{Topics, METADATA_FILE};
use kafka_protocol::records::Compression;
use runtime::{Disk, MemDisk, ReadFaults};
use std::collections::BTreeMap;
use std::path::Path;
use wire::batch::build::{batch_encode, RecordSpec};

/// Creates topic `t` with 3 records, reopens with the next `flips` reads of the metadata file
/// flipping the low bit of the topic name's byte ('t' reads as 'u'), and renders the topics.
#[tokio::test]
async fn a_flipped_metadata_read_is_read_again() {
    let rendered = |flips: u64| {
        let disk = ReadFaults::new(MemDisk::new());
        {
            let mut topics = Topics::open(disk.clone(), "data".into(), 0, None).unwrap();
            topics.create("t", 1, &BTreeMap::new(), [1; 16], 0).unwrap();
            let partition = topics.partition("t", 0).unwrap();
            let spec = RecordSpec {
                key: None,
                value: Some(bytes::Bytes::from_static(b"v")),
                headers: Vec::new(),
                timestamp: 0,
            };
            let batch = batch_encode(&[spec.clone(), spec.clone(), spec], Compression::None);
            partition.log().append(batch, 0, 0).unwrap();
            partition.log().flush().unwrap();
        }
        let path = Path::new("data").join(METADATA_FILE);
        let json = runtime::disk::read_all(&*disk, &path).unwrap();
        let name_byte = json
            .windows(11)
            .position(|window| window == b"\"name\": \"t\"")
            .expect("the name is in the file")
            + 9;
        disk.flip_next(METADATA_FILE, flips, name_byte);
        let topics = Topics::open(disk.clone(), "data".into(), 0, None).unwrap();
        let names: Vec<String> = ["t", "u"]
            .iter()
            .filter_map(|name| {
                let end = topics.partition(name, 0)?.log().log_end_offset();
                Some(format!("{name}-0 log end {end}"))
            })
            .collect();
        let dirs = disk.list(Path::new("data")).unwrap().len();
        format!("{} ({dirs} entries in data)", names.join(", "))
    };
    assert_eq!(rendered(0), "t-0 log end 3 (2 entries in data)");
    assert_eq!(rendered(1), "t-0 log end 3 (2 entries in data)");
}

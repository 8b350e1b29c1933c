//! Bad input against the real server (in-process, on a `MemDisk`): malformed frames, oversized
//! length prefixes, unknown API keys and garbage bodies close only the offending connection;
//! batches over `max.message.bytes` and corrupt batches get their Kafka error codes; nothing
//! stored is touched and other connections keep working.

use bytes::{BufMut, Bytes, BytesMut};
use client::{Admin, ClientConfig, Connection, Consumer, ConsumerConfig, Offset, TopicPartition};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use runtime::io::{AsyncReadExt, AsyncWriteExt};
use std::collections::BTreeMap;
use std::time::Duration;
use wire::batch::build::{batch_encode, RecordSpec};
use wire::{RequestKind, ResponseKind};

mod common;

async fn broker_start() -> String {
    common::broker_start(|_| {}).await
}

/// Sends raw bytes and reports whether the broker closed the connection (EOF within 5 s).
async fn closed_after(address: &str, bytes: &[u8]) -> bool {
    let mut stream = runtime::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match runtime::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    bytes.put_i32(body.len() as i32);
    bytes.put_slice(body);
    bytes.to_vec()
}

fn produce(records: Bytes) -> RequestKind {
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(records));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("t")))
        .with_partition_data(vec![partition]);
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![topic]),
    )
}

fn produce_error(response: ResponseKind) -> i16 {
    let ResponseKind::Produce(response) = response else {
        panic!("not a produce response")
    };
    response.responses[0].partition_responses[0].error_code
}

#[tokio::test]
async fn bad_input_closes_only_its_connection_and_never_touches_data() {
    let address = broker_start().await;
    let configs = BTreeMap::from([("max.message.bytes".to_string(), "2048".to_string())]);
    Admin::new(ClientConfig::new([address.clone()]))
        .create_topic("t", 1, 1, configs)
        .await
        .unwrap();

    // A healthy connection that must survive everything below.
    let mut healthy = Connection::connect(&address, &ClientConfig::new([address.clone()]))
        .await
        .unwrap();
    let small = batch_encode(
        &[RecordSpec {
            value: Some("ok".into()),
            timestamp: 1,
            ..Default::default()
        }],
        Compression::None,
    );
    assert_eq!(
        produce_error(
            healthy
                .request(produce(small.bytes().clone()))
                .await
                .unwrap()
        ),
        0
    );

    // Framing and header abuse: each closes its own connection.
    assert!(
        closed_after(&address, &[0x7f, 0xff, 0xff, 0xff]).await,
        "oversized length prefix"
    );
    assert!(
        closed_after(&address, &[0xff, 0xff, 0xff, 0xfe]).await,
        "negative length prefix"
    );
    assert!(
        closed_after(&address, &frame(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1])).await,
        "unknown API key"
    );
    assert!(
        closed_after(
            &address,
            &frame(&[0, 3, 0, 9, 0, 0, 0, 1, 0xff, 0x13, 0x37])
        )
        .await,
        "garbage Metadata body"
    );
    assert!(
        closed_after(&address, &frame(&[0, 1])).await,
        "frame shorter than a header"
    );
    // Issue 8: lengths that ask the decoder to reserve far more than the frame holds. These
    // aborted the process (an allocation failure is no panic); now each closes its connection.
    let huge_arrays: [(&str, &[u8]); 5] = [
        (
            "Metadata v1 claiming 2^31-1 topics (18 bytes)",
            b"\x00\x03\x00\x01\x00\x00\x00\x01\xff\xff\x7f\xff\xff\xff",
        ),
        (
            "Metadata v12 compact array of 2^32-2 topics",
            b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\x00\xff\xff\xff\xff\x0f",
        ),
        (
            "unsupported key 43 with a huge array",
            b"\x00\x2b\x00\x00\x00\x00\x00\x01\xff\xff\x7f\xff\xff\xff",
        ),
        (
            "unsupported key 49 with a huge array",
            b"\x00\x31\x00\x00\x00\x00\x00\x01\xff\xff\x7f\xff\xff\xff",
        ),
        (
            "unsupported key 55 with a huge array",
            b"\x00\x37\x00\x00\x00\x00\x00\x01\xff\xff\x7f\xff\xff\xff",
        ),
    ];
    for (what, body) in huge_arrays {
        assert!(closed_after(&address, &frame(body)).await, "{what}");
    }

    // Oversized and corrupt batches get error codes, on a connection that stays open.
    let big_value = Bytes::from(vec![b'x'; 4096]);
    let big = batch_encode(
        &[RecordSpec {
            value: Some(big_value),
            timestamp: 1,
            ..Default::default()
        }],
        Compression::None,
    );
    let code = produce_error(healthy.request(produce(big.bytes().clone())).await.unwrap());
    assert_eq!(code, ResponseError::MessageTooLarge.code());
    let mut corrupt = BytesMut::from(&small.bytes()[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let code = produce_error(healthy.request(produce(corrupt.freeze())).await.unwrap());
    assert_eq!(code, ResponseError::CorruptMessage.code());

    // The healthy connection still works, and the log holds exactly the one good record.
    assert_eq!(
        produce_error(
            healthy
                .request(produce(small.bytes().clone()))
                .await
                .unwrap()
        ),
        0
    );
    let mut consumer = Consumer::new(
        ClientConfig::new([address.clone()]),
        ConsumerConfig::kafka_defaults(),
    );
    consumer
        .assign(vec![(TopicPartition::new("t", 0), Offset::Earliest)])
        .await
        .unwrap();
    let mut values = Vec::new();
    for _ in 0..20 {
        values.extend(
            consumer
                .poll(Duration::from_millis(100))
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.value),
        );
        if values.len() >= 2 {
            break;
        }
    }
    assert_eq!(
        values,
        vec![
            Some(Bytes::from_static(b"ok")),
            Some(Bytes::from_static(b"ok"))
        ]
    );
}

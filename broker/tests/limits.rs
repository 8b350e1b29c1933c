//! Connection and memory limits against the real server: idle connections are reaped and evicted
//! to admit new clients, one address cannot take every slot, a peer that hangs up frees its slot
//! at once even with parked fetches, and large requests wait for the request-memory budget.

mod common;

use bytes::{BufMut, BytesMut};
use client::{Admin, ClientConfig, Connection};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use runtime::io::{AsyncReadExt, AsyncWriteExt};
use runtime::net::TcpStream;
use std::collections::BTreeMap;
use std::time::Duration;
use wire::RequestKind;

/// Whether the broker closes `stream` (EOF or reset) within `wait`; bytes it sends are skipped.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let read_until_closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    runtime::time::timeout(wait, read_until_closed)
        .await
        .is_ok()
}

/// Whether a new client can connect (which negotiates API versions) within `wait`.
async fn served_within(address: &str, wait: Duration) -> bool {
    let mut config = ClientConfig::new([address.to_string()]);
    config.connect_timeout = Duration::from_millis(500);
    let clock = runtime::Clock::system();
    let deadline = clock.now() + wait;
    while clock.now() < deadline {
        if Connection::connect(address, &config).await.is_ok() {
            return true;
        }
        runtime::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// An ApiVersions v0 request padded to `frame_bytes` (the broker ignores trailing bytes).
fn api_versions_frame(frame_bytes: usize, correlation_id: i32) -> Vec<u8> {
    let mut frame = BytesMut::new();
    frame.put_i32(i32::try_from(frame_bytes - 4).unwrap());
    frame.put_i16(18); // ApiVersions
    frame.put_i16(0);
    frame.put_i32(correlation_id);
    frame.put_i16(-1); // No client id.
    frame.resize(frame_bytes, 0);
    frame.to_vec()
}

/// Reads one response frame and returns its correlation id.
async fn correlation_read(stream: &mut TcpStream) -> std::io::Result<i32> {
    let length = stream.read_i32().await?;
    let correlation_id = stream.read_i32().await?;
    let mut rest = vec![0u8; usize::try_from(length - 4).unwrap()];
    stream.read_exact(&mut rest).await?;
    Ok(correlation_id)
}

fn parked_fetch() -> RequestKind {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(0)
        .with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("t")))
        .with_partitions(vec![partition]);
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(5_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![topic]),
    )
}

#[tokio::test]
async fn idle_connections_are_closed_but_parked_requests_are_not_idle() {
    let address = common::broker_start(|config| {
        config.connections_idle_max = Duration::from_millis(300);
    })
    .await;
    let config = ClientConfig::new([address.clone()]);
    Admin::new(config.clone())
        .create_topic("t", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    // A fetch parked longer than the idle limit is a request in flight: it gets its answer.
    let mut fetching = Connection::connect(&address, &config).await.unwrap();
    let mut fetch = parked_fetch();
    if let RequestKind::Fetch(request) = &mut fetch {
        request.max_wait_ms = 600;
    }
    assert!(fetching.request(fetch).await.is_ok());

    let clock = runtime::Clock::system();
    let opened = clock.now();
    let mut idle = TcpStream::connect(&address).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    assert!(clock.now() - opened >= Duration::from_millis(250));
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_slots() {
    let address = common::broker_start(|config| {
        config.connections_per_ip_max = 2;
    })
    .await;
    let _first = TcpStream::connect(&address).await.unwrap();
    let second = TcpStream::connect(&address).await.unwrap();
    let mut third = TcpStream::connect(&address).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(2)).await);
    drop(second);
    assert!(served_within(&address, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn idle_connections_are_evicted_to_admit_a_new_client() {
    let address = common::broker_start(|config| {
        config.connections_max = 4;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&address).await.unwrap());
        runtime::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(served_within(&address, Duration::from_secs(2)).await);
    // The longest-idle one made room.
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)).await);
}

#[tokio::test]
async fn a_peer_that_hangs_up_with_parked_fetches_frees_its_slot_at_once() {
    let address = common::broker_start(|config| {
        config.connections_max = 1;
        // One response in the writer and one queued: the third fetch finds the queue full, so
        // the hang-up must be noticed while the reader waits for room too.
        config.requests_in_flight_max = 1;
    })
    .await;
    let config = ClientConfig::new([address.clone()]);
    Admin::new(config.clone())
        .create_topic("t", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    runtime::time::sleep(Duration::from_millis(50)).await; // The admin's connection is gone.
    let mut parked = Connection::connect(&address, &config).await.unwrap();
    for _ in 0..3 {
        parked.request_send(parked_fetch()).await.unwrap();
    }
    runtime::time::sleep(Duration::from_millis(100)).await;
    // The only slot is busy: a new client is refused.
    assert!(!served_within(&address, Duration::from_millis(200)).await);
    drop(parked);
    assert!(served_within(&address, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn large_requests_wait_for_the_request_memory_budget() {
    const MIB: usize = 1 << 20;
    let address = common::broker_start(|config| {
        config.request_bytes_max = u32::try_from(MIB).unwrap();
        config.requests_queued_bytes_max = MIB;
    })
    .await;
    // A declares a 1 MiB request and sends a tenth of it: it holds the whole budget.
    let mut holder = TcpStream::connect(&address).await.unwrap();
    let frame = api_versions_frame(MIB + 4, 1);
    holder.write_all(&frame[..MIB / 10]).await.unwrap();
    holder.flush().await.unwrap();
    runtime::time::sleep(Duration::from_millis(100)).await;
    // B's 512 KiB request must wait for the budget...
    let mut waiter = TcpStream::connect(&address).await.unwrap();
    waiter
        .write_all(&api_versions_frame(MIB / 2, 2))
        .await
        .unwrap();
    waiter.flush().await.unwrap();
    let early = runtime::time::timeout(Duration::from_millis(500), correlation_read(&mut waiter));
    assert!(
        early.await.is_err(),
        "answered before the budget was released"
    );
    // ...while small requests are never charged.
    assert!(served_within(&address, Duration::from_secs(1)).await);
    // A finishes its request: the budget is released and B is served.
    holder.write_all(&frame[MIB / 10..]).await.unwrap();
    holder.flush().await.unwrap();
    assert_eq!(correlation_read(&mut holder).await.unwrap(), 1);
    let answered = runtime::time::timeout(Duration::from_secs(2), correlation_read(&mut waiter));
    assert_eq!(answered.await.unwrap().unwrap(), 2);
}

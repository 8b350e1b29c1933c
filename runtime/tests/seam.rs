//! The same async routine, run on tokio in the normal build and under madsim in the madsim build:
//! a TCP echo over the runtime seam with a timer and a timeout. If this passes in both builds, code
//! written against `runtime::` runs in both worlds.

use runtime::io::{AsyncReadExt, AsyncWriteExt};
use runtime::net::{TcpListener, TcpStream};
use runtime::time::{sleep, timeout};
use std::net::SocketAddr;
use std::time::Duration;

async fn echo_server(listener: TcpListener) {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut buffer = [0u8; 5];
    stream.read_exact(&mut buffer).await.expect("read");
    sleep(Duration::from_millis(10)).await;
    stream.write_all(&buffer).await.expect("write");
    stream.flush().await.expect("flush");
}

/// The routine under test: connect, send, wait for the echo within a deadline.
async fn echo_round_trip(address: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(b"hello").await.expect("write");
    stream.flush().await.expect("flush"); // madsim delivers on flush.
    let mut reply = vec![0u8; 5];
    timeout(Duration::from_secs(5), stream.read_exact(&mut reply))
        .await
        .expect("echo within the deadline")
        .expect("read");
    let clock = runtime::Clock::system();
    let started = clock.now();
    sleep(Duration::from_millis(100)).await;
    assert!(clock.now() - started >= Duration::from_millis(100));
    reply
}

#[cfg(not(madsim))]
#[tokio::test]
async fn echo_on_tokio() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = runtime::spawn(echo_server(listener));
    assert_eq!(echo_round_trip(address).await, b"hello");
    server.await.unwrap();
}

#[cfg(madsim)]
#[madsim::test]
async fn echo_on_madsim() {
    let handle = madsim::runtime::Handle::current();
    let server_ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let address = SocketAddr::new(server_ip, 9092);
    let server = handle.create_node().name("server").ip(server_ip).build();
    let client = handle
        .create_node()
        .name("client")
        .ip("10.0.0.2".parse().unwrap())
        .build();
    server.spawn(async move { echo_server(TcpListener::bind(address).await.unwrap()).await });
    sleep(Duration::from_millis(1)).await;
    let reply = client.spawn(echo_round_trip(address)).await.unwrap();
    assert_eq!(reply, b"hello");
}

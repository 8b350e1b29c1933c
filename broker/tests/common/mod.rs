//! The real server in-process on a `MemDisk`, on a free loopback port, for integration tests.

use broker::{BrokerConfig, NodeContext};
use std::time::Duration;

/// Starts a broker with zero-config defaults changed by `configure`; returns its address.
pub async fn broker_start(configure: impl FnOnce(&mut BrokerConfig)) -> String {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut config = BrokerConfig::zero_config();
    config.listen = address.clone();
    config.data_dir = "data".into();
    configure(&mut config);
    let address = config.listen.clone();
    let context = NodeContext {
        clock: runtime::Clock::system(),
        disk: runtime::MemDisk::new(),
        seed: 3,
        cluster_hooks: Default::default(),
    };
    runtime::spawn(async move {
        broker::serve(config, context, std::future::pending())
            .await
            .expect("serves")
    });
    for _ in 0..100 {
        // A probe connection that closes at once: it must not count against small limits later.
        if runtime::net::TcpStream::connect(&address).await.is_ok() {
            runtime::time::sleep(Duration::from_millis(20)).await;
            return address;
        }
        runtime::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broker did not listen");
}

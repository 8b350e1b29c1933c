//! `BrokerMarkerSender`: where the transaction coordinator's markers go. A partition's marker
//! goes to its leader by the metadata image (this broker for a node-local topic); markers for
//! partitions led here go straight to `handlers::write_txn_markers::write`, the others over
//! one cached connection per broker, as Kafka's `TransactionMarkerChannelManager` keeps one
//! per destination. A connection that fails is dropped and made again on the next send; the
//! coordinator retries whatever was not answered.

use super::shell::{MarkerFuture, MarkerSender};
use crate::broker::Broker;
use crate::group::TopicPartition;
use client::{ClientConfig, Connection};
use kafka_protocol::messages::WriteTxnMarkersRequest;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use wire::{RequestKind, ResponseKind};

/// A marker request waits up to `write_txn_markers::MARKER_WAIT_MAX` (10 s) at its broker; the
/// connection gives it 2 s more before calling it lost.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);

/// Holds the broker weakly (the broker holds the coordinator, which holds this).
#[derive(Debug)]
pub struct BrokerMarkerSender {
    broker: Weak<Broker>,
    /// Idle connections to other brokers, by node id; taken out while a request is on them.
    connections: Arc<Mutex<BTreeMap<i32, Connection>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BrokerMarkerSender {
    pub fn new(broker: Weak<Broker>) -> BrokerMarkerSender {
        BrokerMarkerSender {
            broker,
            connections: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }
}

impl MarkerSender for BrokerMarkerSender {
    fn leader(&self, partition: &TopicPartition) -> Option<i32> {
        let broker = self.broker.upgrade()?;
        if broker.node_local(&partition.topic) {
            return Some(broker.config.node_id);
        }
        let image = broker.cluster().image();
        let found = image
            .topic_by_name(&partition.topic)
            .and_then(|topic| image.partition(topic.topic_id, partition.partition));
        match found {
            // Deleted: this broker answers UNKNOWN_TOPIC_OR_PARTITION, which ends the partition.
            None => Some(broker.config.node_id),
            // Offline: retried until a leader is elected.
            Some(found) => found.leader(),
        }
    }

    fn send(&self, node_id: i32, request: WriteTxnMarkersRequest) -> MarkerFuture {
        let broker = self.broker.upgrade();
        let connections = self.connections.clone();
        Box::pin(async move {
            let broker = broker.ok_or_else(|| "the broker is shutting down".to_string())?;
            if node_id == broker.config.node_id {
                let response = crate::handlers::write_txn_markers::write(&broker, request).await;
                // Aimed crashes land here: markers durable, the coordinator not yet told.
                runtime::buggify::hit(&*broker.disk, runtime::buggify::Site::MarkersWritten);
                return Ok(response);
            }
            let idle = lock(&connections).remove(&node_id);
            let mut connection = match idle.filter(|connection| !connection.is_broken()) {
                Some(connection) => connection,
                None => connect(&broker, node_id).await?,
            };
            let answer = connection
                .request(RequestKind::WriteTxnMarkers(request))
                .await;
            let response = match answer {
                Ok(ResponseKind::WriteTxnMarkers(response)) => response,
                Ok(other) => return Err(format!("WriteTxnMarkers answered by {other:?}")),
                Err(error) => return Err(format!("broker {node_id}: {error}")),
            };
            lock(&connections).insert(node_id, connection);
            Ok(response)
        })
    }
}

/// A connection to broker `node_id` at its registered endpoint, by the image.
async fn connect(broker: &Broker, node_id: i32) -> Result<Connection, String> {
    let address = {
        let image = broker.cluster().image();
        let registration = image
            .broker(node_id)
            .ok_or_else(|| format!("broker {node_id} is not registered"))?;
        client::config::broker_address(&registration.host, i32::from(registration.port))
    };
    let mut config = ClientConfig::new([address.clone()]);
    config.client_id = format!("gregor-txn-markers-{}", broker.config.node_id);
    config.clock = broker.clock;
    config.request_timeout = REQUEST_TIMEOUT;
    Connection::connect(&address, &config)
        .await
        .map_err(|error| format!("broker {node_id}: {error}"))
}

//! Accepting connections: the listener loop, the connection limits (`limits`), background tasks,
//! shutdown.
//!
//! `serve` is the one startup path: `gregor broker` and the simulator both call it, so the
//! simulator exercises exactly the code that serves real clients.

use crate::broker::{Broker, NodeContext};
use crate::config::BrokerConfig;
use crate::connection;
use crate::limits::Limits;
use runtime::net::TcpListener;
use std::future::Future;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the data dir: {0}")]
    Open(#[from] crate::topics::TopicError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot start the cluster node: {0}")]
    Cluster(#[from] cluster::node::ClusterError),
    /// The node stopped after its metadata log failed a write (a disk error): it applies
    /// nothing more, so the process exits for its supervisor to restart it from disk, as Kafka's
    /// does.
    #[error("the cluster node stopped after a metadata log write failed; restart to recover")]
    ClusterFailed,
    /// The controller refused a topic of a pre-Raft data dir's import: the broker does not
    /// serve, lest the reconciler remove a topic the image does not have.
    #[error("cannot import topic {name:?} into the metadata log: {message}")]
    Import { name: String, message: String },
}

/// Opens the data dir (`Broker::open`: the cluster node, a lone voter by default, registers
/// and unfences this broker first), binds, and serves until `shutdown` resolves; then flushes
/// every partition.
pub async fn serve(
    config: BrokerConfig,
    context: NodeContext,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let broker = runtime::select! {
        biased;
        () = &mut shutdown => {
            tracing::info!("shutdown requested while starting");
            return Ok(());
        }
        opened = Broker::open(config, context) => opened?,
    };
    serve_on(broker, shutdown).await
}

/// `serve` on a broker already opened (`Broker::open`): binds, serves until `shutdown`
/// resolves, then flushes every partition. Tests that need the `Broker` itself start here.
pub async fn serve_on(
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let address = broker.config.listen.clone();
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|source| ServeError::Bind {
            address: address.clone(),
            source,
        })?;
    tracing::info!(node = broker.config.node_id, %address, data_dir = %broker.config.data_dir.display(), "broker listening");
    let mut background = Tasks(vec![
        runtime::spawn(crate::maintenance::run(broker.clone())),
        runtime::spawn(crate::cluster_mode::reconcile_loop(broker.clone())),
        runtime::spawn(crate::cluster_mode::producer_ids_refill(broker.clone())),
    ]);
    // Only a quorum has other brokers that may lead a partition hosted here: a lone voter runs
    // no fetcher task at all (its worlds stay as they were).
    if broker.config.voters_effective().len() > 1 {
        let fetchers = crate::replica::fetcher::run(broker.clone());
        background.0.push(runtime::spawn(fetchers));
    }
    let mut failed = false;
    runtime::select! {
        biased;
        () = &mut shutdown => tracing::info!("shutdown requested"),
        () = cluster_failed(&broker) => {
            tracing::error!("the cluster node stopped after a metadata log write failed: exiting");
            failed = true;
        }
        () = accept_loop(&broker, listener) => {}
    }
    drop(background);
    if !failed {
        // Controlled shutdown: the controller moves leadership away before the logs close.
        broker.cluster().clone().shutdown().await;
    }
    shutdown_flush(&broker).await;
    if failed {
        return Err(ServeError::ClusterFailed);
    }
    Ok(())
}

/// Resolves once the cluster node has stopped on a failed metadata log write (or is gone).
async fn cluster_failed(broker: &Arc<Broker>) {
    let mut status = broker.cluster().status_watch();
    loop {
        if status.borrow_and_update().failed {
            return;
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// The connections' tasks, aborted when the accept loop ends (`serve` returns): a broker that
/// stops serving drops its clients, as a process that exits does. Without this a `serve` that
/// ended on a failed metadata log would leave connections running, and a supervisor's restart
/// in the same process (the simulator's) would find their sockets still holding the port.
struct Connections(Vec<runtime::JoinHandle<()>>);

impl Drop for Connections {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Background tasks, aborted in order when `serve` stops, returns or is dropped.
struct Tasks(Vec<runtime::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn accept_loop(broker: &Arc<Broker>, listener: TcpListener) {
    let limits = Limits::new(&broker.config, broker.clock.now());
    let mut connections = Connections(Vec::new());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                runtime::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let admission = match limits.admit(peer.ip(), broker.clock.now()) {
            Ok(admission) => admission,
            Err(refusal) => {
                tracing::warn!(%peer, ?refusal, "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (broker, limits) = (broker.clone(), limits.clone());
        connections.0.retain(|task| !task.is_finished());
        let task = runtime::spawn(connection::run(broker, limits, stream, peer, admission));
        connections.0.push(task);
    }
}

/// Makes everything appended durable before the process exits: acknowledged writes already are,
/// this covers acks=0 writes and keeps the next start's recovery short.
async fn shutdown_flush(broker: &Arc<Broker>) {
    let partitions = broker.topics().partitions_all();
    for partition in partitions {
        let end = partition.log().log_end_offset();
        if end > 0 {
            partition.flush_request();
            partition.durable_wait(end - 1).await;
        }
    }
    tracing::info!("all partitions flushed; stopped");
}

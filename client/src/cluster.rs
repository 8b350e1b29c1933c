//! `Cluster`: the metadata cache plus one pooled connection per broker, the I/O half of routing.
//!
//! Every client object (`Admin`, `Producer`, `Consumer`) owns one `Cluster`; nothing is shared
//! or global. Requests go to a node id (a partition's leader), to the controller, or to "any"
//! broker (metadata). A connection that fails is dropped from the pool and the metadata marked
//! stale, so the next attempt asks again who leads what. Bootstrap addresses are tried in rotation
//! so that one unreachable broker does not stall every retry on the same address.

use crate::config::{ClientConfig, BROKERS_TRIED_MAX};
use crate::connection::Connection;
use crate::error::ClientError;
use crate::metadata::{Metadata, MetadataScope};
use std::collections::BTreeMap;
use wire::protocol::messages::metadata_request::MetadataRequestTopic;
use wire::protocol::messages::{MetadataRequest, RequestKind, ResponseKind, TopicName};
use wire::protocol::protocol::StrBytes;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node(i32),
    /// The active controller if known, else any broker (KRaft brokers forward admin requests).
    Controller,
    Any,
}

#[derive(Debug)]
pub struct Cluster {
    config: ClientConfig,
    metadata: Metadata,
    metadata_stale: bool,
    connections: BTreeMap<i32, Connection>,
    /// A connection to a bootstrap address, whose node id we do not know.
    bootstrap: Option<Connection>,
    /// Where the next bootstrap attempt starts, rotating past addresses that failed.
    bootstrap_next: usize,
}

impl Cluster {
    pub fn new(config: ClientConfig) -> Cluster {
        Cluster {
            config,
            metadata: Metadata::empty(),
            metadata_stale: true,
            connections: BTreeMap::new(),
            bootstrap: None,
            bootstrap_next: 0,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn metadata_is_stale(&self) -> bool {
        self.metadata_stale
    }

    /// Marks the cache stale: the next `metadata_for` asks the cluster again.
    pub fn metadata_invalidate(&mut self) {
        self.metadata_stale = true;
    }

    /// Asks for `scope`'s metadata and merges it into the cache.
    pub async fn metadata_refresh(
        &mut self,
        scope: MetadataScope,
    ) -> Result<&Metadata, ClientError> {
        let topics = match &scope {
            MetadataScope::All => None,
            MetadataScope::Topics(names) => Some(
                names
                    .iter()
                    .map(|name| {
                        let name = TopicName(StrBytes::from_string(name.clone()));
                        MetadataRequestTopic::default().with_name(Some(name))
                    })
                    .collect(),
            ),
        };
        let request = MetadataRequest::default()
            .with_topics(topics)
            .with_allow_auto_topic_creation(false);
        let response = self
            .request(Target::Any, RequestKind::Metadata(request))
            .await?;
        let ResponseKind::Metadata(response) = response else {
            unreachable!("the connection decodes a Metadata response for a Metadata request");
        };
        let fresh = Metadata::from_response(&response);
        // Pooled connections to nodes that left, or moved, would route to the wrong place.
        self.connections.retain(|node_id, connection| {
            fresh
                .brokers
                .get(node_id)
                .is_some_and(|broker| broker.address() == connection.address())
        });
        // Fresh only if every cached topic was just asked about: a broker-only refresh (the
        // admin's controller lookup) says nothing about who leads the cached partitions.
        let covered = match &scope {
            MetadataScope::All => true,
            MetadataScope::Topics(names) => self
                .metadata
                .topics
                .keys()
                .all(|topic| names.contains(topic)),
        };
        self.metadata.merge(fresh, &scope);
        if covered {
            self.metadata_stale = false;
        }
        Ok(&self.metadata)
    }

    /// Metadata that covers `topics`, refreshing first if the cache is stale or lacks one of them.
    pub async fn metadata_for(&mut self, topics: &[String]) -> Result<&Metadata, ClientError> {
        let missing = topics
            .iter()
            .any(|topic| self.metadata.topic(topic).is_none());
        if self.metadata_stale || missing {
            let mut names: Vec<String> = self.metadata.topics.keys().cloned().collect();
            names.extend(topics.iter().cloned());
            names.sort();
            names.dedup();
            self.metadata_refresh(MetadataScope::Topics(names)).await?;
        }
        Ok(&self.metadata)
    }

    /// Sends `body` to `target` and waits for the answer. A transport failure drops the
    /// connection and marks the metadata stale.
    pub async fn request(
        &mut self,
        target: Target,
        body: RequestKind,
    ) -> Result<ResponseKind, ClientError> {
        let connection = self.connection(target).await?;
        let result = connection.request(body).await;
        self.after_exchange(target, &result);
        result
    }

    /// Sends `body` to `target` without waiting for an answer (Produce with acks=0).
    pub async fn send_no_response(
        &mut self,
        target: Target,
        body: RequestKind,
    ) -> Result<(), ClientError> {
        let connection = self.connection(target).await?;
        let result = connection.send_no_response(body).await;
        self.after_exchange(target, &result);
        result
    }

    /// Sleeps the configured retry backoff. Takes `&mut self` so the future stays `Send` (under
    /// madsim a `TcpStream`, and so a `Cluster`, is not `Sync`).
    pub async fn backoff(&mut self) {
        runtime::time::sleep(self.config.retry_backoff).await;
    }

    fn after_exchange<T>(&mut self, target: Target, result: &Result<T, ClientError>) {
        let failed = result
            .as_ref()
            .err()
            .is_some_and(ClientError::is_connection_fatal);
        let bootstrap_broken = self.bootstrap.as_ref().is_some_and(Connection::is_broken);
        if failed || bootstrap_broken {
            self.bootstrap = None;
        }
        self.connections
            .retain(|_, connection| !connection.is_broken());
        if failed {
            tracing::debug!(?target, error = %result.as_ref().err().expect("failed"), "connection dropped");
            self.metadata_stale = true;
        }
    }

    /// A healthy connection for `target`, connecting if needed. A connection left broken by a
    /// cancelled request is replaced here.
    async fn connection(&mut self, target: Target) -> Result<&mut Connection, ClientError> {
        self.connections
            .retain(|_, connection| !connection.is_broken());
        if self.bootstrap.as_ref().is_some_and(Connection::is_broken) {
            self.bootstrap = None;
        }
        let node_id = match target {
            Target::Node(node_id) => Some(node_id),
            Target::Controller => self
                .metadata
                .controller
                .filter(|id| self.metadata.brokers.contains_key(id)),
            Target::Any => None,
        };
        match node_id {
            Some(node_id) => self.connection_node(node_id).await,
            None => self.connection_any().await,
        }
    }

    async fn connection_node(&mut self, node_id: i32) -> Result<&mut Connection, ClientError> {
        if !self.connections.contains_key(&node_id) {
            let broker = self.metadata.brokers.get(&node_id);
            let address = broker
                .ok_or(ClientError::UnknownBroker { node_id })?
                .address();
            let connected = Connection::connect(&address, &self.config).await;
            if connected.is_err() {
                self.metadata_stale = true;
            }
            self.connections.insert(node_id, connected?);
        }
        Ok(self.connections.get_mut(&node_id).expect("inserted above"))
    }

    /// Any live connection: a pooled one (lowest node id), the bootstrap one, or a new one to the
    /// next address in rotation over bootstrap servers and known brokers.
    async fn connection_any(&mut self) -> Result<&mut Connection, ClientError> {
        if let Some(node_id) = self.connections.keys().next().copied() {
            return Ok(self.connections.get_mut(&node_id).expect("key just read"));
        }
        if self.bootstrap.is_none() {
            self.bootstrap = Some(self.connect_rotating().await?);
        }
        Ok(self.bootstrap.as_mut().expect("set above"))
    }

    async fn connect_rotating(&mut self) -> Result<Connection, ClientError> {
        let mut addresses: Vec<String> = self.config.bootstrap.clone();
        addresses.extend(
            self.metadata
                .brokers
                .values()
                .map(|broker| broker.address()),
        );
        addresses.dedup();
        let tried_max = addresses.len().min(BROKERS_TRIED_MAX);
        let mut last = "no bootstrap addresses configured".to_string();
        for _ in 0..tried_max {
            let index = self.bootstrap_next % addresses.len();
            self.bootstrap_next = self.bootstrap_next.wrapping_add(1);
            match Connection::connect(&addresses[index], &self.config).await {
                Ok(connection) => {
                    // Stay on a good address next time too.
                    self.bootstrap_next = index;
                    return Ok(connection);
                }
                Err(error) => {
                    tracing::debug!(address = %addresses[index], %error, "bootstrap failed");
                    last = error.to_string();
                }
            }
        }
        Err(ClientError::NoBrokerReachable {
            tried: tried_max,
            last,
        })
    }
}

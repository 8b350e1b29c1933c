//! The client's picture of the cluster: brokers, topics, partitions and who leads each one.
//!
//! Pure data, built from Metadata responses and consulted to route every partition request to its
//! leader (`group_by_leader`). Nothing here does I/O; `cluster::Cluster` refreshes it when a
//! request fails in a way that suggests it is stale. All maps are `BTreeMap`s so that routing, and
//! so the order requests leave in, is the same on every run.

use crate::config::broker_address;
use crate::error::ClientError;
use std::collections::BTreeMap;
use std::fmt;
use wire::protocol::error::ResponseError;
use wire::protocol::messages::MetadataResponse;

/// A partition of a topic: the unit of ordering, leadership and routing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}-{}", self.topic, self.partition)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerMetadata {
    /// `host:port`, ready for `TcpStream::connect`.
    pub fn address(&self) -> String {
        broker_address(&self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// `None` while an election is in progress (leader id -1).
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub error: Option<ResponseError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// UNKNOWN_TOPIC_OR_PARTITION if the topic does not exist.
    pub error: Option<ResponseError>,
    pub is_internal: bool,
    /// **Invariant:** sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    pub fn partition(&self, partition: i32) -> Option<&PartitionMetadata> {
        let index = self
            .partitions
            .binary_search_by_key(&partition, |p| p.partition)
            .ok()?;
        Some(&self.partitions[index])
    }

    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.len()).expect("partition counts fit in i32 on the wire")
    }
}

/// Which topics a Metadata response speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataScope {
    /// Every topic: topics missing from the response no longer exist.
    All,
    /// Only these: other cached topics are untouched.
    Topics(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller: Option<i32>,
    pub brokers: BTreeMap<i32, BrokerMetadata>,
    pub topics: BTreeMap<String, TopicMetadata>,
}

impl Metadata {
    pub fn empty() -> Metadata {
        Metadata {
            cluster_id: None,
            controller: None,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
        }
    }

    pub fn from_response(response: &MetadataResponse) -> Metadata {
        let brokers = response
            .brokers
            .iter()
            .map(|broker| {
                let metadata = BrokerMetadata {
                    node_id: broker.node_id.0,
                    host: broker.host.to_string(),
                    port: broker.port,
                    rack: broker.rack.as_ref().map(ToString::to_string),
                };
                (broker.node_id.0, metadata)
            })
            .collect();
        // A topic asked for by id may come back without a name; we only ever ask by name.
        let topics = response
            .topics
            .iter()
            .filter_map(|topic| {
                let name = topic.name.as_ref()?.to_string();
                let mut partitions: Vec<PartitionMetadata> = topic
                    .partitions
                    .iter()
                    .map(|partition| PartitionMetadata {
                        partition: partition.partition_index,
                        leader: (partition.leader_id.0 >= 0).then_some(partition.leader_id.0),
                        leader_epoch: partition.leader_epoch,
                        replicas: partition.replica_nodes.iter().map(|node| node.0).collect(),
                        isr: partition.isr_nodes.iter().map(|node| node.0).collect(),
                        offline_replicas: partition.offline_replicas.iter().map(|n| n.0).collect(),
                        error: ResponseError::try_from_code(partition.error_code),
                    })
                    .collect();
                partitions.sort_by_key(|partition| partition.partition);
                partitions.dedup_by_key(|partition| partition.partition);
                let error = ResponseError::try_from_code(topic.error_code);
                Some((
                    name.clone(),
                    TopicMetadata {
                        name,
                        error,
                        is_internal: topic.is_internal,
                        partitions,
                    },
                ))
            })
            .collect();
        Metadata {
            cluster_id: response.cluster_id.as_ref().map(ToString::to_string),
            controller: (response.controller_id.0 >= 0).then_some(response.controller_id.0),
            brokers,
            topics,
        }
    }

    /// Takes in a fresh response's view. Brokers and controller are always replaced: every
    /// Metadata response lists all live brokers.
    pub fn merge(&mut self, fresh: Metadata, scope: &MetadataScope) {
        self.cluster_id = fresh.cluster_id;
        self.controller = fresh.controller;
        self.brokers = fresh.brokers;
        match scope {
            MetadataScope::All => self.topics = fresh.topics,
            MetadataScope::Topics(names) => {
                for name in names {
                    self.topics.remove(name);
                }
                self.topics.extend(fresh.topics);
            }
        }
    }

    /// The topic if it exists: a cached UNKNOWN_TOPIC_OR_PARTITION answer counts as absent.
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics
            .get(name)
            .filter(|topic| topic.error != Some(ResponseError::UnknownTopicOrPartition))
    }

    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        self.topic(topic).map(TopicMetadata::partition_count)
    }

    /// The broker leading `partition`, or why it cannot be reached yet.
    pub fn leader(&self, partition: &TopicPartition) -> Result<&BrokerMetadata, ClientError> {
        let metadata = self.partition(partition)?;
        let no_leader = || ClientError::NoLeader {
            topic: partition.topic.clone(),
            partition: partition.partition,
        };
        let node_id = metadata.leader.ok_or_else(no_leader)?;
        self.brokers
            .get(&node_id)
            .ok_or(ClientError::UnknownBroker { node_id })
    }

    pub fn partition(&self, partition: &TopicPartition) -> Result<&PartitionMetadata, ClientError> {
        let unknown = |partition_count| ClientError::UnknownPartition {
            topic: partition.topic.clone(),
            partition: partition.partition,
            partition_count,
        };
        let topic = self.topic(&partition.topic).ok_or_else(|| unknown(0))?;
        topic
            .partition(partition.partition)
            .ok_or_else(|| unknown(topic.partition_count()))
    }
}

/// Items split by the node that leads their partition, plus those that cannot be routed now.
#[derive(Debug)]
pub struct Routed<T> {
    pub by_node: BTreeMap<i32, Vec<(TopicPartition, T)>>,
    pub unroutable: Vec<(TopicPartition, T, ClientError)>,
}

/// Routes each item to its partition's leader. Order within a node is the input order.
pub fn group_by_leader<T>(metadata: &Metadata, items: Vec<(TopicPartition, T)>) -> Routed<T> {
    let mut routed = Routed {
        by_node: BTreeMap::new(),
        unroutable: Vec::new(),
    };
    for (partition, item) in items {
        match metadata.leader(&partition) {
            Ok(leader) => {
                routed
                    .by_node
                    .entry(leader.node_id)
                    .or_default()
                    .push((partition, item));
            }
            Err(error) => routed.unroutable.push((partition, item, error)),
        }
    }
    routed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wire::protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use wire::protocol::messages::{BrokerId, TopicName};
    use wire::protocol::protocol::StrBytes;

    /// A cluster of `brokers` nodes; topic `t` has `leaders.len()` partitions led as given.
    pub(crate) fn response(brokers: i32, leaders: &[i32]) -> MetadataResponse {
        let brokers = (0..brokers)
            .map(|node| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(node))
                    .with_host(StrBytes::from_string(format!("10.0.0.{node}")))
                    .with_port(9092)
            })
            .collect();
        let partitions = leaders
            .iter()
            .enumerate()
            .rev() // Brokers need not list partitions in order.
            .map(|(index, leader)| {
                MetadataResponsePartition::default()
                    .with_partition_index(index as i32)
                    .with_leader_id(BrokerId(*leader))
                    .with_leader_epoch(3)
                    .with_replica_nodes(vec![BrokerId(*leader)])
                    .with_isr_nodes(vec![BrokerId(*leader)])
            })
            .collect();
        let topic = MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
            .with_partitions(partitions);
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_controller_id(BrokerId(0))
            .with_topics(vec![topic])
    }

    fn render<T: fmt::Debug>(routed: &Routed<T>) -> String {
        let mut lines = Vec::new();
        for (node, items) in &routed.by_node {
            let items: Vec<String> = items
                .iter()
                .map(|(tp, item)| format!("{tp}:{item:?}"))
                .collect();
            lines.push(format!("node {node}: {}", items.join(" ")));
        }
        for (tp, item, error) in &routed.unroutable {
            lines.push(format!("unroutable {tp}:{item:?}: {error}"));
        }
        lines.join("\n")
    }

    #[test]
    fn requests_are_grouped_by_partition_leader_in_input_order() {
        let metadata = Metadata::from_response(&response(3, &[2, 0, 2, -1]));
        let items = vec![
            (TopicPartition::new("t", 0), 'a'),
            (TopicPartition::new("t", 1), 'b'),
            (TopicPartition::new("t", 2), 'c'),
            (TopicPartition::new("t", 0), 'd'),
            (TopicPartition::new("t", 3), 'e'),
            (TopicPartition::new("t", 4), 'f'),
            (TopicPartition::new("u", 0), 'g'),
        ];
        assert_eq!(
            render(&group_by_leader(&metadata, items)),
            "node 0: t-1:'b'\n\
             node 2: t-0:'a' t-2:'c' t-0:'d'\n\
             unroutable t-3:'e': no leader known for t-3\n\
             unroutable t-4:'f': topic t has no partition 4 (it has 4)\n\
             unroutable u-0:'g': topic u has no partition 0 (it has 0)"
        );
    }

    #[test]
    fn a_leader_missing_from_the_broker_list_is_unroutable() {
        let metadata = Metadata::from_response(&response(1, &[5]));
        let error = metadata.leader(&TopicPartition::new("t", 0)).unwrap_err();
        assert!(matches!(error, ClientError::UnknownBroker { node_id: 5 }));
        assert!(error.is_metadata_stale());
    }

    #[test]
    fn partial_refreshes_replace_only_the_topics_asked_for() {
        let mut metadata = Metadata::from_response(&response(1, &[0, 0]));
        metadata
            .topics
            .insert("other".into(), metadata.topics["t"].clone());
        let mut fresh = Metadata::from_response(&response(2, &[1]));
        fresh.topics.remove("t");
        metadata.merge(fresh, &MetadataScope::Topics(vec!["t".into()]));
        assert!(metadata.topic("t").is_none(), "asked for and absent: gone");
        assert_eq!(metadata.partition_count("other"), Some(2));
        assert_eq!(metadata.brokers.len(), 2);
        metadata.merge(
            Metadata::from_response(&response(1, &[0])),
            &MetadataScope::All,
        );
        assert!(
            metadata.topic("other").is_none(),
            "a full refresh drops unlisted topics"
        );
        assert_eq!(
            metadata
                .partition(&TopicPartition::new("t", 0))
                .unwrap()
                .leader_epoch,
            3
        );
    }
}

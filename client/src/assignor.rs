//! Partition assignors and the consumer protocol's metadata, as pure functions.
//!
//! The group leader decodes every member's subscription (`ConsumerProtocolSubscription`), runs an
//! assignor and sends each member its `ConsumerProtocolAssignment` through SyncGroup; the bytes
//! are Kafka's (an i16 version, then the message), so a gregor consumer can share a group with
//! Java, librdkafka or kafka-python consumers using the same assignor.

use crate::metadata::TopicPartition;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::{BTreeMap, BTreeSet};

/// The consumer protocol version we write: v0 is understood by every client.
const CONSUMER_PROTOCOL_VERSION: i16 = 0;
/// The newest consumer protocol version the crate decodes; newer members still write a prefix of
/// fields we understand (the format only ever appends).
const CONSUMER_PROTOCOL_VERSION_MAX: i16 = 3;

/// The assignors this client implements, by their protocol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic, contiguous ranges of partitions; the first members get one extra.
    Range,
    /// All partitions of all topics dealt one by one to the members subscribed to each.
    RoundRobin,
}

impl Assignor {
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    /// Assigns the partitions of every subscribed topic (`partition_counts`) to `members`
    /// (member id -> subscribed topics). Every member appears in the result, maybe empty.
    pub fn assign(
        self,
        members: &BTreeMap<String, Vec<String>>,
        partition_counts: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut assignment: BTreeMap<String, Vec<TopicPartition>> = members
            .keys()
            .map(|member| (member.clone(), Vec::new()))
            .collect();
        let subscribers = |topic: &str| -> Vec<&String> {
            members
                .iter()
                .filter(|(_, topics)| topics.iter().any(|t| t == topic))
                .map(|(member, _)| member)
                .collect()
        };
        match self {
            Assignor::Range => {
                for (topic, count) in partition_counts {
                    let subscribed = subscribers(topic);
                    if subscribed.is_empty() {
                        continue;
                    }
                    let per_member = *count as usize / subscribed.len();
                    let extra = *count as usize % subscribed.len();
                    let mut next = 0;
                    for (index, member) in subscribed.iter().enumerate() {
                        let take = per_member + usize::from(index < extra);
                        let partitions =
                            (next..next + take).map(|p| TopicPartition::new(topic, p as i32));
                        assignment
                            .get_mut(*member)
                            .expect("listed")
                            .extend(partitions);
                        next += take;
                    }
                    assert_eq!(next, *count as usize, "every partition assigned once");
                }
            }
            Assignor::RoundRobin => {
                let mut turn = 0usize;
                let ordered: Vec<&String> = members.keys().collect();
                for (topic, count) in partition_counts {
                    let subscribed: BTreeSet<&String> = subscribers(topic).into_iter().collect();
                    if subscribed.is_empty() {
                        continue;
                    }
                    for partition in 0..*count {
                        // Skip members not subscribed to this topic; one lap always finds one.
                        while !subscribed.contains(ordered[turn % ordered.len()]) {
                            turn += 1;
                        }
                        let member = ordered[turn % ordered.len()];
                        let owned = TopicPartition::new(topic, partition);
                        assignment.get_mut(member).expect("listed").push(owned);
                        turn += 1;
                    }
                }
            }
        }
        assignment
    }
}

/// A member's subscription metadata: the topics it wants.
pub fn subscription_encode(topics: &[String]) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|topic| StrBytes::from_string(topic.clone()))
            .collect(),
    );
    versioned_encode(&subscription)
}

/// The topics in a member's subscription; `None` if the bytes do not decode.
pub fn subscription_decode(metadata: &Bytes) -> Option<Vec<String>> {
    let subscription: ConsumerProtocolSubscription =
        versioned_decode(metadata, wire::bounds::consumer_subscription_walk)?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

pub fn assignment_encode(partitions: &[TopicPartition]) -> Bytes {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for partition in partitions {
        by_topic
            .entry(partition.topic.as_str())
            .or_default()
            .push(partition.partition);
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    versioned_encode(&assignment)
}

/// The partitions in an assignment; empty bytes (a member left out) are an empty assignment.
pub fn assignment_decode(bytes: &Bytes) -> Option<Vec<TopicPartition>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let assignment: ConsumerProtocolAssignment =
        versioned_decode(bytes, wire::bounds::consumer_assignment_walk)?;
    let mut partitions: Vec<TopicPartition> = assignment
        .assigned_partitions
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|p| TopicPartition::new(topic.topic.0.as_str(), *p))
        })
        .collect();
    partitions.sort();
    Some(partitions)
}

fn versioned_encode(message: &impl Encodable) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(CONSUMER_PROTOCOL_VERSION);
    message
        .encode(&mut buffer, CONSUMER_PROTOCOL_VERSION)
        .expect("v0 encodes every field we set");
    buffer.freeze()
}

/// Another member's bytes are untrusted: `walk` bounds every length in them before the crate,
/// which reserves memory by a length before reading, decodes them.
fn versioned_decode<M: Decodable>(
    bytes: &Bytes,
    walk: fn(&[u8], i16) -> Result<usize, wire::bounds::BoundsError>,
) -> Option<M> {
    let mut buffer = bytes.clone();
    if buffer.remaining() < 2 {
        return None;
    }
    let version = buffer.get_i16().clamp(0, CONSUMER_PROTOCOL_VERSION_MAX);
    walk(&buffer, version).ok()?;
    // The crate's decoders may panic on hostile input; another member's bytes are untrusted.
    std::panic::catch_unwind(move || M::decode(&mut buffer, version).ok())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(m, topics)| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn render(assignment: &BTreeMap<String, Vec<TopicPartition>>) -> String {
        assignment
            .iter()
            .map(|(member, partitions)| {
                let partitions: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
                format!("{member}: {}", partitions.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic_and_extras_to_the_first() {
        let members = members(&[("a", &["t", "u"]), ("b", &["t", "u"]), ("c", &["t"])]);
        let counts = BTreeMap::from([("t".to_string(), 7), ("u".to_string(), 3)]);
        assert_eq!(
            render(&Assignor::Range.assign(&members, &counts)),
            "a: t-0 t-1 t-2 u-0 u-1\nb: t-3 t-4 u-2\nc: t-5 t-6"
        );
    }

    #[test]
    fn roundrobin_deals_partitions_to_subscribed_members() {
        let members = members(&[("a", &["t", "u"]), ("b", &["t"]), ("c", &["u"])]);
        let counts = BTreeMap::from([("t".to_string(), 3), ("u".to_string(), 3)]);
        assert_eq!(
            render(&Assignor::RoundRobin.assign(&members, &counts)),
            "a: t-0 t-2 u-1\nb: t-1\nc: u-0 u-2"
        );
    }

    #[test]
    fn metadata_round_trips_and_garbage_is_refused() {
        let topics = vec!["t".to_string(), "u".to_string()];
        assert_eq!(
            subscription_decode(&subscription_encode(&topics)),
            Some(topics)
        );
        let partitions = vec![TopicPartition::new("t", 0), TopicPartition::new("t", 3)];
        assert_eq!(
            assignment_decode(&assignment_encode(&partitions)),
            Some(partitions)
        );
        assert_eq!(assignment_decode(&Bytes::new()), Some(Vec::new()));
        assert_eq!(
            subscription_decode(&Bytes::from_static(&[0, 0, 0x7f])),
            None
        );
    }
}

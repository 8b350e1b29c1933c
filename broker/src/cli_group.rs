//! `gregor group list|describe|delete|delete-offsets|reset-offsets`, on the `client` crate's group admin calls.

use crate::cli::{config, text, topic_partitions, GroupAction, ResetTarget};
use client::{Admin, Consumer, ConsumerConfig, GroupDescription, TopicPartition};
use kafka_protocol::ResponseError;
use std::collections::{BTreeMap, BTreeSet};

/// ListOffsets timestamps: the log start and the log end (Kafka's -2 and -1).
const TIMESTAMP_EARLIEST: i64 = -2;
const TIMESTAMP_LATEST: i64 = -1;

pub async fn group(action: GroupAction) -> Result<(), String> {
    match action {
        GroupAction::List { bootstrap } => {
            for group in Admin::new(config(&bootstrap))
                .list_groups()
                .await
                .map_err(text)?
            {
                println!("{}\t{}", group.group_id, group.protocol_type);
            }
        }
        GroupAction::Describe { group, bootstrap } => {
            let mut admin = Admin::new(config(&bootstrap));
            let mut consumer = Consumer::new(config(&bootstrap), ConsumerConfig::kafka_defaults());
            describe(&mut admin, &mut consumer, &group).await?;
        }
        GroupAction::Delete { group, bootstrap } => {
            Admin::new(config(&bootstrap))
                .delete_group(&group)
                .await
                .map_err(text)?;
            println!("deleted group {group}");
        }
        GroupAction::DeleteOffsets {
            group,
            topic,
            partition,
            bootstrap,
        } => {
            let mut admin = Admin::new(config(&bootstrap));
            offsets_delete(&mut admin, &group, &topic, partition).await?;
        }
        GroupAction::ResetOffsets {
            group,
            topic,
            partition,
            target,
            bootstrap,
        } => {
            let mut admin = Admin::new(config(&bootstrap));
            let mut consumer = Consumer::new(config(&bootstrap), ConsumerConfig::kafka_defaults());
            reset(
                &mut admin,
                &mut consumer,
                &group,
                &topic,
                partition,
                &target,
            )
            .await?;
        }
    }
    Ok(())
}

async fn describe(admin: &mut Admin, consumer: &mut Consumer, group: &str) -> Result<(), String> {
    let description = admin.describe_group(group).await.map_err(text)?;
    let committed = admin.group_offsets(group, None).await.map_err(text)?;
    println!(
        "group {} state {} protocol {} members {}",
        description.group_id,
        description.state,
        description.protocol,
        description.members.len()
    );
    for member in &description.members {
        let partitions: Vec<String> = member.assignment.iter().map(|p| p.to_string()).collect();
        println!(
            "  member {} client {} host {} partitions [{}]",
            member.member_id,
            member.client_id,
            member.client_host,
            partitions.join(" ")
        );
    }
    let owners = owners(&description);
    let partitions: BTreeSet<TopicPartition> =
        committed.keys().chain(owners.keys()).cloned().collect();
    println!(
        "  {:<30} {:>10} {:>10} {:>8}  MEMBER",
        "PARTITION", "COMMITTED", "END", "LAG"
    );
    for partition in partitions {
        let end = consumer
            .list_offsets(&partition, TIMESTAMP_LATEST)
            .await
            .map_err(text)?
            .offset;
        let offset = committed.get(&partition).copied().flatten();
        let (shown, lag) = match offset {
            Some(offset) => (offset.to_string(), (end - offset).max(0).to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        let owner = owners.get(&partition).map_or("-", String::as_str);
        println!(
            "  {:<30} {shown:>10} {end:>10} {lag:>8}  {owner}",
            partition.to_string()
        );
    }
    Ok(())
}

fn owners(description: &GroupDescription) -> BTreeMap<TopicPartition, String> {
    description
        .members
        .iter()
        .flat_map(|m| {
            m.assignment
                .iter()
                .map(|p| (p.clone(), m.member_id.clone()))
        })
        .collect()
}

async fn offsets_delete(
    admin: &mut Admin,
    group: &str,
    topic: &str,
    partition: Option<i32>,
) -> Result<(), String> {
    let partitions: Vec<TopicPartition> = topic_partitions(admin, topic, partition)
        .await?
        .into_iter()
        .map(|index| TopicPartition::new(topic, index))
        .collect();
    let results = admin
        .delete_group_offsets(group, &partitions)
        .await
        .map_err(text)?;
    let (mut failed, mut subscribed) = (0, false);
    for (partition, result) in results {
        match result {
            Ok(()) => println!("{partition} offset deleted"),
            Err(error) => {
                failed += 1;
                subscribed |= error.kafka_error() == Some(ResponseError::GroupSubscribedToTopic);
                eprintln!("{partition}: {error}");
            }
        }
    }
    match (failed, subscribed) {
        (0, _) => Ok(()),
        (_, true) => Err(format!(
            "group {group} still consumes {topic}: stop its consumers, or unsubscribe them from {topic}, first"
        )),
        (_, false) => Err(format!("{failed} offset(s) of group {group} not deleted")),
    }
}

async fn reset(
    admin: &mut Admin,
    consumer: &mut Consumer,
    group: &str,
    topic: &str,
    partition: Option<i32>,
    target: &ResetTarget,
) -> Result<(), String> {
    let description = admin.describe_group(group).await.map_err(text)?;
    if !matches!(description.state.as_str(), "Empty" | "Dead") {
        return Err(format!(
            "group {group} is {} with {} member(s): stop its consumers first",
            description.state,
            description.members.len()
        ));
    }
    let partitions = match partition {
        Some(partition) => vec![partition],
        None => {
            let topics = admin
                .describe_topics(&[topic.to_string()])
                .await
                .map_err(text)?;
            topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.partition))
                .collect()
        }
    };
    let mut offsets = BTreeMap::new();
    for index in partitions {
        let partition = TopicPartition::new(topic, index);
        let offset = match target.offset() {
            Some(offset) => offset,
            None => {
                let timestamp = if target.to_earliest() {
                    TIMESTAMP_EARLIEST
                } else {
                    TIMESTAMP_LATEST
                };
                consumer
                    .list_offsets(&partition, timestamp)
                    .await
                    .map_err(text)?
                    .offset
            }
        };
        offsets.insert(partition, offset);
    }
    admin
        .group_offsets_set(group, &offsets)
        .await
        .map_err(text)?;
    for (partition, offset) in offsets {
        println!("{partition} -> {offset}");
    }
    Ok(())
}

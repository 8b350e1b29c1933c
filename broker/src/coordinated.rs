//! What the coordinators of the replicated internal topics share (`group::shell` for
//! `__consumer_offsets`, `txn::shell` for `__transaction_state`): each holds a partition of its
//! topic while this broker leads it, loads it by replaying the local log, serves it once the HW
//! covers the replay, and writes through the partition's leader core.
//!
//! - `leadership_changes`: after a reconcile, the partitions to load (again) and to unload.
//! - `replay_covered`: the wait until what a load replayed is committed.
//! - `replicated_append`: a coordinator's write, acknowledged once the HW covers it.

use crate::partition::Partition;
use crate::replica::shell::AckReceiver;
use crate::replica::AckError;
use cluster::image::MetadataImage;
use std::future::Future;
use std::sync::Arc;
use storage::PartitionLog;

/// A partition this broker now leads and may write: the local partition, the image's leader
/// epoch, and whether it is replicated (written through its leader core).
pub(crate) type Led = (Arc<Partition>, i32, bool);

/// One partition whose holding must change.
pub(crate) struct LeadershipChange {
    pub index: i32,
    /// Held now (at another epoch, or no longer led): unload it first.
    pub unload: bool,
    /// Led here now: load it.
    pub load: Option<Led>,
}

/// The partitions `0..count` of internal topic `name` whose holding differs from what `image`
/// asks of broker `node_id`: `held(index)` is the leader epoch a partition is held at (`None`
/// when not held), `partition_of(index)` the local partition, if open.
pub(crate) fn leadership_changes(
    image: &MetadataImage,
    name: &str,
    count: i32,
    node_id: i32,
    held: impl Fn(i32) -> Option<i32>,
    partition_of: impl Fn(i32) -> Option<Arc<Partition>>,
) -> Vec<LeadershipChange> {
    (0..count)
        .filter_map(|index| {
            let wanted = led_here(image, name, index, node_id, &partition_of);
            let held = held(index);
            match (held, &wanted) {
                (Some(held), Some((_, epoch, _))) if held == *epoch => None,
                (None, None) => None,
                _ => Some(LeadershipChange {
                    index,
                    unload: held.is_some(),
                    load: wanted,
                }),
            }
        })
        .collect()
}

/// Partition `index` of internal topic `name` if this broker leads it by `image` and may write
/// it now (a replicated one only once its leader core runs at the image's epoch: writes go
/// through it).
fn led_here(
    image: &MetadataImage,
    name: &str,
    index: i32,
    node_id: i32,
    partition_of: impl Fn(i32) -> Option<Arc<Partition>>,
) -> Option<Led> {
    let topic = image.topic_by_name(name)?;
    let found = topic
        .partitions
        .get(usize::try_from(index).ok()?)
        .filter(|found| found.leader() == Some(node_id))?;
    let replicated = found.replicas.len() > 1;
    let partition = partition_of(index)?;
    (!replicated || partition.led_at(found.leader_epoch)).then_some((
        partition,
        found.leader_epoch,
        replicated,
    ))
}

/// Resolves `true` once everything below `end` of a partition a coordinator loaded is durable:
/// covered by the HW of a replicated one (led here at `leader_epoch`), fsynced here otherwise.
/// `None` if the leader core no longer leads at that epoch (the reconcile that follows unloads
/// the partition).
pub(crate) fn replay_covered(
    partition: &Arc<Partition>,
    leader_epoch: i32,
    replicated: bool,
    end: i64,
) -> Option<impl Future<Output = bool> + Send + 'static> {
    let waited = match replicated {
        true => {
            // The core hears the log's end first: it may lag a follower append that landed
            // just before it took over, and a wait past its end is refused.
            let log = partition.log();
            let mut replica = partition.replica();
            let led = replica.as_mut().filter(|led| led.writable(leader_epoch))?;
            let mut outputs = Vec::new();
            led.log_end_feed(&mut outputs, log.log_end_offset());
            led.outputs_apply(outputs);
            Some(led.ack_wait(end).0)
        }
        false => None,
    };
    let partition = partition.clone();
    Some(async move {
        match waited {
            Some(receiver) => ack_durable(receiver).await,
            None => end == 0 || partition.durable_wait(end - 1).await,
        }
    })
}

/// Whether a wait parked on a leader core ended with the write committed: covered by the HW,
/// fsynced on every ISR member. AFTER_APPEND says the same with an ISR below
/// min.insync.replicas, which does not undo the write.
pub(crate) async fn ack_durable(receiver: AckReceiver) -> bool {
    matches!(
        receiver.await,
        Ok(Ok(()) | Err(AckError::NotEnoughReplicasAfterAppend))
    )
}

/// Why a coordinator's write to its internal topic was not appended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    #[error("the partition is not held here")]
    NotHeld,
    #[error("this broker no longer leads the partition at the held epoch")]
    NotLeader,
    #[error(transparent)]
    Log(#[from] storage::LogError),
}

/// Appends through a replicated partition's leader core (which must lead at `leader_epoch`):
/// the append under the log's lock, the core told the new log end, followers woken, and a wait
/// parked on the core until the HW covers the append.
pub(crate) fn replicated_append(
    partition: &Partition,
    leader_epoch: i32,
    append: impl FnOnce(&mut PartitionLog) -> Result<storage::AppendInfo, storage::LogError>,
) -> Result<AckReceiver, PersistError> {
    let receiver = {
        let mut log = partition.log();
        let mut replica = partition.replica();
        let led = replica
            .as_mut()
            .filter(|led| led.writable(leader_epoch))
            .ok_or(PersistError::NotLeader)?;
        let appended = append(&mut log)?;
        let mut outputs = Vec::new();
        led.log_end_feed(&mut outputs, log.log_end_offset());
        led.outputs_apply(outputs);
        led.ack_wait(appended.last_offset + 1).0
    };
    partition.flush_request();
    partition.readers_wake();
    Ok(receiver)
}

//! The metadata image as the Raft state machine: committed entries are applied to a
//! `MetadataImage`; a snapshot is `snapshot_encode`, a restore `snapshot_decode`.
//!
//! raft-rs's own empty entries (one per new leader) never reach a `StateMachine`, so the image's
//! offset may lag Raft's applied index by a few empty entries. A snapshot Raft takes at its
//! applied index therefore holds an image of an earlier offset; `restore` moves the image up to
//! the snapshot's index with an empty batch, which is exactly what the missing entries were.

use crate::image::MetadataImage;
use crate::raft::StateMachine;

#[derive(Debug, Default)]
pub(crate) struct ImageMachine {
    image: MetadataImage,
}

impl ImageMachine {
    pub(crate) fn image(&self) -> &MetadataImage {
        &self.image
    }
}

impl StateMachine for ImageMachine {
    fn apply(&mut self, index: u64, data: &[u8]) {
        // A committed entry cannot be skipped: one that does not decode stops the node (every
        // node refuses it alike), rather than serving an image the others do not have.
        if let Err(error) = self.image.entry_apply(index, data) {
            panic!("committed metadata entry at {index} does not decode: {error}");
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.image.snapshot_encode()
    }

    fn restore(&mut self, index: u64, data: &[u8]) {
        let mut image = match MetadataImage::snapshot_decode(data) {
            Ok(image) => image,
            Err(error) => panic!("metadata snapshot at {index} does not decode: {error}"),
        };
        assert!(
            image.offset() <= index,
            "metadata snapshot of offset {} installed at index {index}",
            image.offset()
        );
        if image.offset() < index {
            image
                .entry_apply(index, &[])
                .expect("an empty entry always applies");
        }
        self.image = image;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{batch_encode, IncarnationId, MetadataRecord, RegisterBroker};

    fn register(broker_id: i32) -> Vec<u8> {
        batch_encode(&[MetadataRecord::RegisterBroker(RegisterBroker {
            broker_id,
            incarnation_id: IncarnationId(broker_id as u128),
            broker_epoch: 10 + i64::from(broker_id),
            host: "localhost".to_string(),
            port: 9092,
            rack: None,
        })])
    }

    /// Raft snapshots at its applied index, past the image's offset when the last entries were
    /// empty (a new leader's): the restored image stands at the snapshot's index and applies
    /// what follows.
    #[test]
    fn a_snapshot_past_the_last_record_restores_at_its_index() {
        let mut machine = ImageMachine::default();
        machine.apply(2, &register(1));
        machine.apply(3, &register(2));
        let snapshot = machine.snapshot();
        let mut restored = ImageMachine::default();
        restored.restore(5, &snapshot);
        assert_eq!(restored.image().offset(), 5);
        assert_eq!(restored.image().brokers().count(), 2);
        restored.apply(6, &register(3));
        assert_eq!(restored.image().offset(), 6);
        let mut same = ImageMachine::default();
        same.restore(3, &snapshot);
        assert_eq!(same.image(), machine.image());
    }
}

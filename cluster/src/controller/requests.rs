//! Exactly-once controller calls (Raft's client sessions, Ongaro's thesis §6.3). A caller
//! retries a call across leader changes; when the first try committed but its answer was lost,
//! the retry must not meet its own effect and answer a refusal (a CreateTopics that was done
//! answered TOPIC_ALREADY_EXISTS). So a call that writes records also writes, in the same
//! entry, its `RequestId` and its reply (`RequestDone`); every node's image keeps recent ones
//! per requester (`image::REQUEST_OUTCOMES_MAX`), and a retry whose id is there gets that reply.
//!
//! A call that writes nothing (a refusal, a validation) leaves no trace: its retry is decided
//! anew, which is what a first try at that later moment would answer.

use super::{Controller, Proposal};
use crate::image::MetadataOffset;
use crate::records::{MetadataRecord, RequestId};
use serde::de::DeserializeOwned;
use serde::Serialize;

impl Controller {
    /// Decides call `request` once: a retry of a decided call gets the recorded reply (sent once
    /// the entry that decided it is applied); a new call runs `decide` at `index`, and if it
    /// writes records, its id and reply go into the same entry. Without an id, `decide` runs.
    pub fn decide_once<R: Serialize + DeserializeOwned>(
        &mut self,
        index: MetadataOffset,
        request: Option<RequestId>,
        decide: impl FnOnce(&mut Controller) -> Proposal<R>,
    ) -> Proposal<R> {
        let Some(request) = request else {
            return decide(self);
        };
        let mut record_it = true;
        if let Some(done) = self.image.request_outcome(&request) {
            match serde_json::from_value::<R>(done.outcome.clone()) {
                Ok(reply) => {
                    return Proposal {
                        records: Vec::new(),
                        reply,
                        reply_after: done.index,
                    }
                }
                Err(error) => {
                    // The requester used one id for two kinds of call: not a retry. Decide it,
                    // and keep the first outcome.
                    tracing::warn!("request {request:?} reused for another call: {error}");
                    record_it = false;
                }
            }
        }
        let mut proposal = decide(self);
        if record_it && !proposal.records.is_empty() {
            let outcome = serde_json::to_value(&proposal.reply).expect("replies always serialize");
            let record = MetadataRecord::RequestDone { request, outcome };
            // The batch ended at `index` (its records are there); this is its last record.
            assert_eq!(
                self.image.offset(),
                index,
                "the call's records are at {index}"
            );
            self.image.apply_record(index, &record);
            proposal.records.push(record);
        }
        proposal
    }
}

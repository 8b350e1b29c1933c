//! Controller RPCs: the messages (Kafka's BrokerRegistration, BrokerHeartbeat and the admin
//! calls a broker forwards to the controller, as a small enum of our own) and their framing.
//!
//! They share the controller listener with raft messages. An RPC connection opens with
//! `RPC_MAGIC`, four bytes that no raft frame can start with (read as a raft frame's length they
//! are over a gigabyte, far past `transport::FRAME_BYTES_MAX`), then carries request and
//! response frames in turn: `len u32 | crc u32 | JSON` (big endian; CRC-32C of the body). A
//! length over `RPC_FRAME_BYTES_MAX` is refused before the body is read; a body that does not
//! decode is an error, never a panic. Requests travel the same way to the local controller,
//! without the bytes, so a forwarded call and a local one run the same code.

use crate::controller::{
    AlterPartition, ApiError, BrokerHeartbeat, BrokerRegistrationRequest, ConfigAlter,
    ConfigChange, PartitionsCreate, ProducerIdBlock, TopicCreate, TopicCreated, TopicImport,
};
use crate::frame;
use crate::image::{MetadataOffset, PartitionImage};
use crate::raft::transport::FRAME_BYTES_MAX;
use crate::records::{BrokerId, IncarnationId, RequestId, TopicId};
use runtime::io::AsyncWriteExt;
use runtime::net::TcpStream;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;

/// The first bytes of a controller RPC connection.
pub const RPC_MAGIC: [u8; 4] = *b"GRGC";
/// The largest request or response body. A request's records must fit in one proposal
/// (`raft::PROPOSAL_BYTES_MAX`, 8 MiB); its answer is smaller still.
pub const RPC_FRAME_BYTES_MAX: usize = 16 << 20;

const _: () = assert!(RPC_FRAME_BYTES_MAX < u32::MAX as usize);
// The magic, read as a raft frame's length, is refused by the raft transport.
const _: () = assert!(u32::from_be_bytes(RPC_MAGIC) as usize > FRAME_BYTES_MAX);

/// A request as it travels to the controller: with its id when it changes state (the same id
/// on every retry, so that the controller decides it once; `controller::requests`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub id: Option<RequestId>,
    pub request: Request,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Register {
        broker_id: BrokerId,
        incarnation_id: IncarnationId,
        host: String,
        port: u16,
        rack: Option<String>,
    },
    Heartbeat {
        broker_id: BrokerId,
        broker_epoch: i64,
        metadata_offset: MetadataOffset,
        want_shutdown: bool,
    },
    CreateTopics {
        topics: Vec<TopicCreateWire>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        requests: Vec<PartitionsCreateWire>,
        validate_only: bool,
    },
    AlterConfigs {
        alters: Vec<ConfigAlterWire>,
        validate_only: bool,
    },
    AllocateProducerIds {
        broker_id: BrokerId,
        broker_epoch: i64,
    },
    /// A pre-Raft data dir's topics, once (`controller::Import`).
    ImportTopics {
        broker_id: BrokerId,
        broker_epoch: i64,
        topics: Vec<TopicImportWire>,
        producer_id_floor: i64,
    },
    /// A partition leader's ISR change (KIP-497's AlterPartition, not on the Kafka listener).
    AlterPartition(AlterPartition),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The controller's answer, to be trusted once the log has applied `offset` (its records,
    /// or the state a refusal was decided on).
    Answer {
        offset: MetadataOffset,
        answer: Answer,
    },
    /// This node is not the active controller (any more); `leader` is the one it knows of.
    NotController { leader: Option<BrokerId> },
    /// The request failed as a whole (it was too large to propose, or could not be read).
    Failed(WireError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Registered(Result<i64, WireError>),
    Heartbeat(Result<HeartbeatAnswer, WireError>),
    TopicsCreated(Vec<(String, Result<TopicCreatedWire, WireError>)>),
    TopicsDeleted(Vec<(String, Result<TopicId, WireError>)>),
    PartitionsCreated(Vec<(String, Result<(), WireError>)>),
    ConfigsAltered(Vec<(String, Result<(), WireError>)>),
    ProducerIds(Result<(i64, i64), WireError>),
    TopicsImported(Result<TopicResultsWire<()>, WireError>),
    /// The partition's state after the change.
    PartitionAltered(Result<PartitionImage, WireError>),
}

/// Per-topic outcomes on the wire, in request order.
pub type TopicResultsWire<T> = Vec<(String, Result<T, WireError>)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    pub is_fenced: bool,
    pub should_shutdown: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: i16,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCreateWire {
    pub name: String,
    pub partition_count: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCreatedWire {
    pub topic_id: Option<TopicId>,
    pub partition_count: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImportWire {
    pub name: String,
    pub topic_id: TopicId,
    pub partition_count: i32,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionsCreateWire {
    pub name: String,
    pub partition_count: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigAlterWire {
    pub topic: String,
    /// `(key, Some(value))` sets, `(key, None)` deletes.
    pub changes: Vec<(String, Option<String>)>,
}

impl From<ApiError> for WireError {
    fn from(error: ApiError) -> WireError {
        WireError {
            code: error.code,
            message: error.message,
        }
    }
}

impl From<WireError> for ApiError {
    fn from(error: WireError) -> ApiError {
        ApiError::new(error.code, error.message)
    }
}

impl From<TopicCreate> for TopicCreateWire {
    fn from(topic: TopicCreate) -> TopicCreateWire {
        TopicCreateWire {
            name: topic.name,
            partition_count: topic.partition_count,
            replication_factor: topic.replication_factor,
            configs: topic.configs,
        }
    }
}

impl From<TopicCreateWire> for TopicCreate {
    fn from(topic: TopicCreateWire) -> TopicCreate {
        TopicCreate {
            name: topic.name,
            partition_count: topic.partition_count,
            replication_factor: topic.replication_factor,
            configs: topic.configs,
        }
    }
}

impl From<TopicCreated> for TopicCreatedWire {
    fn from(topic: TopicCreated) -> TopicCreatedWire {
        TopicCreatedWire {
            topic_id: topic.topic_id,
            partition_count: topic.partition_count,
            replication_factor: topic.replication_factor,
            configs: topic.configs,
        }
    }
}

impl From<TopicCreatedWire> for TopicCreated {
    fn from(topic: TopicCreatedWire) -> TopicCreated {
        TopicCreated {
            topic_id: topic.topic_id,
            partition_count: topic.partition_count,
            replication_factor: topic.replication_factor,
            configs: topic.configs,
        }
    }
}

impl From<TopicImport> for TopicImportWire {
    fn from(topic: TopicImport) -> TopicImportWire {
        TopicImportWire {
            name: topic.name,
            topic_id: topic.topic_id,
            partition_count: topic.partition_count,
            configs: topic.configs,
        }
    }
}

impl From<TopicImportWire> for TopicImport {
    fn from(topic: TopicImportWire) -> TopicImport {
        TopicImport {
            name: topic.name,
            topic_id: topic.topic_id,
            partition_count: topic.partition_count,
            configs: topic.configs,
        }
    }
}

impl From<PartitionsCreate> for PartitionsCreateWire {
    fn from(request: PartitionsCreate) -> PartitionsCreateWire {
        PartitionsCreateWire {
            name: request.name,
            partition_count: request.partition_count,
        }
    }
}

impl From<PartitionsCreateWire> for PartitionsCreate {
    fn from(request: PartitionsCreateWire) -> PartitionsCreate {
        PartitionsCreate {
            name: request.name,
            partition_count: request.partition_count,
        }
    }
}

impl From<ConfigAlter> for ConfigAlterWire {
    fn from(alter: ConfigAlter) -> ConfigAlterWire {
        let changes = alter
            .changes
            .into_iter()
            .map(|change| match change {
                ConfigChange::Set { key, value } => (key, Some(value)),
                ConfigChange::Delete { key } => (key, None),
            })
            .collect();
        ConfigAlterWire {
            topic: alter.topic,
            changes,
        }
    }
}

impl From<ConfigAlterWire> for ConfigAlter {
    fn from(alter: ConfigAlterWire) -> ConfigAlter {
        let changes = alter
            .changes
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => ConfigChange::Set { key, value },
                None => ConfigChange::Delete { key },
            })
            .collect();
        ConfigAlter {
            topic: alter.topic,
            changes,
        }
    }
}

impl From<ProducerIdBlock> for (i64, i64) {
    fn from(block: ProducerIdBlock) -> (i64, i64) {
        (block.first, block.size)
    }
}

impl Request {
    /// Whether the call must take effect once however often it is retried: the admin calls,
    /// producer id blocks, the import (idempotent per topic id anyway) and ISR changes (a retry
    /// after a lost answer would otherwise meet its own partition epoch bump and be refused
    /// INVALID_UPDATE_VERSION). Registration is retried safely by its incarnation id (the same
    /// one gets its epoch back), and a heartbeat's answer is the broker's state when it arrives.
    pub fn is_once(&self) -> bool {
        match self {
            Request::Register { .. } | Request::Heartbeat { .. } => false,
            Request::CreateTopics { .. }
            | Request::DeleteTopics { .. }
            | Request::CreatePartitions { .. }
            | Request::AlterConfigs { .. }
            | Request::AllocateProducerIds { .. }
            | Request::ImportTopics { .. }
            | Request::AlterPartition(_) => true,
        }
    }

    pub(crate) fn registration(&self) -> Option<BrokerRegistrationRequest> {
        match self {
            Request::Register {
                broker_id,
                incarnation_id,
                host,
                port,
                rack,
            } => Some(BrokerRegistrationRequest {
                broker_id: *broker_id,
                incarnation_id: *incarnation_id,
                host: host.clone(),
                port: *port,
                rack: rack.clone(),
            }),
            _ => None,
        }
    }

    pub(crate) fn heartbeat(&self) -> Option<BrokerHeartbeat> {
        match self {
            Request::Heartbeat {
                broker_id,
                broker_epoch,
                metadata_offset,
                want_shutdown,
            } => Some(BrokerHeartbeat {
                broker_id: *broker_id,
                broker_epoch: *broker_epoch,
                metadata_offset: *metadata_offset,
                want_shutdown: *want_shutdown,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcFrameError {
    #[error("rpc frame of {0} bytes over the limit")]
    TooLarge(usize),
    #[error("rpc frame CRC mismatch")]
    Crc,
    #[error("rpc frame body does not decode: {0}")]
    Undecodable(String),
}

impl From<frame::Bad> for RpcFrameError {
    fn from(bad: frame::Bad) -> RpcFrameError {
        match bad {
            frame::Bad::TooLarge(len) => RpcFrameError::TooLarge(len),
            frame::Bad::Crc => RpcFrameError::Crc,
        }
    }
}

/// One message as a frame; None if it is over the limit.
pub fn frame_encode<T: Serialize>(message: &T) -> Option<Vec<u8>> {
    frame::wrap(&serde_json::to_vec(message).ok()?, RPC_FRAME_BYTES_MAX)
}

/// Decodes the first frame of `bytes`: Ok(None) if it is not all there yet, else the message
/// and the bytes it took.
pub fn frame_decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
) -> Result<Option<(T, usize)>, RpcFrameError> {
    let Some((body, used)) = frame::split(bytes, RPC_FRAME_BYTES_MAX)? else {
        return Ok(None);
    };
    Ok(Some((body_decode(body)?, used)))
}

fn body_decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, RpcFrameError> {
    serde_json::from_slice(body).map_err(|error| RpcFrameError::Undecodable(error.to_string()))
}

/// Reads one frame; Ok(None) on a clean end of stream between frames.
pub async fn frame_read<T: for<'de> Deserialize<'de>>(
    stream: &mut TcpStream,
) -> io::Result<Option<T>> {
    let Some(body) = frame::read::<RpcFrameError>(stream, RPC_FRAME_BYTES_MAX).await? else {
        return Ok(None);
    };
    let invalid = |error: RpcFrameError| io::Error::new(io::ErrorKind::InvalidData, error);
    body_decode(&body).map(Some).map_err(invalid)
}

/// Writes one frame and flushes it (madsim delivers bytes on flush).
pub async fn frame_write<T: Serialize>(stream: &mut TcpStream, message: &T) -> io::Result<()> {
    let frame = frame_encode(message).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "rpc message over the frame limit",
        )
    })?;
    stream.write_all(&frame).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use runtime::rng::ChaCha8Rng;

    fn request() -> Request {
        Request::CreateTopics {
            topics: vec![TopicCreateWire {
                name: "orders".to_string(),
                partition_count: 3,
                replication_factor: 3,
                configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
            }],
            validate_only: false,
        }
    }

    #[test]
    fn frames_round_trip_and_wait_for_more_bytes() {
        let frame = frame_encode(&request()).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(
                frame_decode::<Request>(&frame[..cut]),
                Ok(None),
                "cut {cut}"
            );
        }
        let (decoded, used) = frame_decode::<Request>(&frame).unwrap().unwrap();
        assert_eq!((decoded, used), (request(), frame.len()));
        let response = Response::Answer {
            offset: 7,
            answer: Answer::TopicsDeleted(vec![
                ("a".to_string(), Ok(TopicId(u128::MAX))),
                (
                    "b".to_string(),
                    Err(WireError {
                        code: 3,
                        message: "unknown".into(),
                    }),
                ),
            ]),
        };
        let frame = frame_encode(&response).unwrap();
        assert_eq!(
            frame_decode::<Response>(&frame).unwrap().unwrap().0,
            response
        );
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut header = [0u8; frame::HEADER_BYTES];
        header[..4].copy_from_slice(&(RPC_FRAME_BYTES_MAX as u32 + 1).to_be_bytes());
        assert_eq!(
            frame_decode::<Request>(&header),
            Err(RpcFrameError::TooLarge(RPC_FRAME_BYTES_MAX + 1))
        );
        let frame = frame_encode(&request()).unwrap();
        let mut flipped = frame.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(frame_decode::<Request>(&flipped), Err(RpcFrameError::Crc));
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut undecodable = 0;
        for _ in 0..5000 {
            let mut body = frame[frame::HEADER_BYTES..].to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..body.len());
                body[at] = rng.gen();
            }
            body.truncate(rng.gen_range(0..=body.len()));
            let mut mutated = (body.len() as u32).to_be_bytes().to_vec();
            mutated.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            mutated.extend_from_slice(&body);
            if let Err(RpcFrameError::Undecodable(_)) = frame_decode::<Request>(&mutated) {
                undecodable += 1;
            }
        }
        assert!(
            undecodable > 4000,
            "{undecodable} of 5000 mutations refused"
        );
    }
}

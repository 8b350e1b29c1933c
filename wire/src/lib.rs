//! Kafka on the wire, layered like mini-redis: bytes -> frame (`frame`) -> header and version
//! (`codec`) -> `RequestKind`/`ResponseKind` (the `kafka-protocol` crate's enums) -> handlers (in
//! the broker). `batch` parses and validates RecordBatch v2, the unit of storage and replication;
//! `records` checks the records inside a produced batch before it is stored.
//!
//! `bounds` walks every message before the crate decodes it, so no length read from the wire
//! is trusted for an allocation.
//!
//! Nothing here does I/O: callers own sockets and buffers.

pub mod batch;
pub mod bounds;
pub mod codec;
pub mod control;
pub mod frame;
pub mod records;

pub use batch::{BatchError, BatchHeader, ValidatedBatch};
pub use codec::{DecodeError, RequestFrame};
pub use control::{control_batch_encode, control_marker_parse, ControlMarker};
pub use frame::{FrameError, REQUEST_BYTES_MAX};
pub use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
pub use kafka_protocol::{self as protocol};
pub use records::{records_readable, records_validate, RecordError, RecordRules};

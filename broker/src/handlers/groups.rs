//! What the group handlers share: checking names at arrival, and turning the coordinator's reply
//! channel into a `Reply` (at once when the core answered in the same step, else later).

use crate::group::GROUP_NAME_BYTES_MAX;
use crate::handlers::Reply;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use runtime::sync::oneshot;
use wire::ResponseKind;

/// A group id is valid if non-empty and bounded (Kafka: INVALID_GROUP_ID otherwise).
pub fn group_id_check(group_id: &str) -> Result<String, ResponseError> {
    if group_id.is_empty() || group_id.len() > GROUP_NAME_BYTES_MAX {
        return Err(ResponseError::InvalidGroupId);
    }
    Ok(group_id.to_string())
}

/// Member ids, instance ids, client ids and protocol names: bounded, so they fit the records of
/// `__consumer_offsets` and memory stays bounded.
pub fn name_check(name: &str, error: ResponseError) -> Result<String, ResponseError> {
    if name.len() > GROUP_NAME_BYTES_MAX {
        return Err(error);
    }
    Ok(name.to_string())
}

pub fn name_optional_check(
    name: Option<&StrBytes>,
    error: ResponseError,
) -> Result<Option<String>, ResponseError> {
    name.map(|name| name_check(name.as_str(), error))
        .transpose()
}

/// Answers with `respond(output)` as soon as the coordinator replies. `None` means the
/// coordinator dropped the request (it never should): the client is told to retry.
pub fn reply_when<T: Send + 'static>(
    mut receiver: oneshot::Receiver<T>,
    respond: impl FnOnce(Option<T>) -> ResponseKind + Send + 'static,
) -> Reply {
    match receiver.try_recv() {
        Ok(output) => Reply::Now(Box::new(respond(Some(output)))),
        Err(oneshot::error::TryRecvError::Closed) => Reply::Now(Box::new(respond(None))),
        Err(oneshot::error::TryRecvError::Empty) => {
            Reply::Later(Box::pin(async move { respond(receiver.await.ok()) }))
        }
    }
}

pub fn str_bytes(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

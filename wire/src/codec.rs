//! Headers, versions and bodies: a frame's bytes to a typed request, a typed response to bytes.
//!
//! The `kafka-protocol` crate does the per-message work. This module decides header versions
//! (ApiVersions responses always use header v0 so that a client which asked for a version we do not
//! support can still read the answer) and turns every decode failure, panics included, into a
//! `DecodeError`: bytes from the network are never trusted. Before the crate sees a body,
//! `bounds` walks it and refuses any length the remaining bytes cannot hold, because the crate
//! reserves memory for an array before reading its elements.

use crate::bounds;
use crate::frame::{frame_begin, frame_end};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A decoded request with the header fields the response needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

impl RequestFrame {
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame of {length} bytes is too short for a request header")]
    Short { length: usize },
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("{api_key:?} v{api_version} is outside the versions this codec knows")]
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{api_version} (correlation id {correlation_id}): {reason}")]
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("cannot encode {api_key:?} v{api_version}: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub reason: String,
}

/// Runs a decoder that may panic on hostile input, turning the panic into an error message.
fn decode_guarded<T>(decode: impl FnOnce() -> anyhow_free::Result<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(decode)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error),
        Err(_) => Err("decoder panicked on malformed input".to_string()),
    }
}

/// The crate's errors are `anyhow` errors; we only need their text.
mod anyhow_free {
    pub type Result<T> = std::result::Result<T, String>;
}

/// The fixed first 8 bytes of every request header: enough to choose, or refuse, a handler
/// before a byte of the body is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn request_prefix(frame: &[u8]) -> Result<RequestPrefix, DecodeError> {
    let Some(prefix) = frame.first_chunk::<8>() else {
        return Err(DecodeError::Short {
            length: frame.len(),
        });
    };
    Ok(RequestPrefix {
        api_key: i16::from_be_bytes([prefix[0], prefix[1]]),
        api_version: i16::from_be_bytes([prefix[2], prefix[3]]),
        correlation_id: i32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]),
    })
}

/// Decodes a request frame (without its length prefix). The body is walked by `bounds` first,
/// so a hostile length is refused before the crate allocates for it.
pub fn request_decode(mut frame: Bytes) -> Result<RequestFrame, DecodeError> {
    let RequestPrefix {
        api_key: api_key_raw,
        api_version,
        correlation_id,
    } = request_prefix(&frame)?;
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
        return Err(DecodeError::UnknownApiKey {
            api_key: api_key_raw,
            correlation_id,
        });
    };
    let versions = api_key.valid_versions();
    if api_version < versions.min || api_version > versions.max {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    bounds::request_walk(&frame, api_key, api_version)
        .map_err(|error| malformed(error.to_string()))?;
    let header_version = api_key.request_header_version(api_version);
    let header = decode_guarded(|| {
        RequestHeader::decode(&mut frame, header_version).map_err(|error| format!("{error:#}"))
    })
    .map_err(malformed)?;
    let body = decode_guarded(|| {
        RequestKind::decode(api_key, &mut frame, api_version).map_err(|error| format!("{error:#}"))
    })
    .map_err(malformed)?;
    // Trailing bytes are ignored, as Kafka's own parser does: librdkafka 2.16's Metadata v12
    // request carries three bytes the v12 schema does not describe.
    Ok(RequestFrame {
        api_key,
        api_version,
        header,
        body,
    })
}

/// The response header version: v0 for ApiVersions always (KIP-511), else the API's own rule.
pub fn response_header_version(api_key: ApiKey, api_version: i16) -> i16 {
    match api_key {
        ApiKey::ApiVersions => 0,
        _ => api_key.response_header_version(api_version),
    }
}

/// Appends one length-prefixed response frame to `buffer`.
pub fn response_encode(
    buffer: &mut BytesMut,
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<(), EncodeError> {
    let error = |reason: String| EncodeError {
        api_key,
        api_version,
        reason,
    };
    let start = frame_begin(buffer);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let result = header
        .encode(buffer, response_header_version(api_key, api_version))
        .and_then(|()| response.encode(buffer, api_version));
    if let Err(reason) = result {
        buffer.truncate(start);
        return Err(error(format!("{reason:#}")));
    }
    frame_end(buffer, start);
    Ok(())
}

/// Appends one length-prefixed request frame to `buffer` (the client side).
pub fn request_encode(
    buffer: &mut BytesMut,
    header: &RequestHeader,
    request: &RequestKind,
) -> Result<(), EncodeError> {
    let api_version = header.request_api_version;
    let api_key = ApiKey::try_from(header.request_api_key).map_err(|()| EncodeError {
        api_key: ApiKey::ApiVersions,
        api_version,
        reason: format!("unknown API key {}", header.request_api_key),
    })?;
    let start = frame_begin(buffer);
    let result = header
        .encode(buffer, api_key.request_header_version(api_version))
        .and_then(|()| request.encode(buffer, api_version));
    if let Err(reason) = result {
        buffer.truncate(start);
        return Err(EncodeError {
            api_key,
            api_version,
            reason: format!("{reason:#}"),
        });
    }
    frame_end(buffer, start);
    Ok(())
}

/// Decodes a response frame (the client side); returns the correlation id and the body.
pub fn response_decode(
    mut frame: Bytes,
    api_key: ApiKey,
    api_version: i16,
) -> Result<(i32, ResponseKind), DecodeError> {
    let malformed = |correlation_id, reason| DecodeError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    let header_version = response_header_version(api_key, api_version);
    if let Err(error) = bounds::response_walk(&frame, api_key, api_version, header_version) {
        let correlation_id = frame
            .first_chunk::<4>()
            .map_or(-1, |id| i32::from_be_bytes(*id));
        return Err(malformed(correlation_id, error.to_string()));
    }
    let header = decode_guarded(|| {
        ResponseHeader::decode(&mut frame, header_version).map_err(|error| format!("{error:#}"))
    })
    .map_err(|reason| malformed(-1, reason))?;
    let correlation_id = header.correlation_id;
    let body = decode_guarded(|| {
        ResponseKind::decode(api_key, &mut frame, api_version).map_err(|error| format!("{error:#}"))
    })
    .map_err(|reason| malformed(correlation_id, reason))?;
    Ok((correlation_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::frame_split;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn header(api_key: ApiKey, version: i16) -> RequestHeader {
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")))
    }

    #[test]
    fn requests_round_trip_through_encode_and_decode() {
        for version in [0, 4, 9, 12] {
            let mut buffer = BytesMut::new();
            let request = RequestKind::Metadata(MetadataRequest::default());
            request_encode(&mut buffer, &header(ApiKey::Metadata, version), &request).unwrap();
            let frame = frame_split(&mut buffer, 1 << 20).unwrap().unwrap();
            let decoded = request_decode(frame).unwrap();
            assert_eq!(decoded.api_key, ApiKey::Metadata);
            assert_eq!(decoded.api_version, version);
            assert_eq!(decoded.correlation_id(), 7);
        }
    }

    #[test]
    fn unknown_keys_and_versions_are_errors_with_the_correlation_id() {
        let mut frame = vec![0x7f, 0x00, 0, 1, 0, 0, 0, 9];
        assert_eq!(
            request_decode(Bytes::from(frame.clone())),
            Err(DecodeError::UnknownApiKey {
                api_key: 0x7f00,
                correlation_id: 9
            })
        );
        frame[0..4].copy_from_slice(&[0, 18, 0x7f, 0]); // ApiVersions v32512
        assert!(matches!(
            request_decode(Bytes::from(frame)),
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                ..
            })
        ));
    }

    #[test]
    fn truncated_bodies_are_malformed_not_panics() {
        let mut buffer = BytesMut::new();
        let request = RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("a-long-client-name")),
        );
        request_encode(&mut buffer, &header(ApiKey::ApiVersions, 3), &request).unwrap();
        let frame = frame_split(&mut buffer, 1 << 20).unwrap().unwrap();
        for cut in 8..frame.len() {
            assert!(request_decode(frame.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_frames_never_panic(api_key in 0i16..70, version in 0i16..16,
                                        body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut frame = Vec::new();
            frame.extend_from_slice(&api_key.to_be_bytes());
            frame.extend_from_slice(&version.to_be_bytes());
            frame.extend_from_slice(&1i32.to_be_bytes());
            frame.extend_from_slice(&body);
            let _ = request_decode(Bytes::from(frame));
        }
    }
}

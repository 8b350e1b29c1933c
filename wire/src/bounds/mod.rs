//! Bounds: a walk over a message's bytes that checks every length against the bytes that
//! remain, before the `kafka-protocol` crate decodes it.
//!
//! The crate reserves `Vec::with_capacity(n)` for an array length `n` read from the wire before
//! it reads a single element, so an 18-byte Metadata request that claims 2^31-1 topics asks for
//! 154 GB and aborts the process (an allocation failure is not a panic; nothing can catch it).
//! We chose a pre-pass over a decoder of our own: the walkers in `generated.rs` are derived by
//! `wire/tools/gen_bounds.py` from the crate's own `Decodable` impls, so they follow exactly the
//! fields, versions, nullability and tagged fields the crate reads, for every message gregor
//! decodes, at the cost of one extra pass that allocates nothing. A hand-written decoder would
//! duplicate 30 APIs' schemas and drift from the crate; the generated walker cannot, and
//! `tests.rs` checks that it consumes exactly what the crate consumes on real frames and on
//! millions of mutations of them.

pub mod fuzz;
#[allow(clippy::all, clippy::pedantic, unused_comparisons)]
mod generated;
mod sketch;
#[cfg(test)]
mod tests;
mod walker;

pub use sketch::Sketch;
pub use walker::{BoundsError, Null, Tag, Walk, Walked, Walker};

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Array elements one request may hold. The crate's memory grows with elements (up to ~100
/// bytes each), not with the bytes they were encoded in (as few as one), so the frame limit
/// alone would let a 100 MiB request cost gigabytes. A million is far above any real request:
/// a replica fetching every partition of a large broker names tens of thousands.
pub const REQUEST_ELEMENTS_MAX: u64 = 1 << 20;

/// Array elements one response may hold: a metadata response of a large cluster lists every
/// partition and its replicas, so the client allows more than the broker does.
pub const RESPONSE_ELEMENTS_MAX: u64 = 1 << 24;

/// Walks a request frame (without its length prefix): header, then body. Returns the bytes the
/// walk consumed; trailing bytes after the body are the caller's business, as in Kafka.
pub fn request_walk(frame: &[u8], api_key: ApiKey, api_version: i16) -> Result<usize, BoundsError> {
    let mut walker = Walker::new(frame, REQUEST_ELEMENTS_MAX);
    let header_version = api_key.request_header_version(api_version);
    generated::request_header::request_header(&mut walker, header_version)?;
    generated::request(api_key, &mut walker, api_version).ok_or_else(|| unknown(api_key))??;
    Ok(walker.position())
}

/// Walks a response frame (without its length prefix) as the client reads it: header, body.
pub fn response_walk(
    frame: &[u8],
    api_key: ApiKey,
    api_version: i16,
    header_version: i16,
) -> Result<usize, BoundsError> {
    let mut walker = Walker::new(frame, RESPONSE_ELEMENTS_MAX);
    generated::response_header::response_header(&mut walker, header_version)?;
    generated::response(api_key, &mut walker, api_version).ok_or_else(|| unknown(api_key))??;
    Ok(walker.position())
}

/// The consumer protocol's subscription, carried as opaque bytes in JoinGroup.
pub fn consumer_subscription_walk(bytes: &[u8], version: i16) -> Result<usize, BoundsError> {
    let mut walker = Walker::new(bytes, RESPONSE_ELEMENTS_MAX);
    generated::consumer_protocol_subscription::consumer_protocol_subscription(
        &mut walker,
        version,
    )?;
    Ok(walker.position())
}

/// The consumer protocol's assignment, carried as opaque bytes in SyncGroup.
pub fn consumer_assignment_walk(bytes: &[u8], version: i16) -> Result<usize, BoundsError> {
    let mut walker = Walker::new(bytes, RESPONSE_ELEMENTS_MAX);
    generated::consumer_protocol_assignment::consumer_protocol_assignment(&mut walker, version)?;
    Ok(walker.position())
}

/// A random request frame (without length prefix) of `api_key` at `version` that the crate
/// must decode: a real header, then a body the walkers sketch. `None` for keys gregor never
/// decodes and versions the crate's message types refuse.
pub fn request_sketch(api_key: ApiKey, version: i16, seed: u64) -> Option<bytes::Bytes> {
    let mut sketch = Sketch::new(seed);
    generated::request(api_key, &mut sketch, version)?.ok()?;
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(seed as i32);
    let mut frame = bytes::BytesMut::new();
    header
        .encode(&mut frame, api_key.request_header_version(version))
        .expect("a default header encodes");
    frame.extend_from_slice(&sketch.into_bytes());
    Some(frame.freeze())
}

/// As `request_sketch`, for a response frame.
pub fn response_sketch(api_key: ApiKey, version: i16, seed: u64) -> Option<bytes::Bytes> {
    let mut sketch = Sketch::new(seed);
    generated::response(api_key, &mut sketch, version)?.ok()?;
    let header = ResponseHeader::default().with_correlation_id(seed as i32);
    let mut frame = bytes::BytesMut::new();
    header
        .encode(
            &mut frame,
            crate::codec::response_header_version(api_key, version),
        )
        .expect("a default header encodes");
    frame.extend_from_slice(&sketch.into_bytes());
    Some(frame.freeze())
}

/// The API keys gregor decodes (those `wire/tools/gen_bounds.py` generated walkers for).
pub fn api_keys() -> impl Iterator<Item = ApiKey> {
    (0..200i16)
        .filter_map(|raw| ApiKey::try_from(raw).ok())
        .filter(|key| {
            generated::request(*key, &mut Sketch::new(0), key.valid_versions().min).is_some()
        })
}

fn unknown(api_key: ApiKey) -> BoundsError {
    BoundsError::NoWalker {
        api_key: api_key as i16,
    }
}

/// How a frame fared in a cross-check of the walker against the crate's decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossCheck {
    /// Both accepted, and consumed the same bytes.
    Decoded,
    /// Both refused it.
    Refused,
    /// The walker refused a length the crate would have tried to allocate for.
    RefusedByBound,
}

/// Walks a request frame and decodes it with the crate, and fails unless they agree: what the
/// walker accepts the crate decodes, consuming the same bytes; what it refuses for a reason
/// other than a bound the crate refuses too. The fuzz targets and tests run this on mutations.
/// The crate only runs where the walk proved its allocations bounded.
pub fn request_cross_check(frame: &bytes::Bytes) -> Result<CrossCheck, String> {
    let Ok(prefix) = crate::codec::request_prefix(frame) else {
        return Ok(CrossCheck::Refused);
    };
    let Ok(api_key) = ApiKey::try_from(prefix.api_key) else {
        return Ok(CrossCheck::Refused);
    };
    let version = prefix.api_version;
    let versions = api_key.valid_versions();
    if version < versions.min || version > versions.max {
        return Ok(CrossCheck::Refused);
    }
    let walked = request_walk(frame, api_key, version);
    cross_check(walked, frame, |buffer| {
        let header_version = api_key.request_header_version(version);
        RequestHeader::decode(buffer, header_version).map_err(|error| format!("{error:#}"))?;
        RequestKind::decode(api_key, buffer, version)
            .map(drop)
            .map_err(|error| format!("{error:#}"))
    })
}

/// As `request_cross_check`, for a response frame of `api_key` at `version`.
pub fn response_cross_check(
    frame: &bytes::Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<CrossCheck, String> {
    let header_version = crate::codec::response_header_version(api_key, version);
    let walked = response_walk(frame, api_key, version, header_version);
    cross_check(walked, frame, |buffer| {
        ResponseHeader::decode(buffer, header_version).map_err(|error| format!("{error:#}"))?;
        ResponseKind::decode(api_key, buffer, version)
            .map(drop)
            .map_err(|error| format!("{error:#}"))
    })
}

fn cross_check(
    walked: Result<usize, BoundsError>,
    frame: &bytes::Bytes,
    decode: impl FnOnce(&mut bytes::Bytes) -> Result<(), String>,
) -> Result<CrossCheck, String> {
    if let Err(BoundsError::TooLong { .. } | BoundsError::ElementsExceeded { .. }) = walked {
        return Ok(CrossCheck::RefusedByBound);
    }
    if let Err(BoundsError::NoWalker { .. }) = walked {
        return Ok(CrossCheck::Refused);
    }
    let mut buffer = frame.clone();
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(&mut buffer)));
    let consumed = frame.len() - buffer.len();
    match (walked, decoded) {
        (Ok(walked), Ok(Ok(()))) if walked == consumed => Ok(CrossCheck::Decoded),
        (Ok(walked), Ok(Ok(()))) => Err(format!(
            "walker consumed {walked} bytes, the crate {consumed}"
        )),
        (Ok(walked), Ok(Err(error))) => Err(format!(
            "walker accepted {walked} bytes, the crate refused: {error}"
        )),
        (Ok(_), Err(_)) => Err("walker accepted, the crate panicked".to_string()),
        (Err(error), Ok(Ok(()))) => Err(format!(
            "walker refused ({error}), the crate decoded {consumed} bytes"
        )),
        (Err(_), _) => Ok(CrossCheck::Refused),
    }
}

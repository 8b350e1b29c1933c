//! What the fuzz targets share: the corpus of real clients' frames and the mutations applied
//! to frames. `wire-fuzz` (the nightly campaign) and the property tests both use them.

use super::{request_cross_check, response_cross_check, CrossCheck};
use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

/// Frames captured from confluent-kafka and kafka-python by `wire/fuzz/capture.py`.
const CORPUS: &str = include_str!("../../fuzz/corpus.txt");

/// One frame to check: a request, or a response with the API key and version it answers.
#[derive(Debug, Clone)]
pub enum Frame {
    Request(Bytes),
    Response {
        api_key: ApiKey,
        version: i16,
        bytes: Bytes,
    },
}

impl Frame {
    pub fn bytes(&self) -> &Bytes {
        match self {
            Frame::Request(bytes) | Frame::Response { bytes, .. } => bytes,
        }
    }

    pub fn with_bytes(&self, bytes: Bytes) -> Frame {
        match self {
            Frame::Request(_) => Frame::Request(bytes),
            Frame::Response {
                api_key, version, ..
            } => Frame::Response {
                api_key: *api_key,
                version: *version,
                bytes,
            },
        }
    }

    pub fn cross_check(&self) -> Result<CrossCheck, String> {
        match self {
            Frame::Request(bytes) => request_cross_check(bytes),
            Frame::Response {
                api_key,
                version,
                bytes,
            } => response_cross_check(bytes, *api_key, *version),
        }
    }
}

/// The corpus, parsed. Lines are `request HEX` or `response KEY VERSION HEX`; `#` comments.
pub fn corpus() -> Vec<Frame> {
    CORPUS
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                ["request", hex] => Frame::Request(hex_decode(hex)),
                ["response", key, version, hex] => Frame::Response {
                    api_key: ApiKey::try_from(key.parse::<i16>().expect("corpus key"))
                        .expect("corpus key is an API key"),
                    version: version.parse().expect("corpus version"),
                    bytes: hex_decode(hex),
                },
                _ => panic!("corpus line {line:?}"),
            }
        })
        .collect()
}

fn hex_decode(hex: &str) -> Bytes {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("corpus hex"))
        .collect()
}

/// One mutation of a frame: what a fuzzer (or an attacker) does to a valid message.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Overwrite 4 bytes with a big-endian value: lengths and counts turn huge or negative.
    Int32 {
        at: usize,
        value: i32,
    },
    /// Overwrite one byte: varint lengths, null markers, presence bytes.
    Byte {
        at: usize,
        value: u8,
    },
    Truncate {
        at: usize,
    },
}

/// Applies a mutation to the bytes after a request's first 8 (key, version, correlation id),
/// so the body, not the dispatch, is what gets exercised. `at` wraps around the body.
pub fn mutate(frame: &Bytes, mutation: &Mutation) -> Bytes {
    let mut bytes = frame.to_vec();
    let body = 8..bytes.len().max(9);
    match *mutation {
        Mutation::Int32 { at, value } => {
            let at = body.start + at % body.len();
            for (i, byte) in value.to_be_bytes().into_iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = byte;
                }
            }
        }
        Mutation::Byte { at, value } => {
            let at = body.start + at % body.len();
            if let Some(slot) = bytes.get_mut(at) {
                *slot = value;
            }
        }
        Mutation::Truncate { at } => bytes.truncate(body.start + at % body.len()),
    }
    Bytes::from(bytes)
}

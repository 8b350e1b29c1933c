//! One client connection: frames in, responses out, in request order.
//!
//! The reader splits frames, decodes them and runs each handler's synchronous part in arrival
//! order (so pipelined produces to one partition append in the order sent). A handler may finish
//! at once or later (a produce waiting for its fsync, a fetch long-polling); the writer awaits the
//! replies strictly in request order, as Kafka requires, so slow requests never reorder responses
//! and fast ones never wait behind the reader. The queue between them is bounded: at
//! `requests_in_flight_max` the reader stops reading and TCP pushes back on the client.

use crate::broker::Broker;
use crate::handlers::api_versions;
use crate::handlers::{self, Reply};
use bytes::{Bytes, BytesMut};
use runtime::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use runtime::net::TcpStream;
use runtime::sync::{mpsc, oneshot};
use std::net::SocketAddr;
use std::sync::Arc;
use wire::codec::{request_decode, request_prefix, response_encode};
use wire::frame::frame_split;
use wire::{ApiKey, ResponseKind};

/// Read buffer growth step: large enough for a typical produce batch, small enough per connection.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A response slot in the writer's queue.
enum Slot {
    Ready(Bytes),
    Later(oneshot::Receiver<Option<Bytes>>),
}

/// Why the reader stopped.
#[derive(Debug)]
enum Close {
    Eof,
    Io(std::io::Error),
    Protocol(String),
}

pub async fn run(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    let (reader, writer) = runtime::io::split(stream);
    let (slots, slots_receiver) = mpsc::channel(broker.config.requests_in_flight_max);
    let writer = runtime::spawn(write_loop(writer, slots_receiver));
    let close = read_loop(&broker, reader, slots).await;
    match close {
        Close::Eof => tracing::debug!(%peer, "connection closed by peer"),
        Close::Io(error) => tracing::debug!(%peer, %error, "connection I/O error"),
        Close::Protocol(reason) => tracing::warn!(%peer, %reason, "closing connection"),
    }
    let _ = writer.await;
}

async fn read_loop(
    broker: &Arc<Broker>,
    mut reader: ReadHalf<TcpStream>,
    slots: mpsc::Sender<Slot>,
) -> Close {
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        loop {
            let frame = match frame_split(&mut buffer, broker.config.request_bytes_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => return Close::Protocol(error.to_string()),
            };
            let Some(slot) = dispatch(broker, frame) else {
                continue;
            };
            let slot = match slot {
                Ok(slot) => slot,
                Err(reason) => return Close::Protocol(reason),
            };
            if slots.send(slot).await.is_err() {
                return Close::Protocol("writer stopped".into());
            }
        }
        if buffer.capacity() - buffer.len() < READ_BUFFER_BYTES / 4 {
            buffer.reserve(READ_BUFFER_BYTES);
        }
        match reader.read_buf(&mut buffer).await {
            Ok(0) => return Close::Eof,
            Ok(_) => {}
            Err(error) => return Close::Io(error),
        }
    }
}

/// Decodes and handles one request. `None`: no response (acks=0). `Err`: close the connection.
fn dispatch(broker: &Arc<Broker>, frame: Bytes) -> Option<Result<Slot, String>> {
    // Choose (or refuse) the handler from the header's fixed prefix before a byte of the body
    // is decoded: a body is only decoded for an API and version we serve.
    let prefix = match request_prefix(&frame) {
        Ok(prefix) => prefix,
        Err(error) => return Some(Err(error.to_string())),
    };
    let api_key = ApiKey::try_from(prefix.api_key).ok();
    if !api_key.is_some_and(|key| api_versions::is_supported(key, prefix.api_version)) {
        if api_key == Some(ApiKey::ApiVersions) {
            // KIP-511: answer in v0 with the error and our ranges, so the client can retry.
            let response = api_versions::unsupported();
            return Some(
                encode(ApiKey::ApiVersions, 0, prefix.correlation_id, &response).map(Slot::Ready),
            );
        }
        return Some(Err(format!(
            "API key {} v{} is not supported",
            prefix.api_key, prefix.api_version
        )));
    }
    let request = match request_decode(frame) {
        Ok(request) => request,
        Err(error) => return Some(Err(error.to_string())),
    };
    let (api_key, api_version, correlation_id) = (
        request.api_key,
        request.api_version,
        request.correlation_id(),
    );
    let span =
        tracing::debug_span!("request", api = ?api_key, version = api_version, correlation_id);
    let _entered = span.enter();
    match handlers::handle(broker, request) {
        Reply::None => None,
        Reply::Now(response) => {
            Some(encode(api_key, api_version, correlation_id, &response).map(Slot::Ready))
        }
        Reply::Later(future) => {
            let (sender, receiver) = oneshot::channel();
            runtime::spawn(async move {
                let response = future.await;
                let frame = encode(api_key, api_version, correlation_id, &response)
                    .map_err(|reason| tracing::error!(%reason, "response encoding failed"))
                    .ok();
                let _ = sender.send(frame);
            });
            Some(Ok(Slot::Later(receiver)))
        }
    }
}

fn encode(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<Bytes, String> {
    let mut buffer = BytesMut::new();
    response_encode(&mut buffer, api_key, api_version, correlation_id, response)
        .map_err(|error| error.to_string())?;
    Ok(buffer.freeze())
}

async fn write_loop(mut writer: WriteHalf<TcpStream>, mut slots: mpsc::Receiver<Slot>) {
    while let Some(slot) = slots.recv().await {
        let frame = match slot {
            Slot::Ready(frame) => frame,
            Slot::Later(receiver) => match receiver.await {
                Ok(Some(frame)) => frame,
                _ => break, // A handler failed to produce a response: the stream is unusable.
            },
        };
        if writer.write_all(&frame).await.is_err() {
            break;
        }
        // Always flush: the next response may be a long poll, and madsim delivers only on flush.
        // (On real TCP flush is free; write_all already issued the syscall.)
        if writer.flush().await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

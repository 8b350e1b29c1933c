//! One client connection: frames in, responses out, in request order.
//!
//! The reader splits frames, decodes them and runs each handler's synchronous part in arrival
//! order (so pipelined produces to one partition append in the order sent). A handler may finish
//! at once or later (a produce waiting for its fsync, a fetch long-polling); the writer awaits the
//! replies strictly in request order, as Kafka requires, so slow requests never reorder responses
//! and fast ones never wait behind the reader. The queue between them is bounded: at
//! `requests_in_flight_max` the reader stops taking frames and TCP pushes back on the client.
//!
//! The reader also watches the peer: when it hangs up (EOF, even while the queue is full) the
//! connection closes at once, as Kafka's does, dropping parked work so it cannot hold the slot. A
//! produce already appended still becomes durable: the partition's flusher does not depend on the
//! request. The reader closes an idle connection (`connections_idle_max`) and one the limits
//! evicted, and takes large frames' memory from the broker-wide budget (`Inbox`).

use crate::broker::Broker;
use crate::handlers::api_versions;
use crate::handlers::{self, Reply};
use crate::limits::{Activity, Admission, Limits};
use bytes::{Bytes, BytesMut};
use runtime::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use runtime::net::TcpStream;
use runtime::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use runtime::Clock;
use std::net::SocketAddr;
use std::sync::Arc;
use wire::codec::{request_decode, request_prefix, response_encode};
use wire::frame::{frame_split, FrameError};
use wire::{ApiKey, ResponseKind};

/// The base read buffer: large enough for a typical produce batch, small enough per connection
/// (64 MiB at 1,024 connections). Frames up to this size never touch the request-memory budget.
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
    /// Nothing in flight, received or sent for `connections_idle_max`.
    Idle,
    /// The limits closed this idle connection to admit a new one.
    Evicted,
}

pub async fn run(
    broker: Arc<Broker>,
    limits: Arc<Limits>,
    stream: TcpStream,
    peer: SocketAddr,
    admission: Admission,
) {
    let (reader, writer) = runtime::io::split(stream);
    let (slots, slots_receiver) = mpsc::channel(broker.config.requests_in_flight_max);
    let activity = admission.activity.clone();
    let writer = runtime::spawn(write_loop(
        writer,
        slots_receiver,
        activity.clone(),
        broker.clock,
    ));
    let inbox = Inbox::new(limits.request_memory.clone());
    let close = read_loop(&broker, reader, inbox, slots, &activity).await;
    match &close {
        Close::Eof => tracing::debug!(%peer, "connection closed by peer"),
        Close::Io(error) => tracing::debug!(%peer, %error, "connection I/O error"),
        Close::Protocol(reason) => tracing::warn!(%peer, %reason, "closing connection"),
        Close::Idle => tracing::debug!(%peer, "closing idle connection"),
        Close::Evicted => tracing::debug!(%peer, "closing idle connection to admit another"),
    }
    if let Close::Protocol(_) = close {
        // The client is alive and owed the responses to the requests before the bad one.
        let _ = writer.await;
    } else {
        // No one will read what is pending: drop it now rather than after a parked fetch ends.
        writer.abort();
    }
    drop(admission);
}

async fn read_loop(
    broker: &Arc<Broker>,
    mut reader: ReadHalf<TcpStream>,
    mut inbox: Inbox,
    slots: mpsc::Sender<Slot>,
    activity: &Activity,
) -> Close {
    let (clock, idle_max) = (broker.clock, broker.config.connections_idle_max);
    loop {
        loop {
            let frame = match inbox.frame_next(broker.config.request_bytes_max) {
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
            activity.request_started();
            if let Err(close) =
                slot_send(&slots, slot, &mut reader, &mut inbox, activity, clock).await
            {
                return close;
            }
        }
        let idle_deadline = activity.idle_deadline(clock.now(), idle_max);
        let charge_bytes = inbox.charge_needed();
        if charge_bytes.is_none() {
            inbox.room_make();
        }
        runtime::select! {
            biased;
            () = activity.evicted.notified() => return Close::Evicted,
            permit = inbox.budget.clone().acquire_many_owned(charge_bytes.unwrap_or(0)), if charge_bytes.is_some() => {
                inbox.charge = Some(permit.expect("the request-memory budget is never closed"));
            }
            read = reader.read_buf(&mut inbox.buffer), if charge_bytes.is_none() => match read {
                Ok(0) => return Close::Eof,
                Ok(_) => activity.touch(clock.now()),
                Err(error) => return Close::Io(error),
            },
            () = runtime::time::sleep_until(idle_deadline) => {
                if activity.idle_deadline(clock.now(), idle_max) <= clock.now() {
                    return Close::Idle;
                }
            }
        }
    }
}

/// Queues a response slot for the writer. While the queue is full it keeps reading into the
/// buffer's spare room (never growing it), so a peer that hangs up is noticed at once.
async fn slot_send(
    slots: &mpsc::Sender<Slot>,
    slot: Slot,
    reader: &mut ReadHalf<TcpStream>,
    inbox: &mut Inbox,
    activity: &Activity,
    clock: Clock,
) -> Result<(), Close> {
    let writer_stopped = || Close::Protocol("writer stopped".into());
    loop {
        let spare = inbox.buffer.capacity() - inbox.buffer.len();
        runtime::select! {
            biased;
            permit = slots.reserve() => {
                permit.map_err(|_| writer_stopped())?.send(slot);
                return Ok(());
            }
            read = reader.read_buf(&mut inbox.buffer), if spare > 0 => match read {
                Ok(0) => return Err(Close::Eof),
                Ok(_) => activity.touch(clock.now()),
                Err(error) => return Err(Close::Io(error)),
            },
        }
    }
}

/// One connection's read buffer. Frames up to `READ_BUFFER_BYTES` use the base buffer. A larger
/// frame first takes its declared length from the broker-wide budget (Kafka's
/// `queued.max.request.bytes`), and the connection reads nothing while the budget is exhausted;
/// then its buffer grows only as bytes arrive (doubling, capped at the frame), so a client that
/// declares 100 MiB and sends little holds little memory. Charging the declared length up front,
/// as Kafka's memory pool does, means two half-received frames can never deadlock on the budget.
struct Inbox {
    buffer: BytesMut,
    budget: Arc<Semaphore>,
    /// The budget held for the large frame at the front of `buffer`.
    charge: Option<OwnedSemaphorePermit>,
}

impl Inbox {
    fn new(budget: Arc<Semaphore>) -> Inbox {
        Inbox {
            buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
            budget,
            charge: None,
        }
    }

    /// The declared size (prefix included) of the frame at the front, once its prefix is here.
    fn frame_bytes(&self) -> Option<usize> {
        let prefix = self.buffer.first_chunk::<4>()?;
        let length = usize::try_from(i32::from_be_bytes(*prefix)).ok()?;
        Some(4 + length)
    }

    /// The next whole frame. `frame_split` reserves a partial frame's whole declared length, so
    /// it is called only for a whole frame or a prefix it refuses (before allocating).
    fn frame_next(&mut self, frame_bytes_max: u32) -> Result<Option<Bytes>, FrameError> {
        if let Some(bytes) = self.frame_bytes() {
            let admissible = bytes - 4 <= frame_bytes_max as usize;
            if admissible && self.buffer.len() < bytes {
                return Ok(None);
            }
        }
        let frame = frame_split(&mut self.buffer, frame_bytes_max)?;
        if frame.is_some() && self.charge.take().is_some() {
            // A large frame went to its handler, releasing its charge; move what follows it to a
            // base buffer so the large allocation is freed with the frame.
            self.buffer_replace(READ_BUFFER_BYTES.max(self.buffer.len()));
        }
        Ok(frame)
    }

    /// Budget to take before reading on: the body length of a large frame not yet charged.
    fn charge_needed(&self) -> Option<u32> {
        let bytes = self.frame_bytes()?;
        let needed =
            bytes > READ_BUFFER_BYTES && self.charge.is_none() && self.buffer.len() < bytes;
        needed.then(|| u32::try_from(bytes - 4).expect("frame_next refused lengths over the limit"))
    }

    /// Ensures spare room for the next read, never beyond the end of the frame being received.
    fn room_make(&mut self) {
        let length = self.buffer.len();
        let spare = self.buffer.capacity() - length;
        match self.frame_bytes() {
            Some(bytes) if bytes > READ_BUFFER_BYTES => {
                if spare == 0 {
                    let grown = length.saturating_mul(2).max(length + READ_BUFFER_BYTES);
                    self.buffer_replace(grown.min(bytes));
                }
            }
            _ => {
                if spare < READ_BUFFER_BYTES / 4 {
                    self.buffer_replace(READ_BUFFER_BYTES);
                }
            }
        }
        assert!(
            self.buffer.capacity() > self.buffer.len(),
            "room for a read"
        );
    }

    /// Moves the buffered bytes into a fresh allocation of exactly `capacity` (BytesMut would
    /// otherwise grow by its own rules, or reserve 64 bytes behind our back when full).
    fn buffer_replace(&mut self, capacity: usize) {
        assert!(capacity >= self.buffer.len());
        let mut fresh = BytesMut::with_capacity(capacity);
        fresh.extend_from_slice(&self.buffer);
        self.buffer = fresh;
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
                // If the connection closes first, the writer drops the receiver: drop the work.
                let mut sender = sender;
                let response = runtime::select! {
                    biased;
                    () = sender.closed() => None,
                    response = future => Some(response),
                };
                let Some(response) = response else {
                    return;
                };
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

async fn write_loop(
    mut writer: WriteHalf<TcpStream>,
    mut slots: mpsc::Receiver<Slot>,
    activity: Arc<Activity>,
    clock: Clock,
) {
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
        activity.request_answered(clock.now());
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn inbox(budget_bytes: usize) -> Inbox {
        Inbox::new(Arc::new(Semaphore::new(budget_bytes)))
    }

    /// Appends what a peer sent, as `read_buf` would: only into the room `room_make` left.
    fn receive(inbox: &mut Inbox, bytes: &[u8]) -> usize {
        inbox.room_make();
        let room = inbox.buffer.capacity() - inbox.buffer.len();
        let taken = room.min(bytes.len());
        inbox.buffer.put_slice(&bytes[..taken]);
        taken
    }

    #[test]
    fn large_frames_charge_their_length_and_grow_only_as_bytes_arrive() {
        const MIB: usize = 1 << 20;
        let mut inbox = inbox(100 * MIB);
        let mut frame = BytesMut::new();
        frame.put_i32(i32::try_from(100 * MIB).unwrap());
        frame.resize(4 + 100 * MIB, 7);
        // The prefix arrives: the declared 100 MiB is charged, not allocated.
        let mut sent = receive(&mut inbox, &frame[..4]);
        assert_eq!(
            inbox.charge_needed(),
            Some(u32::try_from(100 * MIB).unwrap())
        );
        inbox.charge = Some(
            inbox
                .budget
                .clone()
                .try_acquire_many_owned(100 * 1024 * 1024)
                .unwrap(),
        );
        assert_eq!(inbox.budget.available_permits(), 0);
        assert_eq!(inbox.charge_needed(), None);
        // 10 MiB arrive: the buffer stays within twice what arrived.
        while sent < 10 * MIB {
            sent += receive(&mut inbox, &frame[sent..10 * MIB]);
            assert!(inbox.buffer.capacity() <= 2 * inbox.buffer.len().max(READ_BUFFER_BYTES));
        }
        assert_eq!(
            inbox.frame_next(u32::try_from(100 * MIB).unwrap()),
            Ok(None)
        );
        // The rest arrives with the start of a small frame behind it; never past the frame's end.
        let mut stream = frame[sent..].to_vec();
        stream.extend_from_slice(&[0, 0, 0, 2, 1]);
        let mut offset = 0;
        while offset < stream.len() - 5 {
            offset += receive(&mut inbox, &stream[offset..]);
            assert!(inbox.buffer.capacity() <= 4 + 100 * MIB);
        }
        let whole = inbox.frame_next(u32::try_from(100 * MIB).unwrap()).unwrap();
        assert_eq!(whole.map(|frame| frame.len()), Some(100 * MIB));
        assert_eq!(
            inbox.budget.available_permits(),
            100 * MIB,
            "released on hand-over"
        );
        assert!(
            inbox.buffer.capacity() <= READ_BUFFER_BYTES,
            "back to the base buffer"
        );
        receive(&mut inbox, &stream[offset..]);
        assert_eq!(
            inbox.frame_next(1024),
            Ok(None),
            "the small frame is still partial"
        );
        assert_eq!(
            inbox.charge_needed(),
            None,
            "small frames are never charged"
        );
    }

    #[test]
    fn bad_prefixes_are_refused_without_allocating() {
        for prefix in [[0x7f, 0xff, 0xff, 0xff], [0xff, 0xff, 0xff, 0xfe]] {
            let mut inbox = inbox(1024);
            receive(&mut inbox, &prefix);
            assert!(inbox.frame_next(1024).is_err());
            assert!(inbox.buffer.capacity() <= READ_BUFFER_BYTES);
        }
    }
}

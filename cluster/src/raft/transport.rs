//! Raft messages over TCP: the frame codec (sans-IO) and the peer transport (async, on
//! `runtime::net`).
//!
//! Frame: `len u32 | crc u32 | protobuf eraftpb::Message` (big endian, as Kafka frames are; the
//! CRC-32C covers the message bytes). A length over `FRAME_BYTES_MAX` is refused before a byte
//! of the body is buffered; every decode failure is an error, never a panic.
//!
//! The transport keeps one outbound connection per peer, each owned by a task with a bounded
//! queue: `send` never waits (the Raft loop must not stall on a slow or dead peer), and drops
//! the message when the queue is full, which Raft tolerates (it retries appends, heartbeats and
//! votes by itself). A broken connection is re-dialled with exponential backoff; inbound
//! connections deliver decoded messages into one bounded channel.

use super::node::{is_snapshot, RaftNode, StateMachine};
use crate::frame;
use protobuf::Message as _;
use raft::eraftpb::Message;
use runtime::io::AsyncWriteExt;
use runtime::net::{TcpListener, TcpStream};
use runtime::sync::mpsc;
use std::collections::BTreeMap;
use std::time::Duration;

/// Bytes before a frame's body: length and CRC.
pub const FRAME_HEADER_BYTES: usize = frame::HEADER_BYTES;
/// The largest message body: a snapshot of the metadata image must fit.
pub const FRAME_BYTES_MAX: usize = 64 << 20;
/// Messages queued for one peer before `send` drops.
pub const PEER_QUEUE_MAX: usize = 1024;
/// Inbound messages queued for the Raft loop before readers drop.
pub const INBOUND_QUEUE_MAX: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes over the limit")]
    TooLarge(usize),
    #[error("frame CRC mismatch")]
    Crc,
    #[error("frame body is not a raft message")]
    Undecodable,
}

impl From<frame::Bad> for FrameError {
    fn from(bad: frame::Bad) -> FrameError {
        match bad {
            frame::Bad::TooLarge(len) => FrameError::TooLarge(len),
            frame::Bad::Crc => FrameError::Crc,
        }
    }
}

/// One message as a frame; None if it is over the limit (a snapshot too large to send).
pub fn frame_encode(message: &Message) -> Option<Vec<u8>> {
    frame::wrap(&message.write_to_bytes().ok()?, FRAME_BYTES_MAX)
}

/// The body length a frame header announces, checked against the limit.
pub fn frame_len(header: &[u8; FRAME_HEADER_BYTES]) -> Result<usize, FrameError> {
    Ok(frame::body_len(header, FRAME_BYTES_MAX)?)
}

/// Decodes the first frame of `bytes`: Ok(None) if it is not all there yet, else the message
/// and the bytes it took.
pub fn frame_decode(bytes: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    let Some((body, used)) = frame::split(bytes, FRAME_BYTES_MAX)? else {
        return Ok(None);
    };
    Ok(Some((body_decode(body)?, used)))
}

fn body_decode(body: &[u8]) -> Result<Message, FrameError> {
    // rust-protobuf returns errors for malformed input; a panic inside it must not take the
    // node down either.
    match std::panic::catch_unwind(|| Message::parse_from_bytes(body)) {
        Ok(Ok(message)) => Ok(message),
        _ => Err(FrameError::Undecodable),
    }
}

/// Reads one frame from a stream; Ok(None) on a clean end of stream between frames.
pub async fn frame_read(stream: &mut TcpStream) -> std::io::Result<Option<Message>> {
    let Some(body) = frame::read::<FrameError>(stream, FRAME_BYTES_MAX).await? else {
        return Ok(None);
    };
    let invalid = |error: FrameError| std::io::Error::new(std::io::ErrorKind::InvalidData, error);
    body_decode(&body).map(Some).map_err(invalid)
}

/// One round of the Ready contract for an async loop: `handle_ready` (persist, apply) on the
/// blocking pool, so its fsync does not hold up the runtime, then the messages it returned go
/// out, and raft-rs hears which peers were unreachable and how each snapshot went (it paces
/// replication by both). The node comes back in every case; an error means its disk failed.
pub async fn ready_round<M: StateMachine + Send + 'static>(
    mut node: RaftNode<M>,
    transport: &Transport,
) -> (RaftNode<M>, std::io::Result<()>) {
    if !node.has_ready() {
        return (node, Ok(()));
    }
    let (mut node, messages) = runtime::blocking(move || {
        let messages = node.handle_ready();
        (node, messages)
    })
    .await;
    let messages = match messages {
        Ok(messages) => messages,
        Err(error) => return (node, Err(error)),
    };
    for message in messages {
        let snapshot = is_snapshot(&message);
        let to = message.to;
        let sent = transport.send(message);
        if snapshot {
            node.report_snapshot(to, sent);
        }
        if !sent {
            node.report_unreachable(to);
        }
    }
    (node, Ok(()))
}

/// The outbound side: one queue and one connection task per peer.
#[derive(Debug)]
pub struct Transport {
    peers: BTreeMap<u64, mpsc::Sender<Message>>,
    tasks: Vec<runtime::JoinHandle<()>>,
}

impl Transport {
    /// Starts a connection task for every peer (`id -> host:port`).
    pub fn start(peers: &BTreeMap<u64, String>) -> Transport {
        let mut senders = BTreeMap::new();
        let mut tasks = Vec::new();
        for (&id, address) in peers {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MAX);
            senders.insert(id, sender);
            tasks.push(runtime::spawn(peer_run(id, address.clone(), receiver)));
        }
        Transport {
            peers: senders,
            tasks,
        }
    }

    /// Queues `message` for its peer; false if it was dropped (unknown peer, full queue).
    pub fn send(&self, message: Message) -> bool {
        match self.peers.get(&message.to) {
            Some(queue) => queue.try_send(message).is_ok(),
            None => false,
        }
    }

    /// Stops every connection task.
    pub fn shutdown(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Dials `address` until it answers, then writes queued messages until the connection breaks.
async fn peer_run(id: u64, address: String, mut queue: mpsc::Receiver<Message>) {
    let mut backoff = BACKOFF_MIN;
    let mut unsent: Option<Message> = None;
    loop {
        let mut stream = match TcpStream::connect(address.as_str()).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!("raft peer {id} at {address}: connect: {error}");
                runtime::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        backoff = BACKOFF_MIN;
        loop {
            let message = match unsent.take() {
                Some(message) => message,
                None => match queue.recv().await {
                    Some(message) => message,
                    None => return, // the transport is gone
                },
            };
            let Some(frame) = frame_encode(&message) else {
                tracing::error!(
                    "raft peer {id}: a {:?} over the frame limit dropped",
                    message.get_msg_type()
                );
                continue;
            };
            let written = async {
                stream.write_all(&frame).await?;
                stream.flush().await
            };
            if let Err(error) = written.await {
                tracing::debug!("raft peer {id} at {address}: write: {error}");
                // Resent once on the next connection; older ones Raft will retry itself.
                unsent = Some(message);
                break;
            }
        }
    }
}

/// Accepts peers' connections and forwards every decoded message to `inbound`. A connection
/// that sends a bad frame is closed; a full inbound queue drops the message.
pub async fn listen(listener: TcpListener, inbound: mpsc::Sender<Message>) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("raft listener: accept: {error}");
                runtime::time::sleep(BACKOFF_MIN).await;
                continue;
            }
        };
        let inbound = inbound.clone();
        runtime::spawn(async move {
            loop {
                match frame_read(&mut stream).await {
                    Ok(Some(message)) => {
                        if let Err(mpsc::error::TrySendError::Closed(_)) = inbound.try_send(message)
                        {
                            return; // the node is gone: hang up so the peer notices
                        }
                    }
                    Ok(None) => return,
                    Err(error) => {
                        tracing::debug!("raft connection from {peer}: {error}");
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};
    use rand::{Rng, SeedableRng};
    use runtime::rng::ChaCha8Rng;

    fn message() -> Message {
        let mut message = Message {
            from: 1,
            to: 2,
            term: 7,
            index: 41,
            log_term: 6,
            commit: 40,
            ..Default::default()
        };
        message.set_msg_type(MessageType::MsgAppend);
        message.entries = vec![Entry {
            index: 42,
            term: 7,
            data: b"record".to_vec().into(),
            ..Default::default()
        }]
        .into();
        message
    }

    #[test]
    fn frames_round_trip_and_wait_for_more_bytes() {
        let frame = frame_encode(&message()).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(frame_decode(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let (decoded, used) = frame_decode(&two).unwrap().unwrap();
        assert_eq!((decoded, used), (message(), frame.len()));
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header() {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[..4].copy_from_slice(&(FRAME_BYTES_MAX as u32 + 1).to_be_bytes());
        assert_eq!(
            frame_decode(&header),
            Err(FrameError::TooLarge(FRAME_BYTES_MAX + 1))
        );
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let frame = frame_encode(&message()).unwrap();
        let mut flipped = frame.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(frame_decode(&flipped), Err(FrameError::Crc));
        // A valid CRC over garbage: the protobuf decoder refuses it.
        let body = [0xff; 16];
        let mut garbage = (body.len() as u32).to_be_bytes().to_vec();
        garbage.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        garbage.extend_from_slice(&body);
        assert_eq!(frame_decode(&garbage), Err(FrameError::Undecodable));
        // Random bodies with valid CRCs and mutated frames: never a panic.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..5000 {
            let mut body: Vec<u8> = frame[FRAME_HEADER_BYTES..].to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..body.len());
                body[at] = rng.gen();
            }
            body.truncate(rng.gen_range(0..=body.len()));
            let mut mutated = (body.len() as u32).to_be_bytes().to_vec();
            mutated.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            mutated.extend_from_slice(&body);
            let _ = frame_decode(&mutated);
        }
    }

    /// A peer that is not listening yet: the message waits in the queue, the task re-dials with
    /// backoff, and delivers once the peer is up. A full queue drops instead of blocking.
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn peer_task_redials_until_the_peer_listens() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let transport = Transport::start(&BTreeMap::from([(2, address.clone())]));
        assert!(transport.send(message()));
        let mut unknown = message();
        unknown.to = 9;
        assert!(!transport.send(unknown), "no such peer");
        runtime::time::sleep(Duration::from_millis(100)).await;
        let listener = TcpListener::bind(address.as_str()).await.unwrap();
        let (inbound, mut received) = mpsc::channel(8);
        let listening = runtime::spawn(listen(listener, inbound));
        let delivered = runtime::time::timeout(Duration::from_secs(5), received.recv()).await;
        assert_eq!(delivered.unwrap(), Some(message()));
        listening.abort();

        let stuck = Transport::start(&BTreeMap::from([(2, "127.0.0.1:1".to_string())]));
        let accepted = (0..PEER_QUEUE_MAX + 10)
            .filter(|_| stuck.send(message()))
            .count();
        assert!(accepted <= PEER_QUEUE_MAX + 1, "{accepted} accepted");
    }
}

//! The controller listener: one port for raft messages and controller RPCs. A connection that
//! opens with `rpc::RPC_MAGIC` is an RPC client (requests answered in order, one at a time);
//! anything else is a raft peer's stream of raft frames (`raft::transport`). Every connection
//! task ends when the node stops, so a stopped node's peers see their connections close.

use super::driver::Call;
use super::rpc::{self, Envelope, Response, RPC_MAGIC};
use crate::raft::transport::{self, FRAME_HEADER_BYTES};
use raft::eraftpb::Message;
use runtime::io::AsyncReadExt;
use runtime::net::{TcpListener, TcpStream};
use runtime::sync::{mpsc, oneshot, watch, Semaphore};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once: every voter's raft stream and a few RPC connections from each
/// node's pool fit many times over; beyond it a connection is closed at once.
pub(crate) const CONNECTIONS_MAX: usize = 256;

/// Accepts connections until the node stops.
pub(crate) async fn listen(
    listener: TcpListener,
    inbound: mpsc::Sender<Message>,
    calls: mpsc::Sender<Call>,
    stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("controller listener: accept: {error}");
                runtime::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "controller listener: {CONNECTIONS_MAX} connections open, {peer} refused"
            );
            continue; // dropped: closed at once
        };
        let _ = stream.set_nodelay(true);
        let inbound = inbound.clone();
        let calls = calls.clone();
        let mut stop = stop.clone();
        runtime::spawn(async move {
            runtime::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => {}
                result = connection_serve(stream, inbound, calls) => {
                    if let Err(error) = result {
                        tracing::debug!("controller connection from {peer}: {error}");
                    }
                }
            }
            drop(slot);
        });
    }
}

async fn connection_serve(
    mut stream: TcpStream,
    inbound: mpsc::Sender<Message>,
    calls: mpsc::Sender<Call>,
) -> io::Result<()> {
    let mut first = [0u8; 4];
    stream.read_exact(&mut first).await?;
    if first == RPC_MAGIC {
        rpc_serve(stream, calls).await
    } else {
        raft_serve(stream, first, inbound).await
    }
}

/// A raft peer: its first frame's first four bytes are already read.
async fn raft_serve(
    mut stream: TcpStream,
    first: [u8; 4],
    inbound: mpsc::Sender<Message>,
) -> io::Result<()> {
    let invalid = |error: transport::FrameError| io::Error::new(io::ErrorKind::InvalidData, error);
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[..4].copy_from_slice(&first);
    stream.read_exact(&mut header[4..]).await?;
    let len = transport::frame_len(&header).map_err(invalid)?;
    let mut frame = vec![0u8; FRAME_HEADER_BYTES + len];
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&header);
    stream.read_exact(&mut frame[FRAME_HEADER_BYTES..]).await?;
    let (mut message, _) = transport::frame_decode(&frame)
        .map_err(invalid)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short raft frame"))?;
    loop {
        if let Err(mpsc::error::TrySendError::Closed(_)) = inbound.try_send(message) {
            return Ok(()); // the node is gone: hang up so the peer notices
        }
        match transport::frame_read(&mut stream).await? {
            Some(next) => message = next,
            None => return Ok(()),
        }
    }
}

/// An RPC client: each request goes to the driver, its response back in order.
async fn rpc_serve(mut stream: TcpStream, calls: mpsc::Sender<Call>) -> io::Result<()> {
    while let Some(envelope) = rpc::frame_read::<Envelope>(&mut stream).await? {
        let (reply, answer) = oneshot::channel();
        if calls.send(Call { envelope, reply }).await.is_err() {
            return Ok(()); // the node stopped
        }
        // A dropped reply: the loop stopped (its disk failed). The caller tries elsewhere.
        let response = answer
            .await
            .unwrap_or(Response::NotController { leader: None });
        rpc::frame_write(&mut stream, &response).await?;
    }
    Ok(())
}

//! The one framing of the controller listener's two protocols, raft messages and controller
//! RPCs: `len u32 | crc u32 | body` (big endian; CRC-32C of the body). Each protocol brings its
//! own limit and body encoding (`raft::transport`, `node::rpc`); a length over the limit is
//! refused before a byte of the body is read, and nothing here panics on bad bytes.

use runtime::io::AsyncReadExt;
use runtime::net::TcpStream;
use std::io;

pub const HEADER_BYTES: usize = 8;

/// What is wrong with a frame, before its body is decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    TooLarge(usize),
    Crc,
}

/// `body` as a frame; None if it is over `max`.
pub fn wrap(body: &[u8], max: usize) -> Option<Vec<u8>> {
    if body.len() > max || body.len() > u32::MAX as usize {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
    out.extend_from_slice(body);
    Some(out)
}

/// The body length a header announces, checked against `max`.
pub fn body_len(header: &[u8; HEADER_BYTES], max: usize) -> Result<usize, Bad> {
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > max {
        return Err(Bad::TooLarge(len));
    }
    Ok(len)
}

fn crc_check(header: &[u8; HEADER_BYTES], body: &[u8]) -> Result<(), Bad> {
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if crc32c::crc32c(body) != crc {
        return Err(Bad::Crc);
    }
    Ok(())
}

/// The first frame of `bytes`: Ok(None) if it is not all there yet, else its body (CRC
/// checked) and the bytes the frame took.
pub fn split(bytes: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, Bad> {
    let Some(header) = bytes.first_chunk::<HEADER_BYTES>() else {
        return Ok(None);
    };
    let len = body_len(header, max)?;
    let Some(body) = bytes.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Ok(None);
    };
    crc_check(header, body)?;
    Ok(Some((body, HEADER_BYTES + len)))
}

/// Reads one frame's body (length and CRC checked, as `E` when bad); Ok(None) on a clean end of
/// stream between frames.
pub async fn read<E>(stream: &mut TcpStream, max: usize) -> io::Result<Option<Vec<u8>>>
where
    E: From<Bad> + std::error::Error + Send + Sync + 'static,
{
    let mut header = [0u8; HEADER_BYTES];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let invalid = |bad: Bad| io::Error::new(io::ErrorKind::InvalidData, E::from(bad));
    let len = body_len(&header, max).map_err(invalid)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    crc_check(&header, &body).map_err(invalid)?;
    Ok(Some(body))
}

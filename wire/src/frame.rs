//! Length-prefixed framing: every Kafka request and response is an `int32` size then that many bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const MIB: u32 = 1024 * 1024;

/// Refused before allocating: the length prefix is untrusted. Kafka's `socket.request.max.bytes`.
pub const REQUEST_BYTES_MAX: u32 = 100 * MIB;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {length} is negative or exceeds the limit of {limit} bytes")]
    Length { length: i64, limit: u32 },
}

/// Splits one whole frame off the front of `buffer`. `Ok(None)` means "wait for more bytes"; an
/// error means the stream cannot be trusted any more and the connection should close.
pub fn frame_split(
    buffer: &mut BytesMut,
    frame_bytes_max: u32,
) -> Result<Option<Bytes>, FrameError> {
    let Some(prefix) = buffer.first_chunk::<4>() else {
        return Ok(None);
    };
    let length = i32::from_be_bytes(*prefix);
    if length < 0 || length as u32 > frame_bytes_max {
        return Err(FrameError::Length {
            length: length.into(),
            limit: frame_bytes_max,
        });
    }
    let length = length as usize;
    if buffer.len() < 4 + length {
        buffer.reserve(4 + length - buffer.len());
        return Ok(None);
    }
    buffer.advance(4);
    Ok(Some(buffer.split_to(length).freeze()))
}

/// Starts a frame in `buffer`: reserves the length prefix, returns where it sits.
pub fn frame_begin(buffer: &mut BytesMut) -> usize {
    let start = buffer.len();
    buffer.put_i32(0);
    start
}

/// Finishes the frame begun at `start` by writing its length prefix.
pub fn frame_end(buffer: &mut BytesMut, start: usize) {
    let length = buffer.len() - start - 4;
    let length = i32::try_from(length).expect("frames are bounded far below 2 GiB");
    buffer[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_wait_and_whole_frames_split() {
        let mut buffer = BytesMut::new();
        assert_eq!(frame_split(&mut buffer, 100), Ok(None));
        buffer.put_slice(&[0, 0, 0, 3, b'a']);
        assert_eq!(frame_split(&mut buffer, 100), Ok(None));
        buffer.put_slice(b"bcxx");
        assert_eq!(
            frame_split(&mut buffer, 100),
            Ok(Some(Bytes::from_static(b"abc")))
        );
        assert_eq!(&buffer[..], b"xx");
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused_before_allocating() {
        let mut buffer = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            frame_split(&mut buffer, 100),
            Err(FrameError::Length {
                length: i32::MAX.into(),
                limit: 100
            })
        );
        assert!(buffer.capacity() < 1024);
        let mut buffer = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(frame_split(&mut buffer, 100).is_err());
    }

    #[test]
    fn frame_end_writes_the_length() {
        let mut buffer = BytesMut::new();
        let start = frame_begin(&mut buffer);
        buffer.put_slice(b"hello");
        frame_end(&mut buffer, start);
        assert_eq!(
            frame_split(&mut buffer, 100),
            Ok(Some(Bytes::from_static(b"hello")))
        );
    }
}

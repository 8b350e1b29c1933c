//! Serving reads: whole batches, starting with the one containing the requested offset, below
//! an exclusive offset limit (the high watermark), into one buffer with one copy, every batch
//! CRC-checked before it is handed out.
//!
//! The byte range is planned from segment sizes and the offset index, read with one `read_at`
//! per segment touched into a single allocation, then walked: the walk keeps whole valid batches
//! below the limit while they fit `max_bytes` (the first always fits, as in Kafka, so a consumer
//! is never stuck behind a large batch) and cuts the rest.

use crate::error::LogError;
use crate::segment::Segment;
use bytes::Bytes;
use std::collections::BTreeMap;
use wire::batch::{batch_size_peek, crc_compute, header_parse};
use wire::BatchHeader;

/// The answer to a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, concatenated: ready for a Fetch response's `records`.
    pub bytes: Bytes,
    pub batch_count: usize,
    /// The offset after the last batch returned; the requested offset if none was.
    pub next_offset: i64,
}

impl ReadResult {
    fn empty(offset: i64) -> ReadResult {
        ReadResult {
            bytes: Bytes::new(),
            batch_count: 0,
            next_offset: offset,
        }
    }
}

/// A byte range of one segment to copy into the read buffer.
struct Span<'a> {
    segment: &'a Segment,
    position: u64,
    length: u64,
}

/// Reads from `segments` (the caller checked `offset` against the log's bounds).
pub(crate) fn batches_read(
    segments: &BTreeMap<i64, Segment>,
    offset: i64,
    max_bytes: usize,
    limit_offset: i64,
    planted: Option<crate::PlantedBug>,
) -> Result<ReadResult, LogError> {
    if offset >= limit_offset {
        return Ok(ReadResult::empty(offset));
    }
    let Some((first, position, header)) = batch_find(segments, offset, planted)? else {
        return Ok(ReadResult::empty(offset));
    };
    if header.base_offset > offset {
        // A gap before the batch: real after compaction, or a header misread on the way from
        // the disk (the walk that located it reads fields no CRC covers). Locating again with
        // fresh reads tells them apart: a transient misread does not repeat.
        let again =
            batch_find(segments, offset, planted)?.map(|(_, position, header)| (position, header));
        if again != Some((position, header)) {
            // `site`: the simulator counts these, so regression seeds can show they meet it.
            tracing::warn!(
                site = "read-relocate-differs",
                offset,
                "a read located two batches"
            );
            return Err(LogError::Corrupt {
                path: first.path().to_path_buf(),
                position,
                reason: format!("offset {offset} located at two different batches"),
            });
        }
    }
    if header.last_offset() >= limit_offset {
        return Ok(ReadResult::empty(offset));
    }
    let want_bytes = (max_bytes as u64).max(header.size() as u64);
    let spans = spans_plan(segments, first, position, want_bytes, limit_offset);
    let total: u64 = spans.iter().map(|span| span.length).sum();
    if total < header.size() as u64 {
        // The located header claims more bytes than the segment holds from there: its size was
        // misread on the way from the disk (no CRC covers it before the batch is read). An
        // error the reader retries, not a panic (single-crash 297446293 crashed the broker).
        tracing::warn!(
            site = "read-size-misread",
            offset,
            "a batch header claims more bytes than its segment holds"
        );
        return Err(LogError::Corrupt {
            path: first.path().to_path_buf(),
            position,
            reason: format!("batch at offset {offset} claims more bytes than its segment holds"),
        });
    }
    let mut buffer = vec![0; total as usize];
    let mut filled = 0;
    for span in &spans {
        let end = filled + span.length as usize;
        span.segment
            .read_exact(&mut buffer[filled..end], span.position)?;
        filled = end;
    }
    let walk = buffer_walk(&buffer, max_bytes, limit_offset, header.base_offset);
    if walk.batch_count == 0 {
        let reason = walk
            .corrupt
            .unwrap_or_else(|| "batch changed since it was located".into());
        return Err(LogError::Corrupt {
            path: first.path().to_path_buf(),
            position,
            reason,
        });
    }
    if let Some(reason) = walk.corrupt {
        // The good prefix is served; the next read starts at the bad batch and reports it.
        tracing::error!(path = %first.path().display(), %reason, "corrupt batch cut from a read");
    }
    buffer.truncate(walk.bytes);
    Ok(ReadResult {
        bytes: Bytes::from(buffer),
        batch_count: walk.batch_count,
        next_offset: walk.next_offset,
    })
}

/// The first batch whose last offset is at or above `offset`: its segment, position, header.
fn batch_find(
    segments: &BTreeMap<i64, Segment>,
    offset: i64,
    planted: Option<crate::PlantedBug>,
) -> Result<Option<(&Segment, u64, BatchHeader)>, LogError> {
    // Start in the segment whose base is at or below the offset; compaction may have emptied
    // it or left a gap, so later segments are tried in turn.
    let start = segments
        .range(..=offset)
        .next_back()
        .map_or(i64::MIN, |(base, _)| *base);
    for segment in segments.range(start..).map(|(_, segment)| segment) {
        if let Some((position, header)) = segment.locate_planted(offset, planted)? {
            return Ok(Some((segment, position, header)));
        }
    }
    Ok(None)
}

fn spans_plan<'a>(
    segments: &'a BTreeMap<i64, Segment>,
    first: &'a Segment,
    position: u64,
    want_bytes: u64,
    limit_offset: i64,
) -> Vec<Span<'a>> {
    let mut spans = Vec::new();
    let mut planned = 0;
    let mut position = position;
    for segment in segments
        .range(first.base_offset()..)
        .map(|(_, segment)| segment)
    {
        if planned >= want_bytes || segment.base_offset() >= limit_offset {
            break;
        }
        let end = segment.position_bound(limit_offset);
        let length = end.saturating_sub(position).min(want_bytes - planned);
        if length > 0 {
            spans.push(Span {
                segment,
                position,
                length,
            });
            planned += length;
        }
        position = 0;
    }
    spans
}

struct Walk {
    bytes: usize,
    batch_count: usize,
    next_offset: i64,
    corrupt: Option<String>,
}

/// Keeps the whole, CRC-valid batches at the front of `buffer` that end below `limit_offset`
/// and fit `max_bytes` (the first always counts as fitting).
fn buffer_walk(buffer: &[u8], max_bytes: usize, limit_offset: i64, base_expected: i64) -> Walk {
    let mut walk = Walk {
        bytes: 0,
        batch_count: 0,
        next_offset: base_expected,
        corrupt: None,
    };
    // Bounded: each step consumes a whole batch of at least a header, or stops.
    while let Some(size) = batch_size_peek(&buffer[walk.bytes..]) {
        let start = walk.bytes;
        let size = match size {
            Ok(size) => size,
            Err(error) => {
                walk.corrupt = Some(error.to_string());
                break;
            }
        };
        if start + size > buffer.len() || (walk.batch_count > 0 && start + size > max_bytes) {
            break;
        }
        let batch = &buffer[start..start + size];
        let header = match header_parse(batch) {
            Ok(header) => header,
            Err(error) => {
                walk.corrupt = Some(error.to_string());
                break;
            }
        };
        let computed = crc_compute(batch);
        if computed != header.crc {
            walk.corrupt = Some(format!(
                "CRC mismatch: stored {:#010x}, computed {computed:#010x}",
                header.crc
            ));
            break;
        }
        if header.base_offset < walk.next_offset
            || (walk.batch_count == 0 && header.base_offset != base_expected)
        {
            walk.corrupt = Some(format!(
                "batch at offset {} is out of order",
                header.base_offset
            ));
            break;
        }
        if header.last_offset() >= limit_offset {
            break;
        }
        // baseOffset lies outside the CRC: a bit flipped on the way from the disk can move a
        // batch forward and make a consumer skip offsets. A gap may also be real (compaction
        // removed whole batches), so the read stops before it; the next read starts there, and
        // `batch_find` re-reads that header independently, which a transient flip cannot fool.
        if walk.batch_count > 0 && header.base_offset > walk.next_offset {
            break;
        }
        walk.bytes += size;
        walk.batch_count += 1;
        walk.next_offset = header.next_offset();
    }
    walk
}

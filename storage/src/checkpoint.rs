//! `log.checkpoint`: the log start offset and the recovery point of one partition, written with
//! `write_atomic` so a reader sees the old file or the new one, and carrying a CRC so corruption
//! at rest reads as "no checkpoint" (a full recovery scan) rather than as wrong offsets.
//!
//! Written when either value moves in a way recovery must know: at roll (the recovery point
//! advances to the new segment), on `advance_log_start_offset` and retention (the start moves
//! up), on truncation (the recovery point moves down), and after recovery. Not on every flush:
//! that would triple the fsyncs of a group commit, and recovery only rescans a little more.

use crate::error::{IoContext, LogError};
use crate::layout::CHECKPOINT_NAME;
use runtime::disk::{read_all_stable, write_atomic};
use runtime::Disk;
use std::path::Path;

const HEADER: &str = "gregor-log-checkpoint 1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogCheckpoint {
    pub log_start_offset: i64,
    pub recovery_point: i64,
}

impl LogCheckpoint {
    fn encode(&self) -> String {
        let body = format!(
            "{HEADER}\nlog_start_offset {}\nrecovery_point {}\n",
            self.log_start_offset, self.recovery_point
        );
        crc_framed(&body)
    }

    fn decode(text: &str) -> Option<LogCheckpoint> {
        let body = crc_unframed(text)?;
        let mut lines = body.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let log_start_offset = lines
            .next()?
            .strip_prefix("log_start_offset ")?
            .parse()
            .ok()?;
        let recovery_point = lines
            .next()?
            .strip_prefix("recovery_point ")?
            .parse()
            .ok()?;
        (log_start_offset >= 0 && recovery_point >= 0).then_some(LogCheckpoint {
            log_start_offset,
            recovery_point,
        })
    }

    /// The checkpoint in `dir`, or `None` if missing or unreadable (recovery then scans all).
    pub fn read(disk: &dyn Disk, dir: &Path) -> Result<Option<LogCheckpoint>, LogError> {
        let path = dir.join(CHECKPOINT_NAME);
        if !disk.exists(&path) {
            return Ok(None);
        }
        // A transient flip would fail the CRC and cost the log its start offset (recovery
        // would fall back to the first segment's base): believe only bytes read twice alike.
        let bytes = read_all_stable(disk, &path).context("read", &path)?;
        let checkpoint = std::str::from_utf8(&bytes)
            .ok()
            .and_then(LogCheckpoint::decode);
        if checkpoint.is_none() {
            tracing::warn!(path = %path.display(), "unreadable log checkpoint; scanning the whole log");
        }
        Ok(checkpoint)
    }

    pub fn write(&self, disk: &dyn Disk, dir: &Path) -> Result<(), LogError> {
        assert!(self.log_start_offset <= self.recovery_point);
        let path = dir.join(CHECKPOINT_NAME);
        write_atomic(disk, &path, self.encode().as_bytes()).context("write", &path)
    }
}

/// A small text file's body with a last line holding its CRC-32C: how checkpoint-like files
/// (the log checkpoint, the producer id block) tell a torn or rotted file from a valid one.
pub fn crc_framed(body: &str) -> String {
    let crc = crc32c::crc32c(body.as_bytes());
    format!("{body}crc {crc:#010x}\n")
}

/// The body of a `crc_framed` text, or `None` if the CRC line is missing or does not match.
pub fn crc_unframed(text: &str) -> Option<String> {
    let (body, crc_line) = text.strip_suffix('\n')?.rsplit_once('\n')?;
    let body = format!("{body}\n");
    let crc = u32::from_str_radix(crc_line.strip_prefix("crc 0x")?, 16).ok()?;
    (crc == crc32c::crc32c(body.as_bytes())).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_detects_damage() {
        let checkpoint = LogCheckpoint {
            log_start_offset: 5,
            recovery_point: 1234,
        };
        let text = checkpoint.encode();
        insta::assert_snapshot!(text, @r"
        gregor-log-checkpoint 1
        log_start_offset 5
        recovery_point 1234
        crc 0x4e7cbb37
        ");
        assert_eq!(LogCheckpoint::decode(&text), Some(checkpoint));
        assert_eq!(LogCheckpoint::decode(&text.replace("1234", "1235")), None);
        assert_eq!(LogCheckpoint::decode(&text[..text.len() - 3]), None);
        assert_eq!(LogCheckpoint::decode(""), None);
    }

    /// A bit flipped on the way from the disk fails the CRC; believing that read would cost the
    /// log its start offset (recovery falls back to the first segment's base).
    #[test]
    fn a_flipped_read_is_read_again() {
        let disk = runtime::ReadFaults::new(runtime::MemDisk::new());
        let dir = Path::new("data/t-0");
        disk.create_dir_all(dir).unwrap();
        let checkpoint = LogCheckpoint {
            log_start_offset: 5,
            recovery_point: 1234,
        };
        checkpoint.write(&*disk, dir).unwrap();
        let five = checkpoint.encode().find(" 5").unwrap() + 1;
        disk.flip_next(CHECKPOINT_NAME, 1, five);
        assert_eq!(LogCheckpoint::read(&*disk, dir).unwrap(), Some(checkpoint));
        assert_eq!(disk.failed(), 1, "the flip happened");
    }
}

//! The run's trace: one line per event (workload operation, nemesis action, phase change), hashed
//! as it grows. Same seed and same commit must give the same hash, in any process, on any day.

/// FNV-1a, 64 bit: tiny, stable across platforms and Rust versions (unlike `DefaultHasher`).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[derive(Debug, Clone)]
pub struct Trace {
    hash: u64,
    lines: Vec<String>,
    keep_lines: bool,
}

impl Trace {
    /// `keep_lines`: keep the text (for `--trace` output); the hash is kept either way.
    pub fn new(keep_lines: bool) -> Trace {
        Trace {
            hash: FNV_OFFSET,
            lines: Vec::new(),
            keep_lines,
        }
    }

    pub fn record(&mut self, time: std::time::Duration, line: &str) {
        let stamped = format!("{:>10.3} {line}", time.as_secs_f64());
        for byte in stamped.bytes().chain(std::iter::once(b'\n')) {
            self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
        if self.keep_lines {
            self.lines.push(stamped);
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_every_line_and_its_time() {
        let mut one = Trace::new(false);
        one.record(std::time::Duration::from_millis(5), "crash n1");
        let mut two = Trace::new(false);
        two.record(std::time::Duration::from_millis(6), "crash n1");
        assert_ne!(one.hash(), two.hash());
        let mut three = Trace::new(true);
        three.record(std::time::Duration::from_millis(5), "crash n1");
        assert_eq!(one.hash(), three.hash());
        assert_eq!(three.lines().len(), 1);
    }
}

//! Time as gregor sees it: a monotonic clock for timeouts and a wall clock for record timestamps and
//! retention. The wall clock carries a per-node offset so the simulator can skew one node's clock
//! without touching the others.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A node's view of time. Cheap to clone; pass it in, never reach for a global.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_offset_ms: i64,
}

impl Clock {
    /// The machine's clocks (simulated ones under madsim), with no skew.
    pub fn system() -> Clock {
        Clock { wall_offset_ms: 0 }
    }

    /// A clock whose wall time runs `wall_offset_ms` ahead (or behind, if negative) of the system's.
    pub fn with_wall_offset_ms(wall_offset_ms: i64) -> Clock {
        Clock { wall_offset_ms }
    }

    /// Monotonic time: for deadlines, timeouts and durations. Never goes backwards.
    pub fn now(&self) -> crate::time::Instant {
        crate::time::Instant::now()
    }

    /// Wall-clock time in milliseconds since the Unix epoch, as Kafka timestamps are. May jump.
    pub fn wall_ms(&self) -> i64 {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX) + self.wall_offset_ms
    }
}

//! What all connections share and must not exhaust: connection slots (a global count, a count per
//! client IP, and eviction of the longest-idle connection when the global count is full) and the
//! memory for requests being received (Kafka's `queued.max.request.bytes`).
//!
//! Idle means no request in flight and no byte received or response sent since `active_at`. A
//! connection that is idle holds a task and a buffer and serves no one, so when a new client finds
//! every slot taken, the longest-idle connection is closed to make room: idle connections can
//! never lock an active client out. Only when every connection is busy is the new one refused.

use crate::config::BrokerConfig;
use runtime::sync::{Notify, Semaphore};
use runtime::time::Instant;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Shared by the accept loop and every connection.
#[derive(Debug)]
pub struct Limits {
    table: Mutex<Table>,
    connections_max: usize,
    connections_per_ip_max: usize,
    /// Permits are bytes: a frame larger than a connection's base buffer holds its declared
    /// length while it is received, then releases it when the frame is handed to its handler.
    pub request_memory: Arc<Semaphore>,
    /// `Activity` stores milliseconds since this instant, so it fits an atomic.
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Table {
    id_next: u64,
    open: BTreeMap<u64, Entry>,
    per_ip: BTreeMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    activity: Arc<Activity>,
}

/// One connection's liveness, updated by its reader and writer without the table's lock.
#[derive(Debug)]
pub struct Activity {
    /// Requests read and not yet answered (the writer decrements after sending the response).
    requests_in_flight: AtomicUsize,
    /// Milliseconds after `Limits::epoch` of the last byte received or response sent.
    active_at_ms: AtomicU64,
    /// Signalled when the table evicts this connection to make room; the reader closes.
    pub evicted: Notify,
    epoch: Instant,
}

/// Why a new connection was closed unserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Kafka's `max.connections.per.ip`.
    PerIp { ip: IpAddr, limit: usize },
    /// Every slot is taken by a connection with a request in flight.
    AllBusy { limit: usize },
}

/// A connection's slot; dropping it frees the slot (unless eviction already did).
#[derive(Debug)]
pub struct Admission {
    limits: Arc<Limits>,
    id: u64,
    pub activity: Arc<Activity>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Limits {
    pub fn new(config: &BrokerConfig, now: Instant) -> Arc<Limits> {
        Arc::new(Limits {
            table: Mutex::new(Table::default()),
            connections_max: config.connections_max,
            connections_per_ip_max: config.connections_per_ip_max,
            request_memory: Arc::new(Semaphore::new(config.requests_queued_bytes_max)),
            epoch: now,
        })
    }

    /// Takes a slot for a connection from `ip`, evicting the longest-idle connection if every
    /// slot is taken and one is idle.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Admission, Refusal> {
        let mut table = lock(&self.table);
        let from_ip = table.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.connections_per_ip_max {
            return Err(Refusal::PerIp {
                ip,
                limit: self.connections_per_ip_max,
            });
        }
        if table.open.len() >= self.connections_max {
            let Some(victim) = table.idle_longest() else {
                return Err(Refusal::AllBusy {
                    limit: self.connections_max,
                });
            };
            let entry = table
                .remove(victim)
                .expect("idle_longest returns an open id");
            tracing::info!(ip = %entry.ip, limit = self.connections_max, "connection limit reached; closing the longest-idle connection");
            entry.activity.evicted.notify_one();
        }
        assert!(table.open.len() < self.connections_max);
        let id = table.id_next;
        table.id_next += 1;
        let activity = Arc::new(Activity {
            requests_in_flight: AtomicUsize::new(0),
            active_at_ms: AtomicU64::new(0),
            evicted: Notify::new(),
            epoch: self.epoch,
        });
        activity.touch(now);
        let entry = Entry {
            ip,
            activity: activity.clone(),
        };
        table.open.insert(id, entry);
        *table.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Admission {
            limits: self.clone(),
            id,
            activity,
        })
    }

    /// Connections holding a slot (for tests and logs).
    pub fn connections_open(&self) -> usize {
        lock(&self.table).open.len()
    }
}

impl Table {
    /// The open connection with no request in flight that was active least recently.
    fn idle_longest(&self) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, entry)| entry.activity.requests_in_flight() == 0)
            .min_by_key(|(_, entry)| entry.activity.active_at_ms.load(Ordering::SeqCst))
            .map(|(id, _)| *id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        let from_ip = self
            .per_ip
            .get_mut(&entry.ip)
            .expect("every open connection is counted under its ip");
        *from_ip -= 1;
        if *from_ip == 0 {
            self.per_ip.remove(&entry.ip);
        }
        Some(entry)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        lock(&self.limits.table).remove(self.id);
    }
}

impl Activity {
    pub fn touch(&self, now: Instant) {
        let since_ms = now.saturating_duration_since(self.epoch).as_millis();
        self.active_at_ms.store(
            u64::try_from(since_ms).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    pub fn requests_in_flight(&self) -> usize {
        self.requests_in_flight.load(Ordering::SeqCst)
    }

    pub fn request_started(&self) {
        self.requests_in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub fn request_answered(&self, now: Instant) {
        let before = self.requests_in_flight.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "a response answers a request in flight");
        self.touch(now);
    }

    /// When this connection counts as idle for `idle_max`, if nothing happens before then. With a
    /// request in flight it is not idle at all, so the answer is a full `idle_max` from `now`.
    pub fn idle_deadline(&self, now: Instant, idle_max: Duration) -> Instant {
        if self.requests_in_flight() > 0 {
            return now + idle_max;
        }
        let active_at =
            self.epoch + Duration::from_millis(self.active_at_ms.load(Ordering::SeqCst));
        active_at + idle_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections_max: usize, connections_per_ip_max: usize) -> (Arc<Limits>, Instant) {
        let mut config = BrokerConfig::zero_config();
        config.connections_max = connections_max;
        config.connections_per_ip_max = connections_per_ip_max;
        let now = runtime::Clock::system().now();
        (Limits::new(&config, now), now)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn full_table_evicts_the_longest_idle_and_refuses_when_all_are_busy() {
        let (limits, start) = limits(2, 10);
        let first = limits.admit(ip(1), start).unwrap();
        let second = limits.admit(ip(2), start + Duration::from_secs(1)).unwrap();
        // Both idle: the one active longest ago goes.
        let third = limits.admit(ip(3), start + Duration::from_secs(2)).unwrap();
        assert_eq!(limits.connections_open(), 2);
        assert!(first.activity.evicted.notified().now_or_never_ready());
        drop(first); // Its slot was already freed: dropping must not free another.
        assert_eq!(limits.connections_open(), 2);
        // Both busy: nothing to evict.
        second.activity.request_started();
        third.activity.request_started();
        assert_eq!(
            limits
                .admit(ip(4), start + Duration::from_secs(3))
                .unwrap_err(),
            Refusal::AllBusy { limit: 2 }
        );
        third
            .activity
            .request_answered(start + Duration::from_secs(4));
        let fourth = limits.admit(ip(4), start + Duration::from_secs(5)).unwrap();
        assert!(third.activity.evicted.notified().now_or_never_ready());
        assert!(!second.activity.evicted.notified().now_or_never_ready());
        drop(fourth);
        assert_eq!(limits.connections_open(), 1);
    }

    #[test]
    fn per_ip_limit_refuses_and_frees_on_close() {
        let (limits, now) = limits(10, 2);
        let first = limits.admit(ip(1), now).unwrap();
        let _second = limits.admit(ip(1), now).unwrap();
        assert_eq!(
            limits.admit(ip(1), now).unwrap_err(),
            Refusal::PerIp {
                ip: ip(1),
                limit: 2
            }
        );
        let _other = limits.admit(ip(2), now).unwrap();
        drop(first);
        assert!(limits.admit(ip(1), now).is_ok());
    }

    #[test]
    fn idle_deadline_counts_from_the_last_activity_unless_busy() {
        let (limits, start) = limits(10, 10);
        let admission = limits.admit(ip(1), start).unwrap();
        let idle_max = Duration::from_secs(60);
        let later = start + Duration::from_secs(10);
        assert_eq!(
            admission.activity.idle_deadline(later, idle_max),
            start + idle_max
        );
        admission.activity.request_started();
        assert_eq!(
            admission.activity.idle_deadline(later, idle_max),
            later + idle_max
        );
    }

    trait NowOrNever {
        fn now_or_never_ready(self) -> bool;
    }

    impl<F: std::future::Future> NowOrNever for F {
        /// Polls once with a no-op waker: whether a `Notify` permit was stored.
        fn now_or_never_ready(self) -> bool {
            let mut future = std::pin::pin!(self);
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            future.as_mut().poll(&mut context).is_ready()
        }
    }
}

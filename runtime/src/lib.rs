//! The runtime seam: everything gregor needs from the outside world, in one place.
//!
//! Broker and client code reach clocks, timers, tasks, sockets, files and randomness only through
//! this crate (clippy.toml enforces it). In a normal build the items here are tokio's and the real
//! file system's; built with `RUSTFLAGS="--cfg madsim"`, `tokio` is madsim's simulator, so the same
//! code runs seeded and deterministic, with time, network and scheduling under the simulator's
//! control. Disks are passed in explicitly as `Arc<dyn Disk>` so the simulator can hand each node
//! its own faulty in-memory disk.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod buggify;
pub mod clock;
pub mod disk;
pub mod rng;

pub use clock::Clock;
pub use disk::{Disk, DiskFile, MemDisk, OpenMode, ReadFaults, RealDisk, SyncDelay};

/// Timers: `sleep`, `timeout`, `interval`, `Instant`. Simulated time under madsim.
pub mod time {
    pub use tokio::time::{error::Elapsed, interval, sleep, sleep_until, timeout, Instant};
}

/// TCP. Under madsim, bytes written are delivered only on `flush()`: always flush after a frame.
pub mod net {
    pub use tokio::net::{TcpListener, TcpStream};
}

/// Async I/O traits and helpers (`AsyncReadExt`, `AsyncWriteExt`, `split`).
pub mod io {
    pub use tokio::io::*;
}

/// Channels and async locks. These are pure data structures, deterministic under madsim.
pub mod sync {
    pub use tokio::sync::*;
}

pub use tokio::task::{yield_now, JoinHandle};
pub use tokio::{pin, select};

/// Spawns a task on the current runtime (the current simulated node under madsim).
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}

/// Runs blocking work (an fsync) off the async worker threads. Under madsim there are no threads:
/// the closure runs inline in a task, which is what a deterministic simulation wants.
pub async fn blocking<F, R>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    #[cfg(not(madsim))]
    {
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled: the runtime is shutting down and dropped the work before it ran. The
            // task awaiting it is about to be dropped too, so it must not resume (its caller
            // would treat a missing fsync as done) and must not panic (a clean shutdown logs
            // none): it stays pending until the runtime drops it.
            Err(_) => std::future::pending().await,
        }
    }
    #[cfg(madsim)]
    {
        work()
    }
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
#[cfg(not(madsim))]
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Runs `main` to completion on a multi-threaded tokio runtime: the production entry point.
#[cfg(not(madsim))]
pub fn run_main<F: std::future::Future>(main: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(main))
}

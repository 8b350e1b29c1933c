//! Aimed faults: the simulator's side of `runtime::buggify`. Each node's disk gets a hook that,
//! when execution reaches a site switched on in this seed (`Options::buggify`), draws from the
//! node's own stream whether to fire, and if so:
//! - in the middle of synchronous work (a roll, a compaction swap, a checkpoint, recovery, the
//!   offsets replay) kills the node on the spot, so the rest of that work never reaches the disk;
//! - in a window that spans an await (an fsync in flight, a reply on its way out) asks the
//!   crash driver to kill the node a moment later, inside the window (for a transaction's
//!   commit decision, a power loss anywhere within an fsync's latency);
//! - for a stretched fsync, answers yes and lets the disk stretch it.
//!
//! Every firing is a trace line and a count in the run's summary.

use crate::disk::{CrashKind, SimDisk};
use crate::options::Options;
use crate::recorder::Recorder;
use crate::world::BrokerNode;
use madsim::runtime::Handle;
use rand::Rng;
use runtime::buggify::Site;
use runtime::rng::{stream_rng, ChaCha8Rng, Stream};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// After an aimed crash, a node's sites stay quiet this long, so the broker gets back to work
/// between crashes and a seed with a busy site is not one long outage.
const CRASH_GAP: Duration = Duration::from_secs(2);

/// The latest a delayed crash lands after its site: inside an fsync's modelled latency or a
/// reply's trip to the client.
const CRASH_DELAY_MAX: Duration = Duration::from_millis(3);

/// A crash the driver carries out.
#[derive(Debug)]
struct Request {
    node: usize,
    site: Site,
    /// Wait this long before killing; `None`: the hook already killed the node.
    delay: Option<Duration>,
}

struct Table {
    rates: BTreeMap<Site, f64>,
    rng: ChaCha8Rng,
    quiet_until: Duration,
}

/// Installs each broker's hook and spawns the driver that performs the delayed crashes and every
/// restart. Does nothing if no site is on.
pub fn install(options: &Options, brokers: &[BrokerNode], recorder: &Recorder) {
    if options.buggify.is_empty() {
        return;
    }
    let (sender, receiver) = runtime::sync::mpsc::unbounded_channel::<Request>();
    for (index, broker) in brokers.iter().enumerate() {
        let table = Mutex::new(Table {
            rates: options.buggify.iter().copied().collect(),
            rng: stream_rng(options.seed, Stream::Buggify, index as u32 + 1),
            quiet_until: Duration::ZERO,
        });
        let (recorder, sender, id) = (recorder.clone(), sender.clone(), broker.id);
        let name = broker.name.clone();
        let hook = move |disk: &SimDisk, site: Site| {
            let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
            let Some(rate) = table.rates.get(&site).copied() else {
                return false;
            };
            let now = recorder.elapsed();
            if now < table.quiet_until || !table.rng.gen_bool(rate.min(1.0)) {
                return false;
            }
            recorder.note(&format!("buggify {} on {name}", site.name()));
            recorder.count(&format!("buggify-{}", site.name()));
            let delay = match site {
                Site::FsyncStretch => return true,
                Site::FsyncInFlight
                | Site::ProduceReplied
                | Site::CommitReplied
                | Site::FetchReplied
                | Site::MarkersWritten
                | Site::DecisionAppended
                | Site::RaftWritten => Some(CRASH_DELAY_MAX.mul_f64(table.rng.gen_range(0.0..1.0))),
                _ => {
                    Handle::current().kill(id);
                    disk.down();
                    None
                }
            };
            table.quiet_until = now + CRASH_GAP;
            // Pending until the driver's task made its last kill: `nemesis::heal` waits for it.
            disk.kill_pending_add();
            let _ = sender.send(Request {
                node: index,
                site,
                delay,
            });
            true
        };
        broker.disk.buggify_set(Some(Arc::new(hook)));
    }
    let rng = stream_rng(options.seed, Stream::Buggify, 0);
    // A client retries EndTxn for twice its request timeout (`sim::txn_processes`): a power
    // loss that took back a commit decision keeps the node down longer, so the client gives up
    // and its next incarnation fences the transaction, which the recovered coordinator aborts.
    let decision_down_min = options.request_timeout * 2;
    let driver = drive(
        receiver,
        brokers.to_vec(),
        recorder.clone(),
        rng,
        decision_down_min,
    );
    runtime::spawn(driver);
}

/// Carries out each requested crash in its own task, with a kind and downtime drawn here.
async fn drive(
    mut receiver: runtime::sync::mpsc::UnboundedReceiver<Request>,
    brokers: Vec<BrokerNode>,
    recorder: Recorder,
    mut rng: ChaCha8Rng,
    decision_down_min: Duration,
) {
    while let Some(request) = receiver.recv().await {
        let kind = CrashKind::ALL[rng.gen_range(0..CrashKind::ALL.len())];
        // A decision not yet durable is lost only with the page cache, and a torn power loss
        // keeps a random part of the dirty pages: some partitions' markers, perhaps not others.
        let kind = match request.site {
            Site::DecisionAppended => CrashKind::PowerTear,
            // What the unsynced batch promised (a vote, entries acknowledged) is gone whole.
            Site::RaftWritten => CrashKind::PowerLose,
            _ => kind,
        };
        let down_for = Duration::from_millis(rng.gen_range(10..2_000));
        let down_for = match request.site {
            Site::DecisionAppended => decision_down_min + down_for,
            // Back within an election or two, while the term whose vote it forgot may still be
            // contested and the entries it forgot not yet everywhere.
            Site::RaftWritten => down_for / 8,
            _ => down_for,
        };
        let crash_rng = stream_rng(rng.gen(), Stream::Buggify, 0);
        let (broker, recorder) = (brokers[request.node].clone(), recorder.clone());
        runtime::spawn(async move {
            let down = crash_carry_out(&broker, &recorder, request, kind, down_for, crash_rng);
            let down = down.await;
            broker.disk.kill_pending_done();
            if down {
                crate::nemesis::up(&Handle::current(), &recorder, &broker, down_for).await;
            }
        });
    }
}

/// The kills of one requested crash (`nemesis::crash_down`): after its delay, unless the node
/// went down meanwhile. Answers whether it took the node down, to be brought back after
/// `down_for`.
async fn crash_carry_out(
    broker: &BrokerNode,
    recorder: &Recorder,
    request: Request,
    kind: CrashKind,
    down_for: Duration,
    mut crash_rng: ChaCha8Rng,
) -> bool {
    if let Some(delay) = request.delay {
        runtime::time::sleep(delay).await;
        if broker.disk.is_down() {
            return false;
        }
    }
    let cause = format!("buggify {}:", request.site.name());
    let handle = Handle::current();
    crate::nemesis::crash_down(
        &handle,
        recorder,
        broker,
        kind,
        down_for,
        &cause,
        &mut crash_rng,
    )
    .await
}

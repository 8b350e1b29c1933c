//! Seed sweeps in `cargo test` (madsim build only: `ci/sim-test`), named regression seeds, and the
//! determinism check across two processes.
#![cfg(madsim)]

use scenarios::{replay_command, run_seed, scenario_find, sweep, SCENARIOS};
use std::path::Path;

const BINARY: &str = env!("CARGO_BIN_EXE_gregor-sim");

/// Runs `seeds` of `scenario`, each in its own process as `ci/sim run` would, and fails with
/// every failing seed's replay command.
fn sweep_clean(scenario: &str, seeds: std::ops::Range<u64>) {
    assert!(scenario_find(scenario).is_some(), "known scenario");
    let jobs = scenarios::sweep::jobs_default();
    let summary = sweep(Path::new(BINARY), scenario, seeds, None, jobs, |_| {});
    let failures: Vec<String> = summary
        .failures
        .iter()
        .map(|failure| {
            format!(
                "{}\n    {}",
                failure.verdict,
                replay_command(scenario, failure.seed)
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        summary.seeds,
        failures.join("\n")
    );
}

#[test]
fn sweep_single_quiet() {
    // The fault-free baseline runs every seed to its full duration (1.5 s each): 30 are enough
    // here, the nightly campaign sweeps more.
    sweep_clean("single-quiet", 0..30);
}

#[test]
fn sweep_single_crash() {
    sweep_clean("single-crash", 0..300);
}

#[test]
fn sweep_single_chaos() {
    sweep_clean("single-chaos", 0..300);
}

/// The control plane: 3- and 5-node clusters of brokers in cluster mode (about 3 seeds/s on two
/// processes).
#[test]
fn sweep_cluster_metadata() {
    sweep_clean("cluster-metadata", 0..60);
}

/// The replicated data world (issue 13): 3- and 5-node clusters serving a replicated topic to
/// the data workload.
#[test]
fn sweep_cluster_crash() {
    sweep_clean("cluster-crash", 0..40);
}

#[test]
fn sweep_cluster_partition() {
    sweep_clean("cluster-partition", 0..40);
}

#[test]
fn sweep_cluster_chaos() {
    sweep_clean("cluster-chaos", 0..40);
}

/// A consumer group whose coordinator moves with the leadership of its replicated
/// `__consumer_offsets` partition, which the nemesis aims at.
#[test]
fn sweep_cluster_groups() {
    sweep_clean("cluster-groups", 0..40);
}

/// Transactions whose coordinator moves with the leadership of its replicated
/// `__transaction_state` partition, which the nemesis aims at, with markers to partition leaders
/// on other brokers: every transaction decided after heal (last stable offset at the high
/// watermark everywhere) and the transaction checks.
#[test]
fn sweep_cluster_txn() {
    sweep_clean("cluster-txn", 0..40);
}

/// The data world's nemesis still meets what it is for: a whole-cluster power loss right after
/// a produce reply (cluster-crash 4), and a leader cut from its followers, from the controller
/// and from the clients, a flapping link and a one-way link (cluster-chaos 119 and 53; with
/// replication on, no seed below 300 meets all five). A seed whose world changed would pass
/// while meeting none of them: pick another that does.
#[test]
fn cluster_data_meets_its_faults_4_119_53() {
    let crash = run_seed(Path::new(BINARY), "cluster-crash", 4, None);
    let chaos = run_seed(Path::new(BINARY), "cluster-chaos", 119, None);
    let chaos_controller = run_seed(Path::new(BINARY), "cluster-chaos", 53, None);
    for (outcome, faults) in [
        (&crash, &["crash-whole-cluster-after-produce"][..]),
        (
            &chaos,
            &["cut-followers", "cut-clients", "flap", "one-way"][..],
        ),
        (
            &chaos_controller,
            &["cut-controller", "cut-followers", "flap", "one-way"][..],
        ),
    ] {
        assert!(outcome.pass, "seed {}: {}", outcome.seed, outcome.verdict);
        for fault in faults {
            assert!(
                outcome.fault_counts.get(*fault).copied().unwrap_or(0) > 0,
                "seed {} no longer meets {fault}: {:?}",
                outcome.seed,
                outcome.fault_counts
            );
        }
    }
}

/// The first replicated sweeps found three liveness bugs; each seed must still pass and still
/// meet what exposed it. cluster-crash 5: leadership moved while a follower's group commit was
/// in flight, and the new source's fetcher idled after that fsync instead of fetching
/// (`isr-not-full`). cluster-partition 4: a wake by the assignment watch was lost, so a
/// follower fetched at a stale leader epoch for good (`follower-truncated` marks the leader
/// changes). cluster-partition 25: brokers' heartbeats stuck on a controller cut off outlived
/// their sessions, the new controller fenced every broker, and the node then dead for good was
/// left the last ISR member (`cut-controller`, `dead-for-good`). Two more were the world's
/// own: a node died for good while another, just restarted after a whole-cluster power loss,
/// had not registered again (cluster-crash 2300303437), or while a buggify hook's crash was
/// still under way (cluster-crash 42); either left the dead node the last ISR member.
#[test]
fn regression_replication_seeds() {
    for (scenario, seed, met) in [
        // Re-picked when `__consumer_offsets` became a replicated topic, which no longer exists
        // on a cluster node's disk from its first start and so shifted every cluster world:
        // 0 for 5, 27 for 42, 12 for 2426267831, each the first that meets the same faults;
        // then 1 for 12, when the cluster data worlds got readers at the tail and seekers.
        ("cluster-crash", 0, &["crash-process-then-power"][..]),
        ("cluster-partition", 4, &["follower-truncated"][..]),
        (
            "cluster-partition",
            25,
            &["cut-controller", "dead-for-good"][..],
        ),
        (
            "cluster-crash",
            2300303437,
            &["crash-whole-cluster", "dead-for-good"][..],
        ),
        (
            "cluster-crash",
            27,
            &["buggify-fsync-in-flight", "dead-for-good"][..],
        ),
        // A follower's failed truncation stopped only its own source's fetcher; after a leader
        // change another appended to the half-truncated log (an assertion on producer state).
        ("cluster-crash", 1, &["partition-offline"][..]),
        // An aimed crash's power loss after its quick restart landed after heal, once the world
        // had settled: a broker re-registering, fenced, in another's DescribeCluster
        // (served-broker-fenced, cluster-crash 1341547883 before the replicated offsets topic
        // shifted cluster worlds; 2 is the first seed to meet the wait since). Heal now waits
        // for the kills of aimed crashes under way.
        ("cluster-crash", 2, &["heal-kill-awaited"][..]),
        // A node died for good as the last ISR member of __consumer_offsets partitions: the
        // harness checked only the data topic's ISRs before the death.
        ("cluster-groups", 3342524751, &["dead-for-good"][..]),
        // The processors' committed offsets were read without `require_stable` right after a
        // transaction's EndTxn answer, before its marker reached the `__consumer_offsets`
        // partition on another broker: the old offset, with the transaction's output already
        // committed (output-uncommitted-input). The txn workload now reads as a read_committed
        // consumer does (KIP-447: UNSTABLE_OFFSET_COMMIT is waited out).
        ("cluster-txn", 175, &["buggify-markers-written"][..]),
    ] {
        let outcome = run_seed(Path::new(BINARY), scenario, seed, None);
        assert!(
            outcome.pass,
            "{}\n    {}",
            outcome.verdict,
            replay_command(scenario, seed)
        );
        for name in met {
            let count = outcome.fault_counts.get(*name).or(outcome.sites.get(*name));
            assert!(
                count.copied().unwrap_or(0) > 0,
                "{scenario} seed {seed} no longer meets {name}: pick a seed that does"
            );
        }
    }
}

#[test]
fn sweep_single_groups() {
    sweep_clean("single-groups", 0..100);
}

#[test]
fn sweep_single_retention() {
    sweep_clean("single-retention", 0..100);
}

#[test]
fn sweep_single_compaction() {
    sweep_clean("single-compaction", 0..100);
}

/// (Seeds 18 and 48 hung before a failed sync stopped a log's writes: the coordinator retried its
/// append at once.)
#[test]
fn sweep_single_txn() {
    sweep_clean("single-txn", 0..60);
}

/// A hanging transaction: after crashes aimed right after a transaction's markers are written
/// (`markers-written`), a transaction stayed open on `out-0` through the 60 s liveness phase,
/// holding its last stable offset back. The cause was below transactions: recovery's scan of
/// `__transaction_state` read a batch whose partition leader epoch (outside the CRC) had a bit
/// flipped on the way from the disk, the leader-epoch cache took it as the log's latest epoch,
/// and every later append at the real epoch was refused, the timeout's abort included, forever.
/// A batch whose epoch rises is now read again before it is believed
/// (`storage/tests/recovery.rs`: `a_leader_epoch_flipped_in_a_read_is_read_again`). Seeds 358,
/// 359 and 944 failed the same way. (Seed 65 before the aimed `decision-appended` power losses;
/// 738 before single-node ran on Raft; 10 before the merge of controller request ids and the
/// aimed `raft-written` site; 48 before the marker task started after the broker's first
/// reconcile; 82 meets the flip in today's worlds.)
#[test]
fn regression_flipped_leader_epoch_hung_a_transaction_82() {
    regression("single-txn", 82, "scan-epoch-reread-differs");
}

/// Runs one regression seed in its own process and checks both that it passes and that it still
/// meets the fault it is named for: `site` (a `sim::sites` name) fired at least once. A seed
/// whose world changed (a new swarm draw, a new stream) would otherwise pass while testing
/// nothing; when this fails on the count, find a seed that meets the fault again.
fn regression(scenario: &str, seed: u64, site: &str) {
    assert!(scenario_find(scenario).is_some(), "known scenario");
    let outcome = run_seed(Path::new(BINARY), scenario, seed, None);
    assert!(
        outcome.pass,
        "{}\n    {}",
        outcome.verdict,
        replay_command(scenario, seed)
    );
    let count = outcome.sites.get(site).copied().unwrap_or(0);
    assert!(
        count > 0,
        "seed {seed} no longer meets {site} (sites: {:?}): pick a seed that does\n    {}",
        outcome.sites,
        replay_command(scenario, seed)
    );
}

/// Compaction removed a tombstone that was the last record of a closed segment, with nothing
/// after it but an empty active segment: no batch was left at that offset, so the final
/// reader's position stayed one below the log end for good (liveness: lag 1 after heal).
/// Compaction now keeps a producer's last batch as its header (Kafka's `RETAIN_EMPTY`), which
/// also keeps the producer's last sequence in a replay of the log, and the consumer moves past
/// it.
#[test]
fn regression_compaction_keeps_producer_last_batch_297446326() {
    regression(
        "single-compaction",
        297446326,
        "compaction-kept-producer-last",
    );
}

/// A read served the batch after offset 167 for a fetch at 167: an injected bit flip in a
/// batch header read while locating the offset (baseOffset lies outside the CRC) made the
/// consumer skip a record (poll-skip). Reads now stop at gaps and re-locate before a gap.
/// (Seed 35 before the stream change of issue 10; 113 before the merge of controller request
/// ids and the aimed `raft-written` site.)
#[test]
fn regression_read_skip_after_header_bitflip_0() {
    regression("single-crash", 0, "read-relocate-differs");
}

/// Recovery accepted a batch whose baseOffset had a bit flipped on the way from the disk (bit
/// 26: a partition jumped to offset 2^26 + 269, and acknowledged writes below it were lost), and
/// in another seed a partition's readers stalled behind a similar jump. Scans now re-read any
/// batch that leaves an offset gap before believing it. (Seeds 2070 and 2091 before the stream
/// change of issue 10; 57 and 98 before the merge of crash kinds and aimed faults; 10 and 30
/// before fsync latency was split around the sync; 14 and 16 before the merge of the seek,
/// retention and idempotence workloads; 51 before record padding; 156 and 118 before a failed
/// roll sync took the partition offline and transactions were merged; 173 before single-node
/// ran on Raft; 0 before the merge of controller request ids and the aimed `raft-written`
/// site, and the image's leader epochs on batches: 112; 29 since a roll made during a group
/// commit moves the recovery point only once the commit returns.)
#[test]
fn regression_recovery_gap_from_header_bitflip_29() {
    regression("single-crash", 29, "scan-gap-reread-differs");
}

/// Found by the re-sweep after the stream change of issue 10: a segment's scan at open did not
/// check its first batch against the segment's base, so a bit flipped in that batch's
/// baseOffset jumped the log to 2^29 + 1185 (lost-write, poll-skip). The first batch is now
/// checked like any other gap. (Seed 99 before the merge of crash kinds and aimed faults; 55
/// before fsync latency was split around the sync; 91 before the merge of the seek, retention
/// and idempotence workloads; 184 before record padding; 364 before scans re-read a batch whose
/// leader epoch rises; 486 before the merge of controller request ids and the aimed
/// `raft-written` site.)
#[test]
fn regression_segment_first_batch_gap_99() {
    regression("single-crash", 99, "scan-gap-reread-differs");
}

/// fsyncgate, found once SimDisk failed fsyncs: a failed fdatasync left pages the kernel marked
/// clean without writing them; the broker took the partition offline, was restarted, and
/// recovery read those pages from the cache, synced (which wrote nothing) and served them. A
/// later power loss took them back: offsets reused (inconsistent-offsets), and a partition cut
/// short behind the hole (lost writes). Recovery now rewrites the tail past its recovery point
/// before syncing it (`Segment::rewrite_from`). (Seed 66 before a failed roll sync took the
/// partition offline; 10 before single-node ran on Raft: 11, re-picked after single-node ran on Raft.)
#[test]
fn regression_fsyncgate_recovery_rewrites_the_tail_11_142() {
    regression("single-crash", 11, "fsync-failed");
    regression("single-crash", 142, "fsync-failed");
}

/// The tail rewrite of the fsyncgate fix wrote a batch back as it read it, and a bit flipped in
/// baseOffset on that read (not covered by the CRC) became corruption at rest: offsets 153-156
/// reappeared as 1177-1180 (duplicate, lost-write, poll-skip). A batch is now written back only
/// when two reads agree. (Seed 14 before record padding.)
#[test]
fn regression_rewrite_of_a_flipped_base_offset_groups_0() {
    regression("single-groups", 0, "rewrite-reread-differs");
}

/// Found by the seek workload's first sweep (single-crash 45, 91, 187, lookup-wrong): a
/// timestamp lookup walks batch headers no CRC covers, so a bit flipped on read made ListOffsets
/// answer a later offset (one flipped max timestamp skipped the right batch) or none (a flipped
/// baseOffset named records above the high watermark). The lookup now runs twice and refuses
/// answers that differ, and checks the base offset of the batch it reads.
/// (Seeds 32 and 35 before the merge of the seek, retention and idempotence workloads; 23 and
/// 275 before record padding; 19 and 275 before single-node ran on Raft; 59 before the merge of
/// controller request ids, the aimed `raft-written` site and the image's leader epochs on
/// batches, and 62 for the lookup: 24 and 64; 98 for the lookup since a roll made during a
/// group commit moves the recovery point only once the commit returns.)
#[test]
fn regression_timestamp_lookup_misread_24_98() {
    regression("single-crash", 24, "timestamp-batch-misread");
    regression("single-crash", 98, "timestamp-lookup-differs");
}

/// Found by the seek workload's sweep: a closed segment's time index, read back at open with a
/// bit flipped in its one entry's timestamp (no CRC covers index files), was trusted, so a
/// timestamp lookup started at the segment's last batch and skipped ten earlier matches
/// (lookup-wrong, timestamp-skipped). An index whose last entry lies below the segment's newest
/// batch timestamp is now rebuilt.
/// (single-chaos 250 before the merge of the seek, retention and idempotence workloads; 99
/// before single-node ran on Raft; 11 before the merge of controller request ids and the aimed
/// `raft-written` site and the image's leader epochs on batches, and 11 again after them; 111
/// since a roll made during a group commit moves the recovery point only once the commit
/// returns.)
#[test]
fn regression_time_index_misread_111() {
    regression("single-crash", 111, "time-index-misread");
}

/// fsyncgate at a roll, found by the first 1,000-seed sweep of single-chaos: a roll's sync of
/// the segment it closed failed (the produce got an error), but the group commit's ticket,
/// captured before the roll and synced after it, succeeded and published offsets 476-503 as
/// durable; consumers read them, a power loss took them back, and the offsets were reused
/// (inconsistent-offsets). Once any sync of a log fails, it refuses writes and completes no
/// ticket, and the partition goes offline until a restart recovers it. The sweep of
/// single-groups found the same at seed 603 (inconsistent-offsets, 19 failed syncs).
#[test]
fn regression_roll_sync_failure_takes_the_partition_offline_chaos_681_groups_603() {
    regression("single-chaos", 681, "fsync-failed");
    regression("single-groups", 603, "fsync-failed");
}

/// Issue 9: a read error while replaying `__consumer_offsets` at startup stopped the replay, so
/// a group came back from part of its history: at generation 1, accepting commits of an older
/// generation (stale-generation-commit), with committed offsets that went back
/// (committed-offset-regression). Replay now reads again, and fails the broker's start if the
/// error persists. (Seeds 163 and 195 before the stream change of issue 10; 216 and 658 before
/// the merge of crash kinds and aimed faults; 3 and 14 before record padding; 3 and 105 before
/// single-node ran on Raft; 16 before the merge of controller request ids and the aimed
/// `raft-written` site: 37 and 23.)
#[test]
fn regression_offsets_replay_read_error_37_23() {
    regression("single-groups", 37, "offsets-replay-reread");
    regression("single-groups", 23, "offsets-replay-reread");
}

/// A batch header whose size was misread (a bit flip, before any CRC covers it) claimed more
/// bytes than its segment held: an assertion crashed the broker in the middle of a Fetch. It
/// is a read error now, retried by the client. Found by a rotating window.
#[test]
fn regression_read_size_misread_297446293() {
    regression("single-crash", 297446293, "read-size-misread");
}

/// A read of `__consumer_offsets` that found no batch below the log end (a bit flipped in a
/// header stopped it before the first batch) was taken for a log compaction emptied: replay
/// found no group, and every committed offset was gone after the restart
/// (committed-offset-regression). Such a read is read again now. Found by a rotating window.
#[test]
fn regression_offsets_replay_empty_read_950290847() {
    regression("single-groups", 950290847, "offsets-replay-reread");
}

/// A compaction swapped a cleaned segment in, then the disk refused its index files (ENOSPC):
/// the error returned before the new segment joined the log, so the log forgot the segment's
/// offsets and a fetch inside them was served from the next segment (poll-skip of a live
/// record). The segment now joins the log first; its index files are a cache, as at a roll.
/// (Seed 25 before the merge of the other workloads; 6 before single-node ran on Raft and the
/// merge of controller request ids.)
#[test]
fn regression_compaction_index_write_failure_10() {
    regression("single-compaction", 10, "compaction-index-unwritten");
}

/// fsyncgate across a roll: the group commit's sync of the active segment failed (marking its
/// dirty sectors clean, never written) while the flusher waited out the rest of the fsync
/// latency without the lock; a roll then synced the same file, found nothing dirty, succeeded,
/// and checkpointed a recovery point past the lost bytes. After a process crash recovery
/// trusted the closed segment below that checkpoint and served its records (offsets 537..),
/// and a later power loss took them back, so the producers were acknowledged new values at
/// those offsets (inconsistent-offsets on t-2). A roll made while a ticket is in flight now
/// moves the recovery point only once the ticket returns successfully.
#[test]
fn regression_roll_during_failing_group_commit_3156095245() {
    regression("single-groups", 3156095245, "roll-sync-voided");
}

/// The rotating window (`GREGOR_SWEEP_WINDOW=A..B`, which ci/sim-test derives from the commit
/// and prints): the same seeds of every scenario, so each commit also explores seeds the fixed
/// sweeps never meet. Without the variable there is no window to run.
#[test]
fn sweep_window() {
    let Some(window) = std::env::var_os("GREGOR_SWEEP_WINDOW") else {
        println!("GREGOR_SWEEP_WINDOW is not set: no rotating window (ci/sim-test sets one)");
        return;
    };
    let window = window.to_string_lossy().into_owned();
    let seeds = window_parse(&window)
        .unwrap_or_else(|| panic!("GREGOR_SWEEP_WINDOW={window:?} is not A..B with A < B"));
    println!("rotating window: seeds {}..{}", seeds.start, seeds.end);
    for scenario in SCENARIOS {
        sweep_clean(scenario.name, seeds.clone());
    }
}

fn window_parse(text: &str) -> Option<std::ops::Range<u64>> {
    let (start, end) = text.split_once("..")?;
    let seeds = start.trim().parse().ok()?..end.trim().parse().ok()?;
    (seeds.start < seeds.end).then_some(seeds)
}

/// Same seed, same commit, two separate processes: byte-identical traces.
#[test]
fn determinism_across_processes() {
    determinism("single-chaos", 7);
}

/// The replicated data world too: several nodes, each with its own disk, clock and restarts.
/// Processes only: a run in this process after another one (`determinism_across_processes`'s)
/// replays differently (seed 3: alone in the test process it agrees), so process-global state
/// outside the seed reaches the schedule; sweeps and `ci/sim run` start a process per seed.
#[test]
fn determinism_across_processes_cluster_data() {
    determinism_processes("cluster-chaos", 3);
}

/// And the transactions on it: producers, processors and readers on their own client nodes, and
/// a nemesis that reads the transactional ids in use to aim at their coordinators.
#[test]
fn determinism_across_processes_cluster_txn() {
    determinism_processes("cluster-txn", 5);
}

fn determinism(scenario: &str, seed: u64) {
    let first = determinism_processes(scenario, seed);
    let in_process = scenarios::run(scenario_find(scenario).unwrap(), seed, false);
    assert_eq!(
        format!("{:016x}", in_process.trace_hash),
        first,
        "the test process disagrees"
    );
}

/// The trace hash of `seed`, the same in two processes.
fn determinism_processes(scenario: &str, seed: u64) -> String {
    let seed_text = seed.to_string();
    let hash = || {
        let output = std::process::Command::new(BINARY)
            .args(["run", "--scenario", scenario, "--seed", &seed_text])
            .output()
            .expect("gregor-sim runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout
            .lines()
            .find_map(|line| line.strip_prefix("trace-hash: ").map(str::to_string))
            .unwrap_or_else(|| panic!("no trace-hash line in:\n{stdout}"))
    };
    let (first, second) = (hash(), hash());
    assert_eq!(first, second, "{scenario} seed {seed} gave two traces");
    first
}

/// An aimed crash (produce-replied, process-then-power) restarted the broker while the nemesis
/// had it down for another crash; the nemesis's later bare restart left the running
/// incarnation's listener bound, and the broker never served again (liveness). Restarts now
/// kill first, and the nemesis does not crash a node that is already down.
/// (Seed 30 before the merge with the stream change of issue 10 and malformed sends.)
#[test]
fn regression_overlapping_crashes_restart_cleanly_22() {
    let result = scenarios::run(scenario_find("single-chaos").unwrap(), 22, false);
    assert!(result.verdict.is_pass(), "{}", result.verdict);
    let fired = |name: &str| result.fault_counts.get(name).copied().unwrap_or(0);
    assert!(
        fired("buggify-produce-replied") >= 1 && fired("crash-process-then-power") >= 1,
        "the overlapping crashes no longer happen: {}",
        result.faults_line()
    );
}

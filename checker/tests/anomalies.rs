//! One bad history per anomaly (tripping only that anomaly where the rule allows) and a good
//! neighbour that passes, written in the `checker::script` text form.

use checker::{check, script, Report};

fn report(script: &str) -> Report {
    check(&script::parse(script).expect("script parses"))
}

/// The anomaly kinds a script trips, in report order.
fn kinds(script: &str) -> Vec<&'static str> {
    report(script)
        .anomalies
        .iter()
        .map(|anomaly| anomaly.kind())
        .collect()
}

fn text(script: &str) -> String {
    report(script).render_text()
}

const SENDS_THREE: &str = "p1 send t-0 1@0; p1 send t-0 2@1; p1 send t-0 3@2";

#[test]
fn clean_history_is_valid() {
    let script = format!("p0 assign t-0; {SENDS_THREE}; p0 poll t-0 [0:1 1:2]; p0 poll t-0 [2:3]");
    let report = report(&script);
    assert!(report.is_valid(), "{}", report.render_text());
    assert_eq!(report.stats.sends_ok, 3);
    assert_eq!(report.stats.values_observed, 3);
}

#[test]
fn inconsistent_offsets() {
    // Offset 0 acknowledged as value 1 (and read so by p3), but p0 reads value 2 there.
    let bad = "p1 send t-0 1@0; p2 invoke send t-0 2; p2 info send t-0 2; p3 poll t-0 [0:1]; \
               p0 poll t-0 [0:2]";
    assert_eq!(kinds(bad), ["inconsistent-offsets"]);
    let good = "p1 send t-0 1@0; p2 invoke send t-0 2; p2 info send t-0 2; p3 poll t-0 [0:1]; \
                p0 poll t-0 [1:2]";
    assert_eq!(kinds(good), [""; 0]);
}

#[test]
fn duplicate() {
    let bad = "p1 send t-0 1@0; p1 send t-0 2@1; p0 poll t-0 [0:1 1:2 2:1]";
    assert_eq!(kinds(bad), ["duplicate"]);
    insta::assert_snapshot!(text(bad), @r"
    INVALID: 1 anomalies in 6 events (2 sends ok, 1 polls ok, 2 values observed)

    duplicate: partition t-0, value 1
      at offset 0 (event 1), offset 2 (event 5)
    ");
    assert_eq!(
        kinds("p1 send t-0 1@0; p1 send t-0 2@1; p0 poll t-0 [0:1 1:2]"),
        [""; 0]
    );
}

#[test]
fn phantom_read() {
    assert_eq!(
        kinds("p1 send t-0 1@0; p0 poll t-0 [0:1 1:7]"),
        ["phantom-read"]
    );
    assert_eq!(kinds("p1 send t-0 1@0; p0 poll t-0 [0:1]"), [""; 0]);
}

#[test]
fn lost_write() {
    // p2 read offset 2, so offset 1 (value 2, acknowledged) should have been read by someone.
    let bad = format!("{SENDS_THREE}; p0 poll t-0 [0:1]; p2 poll t-0 [2:3]");
    assert_eq!(kinds(&bad), ["lost-write"]);
    insta::assert_snapshot!(text(&bad), @r"
    INVALID: 1 anomalies in 10 events (3 sends ok, 2 polls ok, 2 values observed)

    lost-write: partition t-0, offset 1, value 2
      sent by event 3, never polled, but event 9 polled offset 2 value 3 after it
    ");
    let good = format!("{SENDS_THREE}; p0 poll t-0 [0:1 1:2]; p2 poll t-0 [2:3]");
    assert_eq!(kinds(&good), [""; 0]);
}

#[test]
fn lost_write_needs_a_committed_writer() {
    // The send of 2 is indeterminate and nobody read it: it may never have happened.
    let good = "p1 send t-0 1@0; p1 invoke send t-0 2; p1 info send t-0 2@1; p1 send t-0 3@2; \
                p0 poll t-0 [0:1]; p2 poll t-0 [2:3]";
    assert_eq!(kinds(good), [""; 0]);
}

#[test]
fn unseen_after_final_poll() {
    let bad = "p1 send t-0 1@0; p1 send t-0 2@1; p1 send t-0 3@2; p0 final-poll t-0 [0:1]";
    assert_eq!(kinds(bad), ["unseen"]);
    let report = report(bad);
    assert_eq!(
        report.liveness_reason().as_deref(),
        Some("partition t-0: lag 2 after heal")
    );
    insta::assert_snapshot!(report.render_text(), @r"
    INVALID: 1 anomalies in 8 events (3 sends ok, 1 polls ok, 1 values observed)

    unseen: partition t-0: lag 2 after heal
      acknowledged but never polled: values 2, 3 (sent by events 3, 5)
    ");
    // Without final polls nothing promised that the consumers caught up.
    let good = "p1 send t-0 1@0; p1 send t-0 2@1; p1 send t-0 3@2; p0 poll t-0 [0:1]";
    assert_eq!(kinds(good), [""; 0]);
    // A send acknowledged after the final polls began raced them and is not required.
    let raced = "p1 send t-0 1@0; p0 invoke final-poll; p1 send t-0 2@1; \
                 p0 ok final-poll t-0 [0:1]";
    assert_eq!(kinds(raced), [""; 0]);
}

#[test]
fn poll_skip_across_polls() {
    let bad = format!("{SENDS_THREE}; p0 poll t-0 [0:1]; p0 poll t-0 [2:3]; p2 poll t-0 [1:2]");
    assert_eq!(kinds(&bad), ["poll-skip"]);
    insta::assert_snapshot!(text(&bad), @r"
    INVALID: 1 anomalies in 12 events (3 sends ok, 3 polls ok, 3 values observed)

    poll-skip: partition t-0, process 0
      read offset 0 (event 7) then offset 2 (event 9), skipping 1: [1:2]
    ");
    // A seek, an assign from the beginning, a rebalance or a crash in between resets the position.
    for reset in [
        "p0 seek t-0=2",
        "p0 assign t-0 from-beginning",
        "p0 rebalance t-0",
        "p0 crash",
    ] {
        let good = format!(
            "{SENDS_THREE}; p0 poll t-0 [0:1]; {reset}; p0 poll t-0 [2:3]; p2 poll t-0 [1:2]"
        );
        assert_eq!(kinds(&good), [""; 0], "{reset}");
    }
    // Offsets nobody saw a record at (transaction markers) are not skipped records.
    let gap = "p1 send t-0 1@0; p1 send t-0 2@5; p0 poll t-0 [0:1]; p0 poll t-0 [5:2]";
    assert_eq!(kinds(gap), [""; 0]);
}

#[test]
fn poll_skip_within_one_poll() {
    let bad = format!("{SENDS_THREE}; p0 poll t-0 [0:1 2:3]; p2 poll t-0 [1:2]");
    let report = report(&bad);
    assert_eq!(kinds(&bad), ["poll-skip"]);
    assert!(matches!(
        report.anomalies[0],
        checker::Anomaly::PollSkip { internal: true, .. }
    ));
}

#[test]
fn nonmonotonic_poll() {
    let bad = "p1 send t-0 1@0; p1 send t-0 2@1; p0 poll t-0 [0:1 1:2]; p0 poll t-0 [1:2]";
    assert_eq!(kinds(bad), ["nonmonotonic-poll"]);
    let good = "p1 send t-0 1@0; p1 send t-0 2@1; p0 poll t-0 [0:1 1:2]; \
                p0 assign t-0 from-beginning; p0 poll t-0 [0:1]";
    assert_eq!(kinds(good), [""; 0]);
    // Another process reading the same offsets is fine.
    let other = "p1 send t-0 1@0; p1 send t-0 2@1; p0 poll t-0 [0:1 1:2]; p2 poll t-0 [1:2]";
    assert_eq!(kinds(other), [""; 0]);
}

#[test]
fn nonmonotonic_poll_within_one_poll() {
    let bad = "p1 send t-0 1@0; p1 send t-0 2@1; p0 poll t-0 [1:2 0:1]";
    assert_eq!(kinds(bad), ["nonmonotonic-poll"]);
    assert!(matches!(
        report(bad).anomalies[0],
        checker::Anomaly::NonmonotonicPoll {
            internal: true,
            offset_previous: 1,
            offset_next: 0,
            ..
        }
    ));
}

#[test]
fn nonmonotonic_send() {
    assert_eq!(
        kinds("p1 send t-0 1@5; p1 send t-0 2@3"),
        ["nonmonotonic-send"]
    );
    let internal = "p1 txn send t-0 1@5, send t-0 2@3";
    assert_eq!(kinds(internal), ["nonmonotonic-send"]);
    assert!(matches!(
        report(internal).anomalies[0],
        checker::Anomaly::NonmonotonicSend { internal: true, .. }
    ));
    assert_eq!(
        kinds("p1 send t-0 1@3; p1 send t-0 2@5; p1 send t-1 3@0"),
        [""; 0]
    );
}

#[test]
fn send_realtime_order() {
    let bad = "p1 send t-0 1@5; p2 send t-0 2@3";
    assert_eq!(kinds(bad), ["send-realtime-order"]);
    insta::assert_snapshot!(text(bad), @r"
    INVALID: 1 anomalies in 4 events (2 sends ok, 0 polls ok, 0 values observed)

    send-realtime-order: partition t-0
      value 1 at offset 5 acknowledged at event 1, before value 2 at offset 3 was invoked at event 2 (acknowledged at event 3)
    ");
    // Concurrent sends may land in either order.
    let good = "p1 invoke send t-0 1; p2 invoke send t-0 2; p1 ok send t-0 1@5; p2 ok send t-0 2@3";
    assert_eq!(kinds(good), [""; 0]);
}

#[test]
fn aborted_read() {
    let bad = "p1 invoke txn send t-0 1, send t-1 2; p1 fail txn send t-0 1, send t-1 2; \
               p0 poll t-0 [0:1]";
    assert_eq!(kinds(bad), ["aborted-read"]);
    let good = "p1 invoke txn send t-0 1, send t-1 2; p1 fail txn send t-0 1, send t-1 2; \
                p1 send t-0 3@2; p0 poll t-0 [2:3]";
    assert_eq!(kinds(good), [""; 0]);
}

#[test]
fn precommitted_read_own_write() {
    let bad = "p1 txn send t-0 1@0, poll t-0 [0:1]";
    assert_eq!(kinds(bad), ["precommitted-read"]);
    assert!(matches!(
        report(bad).anomalies[0],
        checker::Anomaly::PrecommittedRead {
            reason: checker::PrecommitReason::OwnWrite,
            ..
        }
    ));
}

#[test]
fn precommitted_read_before_write_invoked() {
    let bad = "p0 poll t-0 [0:1]; p1 send t-0 1@0";
    assert_eq!(kinds(bad), ["precommitted-read"]);
    // The read may complete before the writer hears its acknowledgement.
    let good = "p1 invoke send t-0 1; p0 poll t-0 [0:1]; p1 ok send t-0 1@0";
    assert_eq!(kinds(good), [""; 0]);
}

#[test]
fn torn_transaction() {
    // p0 reads t-1 across offset 1 (the transaction's second record) but sees only the first.
    let bad = "p3 send t-1 3@0; p1 txn send t-0 1@0, send t-1 2@1; p4 send t-1 4@2; \
               p0 poll t-0 [0:1] t-1 [0:3 2:4]; p2 poll t-1 [1:2]";
    assert_eq!(kinds(bad), ["poll-skip", "torn-transaction"]);
    insta::assert_snapshot!(report(bad).anomalies[1].render(), @r"
    torn-transaction: partition t-1, offset 1, value 2
      transaction event 3: event 7 read t-0 value 1 at offset 0 and read across t-1 offset 1 without it
    ");
    let good = "p3 send t-1 3@0; p1 txn send t-0 1@0, send t-1 2@1; p4 send t-1 4@2; \
                p0 poll t-0 [0:1] t-1 [0:3 1:2 2:4]";
    assert_eq!(kinds(good), [""; 0]);
}

#[test]
fn committed_offset_regression() {
    let bad = "p0 commit g t-0=5; p1 list g t-0=3";
    assert_eq!(kinds(bad), ["committed-offset-regression"]);
    insta::assert_snapshot!(text(bad), @r"
    INVALID: 1 anomalies in 4 events (0 sends ok, 0 polls ok, 0 values observed)

    committed-offset-regression: partition t-0, group g
      offset 5 committed by event 1, later listed as 3 by event 3
    ");
    // The commit of 3 finished before the commit of 5 began: 3 cannot be the latest.
    let stale = "p2 commit g t-0=3; p0 commit g t-0=5; p1 list g t-0=3";
    assert_eq!(kinds(stale), ["committed-offset-regression"]);
    assert_eq!(
        kinds("p0 commit g t-0=5; p1 list g t-0=-1"),
        ["committed-offset-regression"]
    );
    // A rewind after, or a concurrent commit of 3, explains it.
    assert_eq!(
        kinds("p0 commit g t-0=5; p2 commit g t-0=3; p1 list g t-0=3"),
        [""; 0]
    );
    let concurrent = "p2 invoke commit g t-0=3; p0 commit g t-0=5; p2 ok commit g t-0=3; \
                      p1 list g t-0=3";
    assert_eq!(kinds(concurrent), [""; 0]);
    // Other groups and failed commits do not count.
    assert_eq!(kinds("p0 commit h t-0=5; p1 list g t-0=3"), [""; 0]);
    assert_eq!(
        kinds("p0 invoke commit g t-0=5; p0 fail commit g t-0=5; p1 list g t-0=3"),
        [""; 0]
    );
    assert_eq!(kinds("p0 commit g t-0=5; p1 list g t-0=5"), [""; 0]);
}

#[test]
fn malformed_history() {
    assert_eq!(kinds("p0 ok send t-0 1@0"), ["malformed-history"]);
    assert_eq!(
        kinds("p0 invoke send t-0 1; p0 ok send t-0 2@0"),
        ["malformed-history"]
    );
    // Values must be unique per partition; this one also lands at two offsets.
    assert_eq!(
        kinds("p0 send t-0 1@0; p1 send t-0 1@1"),
        ["malformed-history", "duplicate"]
    );
}

#[test]
fn crash_makes_the_open_operation_indeterminate() {
    // The crashed send may have happened; reading it is fine, and no completion is expected.
    let good = "p1 invoke send t-0 1; p1 crash; p0 poll t-0 [0:1]";
    assert_eq!(kinds(good), [""; 0]);
}

#[test]
fn poll_positions_under_subscribe_and_rebalance() {
    let polls = format!("{SENDS_THREE}; p2 poll t-0 [1:2]; p0 subscribe t; p0 poll t-0 [0:1]");
    // Between rebalances a subscribed consumer reads contiguously, like an assigned one.
    assert_eq!(kinds(&format!("{polls}; p0 poll t-0 [2:3]")), ["poll-skip"]);
    assert_eq!(
        kinds(&format!("{polls}; p0 rebalance t-0; p0 poll t-0 [2:3]")),
        [""; 0]
    );
    // A rebalance while a transaction is open splits its polls: they are not compared.
    let open = format!(
        "{SENDS_THREE}; p2 poll t-0 [1:2]; p0 invoke txn poll, poll; p0 rebalance t-0; \
         p0 ok txn poll t-0 [0:1], poll t-0 [2:3]"
    );
    assert_eq!(kinds(&open), [""; 0]);
    assert_eq!(
        kinds(&open.replace("p0 rebalance t-0; ", "")),
        ["poll-skip"]
    );
}

#[test]
fn indeterminate_poll_forgets_the_position() {
    // The timed-out poll may have consumed offset 1 on the client side.
    let good = format!(
        "{SENDS_THREE}; p2 poll t-0 [1:2]; p0 poll t-0 [0:1]; p0 invoke poll; p0 info poll; \
         p0 poll t-0 [2:3]"
    );
    assert_eq!(kinds(&good), [""; 0]);
}

#[test]
fn stale_generation_commit() {
    let bad = "p0 commit g gen=4 t-0=5; p1 commit g gen=3 t-0=2";
    assert_eq!(kinds(bad), ["stale-generation-commit"]);
    insta::assert_snapshot!(text(bad), @r"
    INVALID: 1 anomalies in 4 events (0 sends ok, 0 polls ok, 0 values observed)

    stale-generation-commit: group g
      event 3 committed under generation 3 after event 1 had committed under generation 4
    ");
    // Overlapping commits, a refused stale commit, simple consumers and other groups are fine.
    assert_eq!(
        kinds(
            "p1 invoke commit g gen=3 t-0=2; p0 commit g gen=4 t-0=5; p1 ok commit g gen=3 t-0=2"
        ),
        [""; 0]
    );
    assert_eq!(
        kinds(
            "p0 commit g gen=4 t-0=5; p1 invoke commit g gen=3 t-0=2; p1 fail commit g gen=3 t-0=2"
        ),
        [""; 0]
    );
    assert_eq!(kinds("p0 commit g gen=4 t-0=5; p1 commit g t-0=2"), [""; 0]);
    assert_eq!(
        kinds("p0 commit h gen=4 t-0=5; p1 commit g gen=3 t-0=2"),
        [""; 0]
    );
    assert_eq!(
        kinds("p0 commit g gen=3 t-0=2; p1 commit g gen=4 t-0=5"),
        [""; 0]
    );
}

#[test]
fn malformed_accepted() {
    let bad = "p1 invoke send-malformed t-0 unknown-codec; p1 ok send-malformed t-0 unknown-codec";
    assert_eq!(kinds(bad), ["malformed-accepted"]);
    insta::assert_snapshot!(text(bad), @r"
    INVALID: 1 anomalies in 2 events (0 sends ok, 0 polls ok, 0 values observed)

    malformed-accepted: partition t-0
      event 1 acknowledged a batch poisoned with unknown-codec, which the broker had to refuse
    ");
    let good =
        "p1 invoke send-malformed t-0 unknown-codec; p1 fail send-malformed t-0 unknown-codec";
    assert_eq!(kinds(good), [""; 0]);
}

#[test]
fn seek_skip_and_wrong_record() {
    // After a seek to 1, the first record read there must be offset 1's.
    let bad = format!("{SENDS_THREE}; p2 poll t-0 [0:1 1:2]; p0 seek t-0=1; p0 poll t-0 [2:3]");
    assert_eq!(kinds(&bad), ["seek-skip"]);
    insta::assert_snapshot!(text(&bad), @r"
    INVALID: 1 anomalies in 12 events (3 sends ok, 2 polls ok, 3 values observed)

    seek-skip: partition t-0, process 0
      sought offset 1 (event 9), then first read offset 2 (event 11), skipping 1: [1:2]
    ");
    let below = format!("{SENDS_THREE}; p2 poll t-0 [0:1]; p0 seek t-0=2; p0 poll t-0 [1:2 2:3]");
    assert_eq!(kinds(&below), ["seek-wrong-record"]);
    // The record at the offset sought, or the next known one when nobody saw one there.
    for good in [
        format!("{SENDS_THREE}; p0 seek t-0=1; p0 poll t-0 [1:2 2:3]"),
        "p1 send t-0 1@0; p1 send t-0 2@5; p0 seek t-0=2; p0 poll t-0 [5:2]".to_string(),
        // Only the first read after the seek is held to it; a seek that may not have happened
        // (info) or a failed poll in between forgets it.
        format!("{SENDS_THREE}; p0 seek t-0=1; p0 poll t-0 [1:2]; p0 poll t-0 [2:3]"),
        format!(
            "{SENDS_THREE}; p2 poll t-0 [0:1 1:2]; p0 invoke seek t-0=1; p0 info seek t-0=1; \
             p0 poll t-0 [2:3]"
        ),
        format!(
            "{SENDS_THREE}; p0 seek t-0=1; p0 invoke poll; p0 fail poll; p0 poll t-0 [2:3]; \
             p2 poll t-0 [0:1 1:2]"
        ),
        // Another partition's seek does not hold this one.
        format!("{SENDS_THREE}; p0 seek t-1=1; p0 poll t-0 [2:3]; p2 poll t-0 [0:1 1:2]"),
    ] {
        let good = format!("{good}; p3 poll t-0 [0:1]");
        assert_eq!(kinds(&good), [""; 0], "{good}");
    }
}

/// Three records with timestamps 10, 20, 20, then 15 (out of order).
const SENDS_STAMPED: &str = "p1 send t-0 1@0 ts=10; p1 send t-0 2@1 ts=20; \
                             p1 send t-0 3@2 ts=20; p1 send t-0 4@3 ts=15";

#[test]
fn timestamp_lookups() {
    for good in [
        "list-offsets t-0 ts=5 -> 0@10",
        "list-offsets t-0 ts=11 -> 1@20",
        "list-offsets t-0 ts=20 -> 1@20",
        "list-offsets t-0 ts=15 -> 1@20",
        "list-offsets t-0 ts=21 -> -1",
    ] {
        let script = format!("{SENDS_STAMPED}; p0 {good}");
        assert_eq!(kinds(&script), [""; 0], "{good}");
    }
    for (bad, rule) in [
        ("list-offsets t-0 ts=15 -> 3@15", "TimestampSkipped"),
        ("list-offsets t-0 ts=20 -> 2@20", "TimestampSkipped"),
        ("list-offsets t-0 ts=11 -> 0@10", "TimestampEarly"),
        ("list-offsets t-0 ts=11 -> 1@21", "TimestampMismatch"),
        ("list-offsets t-0 ts=20 -> -1", "TimestampMissed"),
    ] {
        let script = format!("{SENDS_STAMPED}; p0 {bad}");
        assert_eq!(kinds(&script), ["lookup-wrong"], "{bad}");
        assert!(text(&script).contains(rule), "{bad}: {}", text(&script));
    }
    // A record nobody has acknowledged or read yet does not make "none found" wrong.
    let raced = "p1 invoke send t-0 1 ts=30; p0 list-offsets t-0 ts=30 -> -1; \
                 p1 ok send t-0 1@0 ts=30";
    assert_eq!(kinds(raced), [""; 0]);
    let skipped = format!("{SENDS_STAMPED}; p0 list-offsets t-0 ts=15 -> 3@15");
    insta::assert_snapshot!(text(&skipped), @r"
    INVALID: 1 anomalies in 10 events (4 sends ok, 0 polls ok, 0 values observed)

    lookup-wrong: partition t-0, TimestampSkipped
      list-offsets Timestamp(15) answered 3 (event 9); offset 1 value 2 (event 3)
    ");
}

#[test]
fn end_lookups() {
    let good = "p1 send t-0 1@0; p0 list-offsets t-0 latest -> 1; p1 send t-0 2@1; \
                p0 list-offsets t-0 earliest -> 0";
    assert_eq!(kinds(good), [""; 0]);
    // The end went backwards: offset 0 was acknowledged before the lookup began.
    let behind = "p1 send t-0 1@0; p0 list-offsets t-0 latest -> 0";
    assert_eq!(kinds(behind), ["lookup-wrong"]);
    assert!(text(behind).contains("BehindEnd"));
    // The answer counted offset 1 before its present record was even sent: it served a record
    // that was then lost and its offset reused.
    let beyond = "p1 send t-0 1@0; p0 list-offsets t-0 latest -> 2; p1 send t-0 2@1; \
                  p2 poll t-0 [0:1 1:2]";
    assert_eq!(kinds(beyond), ["lookup-wrong"]);
    assert!(text(beyond).contains("BeyondEnd"));
    // ... and so did a timestamp answer at that offset.
    let found = "p1 send t-0 1@0 ts=1; p0 list-offsets t-0 ts=1 -> 0@1; p1 send t-0 2@1 ts=2; \
                 p0 list-offsets t-0 ts=2 -> 1@2";
    assert_eq!(kinds(found), [""; 0]);
    let early = "p0 list-offsets t-0 ts=1 -> 0@1; p1 send t-0 1@0 ts=1";
    assert_eq!(kinds(early), ["lookup-wrong"]);
}

/// A deposed leader that has not learned of its successor answers with its own end: behind a
/// record the successor acknowledged at a later epoch, which Kafka allows (clients fence it by
/// the epoch they send), but never behind one of its own epoch or an earlier one.
#[test]
fn end_lookups_are_held_to_their_leader_epoch() {
    let history = "epochs t-0 0=1 1=2; p1 send t-0 1@0; p1 send t-0 2@1";
    let stale = format!("{history}; p0 list-offsets t-0 latest -> 1 epoch=1");
    assert_eq!(kinds(&stale), [""; 0], "offset 1 was written at epoch 2");
    let wrong = format!("{history}; p0 list-offsets t-0 latest -> 1 epoch=2");
    assert_eq!(kinds(&wrong), ["lookup-wrong"]);
    let own = format!("{history}; p0 list-offsets t-0 latest -> 0 epoch=1");
    assert_eq!(
        kinds(&own),
        ["lookup-wrong"],
        "offset 0 was written at epoch 1"
    );
    // A record no read saw holds every answer, as does an answer without an epoch.
    let unread = "epochs t-0 0=1; p1 send t-0 1@0; p1 send t-0 2@1; \
                  p0 list-offsets t-0 latest -> 1 epoch=1";
    assert_eq!(kinds(unread), ["lookup-wrong"]);
    let unknown = format!("{history}; p0 list-offsets t-0 latest -> 1");
    assert_eq!(kinds(&unknown), ["lookup-wrong"]);
    // Timestamps likewise.
    let stamped = "epochs t-0 0=1 1=2; p1 send t-0 1@0 ts=1; p1 send t-0 2@1 ts=2";
    let missed = format!("{stamped}; p0 list-offsets t-0 ts=2 -> -1 epoch=1");
    assert_eq!(kinds(&missed), [""; 0]);
    let missed = format!("{stamped}; p0 list-offsets t-0 ts=2 -> -1 epoch=2");
    assert_eq!(kinds(&missed), ["lookup-wrong"]);
}

/// A processor read in-0's three inputs and made outputs 100, 101 (one transaction) and 102
/// (a second); the final polls read out-0 and the group's committed offsets.
const PROCESSED: &str = "processing g; source out-0 100 in-0 0:1; source out-0 101 in-0 1:2; \
    source out-0 102 in-0 2:3; source out-0 103 in-0 2:3; \
    p1 send in-0 1@0; p1 send in-0 2@1; p1 send in-0 3@2; \
    p2 assign in-0; p2 poll in-0 [0:1 1:2]; p2 txn send out-0 100@0, send out-0 101@1; \
    p2 poll in-0 [2:3]";

#[test]
fn exactly_once_output_clean() {
    let good = format!(
        "{PROCESSED}; p2 txn send out-0 102@3; p3 final-poll out-0 [0:100 1:101 3:102]; \
         p3 list g in-0=3"
    );
    assert_eq!(kinds(&good), [""; 0]);
    // An aborted attempt before the committed one is no duplicate.
    let retried = format!(
        "{PROCESSED}; p2 invoke txn send out-0 102; p2 fail txn send out-0 102; \
         p2 seek in-0=2; p2 poll in-0 [2:3]; p2 txn send out-0 103@5; \
         p3 final-poll out-0 [0:100 1:101 5:103]; p3 list g in-0=3"
    );
    assert_eq!(kinds(&retried), [""; 0]);
}

#[test]
fn output_duplicated() {
    // The first attempt's commit was in doubt and did commit; the retry committed too.
    let bad = format!(
        "{PROCESSED}; p2 invoke txn send out-0 102; p2 info txn send out-0 102; \
         p2 seek in-0=2; p2 poll in-0 [2:3]; p2 txn send out-0 103@5; \
         p3 final-poll out-0 [0:100 1:101 3:102 5:103]; p3 list g in-0=3"
    );
    assert_eq!(kinds(&bad), ["output-duplicated"]);
    insta::assert_snapshot!(report(&bad).anomalies[0].render(), @r"
    output-duplicated: partition in-0, value 3
      processed into 2 committed outputs: out-0 value 102 at offset 3 (event 23), out-0 value 103 at offset 5 (event 23)
    ");
}

#[test]
fn output_missing() {
    // Offsets committed past input 2, whose output's transaction never showed up.
    let bad = format!(
        "{PROCESSED}; p2 invoke txn send out-0 102; p2 info txn send out-0 102; \
         p3 final-poll out-0 [0:100 1:101]; p3 list g in-0=3"
    );
    assert_eq!(kinds(&bad), ["output-missing"]);
    insta::assert_snapshot!(report(&bad).anomalies[0].render(), @r"
    output-missing: partition in-0, group g
      committed offset 3 (event 19) covers 1 inputs with no committed output: offset 2 value 3
    ");
    // Without a final list of the group's offsets nothing is owed.
    let unlisted = format!(
        "{PROCESSED}; p2 invoke txn send out-0 102; p2 info txn send out-0 102; \
         p3 final-poll out-0 [0:100 1:101]"
    );
    assert_eq!(kinds(&unlisted), [""; 0]);
}

#[test]
fn output_uncommitted_input() {
    // Output 102 committed, yet the group's offsets stayed before its input.
    let bad = format!(
        "{PROCESSED}; p2 txn send out-0 102@3; p3 final-poll out-0 [0:100 1:101 3:102]; \
         p3 list g in-0=2"
    );
    assert_eq!(kinds(&bad), ["output-uncommitted-input"]);
    insta::assert_snapshot!(report(&bad).anomalies[0].render(), @r"
    output-uncommitted-input: partition in-0, offset 2, value 3
      its output out-0 value 102 at offset 3 was read by event 17, but group g committed only up to 2 (event 19)
    ");
}

/// A transaction whose client never heard its outcome, yet some of it was read before the final
/// polls: it committed, so all of it must be read (a coordinator that committed t-0 and aborted
/// t-1 after a crash leaves t-1's value unseen).
#[test]
fn unseen_part_of_an_observed_transaction() {
    let torn = "p1 invoke txn send t-0 1, send t-1 2; p1 info txn send t-0 1, send t-1 2; \
                p0 poll t-0 [0:1]; p9 final-poll t-0 [0:1]; p9 final-poll t-1 []";
    assert_eq!(kinds(torn), ["unseen"]);
    insta::assert_snapshot!(report(torn).anomalies[0].render(), @r"
    unseen: partition t-1: lag 1 after heal
      acknowledged but never polled: values 2 (sent by events 1)
    ");
    let whole = "p1 invoke txn send t-0 1, send t-1 2; p1 info txn send t-0 1, send t-1 2; \
                 p0 poll t-0 [0:1]; p9 final-poll t-0 [0:1]; p9 final-poll t-1 [1:2]";
    assert_eq!(kinds(whole), [""; 0]);
    // Not read before the final polls: it may have committed after they began, or never.
    let unobserved = "p1 invoke txn send t-0 1, send t-1 2; p1 info txn send t-0 1, send t-1 2; \
                      p9 final-poll t-0 [0:1]; p9 final-poll t-1 []";
    assert_eq!(kinds(unobserved), [""; 0]);
}

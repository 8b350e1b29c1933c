//! The boundary: JSON shapes the recorder produces and tools read, the script parser's errors,
//! and report rendering limits.

use checker::{check, script, RENDERED_PER_KIND_MAX};

#[test]
fn history_json_shape() {
    let history = script::parse("p0 send t-0 1@0; p1 final-poll t-0 [0:1]").expect("parses");
    let json = serde_json::to_string(&history.events[1..4]).expect("serializes");
    insta::assert_snapshot!(json, @r#"[{"index":1,"time_ns":1,"process":0,"kind":"ok","op":{"txn":[{"send":{"partition":"t-0","value":1,"offset":0}}]}},{"index":2,"time_ns":2,"process":1,"kind":"invoke","op":{"txn":[{"poll":{"records":{},"final_poll":true}}]}},{"index":3,"time_ns":3,"process":1,"kind":"ok","op":{"txn":[{"poll":{"records":{"t-0":[{"offset":0,"value":1}]},"final_poll":true}}]}}]"#);
}

#[test]
fn report_json_shape() {
    let mut report = check(&script::parse("p1 send t-0 1@5; p2 send t-0 2@3").expect("parses"));
    report.seed = Some(7);
    let json = serde_json::to_string(&report.anomalies).expect("serializes");
    insta::assert_snapshot!(json, @r#"[{"kind":"send-realtime-order","partition":"t-0","earlier_complete":1,"earlier_send":{"offset":5,"value":1},"later_invoke":2,"later_complete":3,"later_send":{"offset":3,"value":2}}]"#);
    assert!(report
        .render_text()
        .starts_with("INVALID: 1 anomalies in 4 events, seed 7 "));
}

#[test]
fn script_errors_name_the_statement() {
    let error = script::parse("p0 send t-0 1; p0 frobnicate").expect_err("unknown op");
    assert_eq!(error.to_string(), "statement 1: unknown op \"frobnicate\"");
    let error = script::parse("send t-0 1").expect_err("no process");
    assert_eq!(error.statement, 0);
    assert!(script::parse("p0 poll t-0 [0:1").is_err());
    assert!(script::parse("p0 send t0 1").is_err());
}

#[test]
fn render_text_limits_each_kind() {
    let sends: Vec<String> = (0..RENDERED_PER_KIND_MAX as i64 + 3)
        .map(|v| format!("p{v} send t-0 {v}@{v}"))
        .collect();
    let mut text = sends.join("; ");
    text.push_str("; p99 final-poll");
    let unseen_only = check(&script::parse(&text).expect("parses"));
    assert_eq!(
        unseen_only.anomalies.len(),
        1,
        "one unseen anomaly per partition"
    );
    // Reversed offsets: every later send is a realtime-order violation.
    let reversed: Vec<String> = (0..RENDERED_PER_KIND_MAX as i64 + 3)
        .map(|v| format!("p{v} send t-0 {v}@{}", 100 - v))
        .collect();
    let report = check(&script::parse(&reversed.join("; ")).expect("parses"));
    let rendered = report.render_text();
    assert_eq!(
        rendered.matches("\nsend-realtime-order: ").count(),
        RENDERED_PER_KIND_MAX
    );
    assert!(
        rendered.ends_with("... 2 more send-realtime-order\n"),
        "{rendered}"
    );
}

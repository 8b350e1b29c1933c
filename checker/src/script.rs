//! A compact text form of histories, for tests and regression cases.
//!
//! Statements are separated by `;` or newlines; `#` starts a comment. Each statement is
//! `p<process> [invoke|ok|fail|info] <op>` and becomes one event, with `time_ns` equal to its
//! index. Without a kind, an operation becomes two events: an invocation (results stripped) and
//! an `Ok` completion; a marker (`crash`, `rebalance`) becomes one event.
//!
//! ```text
//! send t-0 5            send value 5 to t-0, offset unknown
//! send t-0 5@3          ... acknowledged at offset 3
//! send t-0 5@3 ts=100   ... with an explicit record timestamp
//! poll t-0 [0:5 1:6]    a poll returning offset 0 value 5 and offset 1 value 6
//! final-poll t-0 [0:5]  the same, marked as a final poll
//! txn send t-0 1@0, send t-1 2@0, poll t-0 [0:1]    micro-ops separated by commas
//! assign t-0 t-1 [from-beginning]
//! subscribe t
//! seek t-0=4
//! list-offsets t-0 latest -> 7             also earliest; -> the answer (none: invocation only)
//! list-offsets t-0 ts=100 -> 3@105         offset 3, whose record has timestamp 105; -1: none
//! list-offsets t-0 latest -> 7 epoch=2     ... answered by a leader at epoch 2
//! rebalance t-0
//! commit g1 [gen=3] t-0=4 t-1=2
//! list g1 t-0=4         list-committed; -1 means none
//! crash
//! send-malformed t-0 unknown-codec     a batch poisoned on purpose
//! earliest t-0 7        ListOffsets earliest: the log start was 7
//! ```
//!
//! Statements without a process set the history's other parts or the clock:
//!
//! ```text
//! topic t delete compact retention-ms=100 retention-bytes=500 delete-retention-ms=50 offset-bytes=100
//! record t-0 5 key=2 tombstone ts=1000     value 5's record: key 2, null value, timestamp 1000
//! clocks origin=1000 skew=0                 wall clock ms at time 0, and the skew bound
//! sleep 500                                 later events happen 500 ms later
//! processing g                              processors commit their input offsets to group g
//! source out-0 70 in-1 3:7                  output value 70 of out-0 was made from in-1 offset 3 value 7
//! epochs t-0 0=1 5=2                        the records at offsets 0 and 5 were written at epochs 1 and 2
//! ```
//!
//! Example: `p0 send t-0 1@0; p1 invoke send t-0 2; p1 info send t-0 2; p2 poll t-0 [0:1]`.

use crate::history::{
    Clocks, EventKind, History, MicroOp, OffsetQuery, Op, Partition, Record, RecordSpec, Source,
    TopicSettings,
};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// Zero-based statement number.
    pub statement: usize,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "statement {}: {}", self.statement, self.message)
    }
}

impl std::error::Error for ScriptError {}

/// Parses a script into a history.
pub fn parse(script: &str) -> Result<History, ScriptError> {
    let mut history = History::default();
    let statements = script
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.split(';'))
        .map(str::trim)
        .filter(|statement| !statement.is_empty());
    let mut sleep_ns = 0;
    for (number, statement) in statements.enumerate() {
        let added = match settings_parse(&mut history, &mut sleep_ns, statement) {
            Some(parsed) => parsed,
            None => statement_add(&mut history, statement, sleep_ns),
        };
        added.map_err(|message| ScriptError {
            statement: number,
            message,
        })?;
    }
    Ok(history)
}

/// The statements that are not events (`topic`, `clocks`, `record`, `sleep`); `None` for others.
fn settings_parse(
    history: &mut History,
    sleep_ns: &mut u64,
    statement: &str,
) -> Option<Result<(), String>> {
    let tokens: Vec<&str> = statement.split_whitespace().collect();
    let (name, arguments) = tokens.split_first()?;
    let parsed = match *name {
        "topic" => topic_parse(history, arguments),
        "clocks" => named_integers(arguments).map(|named| {
            history.clocks = Some(Clocks {
                wall_origin_ms: named.get("origin").copied().unwrap_or(0),
                skew_ms_max: named.get("skew").copied().unwrap_or(0),
            });
        }),
        "record" => record_parse(history, arguments),
        "processing" => match arguments {
            [group] => {
                history
                    .processing
                    .get_or_insert_with(Default::default)
                    .group = group.to_string();
                Ok(())
            }
            _ => Err("processing needs a group".to_string()),
        },
        "source" => source_parse(history, arguments),
        "epochs" => match arguments.split_first() {
            Some((partition, pairs)) => partition.parse().and_then(|partition| {
                let epochs = history.leader_epochs.entry(partition).or_default();
                for pair in pairs {
                    let (offset, epoch) = pair.split_once('=').ok_or("epochs: offset=epoch")?;
                    epochs.insert(integer(offset)?, integer(epoch)? as i32);
                }
                Ok(())
            }),
            None => Err("epochs needs a partition".to_string()),
        },
        "sleep" => match arguments {
            [ms] => integer(ms).map(|ms| *sleep_ns += ms.max(0) as u64 * 1_000_000),
            _ => Err("sleep needs milliseconds".to_string()),
        },
        _ => return None,
    };
    Some(parsed)
}

/// `topic t [delete] [compact] [retention-ms=N] [retention-bytes=N] [delete-retention-ms=N]
/// [offset-bytes=N]`.
fn topic_parse(history: &mut History, arguments: &[&str]) -> Result<(), String> {
    let Some((topic, rest)) = arguments.split_first() else {
        return Err("topic needs a name".to_string());
    };
    let flags: Vec<&str> = rest.iter().copied().filter(|t| !t.contains('=')).collect();
    let named = named_integers(rest)?;
    let settings = TopicSettings {
        delete: flags.contains(&"delete"),
        compact: flags.contains(&"compact"),
        retention_ms: named.get("retention-ms").copied(),
        retention_bytes: named.get("retention-bytes").map(|bytes| *bytes as u64),
        delete_retention_ms: named.get("delete-retention-ms").copied().unwrap_or(0),
        offset_bytes_max: named.get("offset-bytes").map_or(100, |bytes| *bytes as u64),
    };
    history.topics.insert(topic.to_string(), settings);
    Ok(())
}

/// `record t-0 5 [key=K] [tombstone] [ts=T]`: what the workload put in value 5's record.
fn record_parse(history: &mut History, arguments: &[&str]) -> Result<(), String> {
    let [partition, value, rest @ ..] = arguments else {
        return Err("record needs a partition and a value".to_string());
    };
    let named = named_integers(rest)?;
    let spec = RecordSpec {
        key: named.get("key").copied(),
        tombstone: rest.contains(&"tombstone"),
        timestamp: named.get("ts").copied().unwrap_or(-1),
    };
    history
        .records
        .entry(partition.parse()?)
        .or_default()
        .insert(integer(value)?, spec);
    Ok(())
}

/// `source out-0 70 in-1 3:7`: output value 70 of out-0 was made from in-1's record 3:7.
fn source_parse(history: &mut History, arguments: &[&str]) -> Result<(), String> {
    let [output, value, input, record] = arguments else {
        return Err(
            "source needs an output partition and value, an input partition and \
                    offset:value"
                .to_string(),
        );
    };
    let (offset, input_value) = record
        .split_once(':')
        .ok_or_else(|| format!("{record:?} is not offset:value"))?;
    let source = Source {
        partition: input.parse()?,
        offset: integer(offset)?,
        value: integer(input_value)?,
    };
    history
        .processing
        .get_or_insert_with(Default::default)
        .sources
        .entry(output.parse()?)
        .or_default()
        .insert(integer(value)?, source);
    Ok(())
}

/// The `name=integer` tokens among `tokens`.
fn named_integers(tokens: &[&str]) -> Result<BTreeMap<String, i64>, String> {
    tokens
        .iter()
        .filter_map(|token| token.split_once('='))
        .map(|(name, value)| Ok((name.to_string(), integer(value)?)))
        .collect()
}

fn statement_add(history: &mut History, statement: &str, sleep_ns: u64) -> Result<(), String> {
    let spaced = statement
        .replace('[', " [ ")
        .replace(']', " ] ")
        .replace(',', " , ");
    let mut tokens: Vec<&str> = spaced.split_whitespace().collect();
    let process = tokens
        .first()
        .and_then(|token| token.strip_prefix('p'))
        .and_then(|number| number.parse::<u64>().ok())
        .ok_or_else(|| format!("{statement:?} does not start with p<process>"))?;
    tokens.remove(0);
    let kind = match tokens.first().copied() {
        Some("invoke") => Some(EventKind::Invoke),
        Some("ok") => Some(EventKind::Ok),
        Some("fail") => Some(EventKind::Fail),
        Some("info") => Some(EventKind::Info),
        _ => None,
    };
    if kind.is_some() {
        tokens.remove(0);
    }
    let op = op_parse(&tokens)?;
    let time = |history: &History| history.events.len() as u64 + sleep_ns;
    match kind {
        Some(kind) => {
            history.push(time(history), process, kind, op);
        }
        None if op.is_marker() => {
            let kind = if matches!(op, Op::Crash) {
                EventKind::Info
            } else {
                EventKind::Ok
            };
            history.push(time(history), process, kind, op);
        }
        None => {
            history.push(
                time(history),
                process,
                EventKind::Invoke,
                results_stripped(&op),
            );
            history.push(time(history), process, EventKind::Ok, op);
        }
    }
    Ok(())
}

/// The invocation of an op: no send offsets, no polled records.
fn results_stripped(op: &Op) -> Op {
    match op {
        Op::Txn(micro_ops) => Op::Txn(
            micro_ops
                .iter()
                .map(|micro_op| match micro_op {
                    MicroOp::Send {
                        partition,
                        value,
                        timestamp,
                        ..
                    } => MicroOp::Send {
                        partition: partition.clone(),
                        value: *value,
                        offset: None,
                        timestamp: *timestamp,
                    },
                    MicroOp::Poll { final_poll, .. } => MicroOp::Poll {
                        records: BTreeMap::new(),
                        final_poll: *final_poll,
                    },
                })
                .collect(),
        ),
        Op::ListOffsets {
            partition, query, ..
        } => Op::ListOffsets {
            partition: partition.clone(),
            query: *query,
            offset: None,
            timestamp: None,
            leader_epoch: None,
        },
        other => other.clone(),
    }
}

fn op_parse(tokens: &[&str]) -> Result<Op, String> {
    let Some((name, arguments)) = tokens.split_first() else {
        return Err("missing op".to_string());
    };
    match *name {
        "send" | "poll" | "final-poll" => Ok(Op::Txn(vec![micro_op_parse(tokens)?])),
        "txn" => {
            let micro_ops: Result<Vec<MicroOp>, String> = arguments
                .split(|token| *token == ",")
                .map(micro_op_parse)
                .collect();
            Ok(Op::Txn(micro_ops?))
        }
        "assign" => {
            let seek_to_beginning = arguments.last() == Some(&"from-beginning");
            let partitions = arguments.iter().filter(|token| **token != "from-beginning");
            let partitions: Result<Vec<Partition>, String> =
                partitions.map(|t| t.parse()).collect();
            Ok(Op::Assign {
                partitions: partitions?,
                seek_to_beginning,
            })
        }
        "subscribe" => Ok(Op::Subscribe {
            topics: arguments.iter().map(|t| t.to_string()).collect(),
        }),
        "seek" => Ok(Op::Seek {
            offsets: offsets_parse(arguments)?,
        }),
        "rebalance" => {
            let assigned: Result<Vec<Partition>, String> =
                arguments.iter().map(|t| t.parse()).collect();
            Ok(Op::Rebalance {
                assigned: assigned?,
            })
        }
        "commit" | "list" => group_op_parse(name, arguments),
        "crash" => Ok(Op::Crash),
        "earliest" => match arguments {
            [partition, offset] => Ok(Op::ListOffsets {
                partition: partition.parse()?,
                query: OffsetQuery::Earliest,
                offset: Some(integer(offset)?),
                timestamp: None,
                leader_epoch: None,
            }),
            _ => Err("earliest needs a partition and an offset".to_string()),
        },
        "list-offsets" => list_offsets_parse(arguments),
        "send-malformed" => match arguments {
            [partition, poison] => Ok(Op::SendMalformed {
                partition: partition.parse()?,
                poison: poison.to_string(),
            }),
            _ => Err("send-malformed needs a partition and a poison name".to_string()),
        },
        other => Err(format!("unknown op {other:?}")),
    }
}

fn group_op_parse(name: &str, arguments: &[&str]) -> Result<Op, String> {
    let Some((group, mut rest)) = arguments.split_first() else {
        return Err(format!("{name} needs a group"));
    };
    let mut generation = None;
    if let Some(number) = rest.first().and_then(|token| token.strip_prefix("gen=")) {
        generation = Some(
            number
                .parse()
                .map_err(|_| format!("bad generation {number:?}"))?,
        );
        rest = &rest[1..];
    }
    let offsets = offsets_parse(rest)?;
    let group = group.to_string();
    Ok(match name {
        "commit" => Op::Commit {
            group,
            generation,
            offsets,
        },
        _ => Op::ListCommitted { group, offsets },
    })
}

fn micro_op_parse(tokens: &[&str]) -> Result<MicroOp, String> {
    match tokens {
        ["send", partition, value, stamp @ ..] if stamp.len() <= 1 => {
            let (value, offset) = match value.split_once('@') {
                Some((value, offset)) => (value, Some(integer(offset)?)),
                None => (*value, None),
            };
            let timestamp = match stamp {
                [stamp] => Some(timestamp_parse(stamp)?),
                _ => None,
            };
            Ok(MicroOp::Send {
                partition: partition.parse()?,
                value: integer(value)?,
                offset,
                timestamp,
            })
        }
        ["poll", rest @ ..] => Ok(MicroOp::Poll {
            records: records_parse(rest)?,
            final_poll: false,
        }),
        ["final-poll", rest @ ..] => Ok(MicroOp::Poll {
            records: records_parse(rest)?,
            final_poll: true,
        }),
        _ => Err(format!("bad micro-op {:?}", tokens.join(" "))),
    }
}

/// `t-0 [ 0:5 1:6 ] t-1 [ ]` (brackets already spaced apart).
fn records_parse(tokens: &[&str]) -> Result<BTreeMap<Partition, Vec<Record>>, String> {
    let mut records = BTreeMap::new();
    let mut rest = tokens;
    while let [partition, "[", tail @ ..] = rest {
        let end = tail
            .iter()
            .position(|token| *token == "]")
            .ok_or("unclosed [")?;
        let parsed: Result<Vec<Record>, String> = tail[..end]
            .iter()
            .map(|pair| {
                let (offset, value) = pair.split_once(':').ok_or(format!("bad record {pair:?}"))?;
                Ok(Record {
                    offset: integer(offset)?,
                    value: integer(value)?,
                })
            })
            .collect();
        records.insert(partition.parse()?, parsed?);
        rest = &tail[end + 1..];
    }
    if !rest.is_empty() {
        return Err(format!("bad poll records near {:?}", rest.join(" ")));
    }
    Ok(records)
}

/// `t-0=4 t-1=2`.
fn offsets_parse(tokens: &[&str]) -> Result<BTreeMap<Partition, i64>, String> {
    tokens
        .iter()
        .map(|token| {
            let (partition, offset) = token
                .split_once('=')
                .ok_or(format!("expected partition=offset, got {token:?}"))?;
            Ok((partition.parse()?, integer(offset)?))
        })
        .collect()
}

/// `t-0 latest`, `t-0 earliest -> 0`, `t-0 ts=100 -> 3@105` (offset@timestamp found), or
/// `t-0 ts=100 -> -1` (none found).
fn list_offsets_parse(arguments: &[&str]) -> Result<Op, String> {
    let (partition, query, answer, epoch) = match arguments {
        [partition, query] => (partition, query, None, None),
        [partition, query, "->", answer] => (partition, query, Some(answer), None),
        [partition, query, "->", answer, epoch] => (partition, query, Some(answer), Some(epoch)),
        _ => return Err("list-offsets needs a partition, a query and maybe -> answer".into()),
    };
    let leader_epoch = match epoch.map(|epoch| epoch.strip_prefix("epoch=")) {
        None => None,
        Some(Some(epoch)) => Some(integer(epoch)? as i32),
        Some(None) => return Err("list-offsets: the answer's epoch is epoch=N".into()),
    };
    let query = match *query {
        "earliest" => OffsetQuery::Earliest,
        "latest" => OffsetQuery::Latest,
        stamp => OffsetQuery::Timestamp(timestamp_parse(stamp)?),
    };
    let (offset, timestamp) = match answer.map(|answer| answer.split_once('@')) {
        None => (None, None),
        Some(Some((offset, timestamp))) => (Some(integer(offset)?), Some(integer(timestamp)?)),
        Some(None) => (Some(integer(answer.expect("some"))?), Some(-1)),
    };
    Ok(Op::ListOffsets {
        partition: partition.parse()?,
        query,
        offset,
        timestamp,
        leader_epoch,
    })
}

/// `ts=100`.
fn timestamp_parse(token: &str) -> Result<i64, String> {
    let number = token
        .strip_prefix("ts=")
        .ok_or(format!("expected ts=<ms>, got {token:?}"))?;
    integer(number)
}

fn integer(text: &str) -> Result<i64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an integer"))
}

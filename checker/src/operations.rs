//! Pairs invocation and completion events into [`Operation`]s.
//!
//! Rules: a process has at most one open operation; its next non-marker event completes it. A
//! [`Op::Crash`] marker turns the process's open operation into a never-completed `Info`. Anything
//! else out of place (a completion with nothing open, an invocation over an open one, a completion
//! whose op does not match its invocation, a wrong `index`) is reported as a malformed history and
//! the offending event is ignored, so one recorder bug does not hide the rest of the analysis.

use crate::history::{Event, EventKind, History, MicroOp, Op};
use crate::report::Anomaly;
use std::collections::BTreeMap;

/// Index into `Operations::list`.
pub(crate) type OpId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Fail,
    /// Indeterminate, including never completed.
    Info,
}

#[derive(Debug)]
pub(crate) struct Operation<'h> {
    /// Event index of the invocation.
    pub invoke: usize,
    /// Event index of the completion; `None` if it never completed (it may take effect at any
    /// time after `invoke`).
    pub complete: Option<usize>,
    pub outcome: Outcome,
    /// The completion's op when there is a matching completion, else the invocation's.
    pub op: &'h Op,
}

impl Operation<'_> {
    /// The event that best names this operation: its completion, else its invocation.
    pub fn event(&self) -> usize {
        self.complete.unwrap_or(self.invoke)
    }
}

pub(crate) struct Operations<'h> {
    /// In invocation order.
    pub list: Vec<Operation<'h>>,
    /// Event index -> the operation it completes (`None` for invocations and markers).
    pub completed_at: Vec<Option<OpId>>,
}

/// Pairs the events of `history`; malformed events are appended to `anomalies`.
pub(crate) fn pair<'h>(anomalies: &mut Vec<Anomaly>, history: &'h History) -> Operations<'h> {
    let mut operations = Operations {
        list: Vec::new(),
        completed_at: vec![None; history.events.len()],
    };
    let mut open: BTreeMap<u64, OpId> = BTreeMap::new();
    for (position, event) in history.events.iter().enumerate() {
        if event.index != position {
            let reason = format!("event at position {position} has index {}", event.index);
            anomalies.push(Anomaly::MalformedHistory {
                event: position,
                reason,
            });
        }
        if event.op.is_marker() {
            if matches!(event.op, Op::Crash) {
                open.remove(&event.process);
            }
            continue;
        }
        let result = match event.kind {
            EventKind::Invoke => invoke(&mut operations, &mut open, position, event),
            _ => complete(&mut operations, &mut open, position, event),
        };
        if let Err(reason) = result {
            anomalies.push(Anomaly::MalformedHistory {
                event: position,
                reason,
            });
        }
    }
    operations
}

fn invoke<'h>(
    operations: &mut Operations<'h>,
    open: &mut BTreeMap<u64, OpId>,
    position: usize,
    event: &'h Event,
) -> Result<(), String> {
    let id = operations.list.len();
    operations.list.push(Operation {
        invoke: position,
        complete: None,
        outcome: Outcome::Info,
        op: &event.op,
    });
    match open.insert(event.process, id) {
        // The earlier operation stays open-ended (Info); the new one is still analysed.
        Some(earlier) => Err(format!(
            "process {} invoked while its operation from event {} was open",
            event.process, operations.list[earlier].invoke
        )),
        None => Ok(()),
    }
}

fn complete<'h>(
    operations: &mut Operations<'h>,
    open: &mut BTreeMap<u64, OpId>,
    position: usize,
    event: &'h Event,
) -> Result<(), String> {
    let Some(id) = open.remove(&event.process) else {
        return Err(format!(
            "process {} completed with no open operation",
            event.process
        ));
    };
    let operation = &mut operations.list[id];
    ops_match(operation.op, &event.op).map_err(|reason| {
        format!(
            "completion does not match event {}: {reason}",
            operation.invoke
        )
    })?;
    operation.complete = Some(position);
    operation.op = &event.op;
    operation.outcome = match event.kind {
        EventKind::Ok => Outcome::Ok,
        EventKind::Fail => Outcome::Fail,
        EventKind::Info | EventKind::Invoke => Outcome::Info,
    };
    operations.completed_at[position] = Some(id);
    Ok(())
}

/// A completion repeats its invocation's op with results filled in: same variant, and for a
/// `Txn` the same micro-ops in the same order with the same sends.
fn ops_match(invoked: &Op, completed: &Op) -> Result<(), String> {
    if std::mem::discriminant(invoked) != std::mem::discriminant(completed) {
        return Err(format!(
            "invoked {} but completed {}",
            invoked.name(),
            completed.name()
        ));
    }
    let (invoked, completed) = (invoked.micro_ops(), completed.micro_ops());
    if invoked.len() != completed.len() {
        return Err(format!(
            "{} micro-ops invoked, {} completed",
            invoked.len(),
            completed.len()
        ));
    }
    for (step, (a, b)) in invoked.iter().zip(completed).enumerate() {
        let same = match (a, b) {
            (
                MicroOp::Send {
                    partition: pa,
                    value: va,
                    ..
                },
                MicroOp::Send {
                    partition: pb,
                    value: vb,
                    ..
                },
            ) => pa == pb && va == vb,
            (MicroOp::Poll { .. }, MicroOp::Poll { .. }) => true,
            _ => false,
        };
        if !same {
            return Err(format!("micro-op {step} differs"));
        }
    }
    Ok(())
}

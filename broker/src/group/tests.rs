//! The coordinator without any runtime: scripted scenarios rendered as text (one `run` helper,
//! inline snapshots), record round trips, and a proptest of random request sequences checked
//! against the protocol's invariants after every step.

use super::coordinator::{partition_for, Coordinator, Input, Output};
use super::records::{record_decode, record_encode, OffsetsRecord};
use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

const GROUP: &str = "g";

fn config(initial_delay_ms: u64) -> GroupConfig {
    GroupConfig {
        session_timeout_min: Duration::from_millis(1_000),
        session_timeout_max: Duration::from_millis(60_000),
        group_size_max: 4,
        initial_rebalance_delay: Duration::from_millis(initial_delay_ms),
        offsets_topic_partitions: 4,
    }
}

fn coordinator(config: GroupConfig, planted: bool) -> Coordinator {
    let partitions = config.offsets_topic_partitions;
    let mut core = Coordinator::new(
        config,
        partitions,
        runtime::rng::stream_rng(7, runtime::rng::Stream::Groups, 0),
    );
    if planted {
        core.planted_set(Some(crate::planted::Bug::CommitStaleGeneration));
    }
    core
}

/// Drives a coordinator from a script and renders what it answers, with member ids shortened to
/// m1, m2, ... in order of appearance.
struct Harness {
    core: Coordinator,
    now: Duration,
    request_next: RequestId,
    writes: Vec<(WriteId, Vec<OffsetsRecord>)>,
    /// Every write ever emitted, for replay.
    writes_log: Vec<(WriteId, Vec<OffsetsRecord>)>,
    aliases: BTreeMap<String, String>,
    text: String,
}

impl Harness {
    fn new(core: Coordinator) -> Harness {
        Harness {
            core,
            now: Duration::ZERO,
            request_next: 1,
            writes: Vec::new(),
            writes_log: Vec::new(),
            aliases: BTreeMap::new(),
            text: String::new(),
        }
    }

    fn alias(&mut self, member_id: &str) -> String {
        if member_id.is_empty() {
            return "-".into();
        }
        let next = format!("m{}", self.aliases.len() + 1);
        self.aliases.entry(member_id.into()).or_insert(next).clone()
    }

    fn member_id(&self, alias: &str) -> String {
        self.aliases
            .iter()
            .find(|(_, a)| *a == alias)
            .map_or(alias.to_string(), |(id, _)| id.clone())
    }

    fn step(&mut self, input: Input) {
        let mut outputs = Vec::new();
        self.core.step(&mut outputs, input);
        self.core.invariants_check();
        for output in outputs {
            let line = self.render(output);
            writeln!(self.text, "  {line}").unwrap();
        }
    }

    fn render(&mut self, output: Output) -> String {
        match output {
            Output::Join {
                request,
                result: Ok(joined),
            } => {
                let members: Vec<String> = joined
                    .members
                    .iter()
                    .map(|m| self.alias(&m.member_id))
                    .collect();
                format!(
                    "join#{request} ok gen={} member={} leader={} protocol={} members=[{}]",
                    joined.generation_id,
                    self.alias(&joined.member_id),
                    self.alias(&joined.leader),
                    joined.protocol_name.unwrap_or_default(),
                    members.join(",")
                )
            }
            Output::Join {
                request,
                result: Err(GroupError::MemberIdRequired { member_id }),
            } => format!("join#{request} MemberIdRequired {}", self.alias(&member_id)),
            Output::Join { request, result } => format!("join#{request} {}", brief(&result)),
            Output::Sync {
                request,
                result: Ok(synced),
            } => format!(
                "sync#{request} ok {}",
                String::from_utf8_lossy(&synced.assignment)
            ),
            Output::Sync { request, result } => format!("sync#{request} {}", brief(&result)),
            Output::Heartbeat { request, result } => {
                format!("heartbeat#{request} {}", brief(&result))
            }
            Output::Leave { request, results } => {
                let rendered: Vec<String> = results.iter().map(brief).collect();
                format!("leave#{request} [{}]", rendered.join(", "))
            }
            Output::OffsetCommit { request, result } => {
                format!("commit#{request} {}", brief(&result))
            }
            Output::Delete { request, results } => {
                let rendered: Vec<String> = results
                    .iter()
                    .map(|(group, result)| format!("{group}: {}", brief(result)))
                    .collect();
                format!("delete#{request} [{}]", rendered.join(", "))
            }
            Output::OffsetDelete {
                request,
                result: Ok(results),
            } => {
                let rendered: Vec<String> = results
                    .iter()
                    .map(|(tp, result)| format!("{}-{}: {}", tp.topic, tp.partition, brief(result)))
                    .collect();
                format!("offset-delete#{request} ok [{}]", rendered.join(", "))
            }
            Output::OffsetDelete { request, result } => {
                format!("offset-delete#{request} {}", brief(&result))
            }
            Output::Persist {
                partition,
                write,
                records,
                producer,
            } => {
                let rendered: Vec<String> = records.iter().map(|r| self.record(r)).collect();
                self.writes_log.push((write, records.clone()));
                self.writes.push((write, records));
                let producer = producer
                    .map(|(id, epoch)| format!(" txn={id}/{epoch}"))
                    .unwrap_or_default();
                format!(
                    "persist w{write} p{partition}{producer} [{}]",
                    rendered.join(", ")
                )
            }
            Output::TxnOffsetCommit { request, result } => {
                format!("txn-commit#{request} {}", brief(&result))
            }
        }
    }

    fn record(&mut self, record: &OffsetsRecord) -> String {
        match record {
            OffsetsRecord::Offset {
                partition,
                committed,
                ..
            } => match committed {
                Some(c) => format!("{}-{}={}", partition.topic, partition.partition, c.offset),
                None => format!("{}-{}=tombstone", partition.topic, partition.partition),
            },
            OffsetsRecord::Group { snapshot, .. } => match snapshot {
                Some(s) => {
                    let members: Vec<String> = s
                        .members
                        .iter()
                        .map(|m| m.member_id.clone())
                        .collect::<Vec<_>>()
                        .iter()
                        .map(|id| self.alias(id))
                        .collect();
                    format!(
                        "group gen={} members=[{}]",
                        s.generation_id,
                        members.join(",")
                    )
                }
                None => "group tombstone".into(),
            },
        }
    }

    fn member(&self, words: &[&str]) -> MemberRef {
        MemberRef {
            group_id: GROUP.into(),
            generation_id: words[2].parse().expect("generation"),
            member_id: if words[1] == "-" {
                String::new()
            } else {
                self.member_id(words[1])
            },
            group_instance_id: None,
        }
    }

    /// Runs one script line: `join CLIENT [member=mN] [protocols=a,b] [instance=I] [v3]`,
    /// `sync mN GEN [mN=text ...]`, `heartbeat mN GEN`, `leave mN|instance=I`,
    /// `commit mN|- GEN topic-P=OFFSET...`, `advance MS`, `persist`, `persist-reversed`, `fail`,
    /// `delete`, `offset-delete topic-P...`, `state`. A join with `topics=t,u` offers a real
    /// consumer subscription; `type=T` sets its protocol type (default "consumer").
    fn line(&mut self, line: &str) {
        writeln!(self.text, "{line}").unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let request = self.request_next;
        self.request_next += 1;
        let now = self.now;
        match words[0] {
            "join" => {
                let join = self.join_request(&words);
                self.step(Input::Join { request, now, join });
            }
            "sync" => {
                let assignments = words[3..]
                    .iter()
                    .map(|pair| {
                        let (alias, text) = pair.split_once('=').expect("mN=text");
                        (self.member_id(alias), Bytes::from(text.to_string()))
                    })
                    .collect();
                let member = self.member(&words);
                let sync = SyncRequest {
                    group_id: GROUP.into(),
                    generation_id: member.generation_id,
                    member_id: member.member_id,
                    group_instance_id: None,
                    protocol_type: None,
                    protocol_name: None,
                    assignments,
                };
                self.step(Input::Sync { request, now, sync });
            }
            "heartbeat" => {
                let member = self.member(&words);
                self.step(Input::Heartbeat {
                    request,
                    now,
                    member,
                });
            }
            "leave" => {
                let leaving = match words[1].strip_prefix("instance=") {
                    Some(instance) => Leaving {
                        member_id: String::new(),
                        group_instance_id: Some(instance.into()),
                    },
                    None => Leaving {
                        member_id: self.member_id(words[1]),
                        group_instance_id: None,
                    },
                };
                self.step(Input::Leave {
                    request,
                    now,
                    group_id: GROUP.into(),
                    members: vec![leaving],
                });
            }
            "commit" => {
                let offsets = words[3..]
                    .iter()
                    .map(|pair| {
                        let (tp, offset) = pair.split_once('=').expect("topic-P=offset");
                        let (topic, partition) = tp.rsplit_once('-').expect("topic-P");
                        let key = TopicPartition {
                            topic: topic.into(),
                            partition: partition.parse().expect("partition"),
                        };
                        (key, committed(offset.parse().expect("offset")))
                    })
                    .collect();
                let member = self.member(&words);
                let commit = CommitRequest { member, offsets };
                self.step(Input::OffsetCommit {
                    request,
                    now,
                    commit,
                });
            }
            "txn-commit" => {
                let offsets = words[3..]
                    .iter()
                    .map(|pair| {
                        let (tp, offset) = pair.split_once('=').expect("topic-P=offset");
                        let (topic, partition) = tp.rsplit_once('-').expect("topic-P");
                        let key = TopicPartition {
                            topic: topic.into(),
                            partition: partition.parse().expect("partition"),
                        };
                        (key, committed(offset.parse().expect("offset")))
                    })
                    .collect();
                let commit = TxnCommitRequest {
                    group_id: GROUP.into(),
                    producer_id: words[1].parse().expect("producer id"),
                    epoch: words[2].parse().expect("epoch"),
                    generation_id: -1,
                    member_id: String::new(),
                    offsets,
                };
                self.step(Input::TxnOffsetCommit {
                    request,
                    now,
                    commit,
                });
            }
            "marker" => {
                let partition = self.core.partition_for(GROUP);
                self.step(Input::TxnMarker {
                    partition,
                    producer_id: words[1].parse().expect("producer id"),
                    epoch: words[2].parse().expect("epoch"),
                    commit: words[3] == "commit",
                });
            }
            "advance" => {
                self.now += Duration::from_millis(words[1].parse().expect("ms"));
                self.step(Input::Tick { now: self.now });
            }
            "persist" | "persist-reversed" | "fail" => {
                let mut writes: Vec<WriteId> = self.writes.drain(..).map(|(w, _)| w).collect();
                if words[0] == "persist-reversed" {
                    writes.reverse();
                }
                for write in writes {
                    let input = if words[0] == "fail" {
                        Input::PersistFailed { write }
                    } else {
                        Input::Persisted { write }
                    };
                    self.step(input);
                }
            }
            "offset-delete" => {
                let partitions = words[1..]
                    .iter()
                    .map(|tp| {
                        let (topic, partition) = tp.rsplit_once('-').expect("topic-P");
                        TopicPartition {
                            topic: topic.into(),
                            partition: partition.parse().expect("partition"),
                        }
                    })
                    .collect();
                self.step(Input::OffsetDelete {
                    request,
                    now,
                    group_id: GROUP.into(),
                    partitions,
                });
            }
            "delete" => self.step(Input::Delete {
                request,
                now,
                group_ids: vec![GROUP.into()],
            }),
            "state" => self.state(),
            // The group's partition of a replicated `__consumer_offsets` changes hands.
            "unload" | "load" | "activate" => {
                let partition = partition_for(GROUP, self.core.partition_count());
                let mut outputs = Vec::new();
                match words[0] {
                    "unload" => self.core.partition_unload(&mut outputs, partition),
                    "load" => {
                        // The shell's load: replay the partition's log (every write emitted).
                        self.core.partition_load_begin(&mut outputs, partition);
                        for (_, records) in self.writes_log.clone() {
                            records
                                .into_iter()
                                .for_each(|record| self.core.replay(self.now, record));
                        }
                        self.core.replay_finish();
                    }
                    _ => self.core.partition_activate(partition),
                }
                self.writes.clear();
                for output in outputs {
                    let text = self.render(output);
                    writeln!(self.text, "  {text}").unwrap();
                }
            }
            other => panic!("unknown script word {other:?}"),
        }
    }

    fn join_request(&self, words: &[&str]) -> JoinRequest {
        let option = |name: &str| {
            words
                .iter()
                .find_map(|word| word.strip_prefix(name).and_then(|w| w.strip_prefix('=')))
        };
        let subscription = option("topics").map(|topics| {
            let topics: Vec<String> = topics.split(',').map(String::from).collect();
            client::assignor::subscription_encode(&topics)
        });
        let protocols = option("protocols")
            .unwrap_or("range")
            .split(',')
            .map(|name| Protocol {
                name: name.into(),
                metadata: subscription
                    .clone()
                    .unwrap_or_else(|| Bytes::from(format!("{}:{name}", words[1]))),
            })
            .collect();
        JoinRequest {
            group_id: GROUP.into(),
            member_id: option("member").map_or(String::new(), |a| self.member_id(a)),
            group_instance_id: option("instance").map(String::from),
            client_id: words[1].into(),
            client_host: String::new(),
            session_timeout: Duration::from_millis(10_000),
            rebalance_timeout: Duration::from_millis(20_000),
            protocol_type: option("type").unwrap_or("consumer").into(),
            protocols,
            member_id_required: !words.contains(&"v3"),
        }
    }

    fn state(&mut self) {
        let Some(group) = self.core.group(GROUP) else {
            writeln!(self.text, "  no group").unwrap();
            return;
        };
        let description = group.describe();
        let offsets: Vec<String> = group
            .offsets()
            .iter()
            .map(|(tp, c)| format!("{}-{}={}", tp.topic, tp.partition, c.offset))
            .collect();
        let members: Vec<(String, String)> = description
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.clone(),
                    String::from_utf8_lossy(&m.assignment).into(),
                )
            })
            .collect();
        let members: Vec<String> = members
            .iter()
            .map(|(id, assignment)| format!("{}:{assignment}", self.alias(id)))
            .collect();
        writeln!(
            self.text,
            "  {} gen={} protocol={} members=[{}] offsets=[{}]",
            description.state.name(),
            description.generation_id,
            description.protocol_name,
            members.join(","),
            offsets.join(",")
        )
        .unwrap();
    }
}

fn brief<T>(result: &Result<T, GroupError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(error) => {
            let rendered = format!("{error:?}");
            rendered.split([' ', '{']).next().unwrap_or_default().into()
        }
    }
}

fn committed(offset: i64) -> Committed {
    Committed {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 1_000,
    }
}

fn run_with(core: Coordinator, script: &str) -> String {
    let mut harness = Harness::new(core);
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        harness.line(line);
    }
    harness.text
}

fn run(script: &str) -> String {
    run_with(coordinator(config(0), false), script)
}

/// A replicated `__consumer_offsets` partition that leaves this broker takes its groups along:
/// a commit waiting for its write and a join parked in the initial delay are answered
/// NOT_COORDINATOR, and so is every later request; after a load the partition answers
/// COORDINATOR_LOAD_IN_PROGRESS until its replayed state is committed (`activate`), then serves
/// the group again from what the log held (the unacknowledged t-0=7 included: it is in the log).
#[test]
fn a_partition_that_moves_away_answers_not_coordinator_and_loads_before_it_serves() {
    let script = "
        commit - -1 t-0=5
        persist
        commit - -1 t-0=7
        join a v3
        unload
        state
        commit - -1 t-0=8
        load
        commit - -1 t-0=8
        activate
        state
        commit - -1 t-0=8
        persist
        state
    ";
    let core = coordinator(config(3_000), false);
    insta::assert_snapshot!(run_with(core, script), @r"
    commit - -1 t-0=5
      persist w1 p3 [t-0=5]
    persist
      commit#1 ok
    commit - -1 t-0=7
      persist w2 p3 [t-0=7]
    join a v3
    unload
      commit#3 NotCoordinator
      join#4 NotCoordinator
    state
      no group
    commit - -1 t-0=8
      commit#7 NotCoordinator
    load
    commit - -1 t-0=8
      commit#9 CoordinatorLoadInProgress
    activate
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=7]
    commit - -1 t-0=8
      persist w3 p3 [t-0=8]
    persist
      commit#12 ok
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=8]
    ");
}

/// Two consumers form generation 1, as librdkafka does it (v4: learn the id, then join).
const TWO_MEMBERS_STABLE: &str = "
    join a
    join b
    join a member=m1
    join b member=m2
    sync m2 1
    sync m1 1 m1=t-0 m2=t-1
";

#[test]
fn two_members_join_sync_and_become_stable() {
    insta::assert_snapshot!(run(&format!("{TWO_MEMBERS_STABLE}\nstate")), @"
    join a
      join#1 MemberIdRequired m1
    join b
      join#2 MemberIdRequired m2
    join a member=m1
    join b member=m2
      join#3 ok gen=1 member=m1 leader=m1 protocol=range members=[m1,m2]
      join#4 ok gen=1 member=m2 leader=m1 protocol=range members=[]
      persist w1 p3 [group gen=1 members=[m1,m2]]
    sync m2 1
    sync m1 1 m1=t-0 m2=t-1
      sync#6 ok t-0
      sync#5 ok t-1
      persist w2 p3 [group gen=1 members=[m1,m2]]
    state
      Stable gen=1 protocol=range members=[m1:t-0,m2:t-1] offsets=[]
    ");
}

#[test]
fn a_member_leaving_makes_the_rest_rejoin_under_a_new_generation() {
    let script = format!(
        "{TWO_MEMBERS_STABLE}
        leave m1
        heartbeat m2 1
        join b member=m2
        sync m2 2 m2=t-0+t-1
        commit m1 1 t-0=5
        commit m2 1 t-0=5
        commit m2 2 t-0=5"
    );
    insta::assert_snapshot!(run(&script), @"
    join a
      join#1 MemberIdRequired m1
    join b
      join#2 MemberIdRequired m2
    join a member=m1
    join b member=m2
      join#3 ok gen=1 member=m1 leader=m1 protocol=range members=[m1,m2]
      join#4 ok gen=1 member=m2 leader=m1 protocol=range members=[]
      persist w1 p3 [group gen=1 members=[m1,m2]]
    sync m2 1
    sync m1 1 m1=t-0 m2=t-1
      sync#6 ok t-0
      sync#5 ok t-1
      persist w2 p3 [group gen=1 members=[m1,m2]]
    leave m1
      leave#7 [ok]
      persist w3 p3 [group gen=1 members=[m2]]
    heartbeat m2 1
      heartbeat#8 RebalanceInProgress
    join b member=m2
      join#9 ok gen=2 member=m2 leader=m2 protocol=range members=[m2]
      persist w4 p3 [group gen=2 members=[m2]]
    sync m2 2 m2=t-0+t-1
      sync#10 ok t-0+t-1
      persist w5 p3 [group gen=2 members=[m2]]
    commit m1 1 t-0=5
      commit#11 UnknownMemberId
    commit m2 1 t-0=5
      commit#12 IllegalGeneration
    commit m2 2 t-0=5
      persist w6 p3 [t-0=5]
    ");
}

#[test]
fn sessions_expire_and_rebalances_time_out() {
    let script = format!(
        "{TWO_MEMBERS_STABLE}
        advance 6000
        heartbeat m1 1
        advance 6000
        heartbeat m1 1
        join a member=m1
        advance 25000
        state"
    );
    insta::assert_snapshot!(run(&script), @"
    join a
      join#1 MemberIdRequired m1
    join b
      join#2 MemberIdRequired m2
    join a member=m1
    join b member=m2
      join#3 ok gen=1 member=m1 leader=m1 protocol=range members=[m1,m2]
      join#4 ok gen=1 member=m2 leader=m1 protocol=range members=[]
      persist w1 p3 [group gen=1 members=[m1,m2]]
    sync m2 1
    sync m1 1 m1=t-0 m2=t-1
      sync#6 ok t-0
      sync#5 ok t-1
      persist w2 p3 [group gen=1 members=[m1,m2]]
    advance 6000
    heartbeat m1 1
      heartbeat#8 ok
    advance 6000
      persist w3 p3 [group gen=1 members=[m1]]
    heartbeat m1 1
      heartbeat#10 RebalanceInProgress
    join a member=m1
      join#11 ok gen=2 member=m1 leader=m1 protocol=range members=[m1]
      persist w4 p3 [group gen=2 members=[m1]]
    advance 25000
      persist w5 p3 [group gen=3 members=[]]
    state
      Empty gen=3 protocol= members=[] offsets=[]
    ");
}

#[test]
fn commits_are_acknowledged_and_visible_only_once_durable_and_in_log_order() {
    let script = "
        commit - -1 t-0=5
        state
        commit - -1 t-0=9
        persist-reversed
        state
        commit - -1 t-1=3
        fail
        state
        join a v3
        commit - -1 t-0=1
        delete
    ";
    insta::assert_snapshot!(run(script), @r"
    commit - -1 t-0=5
      persist w1 p3 [t-0=5]
    state
      Empty gen=0 protocol= members=[] offsets=[]
    commit - -1 t-0=9
      persist w2 p3 [t-0=9]
    persist-reversed
      commit#1 ok
      commit#3 ok
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=9]
    commit - -1 t-1=3
      persist w3 p3 [t-1=3]
    fail
      commit#6 CoordinatorNotAvailable
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=9]
    join a v3
      join#9 ok gen=1 member=m1 leader=m1 protocol=range members=[m1]
      persist w4 p3 [group gen=1 members=[m1]]
    commit - -1 t-0=1
      commit#10 UnknownMemberId
    delete
      delete#11 [g: NonEmptyGroup]
    ");
}

#[test]
fn an_empty_group_is_deleted_with_tombstones_and_unknown_groups_are_not_found() {
    let script = "
        commit - -1 t-0=5 t-1=6
        persist
        delete
        persist
        state
        delete
    ";
    insta::assert_snapshot!(run(script), @r"
    commit - -1 t-0=5 t-1=6
      persist w1 p3 [t-0=5, t-1=6]
    persist
      commit#1 ok
    delete
      persist w2 p3 [t-0=tombstone, t-1=tombstone, group tombstone]
    persist
      delete#3 [g: ok]
    state
      no group
    delete
      delete#6 [g: GroupIdNotFound]
    ");
}

#[test]
fn offset_delete_drops_offsets_once_durable_and_spares_subscribed_topics() {
    let script = "
        offset-delete t-0
        commit - -1 t-0=5 t-1=6 u-0=7
        persist
        offset-delete t-0 x-0
        state
        persist
        state
        join a topics=t v3
        offset-delete t-1 u-0
        persist
        state
        offset-delete t-1
    ";
    insta::assert_snapshot!(run(script), @"
    offset-delete t-0
      offset-delete#1 GroupIdNotFound
    commit - -1 t-0=5 t-1=6 u-0=7
      persist w1 p3 [t-0=5, t-1=6, u-0=7]
    persist
      commit#2 ok
    offset-delete t-0 x-0
      persist w2 p3 [t-0=tombstone]
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=5,t-1=6,u-0=7]
    persist
      offset-delete#4 ok [t-0: ok, x-0: ok]
    state
      Empty gen=0 protocol= members=[] offsets=[t-1=6,u-0=7]
    join a topics=t v3
      join#8 ok gen=1 member=m1 leader=m1 protocol=range members=[m1]
      persist w3 p3 [group gen=1 members=[m1]]
    offset-delete t-1 u-0
      persist w4 p3 [u-0=tombstone]
    persist
      offset-delete#9 ok [t-1: GroupSubscribedToTopic, u-0: ok]
    state
      CompletingRebalance gen=1 protocol=range members=[m1:] offsets=[t-1=6]
    offset-delete t-1
      offset-delete#12 ok [t-1: GroupSubscribedToTopic]
    ");
}

#[test]
fn offset_delete_of_an_active_group_of_another_protocol_type_is_refused() {
    let script = "
        commit - -1 t-0=5
        persist
        join a type=connect v3
        offset-delete t-0
        state
    ";
    insta::assert_snapshot!(run(script), @"
    commit - -1 t-0=5
      persist w1 p3 [t-0=5]
    persist
      commit#1 ok
    join a type=connect v3
      join#3 ok gen=1 member=m1 leader=m1 protocol=range members=[m1]
      persist w2 p3 [group gen=1 members=[m1]]
    offset-delete t-0
      offset-delete#4 NonEmptyGroup
    state
      CompletingRebalance gen=1 protocol=range members=[m1:] offsets=[t-0=5]
    ");
}

#[test]
fn a_failed_offset_delete_write_keeps_the_offsets_and_replay_honours_tombstones() {
    let mut harness = Harness::new(coordinator(config(0), false));
    for line in [
        "commit - -1 t-0=5 t-1=6",
        "persist",
        "offset-delete t-0",
        "fail",
    ] {
        harness.line(line);
    }
    let offsets = |core: &Coordinator| -> Vec<String> {
        core.group(GROUP)
            .map(|group| {
                group
                    .offsets()
                    .iter()
                    .map(|(tp, c)| format!("{}-{}={}", tp.topic, tp.partition, c.offset))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        offsets(&harness.core),
        ["t-0=5", "t-1=6"],
        "{}",
        harness.text
    );
    for line in ["offset-delete t-0 t-1", "persist"] {
        harness.line(line);
    }
    assert!(harness.core.group(GROUP).is_none(), "{}", harness.text);
    let mut replayed = coordinator(config(0), false);
    for (_, records) in &harness.writes_log {
        for record in records {
            replayed.replay(Duration::ZERO, record.clone());
        }
    }
    replayed.replay_finish();
    assert!(
        replayed.group(GROUP).is_none(),
        "the tombstones win at replay"
    );
}

#[test]
fn subscriptions_decode_within_their_bytes() {
    let topics = vec!["t".to_string(), "orders".to_string()];
    let encoded = client::assignor::subscription_encode(&topics);
    assert_eq!(records::subscription_topics(&encoded), Ok(topics));
    // Two billion topics claimed in eight bytes: refused before anything is allocated.
    let hostile = Bytes::from_static(&[0, 1, 0x7f, 0xff, 0xff, 0xff, 0, 1]);
    assert_eq!(
        records::subscription_topics(&hostile),
        Err(records::RecordError::Truncated)
    );
    assert!(records::subscription_topics(&Bytes::from_static(b"a")).is_err());
}

#[test]
fn protocols_are_chosen_among_those_every_member_supports() {
    let script = "
        join a protocols=range,roundrobin v3
        join b protocols=roundrobin,range v3
        join c protocols=sticky v3
        join a member=m1 protocols=range,roundrobin v3
    ";
    insta::assert_snapshot!(run(script), @r"
    join a protocols=range,roundrobin v3
      join#1 ok gen=1 member=m1 leader=m1 protocol=range members=[m1]
      persist w1 p3 [group gen=1 members=[m1]]
    join b protocols=roundrobin,range v3
    join c protocols=sticky v3
      join#3 InconsistentGroupProtocol
    join a member=m1 protocols=range,roundrobin v3
      join#4 ok gen=2 member=m1 leader=m1 protocol=range members=[m1,m2]
      join#2 ok gen=2 member=m2 leader=m1 protocol=range members=[]
      persist w2 p3 [group gen=2 members=[m1,m2]]
    ");
}

#[test]
fn a_static_member_rejoining_keeps_its_assignment_and_fences_its_old_id() {
    let script = "
        join a instance=ia
        join b instance=ib
        join a member=m1 instance=ia
        sync m2 2
        sync m1 2 m1=t-0 m2=t-1
        join b instance=ib
        sync m3 2
        heartbeat m2 2
        state
    ";
    insta::assert_snapshot!(run(script), @"
    join a instance=ia
      join#1 ok gen=1 member=m1 leader=m1 protocol=range members=[m1]
      persist w1 p3 [group gen=1 members=[m1]]
    join b instance=ib
    join a member=m1 instance=ia
      join#3 ok gen=2 member=m1 leader=m1 protocol=range members=[m1,m2]
      join#2 ok gen=2 member=m2 leader=m1 protocol=range members=[]
      persist w2 p3 [group gen=2 members=[m1,m2]]
    sync m2 2
    sync m1 2 m1=t-0 m2=t-1
      sync#5 ok t-0
      sync#4 ok t-1
      persist w3 p3 [group gen=2 members=[m1,m2]]
    join b instance=ib
      join#6 ok gen=2 member=m3 leader=m1 protocol=range members=[]
      persist w4 p3 [group gen=2 members=[m1,m3]]
    sync m3 2
      sync#7 ok t-1
    heartbeat m2 2
      heartbeat#8 UnknownMemberId
    state
      Stable gen=2 protocol=range members=[m1:t-0,m3:t-1] offsets=[]
    ");
}

#[test]
fn the_initial_delay_gathers_members_into_one_generation() {
    let script = "
        join a v3
        advance 1000
        join b v3
        advance 2500
        state
    ";
    insta::assert_snapshot!(run_with(coordinator(config(3_000), false), script), @r"
    join a v3
    advance 1000
    join b v3
    advance 2500
      join#1 ok gen=1 member=m1 leader=m1 protocol=range members=[m1,m2]
      join#3 ok gen=1 member=m2 leader=m1 protocol=range members=[]
      persist w1 p3 [group gen=1 members=[m1,m2]]
    state
      CompletingRebalance gen=1 protocol=range members=[m1:,m2:] offsets=[]
    ");
}

/// Single-groups seed 779: a member joined under the initial delay while another was still to
/// come back with the id MEMBER_ID_REQUIRED gave it. Once the delay passed the join still
/// waited for that member, but the delay's end stayed the next deadline, so the timer ticked at
/// the same instant forever. Now the rebalance waits for the pending member's deadline.
#[test]
fn a_join_waiting_for_a_pending_member_after_the_initial_delay_does_not_spin() {
    let script = "
        join a
        join b
        join a member=m1
        advance 3500
        state
        advance 10000
        state
    ";
    insta::assert_snapshot!(run_with(coordinator(config(3_000), false), script), @"
    join a
      join#1 MemberIdRequired m1
    join b
      join#2 MemberIdRequired m2
    join a member=m1
    advance 3500
    state
      PreparingRebalance gen=0 protocol= members=[m1:] offsets=[]
    advance 10000
      join#3 ok gen=1 member=m1 leader=m1 protocol=range members=[m1]
      persist w1 p3 [group gen=1 members=[m1]]
    state
      CompletingRebalance gen=1 protocol=range members=[m1:] offsets=[]
    ");
}

/// The planted bug `commit-stale-generation`: the same commit is refused by the clean build.
#[test]
fn the_planted_bug_accepts_a_commit_from_a_stale_generation() {
    let script = format!(
        "{TWO_MEMBERS_STABLE}
        leave m2
        join a member=m1
        commit m1 1 t-0=1"
    );
    let clean = run_with(coordinator(config(0), false), &script);
    let planted = run_with(coordinator(config(0), true), &script);
    let last = |text: &str| text.lines().last().unwrap_or_default().trim().to_string();
    assert_eq!(last(&clean), "commit#9 IllegalGeneration", "{clean}");
    assert_eq!(last(&planted), "persist w5 p3 [t-0=1]", "{planted}");
}

#[test]
fn groups_map_to_partitions_as_kafka_does() {
    // Java: "abc".hashCode() == 96354; "".hashCode() == 0; a hash of i32::MIN maps to 0.
    assert_eq!(partition_for("abc", 50), 96354 % 50);
    assert_eq!(partition_for("", 50), 0);
    assert_eq!(
        partition_for("polygenelubricants", 50),
        0,
        "hashCode is i32::MIN"
    );
    assert!((0..16).contains(&partition_for("my-group", 16)));
}

#[test]
fn records_round_trip_and_replay_restores_groups_and_offsets() {
    let mut harness = Harness::new(coordinator(config(0), false));
    for line in TWO_MEMBERS_STABLE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        harness.line(line);
    }
    harness.line("commit m1 1 t-0=7");
    harness.line("persist");
    let mut replayed = coordinator(config(0), false);
    for (_, records) in &harness.writes_log {
        for record in records {
            let (key, value) = record_encode(record);
            let decoded = record_decode(Some(&key), value.as_ref()).expect("decodes");
            assert_eq!(
                record_encode(&decoded),
                (key, value),
                "a byte-exact round trip"
            );
            replayed.replay(Duration::ZERO, decoded);
        }
    }
    replayed.replay_finish();
    let original = harness.core.describe(GROUP).expect("group");
    let restored = replayed.describe(GROUP).expect("group");
    assert_eq!(restored.state, GroupState::Stable);
    assert_eq!(restored.generation_id, original.generation_id);
    assert_eq!(restored.members, original.members);
    assert_eq!(
        replayed.group(GROUP).unwrap().offsets(),
        harness.core.group(GROUP).unwrap().offsets()
    );
    assert_eq!(
        record_decode(None, None),
        Err(records::RecordError::NoKey),
        "bad records are errors"
    );
    let truncated = Bytes::from_static(&[0, 1, 0, 5, b'g']);
    assert_eq!(
        record_decode(Some(&truncated), None),
        Err(records::RecordError::Truncated)
    );
}

// ---- Property test: random request sequences against the protocol's invariants. ----

#[derive(Debug, Clone)]
enum Op {
    /// Client `client` joins: with its last member id if `known`, else as a new member.
    Join {
        client: usize,
        known: bool,
        v4: bool,
    },
    /// Sync with the client's last generation (or a stale one), the leader assigning.
    Sync {
        client: usize,
        stale: bool,
    },
    Heartbeat {
        client: usize,
    },
    Leave {
        client: usize,
    },
    Commit {
        client: usize,
        stale: bool,
    },
    Advance {
        ms: u64,
    },
    /// Completes the `index`-th pending write (modulo), or fails it.
    Persist {
        index: usize,
        fail: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..4usize;
    prop_oneof![
        3 => (client.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(client, known, v4)| Op::Join { client, known, v4 }),
        3 => (client.clone(), any::<bool>()).prop_map(|(client, stale)| Op::Sync { client, stale }),
        2 => client.clone().prop_map(|client| Op::Heartbeat { client }),
        1 => client.clone().prop_map(|client| Op::Leave { client }),
        2 => (client, any::<bool>()).prop_map(|(client, stale)| Op::Commit { client, stale }),
        2 => (0..12_000u64).prop_map(|ms| Op::Advance { ms }),
        2 => (any::<usize>(), prop::bool::weighted(0.1))
            .prop_map(|(index, fail)| Op::Persist { index, fail }),
    ]
}

/// What the clients know and what the checker remembers across steps.
#[derive(Default)]
struct Model {
    member_ids: [String; 4],
    generations: [i32; 4],
    /// generation -> leader, from successful JoinGroup responses.
    leaders: BTreeMap<i32, String>,
    generation_max_seen: i32,
    /// Requests sent and not yet answered, with the generation a Sync or commit named.
    open: BTreeMap<RequestId, Option<i32>>,
    writes: Vec<WriteId>,
}

struct Property {
    core: Coordinator,
    now: Duration,
    request_next: RequestId,
    model: Model,
}

impl Property {
    fn apply(&mut self, op: &Op) {
        let request = self.request_next;
        self.request_next += 1;
        let now = self.now;
        let input = match *op {
            Op::Join { client, known, v4 } => {
                let member_id = if known {
                    self.model.member_ids[client].clone()
                } else {
                    String::new()
                };
                let join = JoinRequest {
                    group_id: GROUP.into(),
                    member_id,
                    group_instance_id: None,
                    client_id: format!("c{client}"),
                    client_host: String::new(),
                    session_timeout: Duration::from_millis(10_000),
                    rebalance_timeout: Duration::from_millis(15_000),
                    protocol_type: "consumer".into(),
                    protocols: vec![Protocol {
                        name: "range".into(),
                        metadata: Bytes::new(),
                    }],
                    member_id_required: v4,
                };
                self.model.open.insert(request, None);
                Input::Join { request, now, join }
            }
            Op::Sync { client, stale } => {
                let generation_id = self.model.generations[client] - i32::from(stale);
                let member_id = self.model.member_ids[client].clone();
                let assignments = self
                    .model
                    .member_ids
                    .iter()
                    .filter(|id| !id.is_empty())
                    .map(|id| (id.clone(), Bytes::from(format!("{generation_id}"))))
                    .collect();
                self.model.open.insert(request, Some(generation_id));
                let sync = SyncRequest {
                    group_id: GROUP.into(),
                    generation_id,
                    member_id,
                    group_instance_id: None,
                    protocol_type: None,
                    protocol_name: None,
                    assignments,
                };
                Input::Sync { request, now, sync }
            }
            Op::Heartbeat { client } => {
                self.model.open.insert(request, None);
                Input::Heartbeat {
                    request,
                    now,
                    member: self.member_ref(client, false),
                }
            }
            Op::Leave { client } => {
                self.model.open.insert(request, None);
                Input::Leave {
                    request,
                    now,
                    group_id: GROUP.into(),
                    members: vec![Leaving {
                        member_id: self.model.member_ids[client].clone(),
                        group_instance_id: None,
                    }],
                }
            }
            Op::Commit { client, stale } => {
                let member = self.member_ref(client, stale);
                self.model.open.insert(request, Some(member.generation_id));
                let offsets = vec![(
                    TopicPartition {
                        topic: "t".into(),
                        partition: 0,
                    },
                    committed(i64::from(request as u32)),
                )];
                Input::OffsetCommit {
                    request,
                    now,
                    commit: CommitRequest { member, offsets },
                }
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(ms);
                Input::Tick { now: self.now }
            }
            Op::Persist { index, fail } => {
                if self.model.writes.is_empty() {
                    return;
                }
                let write = self.model.writes.remove(index % self.model.writes.len());
                if fail {
                    Input::PersistFailed { write }
                } else {
                    Input::Persisted { write }
                }
            }
        };
        self.step(input);
    }

    fn member_ref(&self, client: usize, stale: bool) -> MemberRef {
        MemberRef {
            group_id: GROUP.into(),
            generation_id: self.model.generations[client] - i32::from(stale),
            member_id: self.model.member_ids[client].clone(),
            group_instance_id: None,
        }
    }

    fn step(&mut self, input: Input) {
        let generation_before = self.core.group(GROUP).map_or(0, |g| g.generation_id());
        let commit_check = match &input {
            Input::OffsetCommit { commit, .. } => Some((
                commit.member.generation_id,
                self.core
                    .group(GROUP)
                    .map(|g| (g.state(), g.generation_id())),
            )),
            _ => None,
        };
        let mut outputs = Vec::new();
        self.core.step(&mut outputs, input);
        self.core.invariants_check();
        let group = self.core.group(GROUP);
        let generation = group.map_or(0, |g| g.generation_id());
        // The group's generation strictly increases: it never goes back, even when it empties.
        assert!(generation >= generation_before || group.is_none());
        for output in outputs {
            self.check_output(output, generation, commit_check);
        }
    }

    fn check_output(
        &mut self,
        output: Output,
        generation: i32,
        commit_check: Option<(i32, Option<(GroupState, i32)>)>,
    ) {
        let request = match &output {
            Output::Persist { write, records, .. } => {
                self.model.writes.push(*write);
                let is_commit = records
                    .iter()
                    .any(|r| matches!(r, OffsetsRecord::Offset { .. }));
                if let (true, Some((asked, state))) = (is_commit, &commit_check) {
                    // Accepted commits come from the current generation, or from a simple
                    // consumer while the group has no members.
                    let accepted = match state {
                        None => *asked < 0,
                        Some((state, current)) => {
                            *asked == *current || (*asked < 0 && *state == GroupState::Empty)
                        }
                    };
                    assert!(
                        accepted,
                        "commit of generation {asked} accepted in {state:?}"
                    );
                }
                return;
            }
            Output::Join { request, .. }
            | Output::Sync { request, .. }
            | Output::Heartbeat { request, .. }
            | Output::Leave { request, .. }
            | Output::OffsetCommit { request, .. }
            | Output::TxnOffsetCommit { request, .. }
            | Output::Delete { request, .. }
            | Output::OffsetDelete { request, .. } => *request,
        };
        let asked = self
            .model
            .open
            .remove(&request)
            .unwrap_or_else(|| panic!("request {request} answered twice or never asked"));
        match output {
            Output::Join {
                result: Ok(joined), ..
            } => {
                let leader = self
                    .model
                    .leaders
                    .entry(joined.generation_id)
                    .or_insert(joined.leader.clone());
                assert_eq!(*leader, joined.leader, "one leader per generation");
                assert!(joined.generation_id >= self.model.generation_max_seen);
                self.model.generation_max_seen = joined.generation_id;
                let client = self.client_of(&joined.member_id);
                self.model.member_ids[client] = joined.member_id;
                self.model.generations[client] = joined.generation_id;
            }
            Output::Join {
                result: Err(GroupError::MemberIdRequired { member_id }),
                ..
            } => {
                let client = self.client_of(&member_id);
                self.model.member_ids[client] = member_id;
            }
            Output::Sync { result: Ok(_), .. } => {
                // No member gets an assignment from a stale generation.
                assert_eq!(
                    asked,
                    Some(generation),
                    "sync answered for another generation"
                );
            }
            _ => {}
        }
    }

    /// Which client a member id belongs to: ids start with the client id "cN-".
    fn client_of(&self, member_id: &str) -> usize {
        member_id[1..2]
            .parse()
            .expect("member ids start with the client id")
    }

    /// Time passes far beyond every timeout and every write completes: nothing stays unanswered.
    fn quiesce(&mut self) {
        for _ in 0..4 {
            self.now += Duration::from_secs(60);
            self.step(Input::Tick { now: self.now });
        }
        while let Some(write) = self.model.writes.pop() {
            self.step(Input::Persisted { write });
        }
        let open: BTreeSet<RequestId> = self.model.open.keys().copied().collect();
        assert!(open.is_empty(), "requests never answered: {open:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn random_requests_keep_the_protocol_invariants(
        ops in prop::collection::vec(op(), 1..120),
        initial_delay in prop::bool::ANY,
    ) {
        let delay_ms = if initial_delay { 3_000 } else { 0 };
        let mut property = Property {
            core: coordinator(config(delay_ms), false),
            now: Duration::ZERO,
            request_next: 1,
            model: Model::default(),
        };
        for op in &ops {
            property.apply(op);
        }
        property.quiesce();
    }
}

#[test]
fn transactional_offsets_wait_for_their_marker() {
    let script = "
        commit - -1 t-0=1
        persist
        txn-commit 7 0 t-0=5 t-1=6
        persist
        state
        marker 7 0 commit
        state
        txn-commit 7 0 t-0=9
        persist
        marker 7 1 abort
        state
        txn-commit 7 0 t-0=10
    ";
    insta::assert_snapshot!(run(script), @r"
    commit - -1 t-0=1
      persist w1 p3 [t-0=1]
    persist
      commit#1 ok
    txn-commit 7 0 t-0=5 t-1=6
      persist w2 p3 txn=7/0 [t-0=5, t-1=6]
    persist
      txn-commit#3 ok
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=1]
    marker 7 0 commit
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=5,t-1=6]
    txn-commit 7 0 t-0=9
      persist w3 p3 txn=7/0 [t-0=9]
    persist
      txn-commit#8 ok
    marker 7 1 abort
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=5,t-1=6]
    txn-commit 7 0 t-0=10
      txn-commit#12 ProducerFenced
    ");
}

#[test]
fn a_marker_that_overtakes_the_offsets_fsync_still_decides_them() {
    let script = "
        txn-commit 7 0 t-0=5
        marker 7 0 commit
        persist
        state
        txn-commit 8 0 t-1=6
        marker 8 1 abort
        persist
        state
    ";
    insta::assert_snapshot!(run(script), @r"
    txn-commit 7 0 t-0=5
      persist w1 p3 txn=7/0 [t-0=5]
    marker 7 0 commit
    persist
      txn-commit#1 ok
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=5]
    txn-commit 8 0 t-1=6
      persist w2 p3 txn=8/0 [t-1=6]
    marker 8 1 abort
    persist
      txn-commit#5 ok
    state
      Empty gen=0 protocol= members=[] offsets=[t-0=5]
    ");
}

#[test]
fn replay_honours_transaction_markers() {
    let mut core = coordinator(config(0), false);
    let offset = |offset| OffsetsRecord::Offset {
        group_id: GROUP.into(),
        partition: TopicPartition {
            topic: "t".into(),
            partition: 0,
        },
        committed: Some(committed(offset)),
    };
    let partition = core.partition_for(GROUP);
    core.replay(Duration::ZERO, offset(1));
    core.replay_txn(7, offset(5));
    core.replay_txn(8, offset(6));
    core.replay_marker(partition, 7, 0, true);
    core.replay_marker(partition, 8, 0, false);
    core.replay_finish();
    let key = TopicPartition {
        topic: "t".into(),
        partition: 0,
    };
    assert_eq!(core.group(GROUP).unwrap().offsets()[&key].offset, 5);
    assert!(!core.txn_offsets_pending(GROUP, &key));
    core.replay_txn(9, offset(8));
    assert!(core.txn_offsets_pending(GROUP, &key));
    assert_eq!(core.group(GROUP).unwrap().offsets()[&key].offset, 5);
}

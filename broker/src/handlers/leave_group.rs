//! LeaveGroup: one member (v0-2) or a batch of them by member or instance id (v3+, KIP-345).
//! v0-2 report the member's error at the top; v3+ per member.

use crate::broker::Broker;
use crate::group::{GroupError, Input, Leaving, Output, GROUP_NAME_BYTES_MAX};
use crate::handlers::errors::{group_error_code, NONE};
use crate::handlers::groups::{group_id_check, reply_when, str_bytes};
use crate::handlers::Reply;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: LeaveGroupRequest, version: i16) -> Reply {
    let group_id = match group_id_check(request.group_id.as_str()) {
        Ok(group_id) => group_id,
        Err(error) => return Reply::Now(Box::new(top_level(error.code()))),
    };
    let members: Vec<Leaving> = if version >= 3 {
        request
            .members
            .iter()
            .map(|member| Leaving {
                member_id: member.member_id.as_str().to_string(),
                group_instance_id: member.group_instance_id.as_ref().map(|id| id.to_string()),
            })
            .collect()
    } else {
        vec![Leaving {
            member_id: request.member_id.as_str().to_string(),
            group_instance_id: None,
        }]
    };
    let too_long = |name: &str| name.len() > GROUP_NAME_BYTES_MAX;
    let oversized = members.len() > broker.groups().read(|core| core.config().group_size_max)
        || members.iter().any(|m| {
            too_long(&m.member_id) || m.group_instance_id.as_deref().is_some_and(too_long)
        });
    if oversized {
        return Reply::Now(Box::new(top_level(ResponseError::InvalidRequest.code())));
    }
    let identities = members.clone();
    let receiver = broker.groups().submit(|request, now| Input::Leave {
        request,
        now,
        group_id,
        members,
    });
    reply_when(receiver, move |output| match output {
        Some(Output::Leave { results, .. }) => response(&identities, results, version),
        _ => top_level(ResponseError::CoordinatorNotAvailable.code()),
    })
}

fn response(
    identities: &[Leaving],
    results: Vec<Result<(), GroupError>>,
    version: i16,
) -> ResponseKind {
    let code = |result: &Result<(), GroupError>| match result {
        Ok(()) => NONE,
        Err(error) => group_error_code(error).code(),
    };
    if version < 3 {
        return top_level(results.first().map_or(NONE, code));
    }
    let members = identities
        .iter()
        .zip(&results)
        .map(|(identity, result)| {
            MemberResponse::default()
                .with_member_id(str_bytes(identity.member_id.clone()))
                .with_group_instance_id(identity.group_instance_id.clone().map(str_bytes))
                .with_error_code(code(result))
        })
        .collect();
    ResponseKind::LeaveGroup(
        LeaveGroupResponse::default()
            .with_error_code(NONE)
            .with_members(members),
    )
}

fn top_level(error_code: i16) -> ResponseKind {
    ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(error_code))
}

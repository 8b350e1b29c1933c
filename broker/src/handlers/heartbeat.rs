//! Heartbeat (v0-4): keeps a member's session alive and tells it when to rejoin
//! (REBALANCE_IN_PROGRESS) or that it is gone (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION).

use crate::broker::Broker;
use crate::group::{Input, MemberRef, Output};
use crate::handlers::errors::{group_error_code, NONE};
use crate::handlers::groups::{group_id_check, name_check, name_optional_check, reply_when};
use crate::handlers::Reply;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: HeartbeatRequest, _version: i16) -> Reply {
    let member = match member_ref(&request) {
        Ok(member) => member,
        Err(error) => return Reply::Now(Box::new(response(error.code()))),
    };
    let receiver = broker.groups().submit(|request, now| Input::Heartbeat {
        request,
        now,
        member,
    });
    reply_when(receiver, |output| match output {
        Some(Output::Heartbeat { result: Ok(()), .. }) => response(NONE),
        Some(Output::Heartbeat {
            result: Err(error), ..
        }) => response(group_error_code(&error).code()),
        _ => response(ResponseError::CoordinatorNotAvailable.code()),
    })
}

fn member_ref(request: &HeartbeatRequest) -> Result<MemberRef, ResponseError> {
    Ok(MemberRef {
        group_id: group_id_check(request.group_id.as_str())?,
        generation_id: request.generation_id,
        member_id: name_check(request.member_id.as_str(), ResponseError::UnknownMemberId)?,
        group_instance_id: name_optional_check(
            request.group_instance_id.as_ref(),
            ResponseError::InvalidRequest,
        )?,
    })
}

fn response(error_code: i16) -> ResponseKind {
    ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(error_code))
}

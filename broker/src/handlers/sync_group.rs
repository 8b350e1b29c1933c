//! SyncGroup (v0-5): the leader brings the assignment; every member waits for its share. v5 names
//! the protocol type and name, which must match the group's.

use crate::broker::Broker;
use crate::group::{
    GroupError, Input, Output, SyncRequest, SyncResponse, MEMBER_METADATA_BYTES_MAX,
};
use crate::handlers::errors::{group_error_code, NONE};
use crate::handlers::groups::{
    group_id_check, name_check, name_optional_check, reply_when, str_bytes,
};
use crate::handlers::Reply;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: SyncGroupRequest, version: i16) -> Reply {
    let sync = match sync_request(broker, request) {
        Ok(sync) => sync,
        Err(error) => return Reply::Now(Box::new(error_response(error))),
    };
    let receiver = broker
        .groups()
        .submit(|request, now| Input::Sync { request, now, sync });
    reply_when(receiver, move |output| match output {
        Some(Output::Sync { result, .. }) => response(result, version),
        _ => error_response(ResponseError::CoordinatorNotAvailable),
    })
}

fn sync_request(broker: &Broker, request: SyncGroupRequest) -> Result<SyncRequest, ResponseError> {
    let group_id = group_id_check(request.group_id.as_str())?;
    let member_id = name_check(request.member_id.as_str(), ResponseError::UnknownMemberId)?;
    let invalid = ResponseError::InvalidRequest;
    if request.assignments.len() > broker.groups().read(|core| core.config().group_size_max) {
        return Err(invalid);
    }
    let assignments = request
        .assignments
        .into_iter()
        .map(|assignment| {
            if assignment.assignment.len() > MEMBER_METADATA_BYTES_MAX {
                return Err(invalid);
            }
            let member_id = name_check(assignment.member_id.as_str(), invalid)?;
            Ok((member_id, assignment.assignment))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SyncRequest {
        group_id,
        generation_id: request.generation_id,
        member_id,
        group_instance_id: name_optional_check(request.group_instance_id.as_ref(), invalid)?,
        protocol_type: name_optional_check(request.protocol_type.as_ref(), invalid)?,
        protocol_name: name_optional_check(request.protocol_name.as_ref(), invalid)?,
        assignments,
    })
}

fn response(result: Result<SyncResponse, GroupError>, version: i16) -> ResponseKind {
    let synced = match result {
        Ok(synced) => synced,
        Err(error) => return error_response(group_error_code(&error)),
    };
    let mut response = SyncGroupResponse::default()
        .with_error_code(NONE)
        .with_assignment(synced.assignment);
    if version >= 5 {
        response = response
            .with_protocol_type(synced.protocol_type.map(str_bytes))
            .with_protocol_name(synced.protocol_name.map(str_bytes));
    }
    ResponseKind::SyncGroup(response)
}

fn error_response(error: ResponseError) -> ResponseKind {
    ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(error.code()))
}

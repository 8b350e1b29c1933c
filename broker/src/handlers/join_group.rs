//! JoinGroup (v0-9): validated here, decided by the coordinator, answered when the rebalance
//! barrier falls. v0 has no rebalance timeout (the session timeout stands in, as in Kafka);
//! v4+ get MEMBER_ID_REQUIRED on a first join (KIP-394); v5+ carry static instance ids.

use crate::broker::Broker;
use crate::group::{
    GroupError, Input, JoinRequest, JoinResponse, Output, Protocol, MEMBER_METADATA_BYTES_MAX,
    MEMBER_PROTOCOLS_MAX,
};
use crate::handlers::errors::{group_error_code, NONE};
use crate::handlers::groups::{
    group_id_check, name_check, name_optional_check, reply_when, str_bytes,
};
use crate::handlers::Reply;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use std::time::Duration;
use wire::ResponseKind;

pub fn handle(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> Reply {
    let member_id = request.member_id.as_str().to_string();
    let join = match join_request(request, version, client_id) {
        Ok(join) => join,
        Err(error) => {
            let response = error_response(error, &member_id, version);
            return Reply::Now(Box::new(response));
        }
    };
    let receiver = broker
        .groups()
        .submit(|request, now| Input::Join { request, now, join });
    reply_when(receiver, move |output| match output {
        Some(Output::Join { result, .. }) => response(result, &member_id, version),
        _ => error_response(ResponseError::CoordinatorNotAvailable, &member_id, version),
    })
}

fn join_request(
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> Result<JoinRequest, ResponseError> {
    let group_id = group_id_check(request.group_id.as_str())?;
    let member_id = name_check(request.member_id.as_str(), ResponseError::UnknownMemberId)?;
    let group_instance_id = name_optional_check(
        request.group_instance_id.as_ref(),
        ResponseError::InvalidRequest,
    )?;
    let protocol_type = name_check(
        request.protocol_type.as_str(),
        ResponseError::InvalidRequest,
    )?;
    if request.protocols.len() > MEMBER_PROTOCOLS_MAX {
        return Err(ResponseError::InvalidRequest);
    }
    let protocols = request
        .protocols
        .into_iter()
        .map(|protocol| {
            if protocol.metadata.len() > MEMBER_METADATA_BYTES_MAX {
                return Err(ResponseError::InvalidRequest);
            }
            Ok(Protocol {
                name: name_check(protocol.name.as_str(), ResponseError::InvalidRequest)?,
                metadata: protocol.metadata,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let millis = |ms: i32| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let session_timeout = millis(request.session_timeout_ms);
    let rebalance_timeout = if version >= 1 {
        millis(request.rebalance_timeout_ms)
    } else {
        session_timeout
    };
    Ok(JoinRequest {
        group_id,
        member_id,
        group_instance_id,
        client_id: name_check(client_id, ResponseError::InvalidRequest)?,
        // The connection's peer is not passed to handlers; Kafka would report it here.
        client_host: String::new(),
        session_timeout,
        rebalance_timeout,
        protocol_type,
        protocols,
        member_id_required: version >= 4,
    })
}

fn response(
    result: Result<JoinResponse, GroupError>,
    member_id: &str,
    version: i16,
) -> ResponseKind {
    let joined = match result {
        Ok(joined) => joined,
        Err(GroupError::MemberIdRequired { member_id }) => {
            return error_response(ResponseError::MemberIdRequired, &member_id, version)
        }
        Err(error) => return error_response(group_error_code(&error), member_id, version),
    };
    let members = joined
        .members
        .into_iter()
        .map(|member| {
            let response = JoinGroupResponseMember::default()
                .with_member_id(str_bytes(member.member_id))
                .with_metadata(member.metadata);
            if version >= 5 {
                response.with_group_instance_id(member.group_instance_id.map(str_bytes))
            } else {
                response
            }
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(NONE)
        .with_generation_id(joined.generation_id)
        .with_protocol_name(Some(str_bytes(joined.protocol_name.unwrap_or_default())))
        .with_leader(str_bytes(joined.leader))
        .with_member_id(str_bytes(joined.member_id))
        .with_members(members);
    if version >= 7 {
        response = response.with_protocol_type(joined.protocol_type.map(str_bytes));
    }
    ResponseKind::JoinGroup(response)
}

/// Before v7 the protocol name is not nullable: errors carry an empty one.
fn error_response(error: ResponseError, member_id: &str, version: i16) -> ResponseKind {
    let protocol_name = if version >= 7 {
        None
    } else {
        Some(str_bytes(""))
    };
    ResponseKind::JoinGroup(
        JoinGroupResponse::default()
            .with_error_code(error.code())
            .with_generation_id(-1)
            .with_protocol_name(protocol_name)
            .with_member_id(str_bytes(member_id)),
    )
}

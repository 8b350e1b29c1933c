//! DescribeGroups (v0-6): state, protocol and members with their metadata and assignment. An
//! unknown group is reported as Dead with no error (Kafka before v6), or GROUP_ID_NOT_FOUND (v6).

use crate::broker::Broker;
use crate::group::{GroupDescription, GroupState};
use crate::handlers::errors::group_error_code;
use crate::handlers::errors::NONE;
use crate::handlers::groups::{group_id_check, str_bytes};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: DescribeGroupsRequest, version: i16) -> ResponseKind {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| describe(broker, group_id, version))
        .collect();
    ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups))
}

fn describe(broker: &Broker, group_id: GroupId, version: i16) -> DescribedGroup {
    let described = DescribedGroup::default().with_group_id(group_id.clone());
    if let Err(error) = group_id_check(group_id.as_str()) {
        return described
            .with_error_code(error.code())
            .with_group_state(str_bytes(GroupState::Dead.name()));
    }
    let described_or = broker.groups().read(|core| {
        core.serves(group_id.as_str())
            .map(|()| core.describe(group_id.as_str()))
    });
    let description = match described_or {
        Ok(description) => description,
        Err(error) => {
            return described
                .with_error_code(group_error_code(&error).code())
                .with_group_state(str_bytes(GroupState::Dead.name()))
        }
    };
    let Some(description) = description else {
        let described = described.with_group_state(str_bytes(GroupState::Dead.name()));
        if version >= 6 {
            return described
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(str_bytes(format!(
                    "group {} not found",
                    group_id.as_str()
                ))));
        }
        return described.with_error_code(NONE);
    };
    members_describe(described, description, version)
}

fn members_describe(
    described: DescribedGroup,
    description: GroupDescription,
    version: i16,
) -> DescribedGroup {
    let members = description
        .members
        .into_iter()
        .map(|member| {
            let described = DescribedGroupMember::default()
                .with_member_id(str_bytes(member.member_id))
                .with_client_id(str_bytes(member.client_id))
                .with_client_host(str_bytes(member.client_host))
                .with_member_metadata(member.metadata)
                .with_member_assignment(member.assignment);
            if version >= 4 {
                described.with_group_instance_id(member.group_instance_id.map(str_bytes))
            } else {
                described
            }
        })
        .collect();
    described
        .with_error_code(NONE)
        .with_group_state(str_bytes(description.state.name()))
        .with_protocol_type(str_bytes(description.protocol_type))
        .with_protocol_data(str_bytes(description.protocol_name))
        .with_members(members)
}

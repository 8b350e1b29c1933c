//! ListGroups (v0-5): every group this node coordinates, filtered by state (v4+) and type (v5+;
//! every group here is "classic").

use crate::broker::Broker;
use crate::handlers::errors::NONE;
use crate::handlers::groups::str_bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use std::sync::Arc;
use wire::ResponseKind;

/// KIP-848's name for the protocol this coordinator implements.
const GROUP_TYPE_CLASSIC: &str = "classic";

pub fn handle(broker: &Arc<Broker>, request: ListGroupsRequest, version: i16) -> ResponseKind {
    let state_wanted = |state: &str| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|s| s.as_str().eq_ignore_ascii_case(state))
    };
    let type_wanted = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case(GROUP_TYPE_CLASSIC));
    let groups: Vec<ListedGroup> = broker.groups().read(|core| {
        core.groups()
            .map(|group| (group.describe(), group.state().name()))
            .filter(|(_, state)| type_wanted && state_wanted(state))
            .map(|(description, state)| {
                let mut listed = ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(description.group_id)))
                    .with_protocol_type(str_bytes(description.protocol_type));
                if version >= 4 {
                    listed = listed.with_group_state(str_bytes(state));
                }
                if version >= 5 {
                    listed = listed.with_group_type(str_bytes(GROUP_TYPE_CLASSIC));
                }
                listed
            })
            .collect()
    });
    ResponseKind::ListGroups(
        ListGroupsResponse::default()
            .with_error_code(NONE)
            .with_groups(groups),
    )
}

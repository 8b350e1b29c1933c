//! DeleteGroups (v0-2): an empty group's offsets and metadata are tombstoned in
//! `__consumer_offsets`; answered once the tombstones are durable.

use crate::broker::Broker;
use crate::group::{Input, Output};
use crate::handlers::errors::{group_error_code, NONE};
use crate::handlers::groups::{group_id_check, reply_when};
use crate::handlers::Reply;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId};
use kafka_protocol::ResponseError;
use std::sync::Arc;
use wire::ResponseKind;

pub fn handle(broker: &Arc<Broker>, request: DeleteGroupsRequest, _version: i16) -> Reply {
    let mut invalid = Vec::new();
    let mut group_ids = Vec::new();
    for group_id in request.groups_names {
        match group_id_check(group_id.as_str()) {
            Ok(valid) => group_ids.push(valid),
            Err(error) => invalid.push(result(group_id, error.code())),
        }
    }
    let receiver = broker.groups().submit(|request, now| Input::Delete {
        request,
        now,
        group_ids: group_ids.clone(),
    });
    reply_when(receiver, move |output| {
        let mut results = invalid;
        match output {
            Some(Output::Delete { results: done, .. }) => {
                results.extend(done.into_iter().map(|(group_id, outcome)| {
                    let code =
                        outcome.map_or_else(|error| group_error_code(&error).code(), |()| NONE);
                    result(GroupId(group_id.into()), code)
                }));
            }
            _ => results.extend(group_ids.into_iter().map(|group_id| {
                result(
                    GroupId(group_id.into()),
                    ResponseError::CoordinatorNotAvailable.code(),
                )
            })),
        }
        ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
    })
}

fn result(group_id: GroupId, error_code: i16) -> DeletableGroupResult {
    DeletableGroupResult::default()
        .with_group_id(group_id)
        .with_error_code(error_code)
}

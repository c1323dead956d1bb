//! What a status event changes: the state, its "until", and the member
//! who set it.

use super::Stamper;
use crate::clock::LocalTime;
use crate::record::{Change, Opener, StatusChange, StatusValue};
use crate::report::Report;
use crate::state::Origin;
use crate::state::snapshot::Model;
use crate::store::{Batch, Person, Visibility};

/// Who opened the room when the automation opens it: the first member in
/// by keypad who is still there; nobody for any other change.
pub(super) fn automation_opener(
    model: &Model,
    value: StatusValue,
    origin: &Origin,
) -> Option<Opener> {
    if *origin != Origin::Automation || value != StatusValue::Open {
        return None;
    }
    model
        .keypad_order
        .iter()
        .find_map(|id| Some(opener(*id, model.roster.keypad.get(id)?)))
}

/// Member `id` as a status change records them, read in `batch`; none when
/// there is no such member (deleted meanwhile) or the lookup failed.
pub(super) fn member(batch: &Batch<'_>, id: i64) -> Option<Opener> {
    match batch.members([id]) {
        Ok(found) => found.get(&id).map(|p| opener(id, p)),
        Err(e) => {
            tracing::error!("status: looking up member {id}: {}", Report(&e));
            None
        }
    }
}

/// A status change, unless the room is already in that state.
pub(super) fn status_change(
    model: &Model,
    value: StatusValue,
    origin: Origin,
    person: Option<Opener>,
    stamper: &mut Stamper,
) -> Result<(Change, Origin), &'static str> {
    let current = model.status.as_ref().map(|s| s.value.state_str());
    if current == Some(value.state_str()) {
        return Err("the status is already that");
    }
    let change = StatusChange {
        timestamp: stamper.next(),
        value,
        modified_by: origin.modified_by(),
        device: origin.device().cloned(),
        until: None,
        person,
    };
    Ok((Change::Status(change), origin))
}

/// Member `id`, as a status change records them.
fn opener(id: i64, person: &Person) -> Opener {
    Opener {
        id,
        name: person.name.clone(),
        named: person.visibility == Visibility::Named,
    }
}

/// The current status with `at` as its "open until", unless the room is
/// closed or it is so already.
pub(super) fn until_change(
    model: &Model,
    at: Option<chrono::NaiveTime>,
    origin: Origin,
    now: LocalTime,
) -> Result<(Change, Origin), &'static str> {
    let Some(status) = model.status.as_ref().filter(|s| s.value.lets_members_in()) else {
        return Err("the room is closed");
    };
    let until = at.map(|time| now.next_at(time));
    if status.until == until {
        return Err("the room is open until then already");
    }
    let change = StatusChange {
        until,
        ..status.clone()
    };
    Ok((Change::Until(change), origin))
}

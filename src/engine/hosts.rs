//! What a finished stage tells the host's record: the engine's half of the inventory. The
//! store writes the change in the stage's own commit.

use crate::clipboard::Clipboard;
use crate::inventory;
use crate::model::RunKind;
use crate::store::{HostChange, Phase, Run};

/// The change a stage that left `after` (its run's clipboard was `before`) makes to the
/// run's host's record, if any: a provider section that now names another resource or none,
/// or a destroy run that began. Actions change no record.
pub fn change_of(run: &Run, before: &Clipboard, after: &Clipboard) -> Option<HostChange> {
    if run.kind == RunKind::Action {
        return None;
    }
    let modules = inventory::tracked_modules(&run.initial_clipboard, &[before, after]);
    let resources = inventory::section_changes(&modules, before, after);
    let destroying = run.kind == RunKind::Destroy && run.phase == Phase::Main;
    if resources.is_empty() && !destroying {
        return None;
    }
    let now = inventory::resources_of(&modules, after);
    let design = inventory::design_as_deployed(&run.initial_clipboard);
    Some(HostChange {
        host: run.host.clone(),
        run: run.id,
        requester: run.requester.clone(),
        environment: run.environment.clone(),
        provider: inventory::placement(&design).0,
        design_ref: run.design_ref.clone(),
        addresses: inventory::addresses(after, &now),
        resources,
        destroying,
    })
}

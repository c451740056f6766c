//! The inventory's side of the bot: commands about an existing host act on its record
//! (SPEC 6a). A design read again may change what a run builds, never which host, which
//! resources or which environment it acts on; `hosts` and `host` show the records.

use serde_json::Value;

use super::*;
use crate::chat::render::{host_line, id_text, resources_text};
use crate::inventory;
use crate::store::HostRecord;

/// What a command about an existing host runs on: its record (if jarvis made it) and the
/// design content the run starts from.
pub(super) struct Subject {
    pub host: String,
    pub record: Option<HostRecord>,
    pub reference: String,
    pub document: Clipboard,
    pub provider: String,
    /// A design's explicit `pipeline:` key.
    pub pipeline: Option<String>,
    /// Said after the queued line ("its design is gone: …").
    pub note: Option<String>,
}

impl Bot {
    /// The record of `host` that stands for a machine (not destroyed), if any.
    pub(super) async fn standing_record(&self, host: &str) -> Result<Option<HostRecord>, BotError> {
        Ok(self
            .engine
            .store()
            .host(host)
            .await?
            .filter(HostRecord::exists))
    }

    /// Resolves `host` for `kind` (redeploy, destroy, an action, a promotion): through its
    /// record when jarvis has one, else the design it was last run from (or its LDAP entry).
    /// The design read now must still name `host`; a destroy whose design is gone runs on
    /// the design as deployed.
    pub(super) async fn subject(&self, host: &str, kind: RunKind) -> Result<Subject, BotError> {
        let record = self.standing_record(host).await?;
        let reference = match record.as_ref().and_then(|r| r.design_ref.clone()) {
            Some(reference) => reference,
            None => self.design_of_host(host).await?,
        };
        let loaded = self.designs.load(&reference).await;
        let design = match loaded {
            Ok(design) => design,
            Err(e) => {
                let deployed = record.as_ref().and_then(|r| r.design.clone());
                return match (kind, deployed) {
                    (RunKind::Destroy, Some(document)) => {
                        tracing::info!(%host, error = %e, "the design does not load; destroying from the record");
                        Ok(Subject {
                            host: host.to_string(),
                            provider: inventory::placement(&document).0.unwrap_or_default(),
                            pipeline: document
                                .get("pipeline")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                            document,
                            reference,
                            record,
                            note: Some(format!(
                                "its design does not load ({}), so the design as deployed is used",
                                crate::text::one_line(&e.to_string(), 120)
                            )),
                        })
                    }
                    _ => Err(BotError::User(e.to_string())),
                };
            }
        };
        if design.hostname != host {
            return Err(BotError::User(format!(
                "the design {} now names host {}, not {host}; nothing was queued (a design never moves a command to another host)",
                crate::text::one_line(&reference, 100),
                design.hostname
            )));
        }
        if let Some(record) = &record {
            check_same_fqdn(host, record, &design.document)?;
        }
        Ok(Subject {
            host: host.to_string(),
            record,
            reference,
            provider: design.provider,
            pipeline: design.pipeline,
            document: design.document,
            note: None,
        })
    }

    /// `rollback HOST [to #RUN]`: the design content of the host's last good deploy or
    /// redeploy before the current one (or of run `to`), redeployed on the host's record
    /// through its redeploy pipeline. Content already in place is left alone.
    pub(super) async fn rollback(
        &self,
        asker: &Asker,
        host: &str,
        to: Option<i64>,
        at: &Placing<'_>,
    ) -> Result<Reply, BotError> {
        let store = self.engine.store();
        let Some(record) = self.standing_record(host).await? else {
            return Err(BotError::NotFound(format!(
                "jarvis has no record of {host}, so there is nothing to roll back"
            )));
        };
        let good = |r: &Run| {
            r.host == host
                && r.state == crate::store::RunState::Succeeded
                && matches!(r.kind, RunKind::Deploy | RunKind::Redeploy)
                && !r.initial_clipboard.is_empty()
        };
        let target = match to {
            Some(id) => match store.run(id).await? {
                Some(run) if good(&run) => run,
                Some(_) => {
                    return Err(BotError::User(format!(
                        "run #{id} is no successful deploy or redeploy of {host} with its design kept"
                    )));
                }
                None => return Err(BotError::NotFound(format!("there is no run #{id}"))),
            },
            None => {
                let runs = store
                    .runs_filtered(&crate::store::RunFilter {
                        host: Some(host.to_string()),
                        state: Some(crate::store::RunState::Succeeded),
                        before: record.last_good_run,
                        limit: 200,
                        ..Default::default()
                    })
                    .await?;
                let current = record.design_digest.as_deref();
                match runs
                    .into_iter()
                    .filter(good)
                    .find(|r| r.design_digest.as_deref() != current)
                {
                    Some(run) => run,
                    None => {
                        return Err(BotError::NotFound(format!(
                            "{host} has no earlier good run with other design content to roll back to"
                        )));
                    }
                }
            }
        };
        let document = inventory::design_as_deployed(&target.initial_clipboard);
        if record.design_digest.as_deref() == Some(&*self.settings.environments.digest(&document)) {
            return Ok(Reply::line(format!(
                "{host} already runs the design content of #{}; nothing to roll back",
                target.id
            )));
        }
        let (provider, _) = inventory::placement(&document);
        let subject = Subject {
            host: host.to_string(),
            pipeline: document
                .get("pipeline")
                .and_then(Value::as_str)
                .map(str::to_string),
            provider: provider.unwrap_or_default(),
            document,
            reference: target.design_ref.clone(),
            record: Some(record),
            note: Some(format!(
                "rolling back to the design content of #{}",
                target.id
            )),
        };
        self.queue_subject(asker, RunKind::Redeploy, subject, None, at)
            .await
    }

    /// What `plan` says of a design whose host jarvis already made: what the record holds,
    /// and what a redeploy would do about a change of provider or datacenter.
    pub(super) fn plan_for_record(
        &self,
        record: &HostRecord,
        now: &Clipboard,
        provider: &str,
        explicit: Option<&str>,
    ) -> String {
        let recorded = format!(
            "{} is recorded ({}, {}): {}",
            record.name,
            record.environment.as_deref().unwrap_or("no environment"),
            record.provider.as_deref().unwrap_or("no provider"),
            resources_text(&record.resources)
        );
        let redeploy = pipeline::select(
            &self.settings.pipelines,
            RunKind::Redeploy,
            provider,
            explicit,
        );
        let what = match redeploy {
            Ok((name, p)) => match placement_refusal(record, now, name, &p.stages) {
                Some(refusal) => format!("a redeploy is refused: {refusal}"),
                None => match move_note(record, now) {
                    Some(note) => format!("a redeploy ({name}) moves it: {note}"),
                    None => format!("a redeploy ({name}) keeps its place"),
                },
            },
            Err(e) => format!("no redeploy: {e}"),
        };
        format!("{recorded}; {what}")
    }

    /// `hosts [ENV|group:G|PATTERN]`: one line per record that stands.
    pub(super) async fn hosts_reply(&self, filter: Option<&str>) -> Result<Reply, BotError> {
        let records = self.engine.store().hosts().await?;
        let group = filter.and_then(|f| f.strip_prefix("group:"));
        let members: Option<Vec<String>> = match group {
            Some(g) => match self.settings.groups.get(g) {
                Some(config) => Some(config.hosts.clone()),
                None => {
                    return Err(BotError::NotFound(format!(
                        "there is no group '{}'",
                        crate::text::one_line(g, 40)
                    )));
                }
            },
            None => None,
        };
        let is_env = filter.is_some_and(|f| self.settings.environments.get(f).is_some());
        let lines: Vec<String> = records
            .iter()
            .filter(|r| r.exists())
            .filter(|r| match (filter, &members) {
                (_, Some(m)) => m.iter().any(|h| h == &r.name),
                (Some(f), None) if is_env => r.environment.as_deref() == Some(f),
                (Some(f), None) => matches_pattern(f, &r.name),
                (None, None) => true,
            })
            .map(host_line)
            .collect();
        if lines.is_empty() {
            return Ok(Reply::line(match filter {
                Some(f) => format!("no recorded host matches {}", crate::text::one_line(f, 64)),
                None => "jarvis has made no hosts yet".into(),
            }));
        }
        Ok(Reply::lines(lines))
    }

    /// `host HOST`: the whole record, and the host-key pins.
    pub(super) async fn host_reply(&self, host: &str) -> Result<Reply, BotError> {
        let store = self.engine.store();
        let Some(record) = store.host(host).await? else {
            return Err(BotError::NotFound(format!(
                "jarvis has no record of {host}; say 'hosts' for those it made"
            )));
        };
        let mut lines = vec![host_line(&record)];
        lines.push(format!("resources: {}", resources_text(&record.resources)));
        lines.push(format!(
            "design: {} (digest {}){}",
            record
                .design_ref
                .as_deref()
                .map(|r| crate::text::one_line(r, 100))
                .unwrap_or_else(|| "unknown".into()),
            record
                .design_digest
                .as_deref()
                .map(|d| d.chars().take(12).collect::<String>())
                .unwrap_or_else(|| "none".into()),
            if record.reconstructed {
                "; this record was rebuilt from stored runs, not written by one"
            } else {
                ""
            }
        ));
        let groups: Vec<&str> = self
            .settings
            .groups
            .iter()
            .filter(|(_, g)| g.hosts.iter().any(|h| h == host))
            .map(|(name, _)| name.as_str())
            .collect();
        let pins = store.host_keys(host).await?;
        lines.push(format!(
            "made by {} at {} (run {}); groups: {}; pins: {}",
            record.created_by,
            render::utc_time(record.created_at),
            record
                .created_run
                .map(|r| format!("#{r}"))
                .unwrap_or_else(|| "unknown".into()),
            if groups.is_empty() {
                "none".into()
            } else {
                groups.join(", ")
            },
            if pins.is_empty() {
                "none".into()
            } else {
                pins.iter()
                    .map(|p| format!("{} {}", p.key.algorithm, p.key.fingerprint))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
        Ok(Reply::lines(lines))
    }
}

/// The design content a run of a recorded host starts from: the design, plus the record's
/// resources at the top level (where the provider's worker finds them, in the region they
/// were made in) and `jarvis.record` (added by [`initial_clipboard`]'s caller).
pub(super) fn with_record(document: &Clipboard, record: Option<&HostRecord>) -> Clipboard {
    let mut clipboard = document.clone();
    if let Some(record) = record {
        for (module, section) in &record.resources {
            clipboard.insert(module.clone(), section.clone());
        }
    }
    clipboard
}

/// Puts `jarvis.record` on a run's initial clipboard.
pub(super) fn mark_record(clipboard: &mut Clipboard, record: Option<&HostRecord>) {
    let Some(record) = record else { return };
    if let Some(Value::Object(jarvis)) = clipboard.get_mut("jarvis") {
        jarvis.insert(
            inventory::RECORD_KEY.into(),
            inventory::record_mapping(
                record.environment.as_deref(),
                &record.resources,
                record.reconstructed,
            ),
        );
    }
}

/// A design read again must name the same fully qualified name as the one deployed.
fn check_same_fqdn(host: &str, record: &HostRecord, now: &Clipboard) -> Result<(), BotError> {
    let fqdn = |d: &Clipboard| {
        crate::clipboard::get_path(d, "instance.fqdn")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let (was, is) = (record.design.as_ref().and_then(fqdn), fqdn(now));
    match (was, is) {
        (Some(was), Some(is)) if was != is => Err(BotError::User(format!(
            "{host} was deployed as {was} and its design now says {is}; nothing was queued (a design never moves a command to another host)"
        ))),
        _ => Ok(()),
    }
}

/// Why a redeploy of `record` on `now` (the design read again) cannot move the host as its
/// design now asks, if it cannot: another provider always needs a destroy first; another
/// datacenter needs a pipeline that deletes the recorded resources where they are.
pub(super) fn placement_refusal(
    record: &HostRecord,
    now: &Clipboard,
    pipeline: &str,
    stages: &[crate::engine::pipeline::StageConfig],
) -> Option<String> {
    let before = record.design.as_ref().map(inventory::placement)?;
    let after = inventory::placement(now);
    let host = &record.name;
    let same = |a: &Option<String>, b: &Option<String>| {
        a.as_deref().map(str::to_ascii_lowercase) == b.as_deref().map(str::to_ascii_lowercase)
    };
    if !same(&before.0, &after.0) {
        return Some(format!(
            "{host} was made on {} and its design now says {}; a redeploy does not move a host between providers: say 'destroy {host}', then deploy it again",
            before.0.as_deref().unwrap_or("no provider"),
            after.0.as_deref().unwrap_or("no provider"),
        ));
    }
    if same(&before.1, &after.1) {
        return None;
    }
    let undeleted: Vec<String> = record
        .resources
        .iter()
        .filter(|(module, _)| !stages.iter().any(|s| s.task == format!("{module}:delete")))
        .map(|(module, section)| format!("{module} {}", id_text(section)))
        .collect();
    if undeleted.is_empty() {
        return None;
    }
    Some(format!(
        "{host} is recorded in {} and its design now says {}, but the {pipeline} pipeline does not delete {}: say 'destroy {host}', then deploy it again",
        before.1.as_deref().unwrap_or("no datacenter"),
        after.1.as_deref().unwrap_or("no datacenter"),
        undeleted.join(", ")
    ))
}

/// What a redeploy that moves a host says beside its queued line.
pub(super) fn move_note(record: &HostRecord, now: &Clipboard) -> Option<String> {
    let before = record.design.as_ref().map(inventory::placement)?;
    let after = inventory::placement(now);
    if before.1.as_deref().map(str::to_ascii_lowercase)
        == after.1.as_deref().map(str::to_ascii_lowercase)
    {
        return None;
    }
    Some(format!(
        "it moves from {} to {}: {} is removed where it is",
        before.1.as_deref().unwrap_or("no datacenter"),
        after.1.as_deref().unwrap_or("no datacenter"),
        resources_text(&record.resources)
    ))
}

/// A `hosts` filter that is neither an environment nor a group: a name, with `*` for any
/// run of characters.
fn matches_pattern(pattern: &str, name: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return name == pattern;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(after) = rest.strip_prefix(part) else {
                return false;
            };
            rest = after;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_with_stars() {
        assert!(matches_pattern("web*", "web1"));
        assert!(matches_pattern("*1", "web1"));
        assert!(matches_pattern("w*b*", "web1"));
        assert!(matches_pattern("web1", "web1"));
        assert!(!matches_pattern("db*", "web1"));
        assert!(!matches_pattern("web", "web1"));
    }
}

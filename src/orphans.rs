//! `jarvis hosts [--orphans]`: the records, and what each configured provider holds under
//! jarvis's tags that no record names. A provider is asked through its worker's `inventory`
//! task (the built-in `ec2` and `linode` have one), run as the engine runs a worker: its
//! granted environment and nothing else of jarvis's. Orphans are listed with how to remove
//! them; jarvis never deletes one on its own.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::config::Settings;
use crate::engine::BuiltinWorkers;
use crate::store::{HostRecord, Store};

/// How long a provider's inventory may take.
const INVENTORY_LIMIT: Duration = Duration::from_secs(120);

/// A resource a provider holds under jarvis's tags.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub module: String,
    pub id: String,
    pub region: Option<String>,
    pub host: Option<String>,
    pub run: Option<String>,
}

impl Held {
    /// One line: what it is and how to remove it.
    pub fn line(&self) -> String {
        let region = self.region.as_deref().unwrap_or("?");
        let tagged = match (&self.host, &self.run) {
            (Some(h), Some(r)) => format!("tagged for {h} by run #{r}"),
            (Some(h), None) => format!("tagged for {h}"),
            _ => "tagged by jarvis".into(),
        };
        let how = match self.module.as_str() {
            "ec2" => format!(
                "aws ec2 terminate-instances --region {region} --instance-ids {}",
                self.id
            ),
            "linode" => format!("linode-cli linodes delete {}", self.id),
            other => format!("remove it with {other}'s own tools"),
        };
        crate::text::one_line(
            &format!(
                "{} {} in {region}, {tagged}: no record holds it; to remove it: {how}",
                self.module, self.id
            ),
            400,
        )
    }
}

/// The resources `held` that none of `records` names (by module and id).
pub fn orphans(held: &[Held], records: &[HostRecord]) -> Vec<Held> {
    let known: BTreeSet<(String, String)> = records
        .iter()
        .flat_map(|r| {
            r.resources.iter().map(|(module, section)| {
                (
                    module.clone(),
                    crate::chat::render::id_text(section)
                        .trim_matches('"')
                        .to_string(),
                )
            })
        })
        .collect();
    held.iter()
        .filter(|h| !known.contains(&(h.module.clone(), h.id.clone())))
        .cloned()
        .collect()
}

/// The modules that have an inventory: the built-in providers the configuration grants.
fn providers(settings: &Settings) -> Vec<String> {
    ["ec2", "linode"]
        .into_iter()
        .filter(|m| settings.workers.modules.contains_key(*m))
        .map(str::to_string)
        .collect()
}

/// The program that answers `MODULE inventory`: a worker folder's first, else the built-in.
fn program(
    settings: &Settings,
    builtin: Option<&BuiltinWorkers>,
    module: &str,
) -> Option<(PathBuf, Vec<String>)> {
    for folder in &settings.workers.folders {
        let path = folder.join(module);
        if path.is_file() {
            return Some((path, vec!["inventory".into()]));
        }
    }
    builtin.map(|b| {
        (
            b.exe.clone(),
            vec!["worker".into(), module.into(), "inventory".into()],
        )
    })
}

/// Asks `module`'s worker for what it holds; one line saying why not, on failure.
async fn inventory(
    settings: &Settings,
    builtin: Option<&BuiltinWorkers>,
    module: &str,
) -> Result<Vec<Held>, String> {
    let (exe, args) = program(settings, builtin, module)
        .ok_or_else(|| format!("{module}: no worker answers for it"))?;
    let home = std::env::temp_dir();
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.args(&args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        .env("JARVIS_TASK", format!("{module}:inventory"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(grant) = settings.workers.modules.get(module) {
        for (k, v) in &grant.env {
            cmd.env(k, v.expose());
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{module}: cannot start {}: {e}", exe.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"{}\n").await;
    }
    let out = tokio::time::timeout(INVENTORY_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| format!("{module}: no answer within {}s", INVENTORY_LIMIT.as_secs()))?
        .map_err(|e| format!("{module}: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .or_else(|| stderr.lines().last())
            .unwrap_or("no reason given");
        return Err(format!("{module}: {}", crate::text::one_line(reason, 200)));
    }
    let clipboard = crate::clipboard::parse_worker_output(&out.stdout)
        .map_err(|e| format!("{module}: {e}"))?
        .unwrap_or_default();
    let text = |item: &Value, key: &str| match item.get(key) {
        Some(Value::String(s)) => Some(crate::text::one_line(s, 100)),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(clipboard
        .get("inventory")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| {
            Some(Held {
                module: module.to_string(),
                id: text(item, "id")?,
                region: text(item, "region"),
                host: text(item, "host"),
                run: text(item, "run"),
            })
        })
        .collect())
}

/// `jarvis hosts`: one line per record; with `orphans`, one per orphan of each configured
/// provider instead. Returns the lines and whether every provider answered.
pub async fn hosts_command(
    settings: &Settings,
    store: &Store,
    builtin: Option<&BuiltinWorkers>,
    with_orphans: bool,
) -> anyhow::Result<(Vec<String>, bool)> {
    let records = store.hosts().await?;
    if !with_orphans {
        let lines = records.iter().map(crate::chat::render::host_line).collect();
        return Ok((lines, true));
    }
    let mut lines = Vec::new();
    let mut all_answered = true;
    let modules = providers(settings);
    if modules.is_empty() {
        lines.push("no provider with an inventory (ec2, linode) is configured".into());
    }
    for module in modules {
        match inventory(settings, builtin, &module).await {
            Ok(held) => {
                let found = orphans(&held, &records);
                if found.is_empty() {
                    lines.push(format!(
                        "{module}: no orphans among {} tagged resources",
                        held.len()
                    ));
                }
                lines.extend(found.iter().map(Held::line));
            }
            Err(e) => {
                all_answered = false;
                lines.push(format!("{e} (could not list)"));
            }
        }
    }
    Ok((lines, all_answered))
}

/// The `orphans` chat command's lister: the same look as `jarvis hosts --orphans`.
pub fn lister(
    settings: Settings,
    builtin: Option<BuiltinWorkers>,
    store: Store,
) -> crate::chat::bot::OrphanLister {
    let shared = std::sync::Arc::new((settings, builtin, store));
    crate::chat::bot::OrphanLister(std::sync::Arc::new(move || {
        let shared = shared.clone();
        Box::pin(async move {
            let (settings, builtin, store) = &*shared;
            hosts_command(settings, store, builtin.as_ref(), true)
                .await
                .map(|(lines, _)| lines)
                .map_err(|e| {
                    tracing::error!(error = %e, "orphans: the look failed");
                    "the look for orphans failed; see jarvis's log".to_string()
                })
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_no_record_names_is_an_orphan() {
        let held = |id: &str| Held {
            module: "ec2".into(),
            id: id.into(),
            region: Some("eu-west-1".into()),
            host: Some("web9".into()),
            run: Some("12".into()),
        };
        let mut record = HostRecord {
            name: "web1".into(),
            state: crate::store::HostState::Present,
            provider: None,
            resources: Default::default(),
            addresses: vec![],
            environment: None,
            design_ref: None,
            design_digest: None,
            design: None,
            created_by: "x".into(),
            created_at: 0,
            created_run: None,
            updated_at: 0,
            last_run: None,
            last_good_run: None,
            reconstructed: false,
        };
        record
            .resources
            .insert("ec2".into(), serde_json::json!({"id": "i-1"}));
        let found = orphans(&[held("i-1"), held("i-2")], &[record]);
        assert_eq!(found, vec![held("i-2")]);
        assert_eq!(
            found[0].line(),
            "ec2 i-2 in eu-west-1, tagged for web9 by run #12: no record holds it; to remove it: aws ec2 terminate-instances --region eu-west-1 --instance-ids i-2"
        );
    }
}

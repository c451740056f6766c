//! `linode`: Linode instances through API v4.
//!
//! Environment (granted by the configuration): `LINODE_TOKEN` (required, never logged),
//! `LINODE_API` (default `https://api.linode.com/v4`).
//!
//! The instance is found by `linode.id`, else by its label: `linode.label`, else
//! `instance.hostname`. Settings on the clipboard: `linode.regions`, `linode.types`,
//! `linode.images` (tables from the design's words to Linode ids, see `tables`),
//! `linode.tags` (extra tags), `linode.authorized_keys` (extra keys). Stage parameters
//! (`with:` in the configuration): `wait_seconds` (default 900), `poll_ms` (default 5000).
//!
//! The root password is a secret: it never goes on the clipboard (and one on the clipboard,
//! such as a design's `instance.root_password`, is not used). A task that makes one hands it
//! to jarvis as the run's secret `root_password` (through `JARVIS_SECRETS`, before it is used)
//! and a later stage of the run gets it back as `JARVIS_SECRET_ROOT_PASSWORD`.
//!
//! Wherever an instance is known to have a public IPv4, the tasks write where the new host
//! answers for SSH as `jarvis.target: {host: ADDRESS, port: 22}` (what `ssh` reaches).
//!
//! Tasks:
//! - `password`: makes a fresh random root password and hands it to jarvis, unless the run
//!   has one already. Running it before `deploy` keeps the password across a crash in
//!   `deploy`.
//! - `deploy`: creates the instance from `instance.datacenter`, `instance.size`,
//!   `instance.guestid`, the run's root password (else a new one, handed to jarvis first) and
//!   the keys in `instance.sshpubkey`, labelled as above and tagged `jarvis` and
//!   `jarvis-run-RUN`. Run again (after a crash or a retry) it finds the instance this run
//!   made instead of making a second; an instance with that label that this run did not make
//!   fails the task. Writes `linode.id`, `linode.label`, `linode.status`, `linode.region`,
//!   `linode.type`, `linode.image` (and the addresses and `jarvis.target` when known).
//! - `wait`: polls until the instance is `running` (booting it once if it stays `offline`),
//!   then writes `linode.ipv4`, `linode.ipv6` (without prefix length), `instance.ip` and
//!   `jarvis.target`.
//! - `shutdown`: shuts the instance down and waits until it is `offline`; no instance is
//!   nothing to do.
//! - `delete`: deletes the instance and removes `linode.id` and its addresses from the
//!   clipboard; no instance is nothing to do.
//! - `rebuild`: rebuilds the instance from `instance.guestid` with the run's root password
//!   (else a new one, handed to jarvis first) and the keys as `deploy` takes them; `wait`
//!   follows it.
//! - `inventory`: lists the instances tagged `jarvis`, as `inventory: [{module: linode, id,
//!   region, host: LABEL, run, state}]` (what `jarvis hosts --orphans` compares with its
//!   records).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::protocol::{self, Failure, Mapping, TaskResult};

mod api;
mod tables;

use api::Api;
use tables::Table;

const TASKS: &[&str] = &[
    "password",
    "deploy",
    "wait",
    "shutdown",
    "delete",
    "rebuild",
    "inventory",
];
const INSTANCES: &str = "/linode/instances";

pub fn run(task: &str) -> ExitCode {
    match task {
        "password" => protocol::run_task(password),
        "deploy" => async_task(deploy),
        "wait" => async_task(wait),
        "shutdown" => async_task(shutdown),
        "delete" => async_task(delete),
        "rebuild" => async_task(rebuild),
        "inventory" => async_task(inventory),
        other => crate::unknown_task("linode", other, TASKS),
    }
}

fn async_task<F>(body: fn(Api, Mapping) -> F) -> ExitCode
where
    F: Future<Output = TaskResult>,
{
    protocol::run_task(|clipboard| {
        let api = Api::from_env()?;
        protocol::block_on(body(api, clipboard))?
    })
}

fn password(_clipboard: Mapping) -> TaskResult {
    if known_password().is_some() {
        protocol::log("linode: the run has a root password already; keeping it");
        return Ok(None);
    }
    made_password()?;
    protocol::log("linode: made a root password and handed it to jarvis");
    Ok(None)
}

/// The run's root password, else a new one handed to jarvis before anything uses it.
fn run_password() -> Result<String, Failure> {
    match known_password() {
        Some(password) => Ok(password),
        None => made_password(),
    }
}

/// A new root password, already handed to jarvis as the run's secret.
fn made_password() -> Result<String, Failure> {
    let password = new_password()?;
    protocol::put_secret(PASSWORD_SECRET, &password)?;
    Ok(password)
}

async fn deploy(api: Api, mut clipboard: Mapping) -> TaskResult {
    let label = label(&clipboard)?;
    let field = |path: &str| {
        protocol::get_path(&clipboard, path)
            .ok_or_else(|| Failure::fatal(format!("the design has no {path}")))
    };
    let region = Table::Region.lookup(
        &clipboard,
        "instance.datacenter",
        field("instance.datacenter")?,
    )?;
    let type_id = Table::Type.lookup(&clipboard, "instance.size", field("instance.size")?)?;
    let image = Table::Image.lookup(&clipboard, "instance.guestid", field("instance.guestid")?)?;
    let keys = authorized_keys(&clipboard)?;
    let run_tag = run_tag(&clipboard);

    if let Some(found) = find(&api, &clipboard, &label).await? {
        let id = found.get("id").and_then(Value::as_u64).unwrap_or(0);
        let tagged = run_tag.as_ref().is_some_and(|tag| has_tag(&found, tag));
        // What this run recorded as made: `linode.id` alone may be the host's record, which
        // a later run starts with, and that instance was made by another run.
        let known = protocol::made_ids(&clipboard, "linode").contains(&id.to_string());
        if !(tagged || known) {
            return Err(Failure::fatal(format!(
                "a Linode labelled '{label}' already exists (id {id}) and this run did not make \
                 it; delete it first (linode:delete) or choose another label"
            )));
        }
        protocol::notice(&format!(
            "Linode {id} '{label}' was made by this run before; using it instead of making another"
        ));
        if known_password().is_none() {
            protocol::notice(&format!(
                "the root password of Linode {id} was lost with the earlier attempt; log in by \
                 key, or rebuild it (linode:rebuild); run linode:password before deploy to avoid this"
            ));
        }
        record(&mut clipboard, &found);
        protocol::record_made(&mut clipboard, "linode", &id.to_string());
        return Ok(Some(clipboard));
    }

    let password = run_password()?;
    let mut tags = vec![Value::from("jarvis")];
    if let Some(tag) = &run_tag {
        tags.push(Value::from(tag.as_str()));
    }
    if let Some(extra) = protocol::get_path(&clipboard, "linode.tags").and_then(Value::as_array) {
        tags.extend(extra.iter().filter(|t| t.is_string()).cloned());
    }
    let body = json!({
        "label": label,
        "region": region,
        "type": type_id,
        "image": image,
        "root_pass": password,
        "authorized_keys": keys,
        "tags": tags,
        "booted": true,
    });
    protocol::progress(&format!(
        "creating Linode '{label}': {type_id} in {region} from {image}"
    ));
    let made = api.call(Method::POST, INSTANCES, Some(&body)).await?;
    let id = made.get("id").and_then(Value::as_u64).unwrap_or(0);
    protocol::notice(&format!("created Linode {id} '{label}'"));
    record(&mut clipboard, &made);
    protocol::record_made(&mut clipboard, "linode", &id.to_string());
    Ok(Some(clipboard))
}

async fn wait(api: Api, mut clipboard: Mapping) -> TaskResult {
    let label = label(&clipboard)?;
    let Some(mut instance) = find(&api, &clipboard, &label).await? else {
        return Err(Failure::fatal(format!(
            "no Linode labelled '{label}' to wait for (run linode:deploy first)"
        )));
    };
    let id = instance_id(&instance)?;
    let (deadline, poll) = wait_settings(&clipboard)?;
    let started = Instant::now();
    let mut last_status = String::new();
    let mut offline_polls = 0;
    let mut booted = false;
    loop {
        let status = instance
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        if status == "running" {
            break;
        }
        offline_polls = if status == "offline" {
            offline_polls + 1
        } else {
            0
        };
        if offline_polls >= 2 && !booted {
            protocol::notice(&format!("Linode {id} '{label}' is offline; booting it"));
            api.call(Method::POST, &format!("{INSTANCES}/{id}/boot"), None)
                .await?;
            booted = true;
        }
        if status != last_status {
            protocol::progress(&format!(
                "Linode {id} '{label}' is {status} ({}s)",
                started.elapsed().as_secs()
            ));
            last_status = status.to_string();
        }
        if started.elapsed() > deadline {
            return Err(Failure::retry(format!(
                "Linode {id} '{label}' is still {status} after {}s",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(poll).await;
        instance = get(&api, id).await?.ok_or_else(|| {
            Failure::fatal(format!(
                "Linode {id} '{label}' vanished while waiting for it"
            ))
        })?;
    }
    record(&mut clipboard, &instance);
    let ipv4 = protocol::get_path(&clipboard, "linode.ipv4").cloned();
    match ipv4 {
        Some(ip) => {
            protocol::section(&mut clipboard, "instance").insert("ip".into(), ip.clone());
            protocol::notice(&format!(
                "Linode {id} '{label}' is running at {}",
                ip.as_str().unwrap_or("?")
            ));
        }
        None => protocol::notice(&format!("Linode {id} '{label}' is running, with no IPv4")),
    }
    Ok(Some(clipboard))
}

async fn shutdown(api: Api, mut clipboard: Mapping) -> TaskResult {
    let label = label(&clipboard)?;
    let Some(mut instance) = find(&api, &clipboard, &label).await? else {
        protocol::notice(&format!(
            "no Linode labelled '{label}': nothing to shut down"
        ));
        return Ok(None);
    };
    let id = instance_id(&instance)?;
    let status = |i: &Value| {
        i.get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if status(&instance) != "offline" {
        api.call(Method::POST, &format!("{INSTANCES}/{id}/shutdown"), None)
            .await?;
    }
    let (deadline, poll) = wait_settings(&clipboard)?;
    let started = Instant::now();
    while status(&instance) != "offline" {
        protocol::progress(&format!(
            "Linode {id} '{label}' is {} ({}s)",
            status(&instance),
            started.elapsed().as_secs()
        ));
        if started.elapsed() > deadline {
            return Err(Failure::retry(format!(
                "Linode {id} '{label}' is still {} after {}s",
                status(&instance),
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(poll).await;
        match get(&api, id).await? {
            Some(now) => instance = now,
            None => {
                protocol::notice(&format!("Linode {id} '{label}' is gone"));
                return Ok(None);
            }
        }
    }
    protocol::notice(&format!("Linode {id} '{label}' is offline"));
    record(&mut clipboard, &instance);
    Ok(Some(clipboard))
}

async fn delete(api: Api, mut clipboard: Mapping) -> TaskResult {
    let label = label(&clipboard)?;
    if protocol::undoing() {
        return undo_deploy(api, clipboard, &label).await;
    }
    if let Some(instance) = find(&api, &clipboard, &label).await? {
        let id = instance_id(&instance)?;
        let path = format!("{INSTANCES}/{id}");
        let (status, answer) = api.send(Method::DELETE, &path, &[], None, None).await?;
        if status != StatusCode::NOT_FOUND {
            api::expect_success(&format!("DELETE {path}"), status, answer)?;
        }
        protocol::notice(&format!("deleted Linode {id} '{label}'"));
    } else {
        protocol::notice(&format!("no Linode labelled '{label}': nothing to delete"));
    }
    let old_ipv4 = protocol::get_path(&clipboard, "linode.ipv4").cloned();
    if let Some(linode) = clipboard.get_mut("linode").and_then(Value::as_object_mut) {
        for key in ["id", "status", "ipv4", "ipv6"] {
            linode.remove(key);
        }
    }
    if let Some(instance) = clipboard.get_mut("instance").and_then(Value::as_object_mut)
        && old_ipv4.is_some()
        && instance.get("ip") == old_ipv4.as_ref()
    {
        instance.remove("ip");
    }
    if let Some(jarvis) = clipboard.get_mut("jarvis").and_then(Value::as_object_mut)
        && old_ipv4.is_some()
        && jarvis.get("target").and_then(|t| t.get("host")) == old_ipv4.as_ref()
    {
        jarvis.remove("target");
    }
    Ok(Some(clipboard))
}

/// `linode:delete` as an undo: only the instances this run made go, those it recorded and
/// the one with its label that carries this run's tag (made by a stage that failed before
/// its record was stored). Anything else with the label is someone else's and stays.
async fn undo_deploy(api: Api, mut clipboard: Mapping, label: &str) -> TaskResult {
    let run_tag = run_tag(&clipboard);
    let mut ids: Vec<u64> = protocol::made_ids(&clipboard, "linode")
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect();
    let listed = api.list_all(INSTANCES, &json!({ "label": label })).await?;
    for instance in &listed {
        let id = instance.get("id").and_then(Value::as_u64).unwrap_or(0);
        let ours = run_tag.as_ref().is_some_and(|tag| has_tag(instance, tag));
        if instance.get("label").and_then(Value::as_str) == Some(label) && !ids.contains(&id) {
            if ours {
                ids.push(id);
            } else {
                protocol::notice(&format!(
                    "Linode {id} '{label}' was not made by this run: left alone"
                ));
            }
        }
    }
    if ids.is_empty() {
        protocol::notice(&format!(
            "this run made no Linode '{label}': nothing to undo"
        ));
        return Ok(Some(clipboard));
    }
    for id in ids {
        let path = format!("{INSTANCES}/{id}");
        let (status, answer) = api.send(Method::DELETE, &path, &[], None, None).await?;
        if status != StatusCode::NOT_FOUND {
            api::expect_success(&format!("DELETE {path}"), status, answer)?;
        }
        protocol::notice(&format!(
            "deleted Linode {id} '{label}', which this run made"
        ));
        protocol::forget_made(&mut clipboard, "linode", &id.to_string());
        if linode_id(&clipboard) == Some(id)
            && let Some(linode) = clipboard.get_mut("linode").and_then(Value::as_object_mut)
        {
            for key in ["id", "status", "ipv4", "ipv6"] {
                linode.remove(key);
            }
        }
    }
    Ok(Some(clipboard))
}

async fn rebuild(api: Api, mut clipboard: Mapping) -> TaskResult {
    let label = label(&clipboard)?;
    let guestid = protocol::get_path(&clipboard, "instance.guestid")
        .ok_or_else(|| Failure::fatal("the design has no instance.guestid"))?;
    let image = Table::Image.lookup(&clipboard, "instance.guestid", guestid)?;
    let keys = authorized_keys(&clipboard)?;
    let Some(instance) = find(&api, &clipboard, &label).await? else {
        return Err(Failure::fatal(format!(
            "no Linode labelled '{label}' to rebuild"
        )));
    };
    let id = instance_id(&instance)?;
    let password = run_password()?;
    let body = json!({ "image": image, "root_pass": password, "authorized_keys": keys });
    protocol::progress(&format!("rebuilding Linode {id} '{label}' from {image}"));
    let rebuilt = api
        .call(
            Method::POST,
            &format!("{INSTANCES}/{id}/rebuild"),
            Some(&body),
        )
        .await?;
    record(&mut clipboard, &rebuilt);
    Ok(Some(clipboard))
}

/// The instance by `linode.id`, else by label (reading every page of the list).
async fn find(api: &Api, clipboard: &Mapping, label: &str) -> Result<Option<Value>, Failure> {
    if let Some(id) = linode_id(clipboard)
        && let Some(instance) = get(api, id).await?
    {
        return Ok(Some(instance));
    }
    let listed = api.list_all(INSTANCES, &json!({ "label": label })).await?;
    // The filter is the server's business; the label check here is ours.
    Ok(listed
        .into_iter()
        .find(|i| i.get("label").and_then(Value::as_str) == Some(label)))
}

/// `inventory`: every instance jarvis tagged (`jarvis`), with the run its `jarvis-run-N` tag
/// names.
async fn inventory(api: Api, mut clipboard: Mapping) -> TaskResult {
    let listed = api
        .list_all(INSTANCES, &json!({ "tags": "jarvis" }))
        .await?;
    let found = listed
        .iter()
        .filter_map(|i| {
            let tags: Vec<&str> = i
                .get("tags")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            if !tags.contains(&"jarvis") {
                return None;
            }
            let run = tags.iter().find_map(|t| t.strip_prefix("jarvis-run-"));
            Some(json!({
                "module": "linode",
                "id": i.get("id")?,
                "region": i.get("region"),
                "host": i.get("label"),
                "run": run,
                "state": i.get("status"),
            }))
        })
        .collect();
    clipboard.insert("inventory".into(), Value::Array(found));
    Ok(Some(clipboard))
}

async fn get(api: &Api, id: u64) -> Result<Option<Value>, Failure> {
    let path = format!("{INSTANCES}/{id}");
    let (status, answer) = api.send(Method::GET, &path, &[], None, None).await?;
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    api::expect_success(&format!("GET {path}"), status, answer).map(Some)
}

/// What the clipboard keeps of an instance.
fn record(clipboard: &mut Mapping, instance: &Value) {
    let linode = protocol::section(clipboard, "linode");
    for (key, from) in [
        ("id", "id"),
        ("label", "label"),
        ("status", "status"),
        ("region", "region"),
        ("type", "type"),
        ("image", "image"),
    ] {
        if let Some(value) = instance.get(from).filter(|v| !v.is_null()) {
            linode.insert(key.into(), value.clone());
        }
    }
    let ipv4 = public_ipv4(instance);
    if let Some(ipv4) = &ipv4 {
        linode.insert("ipv4".into(), ipv4.as_str().into());
    }
    if let Some(ipv6) = instance.get("ipv6").and_then(Value::as_str) {
        let address = ipv6.split('/').next().unwrap_or(ipv6);
        linode.insert("ipv6".into(), address.into());
    }
    if let Some(ipv4) = ipv4 {
        protocol::section(clipboard, "jarvis")
            .insert("target".into(), json!({"host": ipv4, "port": 22}));
    }
}

/// The first public IPv4 address the instance lists (it lists private ones too).
fn public_ipv4(instance: &Value) -> Option<String> {
    let addresses: Vec<std::net::Ipv4Addr> = instance
        .get("ipv4")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect();
    addresses
        .iter()
        .find(|a| !a.is_private() && !a.is_link_local())
        .or(addresses.first())
        .map(ToString::to_string)
}

fn linode_id(clipboard: &Mapping) -> Option<u64> {
    match protocol::get_path(clipboard, "linode.id")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn instance_id(instance: &Value) -> Result<u64, Failure> {
    instance
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| Failure::fatal("the Linode API listed an instance without an id"))
}

fn has_tag(instance: &Value, tag: &str) -> bool {
    instance
        .get("tags")
        .and_then(Value::as_array)
        .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag)))
}

/// The label: `linode.label`, else `instance.hostname`, checked against Linode's rules.
fn label(clipboard: &Mapping) -> Result<String, Failure> {
    let (path, label) = match protocol::get_path(clipboard, "linode.label").and_then(Value::as_str)
    {
        Some(label) => ("linode.label", label),
        None => (
            "instance.hostname",
            protocol::require_str(clipboard, "instance.hostname")?,
        ),
    };
    let bytes = label.as_bytes();
    let ok = (3..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && !["--", "__", ".."].iter().any(|pair| label.contains(pair));
    if !ok {
        return Err(Failure::fatal(format!(
            "{path} '{label}' is no Linode label (3 to 64 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit)"
        )));
    }
    Ok(label.to_string())
}

/// `jarvis-run-RUN`, the tag that tells this run's instance from anyone else's.
fn run_tag(clipboard: &Mapping) -> Option<String> {
    let run = std::env::var("JARVIS_RUN_ID").ok().or_else(|| {
        protocol::get_path(clipboard, "jarvis.run_id").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    })?;
    let clean: String = run
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(39)
        .collect();
    (!clean.is_empty()).then(|| format!("jarvis-run-{clean}"))
}

/// The public keys for root: `instance.sshpubkey` (a text, one key a line, or a list) and
/// `linode.authorized_keys`.
fn authorized_keys(clipboard: &Mapping) -> Result<Vec<String>, Failure> {
    let mut keys = Vec::new();
    for path in ["instance.sshpubkey", "linode.authorized_keys"] {
        let texts: Vec<&str> = match protocol::get_path(clipboard, path) {
            None | Some(Value::Null) => continue,
            Some(Value::String(text)) => text.lines().collect(),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(Failure::fatal(format!("{path} must be a text or a list"))),
        };
        for key in texts.into_iter().map(str::trim).filter(|k| !k.is_empty()) {
            let mut words = key.split_whitespace();
            let kind = words.next().unwrap_or("");
            let blob = words.next().unwrap_or("");
            let known_kind = ["ssh-", "ecdsa-", "sk-"]
                .iter()
                .any(|p| kind.starts_with(p));
            if !known_kind || blob.len() < 16 {
                return Err(Failure::fatal(format!(
                    "{path} holds something that is no SSH public key (starts '{}')",
                    kind.chars().take(20).collect::<String>()
                )));
            }
            keys.push(key.to_string());
        }
    }
    Ok(keys)
}

/// The name of the run's secret that holds the root password.
const PASSWORD_SECRET: &str = "root_password";

/// The root password an earlier stage of the run made (`JARVIS_SECRET_ROOT_PASSWORD`).
fn known_password() -> Option<String> {
    protocol::secret(PASSWORD_SECRET)
}

/// 32 random letters and digits: about 190 bits, and safe in any form field.
fn new_password() -> Result<String, Failure> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let rng = ring::rand::SystemRandom::new();
    let mut password = String::with_capacity(32);
    while password.len() < 32 {
        let mut byte = [0u8; 1];
        ring::rand::SecureRandom::fill(&rng, &mut byte)
            .map_err(|_| Failure::retry("the system's random source failed"))?;
        // Rejection sampling keeps every letter equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        if usize::from(byte[0]) < limit {
            password.push(char::from(ALPHABET[usize::from(byte[0]) % ALPHABET.len()]));
        }
    }
    Ok(password)
}

/// The stage's `with.wait_seconds` and `with.poll_ms`.
fn wait_settings(clipboard: &Mapping) -> Result<(Duration, Duration), Failure> {
    let deadline = protocol::param_u64(clipboard, "wait_seconds")?.unwrap_or(900);
    let poll = protocol::param_u64(clipboard, "poll_ms")?
        .unwrap_or(5000)
        .max(50);
    Ok((Duration::from_secs(deadline), Duration::from_millis(poll)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_and_distinct() {
        let a = new_password().unwrap();
        let b = new_password().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn labels_follow_linode_rules() {
        let with = |host: &str| {
            let v = json!({"instance": {"hostname": host}});
            label(v.as_object().unwrap())
        };
        assert_eq!(with("loki").unwrap(), "loki");
        assert!(with("lo").is_err());
        assert!(with("-loki").is_err());
        assert!(with("lo ki").is_err());
    }

    #[test]
    fn public_address_first() {
        let i = json!({"ipv4": ["192.168.1.4", "203.0.113.7"]});
        assert_eq!(public_ipv4(&i).unwrap(), "203.0.113.7");
        let i = json!({"ipv4": ["127.0.0.1"]});
        assert_eq!(public_ipv4(&i).unwrap(), "127.0.0.1");
    }
}

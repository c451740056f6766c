//! `ec2`: Amazon EC2 instances through the EC2 Query API (signed with SigV4, see `api`).
//!
//! Environment (granted by the configuration; nothing here comes from the design):
//! - `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (required), `AWS_SESSION_TOKEN` (for
//!   temporary credentials): never on the clipboard, never in a log line or a reason.
//! - `EC2_ENDPOINT`: the API's URL (default `https://ec2.REGION.amazonaws.com`; an emulator
//!   such as moto in tests).
//! - `EC2_IMAGES`: the design's `guestid` → AMI, `Debian 12=ami-…,Ubuntu 24.04=ami-…`; an
//!   entry `NAME@REGION=ami-…` wins in that region (AMIs differ by region). Required: a
//!   guestid the map does not name fails the task.
//! - `EC2_REGIONS`: the design's `datacenter` → region or zone (`Frankfurt=eu-central-1,
//!   Atlanta=us-east-1b`), over a built-in table of region names; a datacenter that is
//!   already a region or zone name (`eu-west-1`, `eu-west-1a`) passes as it is. A zone also
//!   places the instance there.
//! - `EC2_REGION`: the region when the design names no datacenter.
//! - `EC2_TYPES`: the design's `size` → instance type (`512=t3.nano,4096=m7g.medium`), over a
//!   built-in table of sizes in MB (512 → t3.nano … 32768 → t3.2xlarge). A size neither names
//!   fails: the design never picks an instance type by itself.
//! - `EC2_KEY_NAME` (the key pair), `EC2_SECURITY_GROUPS` (ids, comma-separated),
//!   `EC2_SUBNET` (a subnet id): passed to RunInstances when set.
//!
//! The instance is found by `ec2.id` (what this run's deploy wrote), else by its tags `Name`
//! and `jarvis:host`, both the design's `instance.hostname`, among instances that are not
//! terminated. Each instance jarvis makes also carries `jarvis:run` (the run's id).
//!
//! Stage parameters (`with:`): `wait_seconds` (default 900), `poll_ms` (default 5000).
//!
//! Tasks:
//! - `deploy`: looks for the host's instance first: one this run made (tagged with its run, or
//!   recorded in `jarvis.made`) is used again, so a re-run after a crash makes no second one;
//!   one the run did not make fails the task. Else RunInstances with a `ClientToken` derived
//!   from the host and the run (AWS then answers a repeated request with the same instance),
//!   the image, type, region and zone from the tables above, and the key pair, security groups
//!   and subnet of the configuration. Writes `ec2.id`, `ec2.region`, `ec2.zone`, `ec2.state`,
//!   `ec2.type`, `ec2.image` (and the addresses and `jarvis.target` when known), and records
//!   the instance in `jarvis.made` as `{what: ec2, id: i-…}`.
//! - `wait`: polls until the instance is `running` (starting it once if it stays `stopped`),
//!   then writes `ec2.ipv4` (public, else private), `ec2.private_ipv4`, `ec2.ipv6`,
//!   `instance.ip` and `jarvis.target: {host: IPV4, port: 22}`.
//! - `shutdown`: stops the instance and waits until it is `stopped`; no instance is nothing to
//!   do.
//! - `delete`: terminates the instance and waits until it is `terminated`, then removes
//!   `ec2.id` and its addresses from the clipboard; no instance is nothing to do. As an undo
//!   (`JARVIS_PHASE=on_failure`) it terminates only what this run made: the instances in
//!   `jarvis.made` and those tagged with its run; anything else is left alone, with a notice.
//!
//! - `inventory`: lists, in every region the tables name (`EC2_REGIONS`, `EC2_REGION`), the
//!   instances that still exist and carry the `jarvis:host` tag, as `inventory: [{module: ec2,
//!   id, region, host, run, state}]` (what `jarvis hosts --orphans` compares with its records).
//!
//! There is no `rebuild`: EC2 cannot reinstall an instance from another image in place the way
//! Linode can (a root-volume replacement keeps the instance but is a different, asynchronous
//! API); the redeploy pipeline deletes and deploys instead.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::protocol::{self, Failure, Mapping, TaskResult};

mod api;
mod settings;
pub mod xml;

use api::Api;
use settings::{Placement, Settings};

const TASKS: &[&str] = &["deploy", "wait", "shutdown", "delete", "inventory"];
/// States of an instance that still exists (terminated ones linger in the lists for a while).
const ALIVE: &[&str] = &["pending", "running", "stopping", "stopped"];

pub fn run(task: &str) -> ExitCode {
    match task {
        "deploy" => async_task(deploy, Region::FromDesign),
        "wait" => async_task(wait, Region::Recorded),
        "shutdown" => async_task(shutdown, Region::Recorded),
        "delete" => async_task(delete, Region::Recorded),
        "inventory" => protocol::run_task(|clipboard| {
            let settings = Settings::from_env()?;
            protocol::block_on(inventory(settings, clipboard))?
        }),
        other => crate::unknown_task("ec2", other, TASKS),
    }
}

/// Which region a task's API is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    /// Where the design's datacenter maps to now (a new instance goes there).
    FromDesign,
    /// Where this run's deploy put the instance (`ec2.region`), else as `FromDesign`.
    Recorded,
}

fn async_task<F>(body: fn(Api, Settings, Mapping) -> F, region: Region) -> ExitCode
where
    F: Future<Output = TaskResult>,
{
    protocol::run_task(|clipboard| {
        let settings = Settings::from_env()?;
        let placement = region_of(&settings, &clipboard, region)?;
        let api = Api::from_env(&placement.region)?;
        protocol::block_on(body(api, settings, clipboard))?
    })
}

fn region_of(
    settings: &Settings,
    clipboard: &Mapping,
    which: Region,
) -> Result<Placement, Failure> {
    if which == Region::Recorded
        && let Some(region) = protocol::get_path(clipboard, "ec2.region").and_then(Value::as_str)
        && settings::is_region(region)
    {
        return Ok(Placement {
            region: region.to_string(),
            zone: None,
        });
    }
    settings.placement(protocol::get_path(clipboard, "instance.datacenter"))
}

async fn deploy(api: Api, settings: Settings, mut clipboard: Mapping) -> TaskResult {
    let host = crate::host_facts::hostname(&clipboard)?;
    let field = |path: &str| {
        protocol::get_path(&clipboard, path)
            .ok_or_else(|| Failure::fatal(format!("the design has no {path}")))
    };
    let placement = settings.placement(protocol::get_path(&clipboard, "instance.datacenter"))?;
    let instance_type = settings.instance_type(field("instance.size")?)?;
    let image = settings.image(field("instance.guestid")?, &placement.region)?;
    let run = run_id(&clipboard);

    if let Some(found) = find(&api, &clipboard, &host).await? {
        let id = found.instance_id.clone();
        let ours = run
            .as_deref()
            .is_some_and(|r| found.tag(RUN_TAG) == Some(r))
            || protocol::made_ids(&clipboard, "ec2").contains(&id);
        if !ours {
            return Err(Failure::fatal(format!(
                "an EC2 instance for '{host}' already exists ({id}, {}) and this run did not \
                 make it; delete it first (ec2:delete) or choose another host name",
                found.state()
            )));
        }
        protocol::notice(&format!(
            "EC2 instance {id} '{host}' was made by this run before; using it instead of making \
             another"
        ));
        record(&mut clipboard, &found, api.region());
        protocol::record_made(&mut clipboard, "ec2", &id);
        return Ok(Some(clipboard));
    }

    let mut params = vec![
        p("ImageId", &image),
        p("InstanceType", &instance_type),
        p("MinCount", "1"),
        p("MaxCount", "1"),
        p("ClientToken", &client_token(&host, run.as_deref())),
        p("TagSpecification.1.ResourceType", "instance"),
    ];
    let mut tags = vec![("Name", host.as_str()), (HOST_TAG, host.as_str())];
    if let Some(run) = &run {
        tags.push((RUN_TAG, run.as_str()));
    }
    for (i, (key, value)) in tags.iter().enumerate() {
        params.push(p(&format!("TagSpecification.1.Tag.{}.Key", i + 1), key));
        params.push(p(&format!("TagSpecification.1.Tag.{}.Value", i + 1), value));
    }
    if let Some(zone) = &placement.zone {
        params.push(p("Placement.AvailabilityZone", zone));
    }
    if let Some(key) = &settings.key_name {
        params.push(p("KeyName", key));
    }
    for (i, group) in settings.security_groups.iter().enumerate() {
        params.push(p(&format!("SecurityGroupId.{}", i + 1), group));
    }
    if let Some(subnet) = &settings.subnet {
        params.push(p("SubnetId", subnet));
    }
    protocol::progress(&format!(
        "creating EC2 instance '{host}': {instance_type} in {} from {image}",
        placement.zone.as_deref().unwrap_or(&placement.region)
    ));
    let text = api.call_making("RunInstances", &params).await?;
    let made: xml::RunInstances =
        xml::parse(&text).map_err(|e| Failure::retry(format!("EC2 RunInstances: {e}")))?;
    let Some(instance) = made.instances_set.items.into_iter().next() else {
        return Err(Failure::retry("EC2 RunInstances answered no instance"));
    };
    if !ALIVE.contains(&instance.state()) {
        return Err(Failure::fatal(format!(
            "EC2 answered this run's request with instance {} which is {} (made and ended \
             before); say retry for a new run",
            instance.instance_id,
            instance.state()
        )));
    }
    protocol::notice(&format!(
        "created EC2 instance {} '{host}'",
        instance.instance_id
    ));
    record(&mut clipboard, &instance, api.region());
    protocol::record_made(&mut clipboard, "ec2", &instance.instance_id);
    Ok(Some(clipboard))
}

async fn wait(api: Api, _settings: Settings, mut clipboard: Mapping) -> TaskResult {
    let host = crate::host_facts::hostname(&clipboard)?;
    let Some(mut instance) = find(&api, &clipboard, &host).await? else {
        return Err(Failure::fatal(format!(
            "no EC2 instance for '{host}' to wait for (run ec2:deploy first)"
        )));
    };
    let id = instance.instance_id.clone();
    let (deadline, poll) = wait_settings(&clipboard)?;
    let started = Instant::now();
    let mut last_state = String::new();
    let mut stopped_polls = 0;
    let mut started_it = false;
    while instance.state() != "running" {
        let state = instance.state().to_string();
        if state == "shutting-down" || state == "terminated" {
            return Err(Failure::fatal(format!(
                "EC2 instance {id} '{host}' is {state}: it will not run again"
            )));
        }
        stopped_polls = if state == "stopped" {
            stopped_polls + 1
        } else {
            0
        };
        if stopped_polls >= 2 && !started_it {
            protocol::notice(&format!(
                "EC2 instance {id} '{host}' is stopped; starting it"
            ));
            api.call("StartInstances", &[p("InstanceId.1", &id)])
                .await?;
            started_it = true;
        }
        if state != last_state {
            protocol::progress(&format!(
                "EC2 instance {id} '{host}' is {state} ({}s)",
                started.elapsed().as_secs()
            ));
            last_state = state.clone();
        }
        if started.elapsed() > deadline {
            return Err(Failure::retry(format!(
                "EC2 instance {id} '{host}' is still {state} after {}s",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(poll).await;
        instance = by_id(&api, &id).await?.ok_or_else(|| {
            Failure::fatal(format!(
                "EC2 instance {id} '{host}' vanished while waiting for it"
            ))
        })?;
    }
    record(&mut clipboard, &instance, api.region());
    match instance.ipv4() {
        Some(ip) => {
            protocol::section(&mut clipboard, "instance").insert("ip".into(), ip.into());
            protocol::notice(&format!("EC2 instance {id} '{host}' is running at {ip}"));
        }
        None => protocol::notice(&format!(
            "EC2 instance {id} '{host}' is running, with no IPv4"
        )),
    }
    Ok(Some(clipboard))
}

async fn shutdown(api: Api, _settings: Settings, mut clipboard: Mapping) -> TaskResult {
    let host = crate::host_facts::hostname(&clipboard)?;
    let Some(instance) = find(&api, &clipboard, &host).await? else {
        protocol::notice(&format!(
            "no EC2 instance for '{host}': nothing to shut down"
        ));
        return Ok(None);
    };
    let id = instance.instance_id.clone();
    if instance.state() != "stopped" {
        api.call("StopInstances", &[p("InstanceId.1", &id)]).await?;
    }
    match until(&api, &clipboard, &id, &host, &["stopped"]).await? {
        Some(stopped) => {
            protocol::notice(&format!("EC2 instance {id} '{host}' is stopped"));
            record(&mut clipboard, &stopped, api.region());
            Ok(Some(clipboard))
        }
        None => {
            protocol::notice(&format!("EC2 instance {id} '{host}' is gone"));
            Ok(None)
        }
    }
}

async fn delete(api: Api, _settings: Settings, mut clipboard: Mapping) -> TaskResult {
    let host = crate::host_facts::hostname(&clipboard)?;
    if protocol::undoing() {
        return undo_deploy(api, clipboard, &host).await;
    }
    match find(&api, &clipboard, &host).await? {
        Some(instance) => {
            terminate(&api, &clipboard, &instance.instance_id, &host).await?;
            protocol::notice(&format!(
                "terminated EC2 instance {} '{host}'",
                instance.instance_id
            ));
            forget(&mut clipboard, &instance.instance_id);
        }
        None => protocol::notice(&format!("no EC2 instance for '{host}': nothing to delete")),
    }
    Ok(Some(clipboard))
}

/// `ec2:delete` as an undo: only the instances this run made go, those it recorded and those
/// tagged with its run (made by a stage that failed before its record was stored).
async fn undo_deploy(api: Api, mut clipboard: Mapping, host: &str) -> TaskResult {
    let run = run_id(&clipboard);
    let mut ids = protocol::made_ids(&clipboard, "ec2");
    for instance in tagged(&api, host).await? {
        let id = &instance.instance_id;
        let ours = run
            .as_deref()
            .is_some_and(|r| instance.tag(RUN_TAG) == Some(r));
        if ids.contains(id) {
            continue;
        }
        if ours {
            ids.push(id.clone());
        } else {
            protocol::notice(&format!(
                "EC2 instance {id} '{host}' was not made by this run: left alone"
            ));
        }
    }
    if ids.is_empty() {
        protocol::notice(&format!(
            "this run made no EC2 instance '{host}': nothing to undo"
        ));
        return Ok(Some(clipboard));
    }
    for id in ids {
        terminate(&api, &clipboard, &id, host).await?;
        protocol::notice(&format!(
            "terminated EC2 instance {id} '{host}', which this run made"
        ));
        protocol::forget_made(&mut clipboard, "ec2", &id);
        forget(&mut clipboard, &id);
    }
    Ok(Some(clipboard))
}

/// Terminates `id` (unless it is gone already) and waits until it is terminated.
async fn terminate(api: &Api, clipboard: &Mapping, id: &str, host: &str) -> Result<(), Failure> {
    match by_id(api, id).await? {
        None => return Ok(()),
        Some(instance) if instance.state() == "terminated" => return Ok(()),
        Some(_) => {}
    }
    protocol::progress(&format!("terminating EC2 instance {id} '{host}'"));
    api.call("TerminateInstances", &[p("InstanceId.1", id)])
        .await?;
    until(api, clipboard, id, host, &["terminated"]).await?;
    Ok(())
}

/// Polls instance `id` until its state is one of `states`; `None` when it is gone.
async fn until(
    api: &Api,
    clipboard: &Mapping,
    id: &str,
    host: &str,
    states: &[&str],
) -> Result<Option<xml::Instance>, Failure> {
    let (deadline, poll) = wait_settings(clipboard)?;
    let started = Instant::now();
    loop {
        let Some(instance) = by_id(api, id).await? else {
            return Ok(None);
        };
        if states.contains(&instance.state()) {
            return Ok(Some(instance));
        }
        protocol::progress(&format!(
            "EC2 instance {id} '{host}' is {} ({}s)",
            instance.state(),
            started.elapsed().as_secs()
        ));
        if started.elapsed() > deadline {
            return Err(Failure::retry(format!(
                "EC2 instance {id} '{host}' is still {} after {}s",
                instance.state(),
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

/// The host's instance: `ec2.id` if it still exists, else the one tagged with the host's name.
async fn find(
    api: &Api,
    clipboard: &Mapping,
    host: &str,
) -> Result<Option<xml::Instance>, Failure> {
    if let Some(id) = protocol::get_path(clipboard, "ec2.id").and_then(Value::as_str)
        && let Some(instance) = by_id(api, id).await?
        && ALIVE.contains(&instance.state())
    {
        return Ok(Some(instance));
    }
    let mut found = tagged(api, host).await?;
    if found.len() > 1 {
        let ids: Vec<&str> = found.iter().map(|i| i.instance_id.as_str()).collect();
        protocol::notice(&format!(
            "{} EC2 instances are tagged for '{host}' ({}); using the first",
            found.len(),
            ids.join(", ")
        ));
    }
    Ok((!found.is_empty()).then(|| found.remove(0)))
}

/// The instances that still exist with tags `Name` and `jarvis:host` both `host`.
async fn tagged(api: &Api, host: &str) -> Result<Vec<xml::Instance>, Failure> {
    let mut params = vec![
        p("Filter.1.Name", "tag:Name"),
        p("Filter.1.Value.1", host),
        p("Filter.2.Name", &format!("tag:{HOST_TAG}")),
        p("Filter.2.Value.1", host),
        p("Filter.3.Name", "instance-state-name"),
    ];
    for (i, state) in ALIVE.iter().enumerate() {
        params.push(p(&format!("Filter.3.Value.{}", i + 1), state));
    }
    let listed = api.describe(&params).await?;
    // The filters are the server's business; the checks here are ours.
    Ok(listed
        .into_iter()
        .filter(|i| {
            i.tag("Name") == Some(host)
                && i.tag(HOST_TAG) == Some(host)
                && ALIVE.contains(&i.state())
        })
        .collect())
}

/// `inventory`: the instances jarvis tagged, in every region the operator's tables name.
async fn inventory(settings: Settings, mut clipboard: Mapping) -> TaskResult {
    let regions = settings.known_regions();
    if regions.is_empty() {
        return Err(Failure::fatal(
            "no region to look in: set EC2_REGIONS or EC2_REGION",
        ));
    }
    let mut found = Vec::new();
    for region in regions {
        let api = Api::from_env(&region)?;
        let mut params = vec![
            p("Filter.1.Name", "tag-key"),
            p("Filter.1.Value.1", HOST_TAG),
        ];
        params.push(p("Filter.2.Name", "instance-state-name"));
        for (i, state) in ALIVE.iter().enumerate() {
            params.push(p(&format!("Filter.2.Value.{}", i + 1), state));
        }
        for instance in api.describe(&params).await? {
            let Some(host) = instance.tag(HOST_TAG) else {
                continue;
            };
            if !ALIVE.contains(&instance.state()) {
                continue;
            }
            found.push(json!({
                "module": "ec2",
                "id": instance.instance_id,
                "region": region,
                "host": host,
                "run": instance.tag(RUN_TAG),
                "state": instance.state(),
            }));
        }
    }
    clipboard.insert("inventory".into(), Value::Array(found));
    Ok(Some(clipboard))
}

/// Instance `id`, in whatever state; `None` when EC2 does not list it.
async fn by_id(api: &Api, id: &str) -> Result<Option<xml::Instance>, Failure> {
    let listed = api
        .describe(&[p("Filter.1.Name", "instance-id"), p("Filter.1.Value.1", id)])
        .await?;
    Ok(listed.into_iter().find(|i| i.instance_id == id))
}

const HOST_TAG: &str = "jarvis:host";
const RUN_TAG: &str = "jarvis:run";

/// What the clipboard keeps of an instance; the addresses and `jarvis.target` when known.
fn record(clipboard: &mut Mapping, instance: &xml::Instance, region: &str) {
    let ec2 = protocol::section(clipboard, "ec2");
    ec2.insert("id".into(), instance.instance_id.clone().into());
    ec2.insert("region".into(), region.into());
    ec2.insert("state".into(), instance.state().into());
    let optional = [
        ("zone", &instance.placement.availability_zone),
        ("type", &instance.instance_type),
        ("image", &instance.image_id),
        ("private_ipv4", &instance.private_ip_address),
    ];
    for (key, value) in optional {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            ec2.insert(key.into(), value.into());
        }
    }
    if let Some(ipv4) = instance.ipv4() {
        ec2.insert("ipv4".into(), ipv4.into());
    }
    if let Some(ipv6) = instance.ipv6() {
        ec2.insert("ipv6".into(), ipv6.into());
    }
    if let Some(ipv4) = instance.ipv4() {
        protocol::section(clipboard, "jarvis")
            .insert("target".into(), json!({"host": ipv4, "port": 22}));
    }
}

/// Removes what the clipboard says about instance `id`, which is gone.
fn forget(clipboard: &mut Mapping, id: &str) {
    if protocol::get_path(clipboard, "ec2.id").and_then(Value::as_str) != Some(id) {
        return;
    }
    let old_ipv4 = protocol::get_path(clipboard, "ec2.ipv4").cloned();
    if let Some(ec2) = clipboard.get_mut("ec2").and_then(Value::as_object_mut) {
        for key in ["id", "state", "ipv4", "ipv6", "private_ipv4"] {
            ec2.remove(key);
        }
    }
    let Some(old_ipv4) = old_ipv4 else { return };
    if let Some(instance) = clipboard.get_mut("instance").and_then(Value::as_object_mut)
        && instance.get("ip") == Some(&old_ipv4)
    {
        instance.remove("ip");
    }
    if let Some(jarvis) = clipboard.get_mut("jarvis").and_then(Value::as_object_mut)
        && jarvis.get("target").and_then(|t| t.get("host")) == Some(&old_ipv4)
    {
        jarvis.remove("target");
    }
}

/// The run's id (`JARVIS_RUN_ID`, else `jarvis.run_id`), as letters, digits and '-'.
fn run_id(clipboard: &Mapping) -> Option<String> {
    let run = std::env::var("JARVIS_RUN_ID").ok().or_else(|| {
        protocol::get_path(clipboard, "jarvis.run_id").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    })?;
    let clean: String = run
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// The idempotency token of this run's RunInstances: the same for every try of the run, and
/// another for every run (EC2 allows 64 ASCII characters).
fn client_token(host: &str, run: Option<&str>) -> String {
    let token = format!("jarvis-{host}-run-{}", run.unwrap_or("none"));
    token.chars().take(64).collect()
}

fn p(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
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
    fn client_tokens_are_per_run_and_short() {
        assert_eq!(client_token("loki", Some("7")), "jarvis-loki-run-7");
        assert_ne!(
            client_token("loki", Some("7")),
            client_token("loki", Some("8"))
        );
        assert!(client_token(&"a".repeat(63), Some("12345")).len() <= 64);
    }

    #[test]
    fn forgetting_an_instance_drops_its_addresses_and_target() {
        let mut c = json!({
            "instance": {"hostname": "loki", "ip": "54.1.2.3"},
            "ec2": {"id": "i-1", "ipv4": "54.1.2.3", "region": "eu-west-1"},
            "jarvis": {"target": {"host": "54.1.2.3", "port": 22}}
        })
        .as_object()
        .cloned()
        .unwrap();
        forget(&mut c, "i-2");
        assert!(
            protocol::get_path(&c, "ec2.id").is_some(),
            "another id: kept"
        );
        forget(&mut c, "i-1");
        assert!(protocol::get_path(&c, "ec2.id").is_none());
        assert!(protocol::get_path(&c, "instance.ip").is_none());
        assert!(protocol::get_path(&c, "jarvis.target").is_none());
        assert_eq!(
            protocol::get_path(&c, "ec2.region"),
            Some(&json!("eu-west-1"))
        );
    }
}

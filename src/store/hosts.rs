//! The inventory (SPEC 6a): one record per host jarvis made. Written only inside the
//! transactions that finish a stage or a run: a provider stage's resources are recorded in
//! the commit that stores its clipboard, so a crash right after it leaves a record that names
//! them; a run's success settles the environment, the design as deployed and the last good
//! run. What a clipboard says is read by [`crate::inventory`].

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::AnyConnection;

use super::*;
use crate::inventory;

/// Where a host stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    Present,
    /// A destroy run has begun removing it.
    Destroying,
    Destroyed,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Present => "present",
            HostState::Destroying => "destroying",
            HostState::Destroyed => "destroyed",
        }
    }

    fn parse(s: &str) -> Option<HostState> {
        match s {
            "present" => Some(HostState::Present),
            "destroying" => Some(HostState::Destroying),
            "destroyed" => Some(HostState::Destroyed),
            _ => None,
        }
    }
}

/// A host's record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRecord {
    pub name: String,
    pub state: HostState,
    /// The design's `instance.provider` as deployed.
    pub provider: Option<String>,
    /// Module → the section its worker left (`ec2: {id, region, …}`), one per resource.
    pub resources: BTreeMap<String, Value>,
    pub addresses: Vec<String>,
    pub environment: Option<String>,
    pub design_ref: Option<String>,
    pub design_digest: Option<String>,
    /// The design content as deployed (the run's initial clipboard without jarvis's own).
    pub design: Option<Clipboard>,
    pub created_by: String,
    pub created_at: i64,
    pub created_run: Option<RunId>,
    pub updated_at: i64,
    pub last_run: Option<RunId>,
    pub last_good_run: Option<RunId>,
    /// Rebuilt from stored runs when the inventory was added, not written by a run.
    pub reconstructed: bool,
}

impl HostRecord {
    /// Whether the record still stands for a machine (not destroyed).
    pub fn exists(&self) -> bool {
        self.state != HostState::Destroyed
    }
}

/// What a stage's clipboard changed in its host's record, to write in the stage's commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostChange {
    pub host: String,
    pub run: RunId,
    pub requester: String,
    pub environment: Option<String>,
    pub provider: Option<String>,
    pub design_ref: String,
    /// Module → its resource now (`None`: gone).
    pub resources: BTreeMap<String, Option<Value>>,
    pub addresses: Vec<String>,
    /// A destroy run is removing the host.
    pub destroying: bool,
}

const HOST_COLUMNS: &str = "name, state, provider, resources, addresses, environment, \
    design_ref, design_digest, design, created_by, created_at, created_run, updated_at, \
    last_run, last_good_run, reconstructed";

#[derive(sqlx::FromRow)]
struct HostRow {
    name: String,
    state: String,
    provider: Option<String>,
    resources: String,
    addresses: String,
    environment: Option<String>,
    design_ref: Option<String>,
    design_digest: Option<String>,
    design: Option<String>,
    created_by: String,
    created_at: i64,
    created_run: Option<i64>,
    updated_at: i64,
    last_run: Option<i64>,
    last_good_run: Option<i64>,
    reconstructed: i64,
}

impl TryFrom<HostRow> for HostRecord {
    type Error = StoreError;

    fn try_from(r: HostRow) -> Result<HostRecord> {
        Ok(HostRecord {
            state: HostState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("host state '{}'", r.state)))?,
            name: r.name,
            provider: r.provider,
            resources: parse_json(&r.resources)?,
            addresses: parse_json(&r.addresses)?,
            environment: r.environment,
            design_ref: r.design_ref,
            design_digest: r.design_digest,
            design: r.design.map(|d| parse_json(&d)).transpose()?,
            created_by: r.created_by,
            created_at: r.created_at,
            created_run: r.created_run,
            updated_at: r.updated_at,
            last_run: r.last_run,
            last_good_run: r.last_good_run,
            reconstructed: r.reconstructed != 0,
        })
    }
}

impl Store {
    /// The record of `name`, destroyed or not.
    pub async fn host(&self, name: &str) -> Result<Option<HostRecord>> {
        let row = sqlx::query_as::<_, HostRow>(AssertSqlSafe(format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.reader)
        .await?;
        row.map(HostRecord::try_from).transpose()
    }

    /// Every record, by name.
    pub async fn hosts(&self) -> Result<Vec<HostRecord>> {
        let rows = sqlx::query_as::<_, HostRow>(AssertSqlSafe(format!(
            "SELECT {HOST_COLUMNS} FROM hosts ORDER BY name"
        )))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(HostRecord::try_from).collect()
    }

    /// Gives hosts deployed before the inventory existed a record, from their last
    /// successful deploy or redeploy (what its clipboard says), marked as reconstructed.
    /// A host whose last successful run was a destroy gets none. Returns how many.
    pub async fn reconstruct_hosts(&self) -> Result<usize> {
        let mut tx = self.begin().await?;
        // The newest successful deploy, redeploy or destroy of each host with no record,
        // when it is not a destroy: one look, so a start after the upgrade finds nothing
        // to do at the cost of one query.
        let runs: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE kind IN ('deploy', 'redeploy') AND id IN \
             (SELECT MAX(id) FROM runs WHERE state = 'succeeded' \
              AND kind IN ('deploy', 'redeploy', 'destroy') \
              AND host NOT IN (SELECT name FROM hosts) GROUP BY host)",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut made = 0;
        for id in runs {
            if settle_in(&mut tx, id, true).await? {
                made += 1;
            }
        }
        tx.commit().await?;
        Ok(made)
    }
}

async fn record_in(conn: &mut AnyConnection, name: &str) -> Result<Option<HostRecord>> {
    let row = sqlx::query_as::<_, HostRow>(AssertSqlSafe(format!(
        "SELECT {HOST_COLUMNS} FROM hosts WHERE name = $1"
    )))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(HostRecord::try_from).transpose()
}

async fn write_in(conn: &mut AnyConnection, r: &HostRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO hosts (name, state, provider, resources, addresses, environment, \
         design_ref, design_digest, design, created_by, created_at, created_run, updated_at, \
         last_run, last_good_run, reconstructed) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (name) DO UPDATE SET state = excluded.state, \
         provider = excluded.provider, resources = excluded.resources, \
         addresses = excluded.addresses, environment = excluded.environment, \
         design_ref = excluded.design_ref, design_digest = excluded.design_digest, \
         design = excluded.design, created_by = excluded.created_by, \
         created_at = excluded.created_at, created_run = excluded.created_run, \
         updated_at = excluded.updated_at, last_run = excluded.last_run, \
         last_good_run = excluded.last_good_run, reconstructed = excluded.reconstructed",
    )
    .bind(&r.name)
    .bind(r.state.as_str())
    .bind(&r.provider)
    .bind(json_text(&r.resources))
    .bind(json_text(&r.addresses))
    .bind(&r.environment)
    .bind(&r.design_ref)
    .bind(&r.design_digest)
    .bind(r.design.as_ref().map(json_text))
    .bind(&r.created_by)
    .bind(r.created_at)
    .bind(r.created_run)
    .bind(r.updated_at)
    .bind(r.last_run)
    .bind(r.last_good_run)
    .bind(r.reconstructed as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A record that a run begins: nothing known yet but who and where.
fn new_record(name: &str, run: RunId, requester: &str, environment: Option<String>) -> HostRecord {
    let at = now_ms();
    HostRecord {
        name: name.to_string(),
        state: HostState::Present,
        provider: None,
        resources: BTreeMap::new(),
        addresses: Vec::new(),
        environment,
        design_ref: None,
        design_digest: None,
        design: None,
        created_by: requester.to_string(),
        created_at: at,
        created_run: Some(run),
        updated_at: at,
        last_run: None,
        last_good_run: None,
        reconstructed: false,
    }
}

/// Writes what a finished stage changed, inside the stage's commit.
pub(super) async fn apply_in(conn: &mut AnyConnection, change: &HostChange) -> Result<()> {
    let made_something = change.resources.values().any(Option::is_some);
    let mut record = match record_in(conn, &change.host).await? {
        // Made again after a destroy: a new life, with this run's environment and maker.
        Some(r) if !r.exists() && made_something => HostRecord {
            design: r.design,
            design_ref: r.design_ref,
            design_digest: r.design_digest,
            last_good_run: r.last_good_run,
            ..new_record(
                &change.host,
                change.run,
                &change.requester,
                change.environment.clone(),
            )
        },
        Some(r) => r,
        None if made_something => new_record(
            &change.host,
            change.run,
            &change.requester,
            change.environment.clone(),
        ),
        // Nothing made, nothing recorded: a destroy or a removal of a host never recorded.
        None => return Ok(()),
    };
    for (module, resource) in &change.resources {
        match resource {
            Some(section) => {
                record.resources.insert(module.clone(), section.clone());
            }
            None => {
                record.resources.remove(module);
            }
        }
    }
    if !change.resources.is_empty() {
        record.addresses = change.addresses.clone();
    }
    if record.provider.is_none() {
        record.provider = change.provider.clone();
    }
    if record.design_ref.is_none() {
        record.design_ref = Some(change.design_ref.clone());
    }
    if change.destroying && record.exists() {
        record.state = HostState::Destroying;
    }
    record.last_run = Some(change.run);
    record.updated_at = now_ms();
    write_in(conn, &record).await
}

#[derive(sqlx::FromRow)]
struct SettledRun {
    host: String,
    kind: String,
    requester: String,
    environment: Option<String>,
    design_ref: String,
    design_digest: Option<String>,
    initial_clipboard: String,
    clipboard: String,
}

/// A run succeeded: a deploy or redeploy makes its host's record present with the design as
/// deployed, its environment and its resources; a destroy marks it destroyed. Inside the
/// run's final commit. Returns whether a record was written.
pub(super) async fn settle_in(
    conn: &mut AnyConnection,
    run: RunId,
    reconstructing: bool,
) -> Result<bool> {
    let Some(r) = sqlx::query_as::<_, SettledRun>(
        "SELECT host, kind, requester, environment, design_ref, design_digest, \
         initial_clipboard, clipboard FROM runs WHERE id = $1",
    )
    .bind(run)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(false);
    };
    let kind = RunKind::parse(&r.kind).unwrap_or_default();
    let existing = record_in(conn, &r.host).await?;
    match kind {
        RunKind::Deploy | RunKind::Redeploy => {
            let initial: Clipboard = parse_json(&r.initial_clipboard)?;
            let clipboard: Clipboard = parse_json(&r.clipboard)?;
            let modules = inventory::tracked_modules(&initial, &[&clipboard]);
            let resources = inventory::resources_of(&modules, &clipboard);
            let design = inventory::design_as_deployed(&initial);
            let mut record = match existing {
                Some(e) if e.exists() => e,
                _ => new_record(&r.host, run, &r.requester, r.environment.clone()),
            };
            record.state = HostState::Present;
            record.provider = inventory::placement(&design).0.or(record.provider);
            record.addresses = inventory::addresses(&clipboard, &resources);
            record.resources = resources;
            if r.environment.is_some() {
                record.environment = r.environment;
            }
            record.design_ref = Some(r.design_ref);
            record.design_digest = r.design_digest;
            record.design = Some(design);
            record.last_run = Some(run);
            record.last_good_run = Some(run);
            record.updated_at = now_ms();
            record.reconstructed = reconstructing;
            write_in(conn, &record).await?;
            Ok(true)
        }
        RunKind::Destroy => {
            let Some(mut record) = existing else {
                return Ok(false);
            };
            record.state = HostState::Destroyed;
            record.resources.clear();
            record.addresses.clear();
            record.last_run = Some(run);
            record.last_good_run = Some(run);
            record.updated_at = now_ms();
            write_in(conn, &record).await?;
            Ok(true)
        }
        RunKind::Action => Ok(false),
    }
}

//! The `cluster:` section: how this process takes part when several jarvis processes share
//! one PostgreSQL database.

use std::time::Duration;

use serde::Deserialize;

/// Several jarvis processes on one PostgreSQL database (`database_url: postgres://…`). Every
/// process can do every job: runners claim queued runs and hold them by a lease they renew;
/// one process per chat network speaks on it; one routes notifications. When a process dies,
/// the others take its runs over once their leases run out, and its chat networks within
/// seconds. On SQLite there is one process and this section changes nothing.
///
/// ```yaml
/// cluster:
///   node: jarvis-2         # unique per process on the database
///   lease: 15s
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This process's name among those on the database: in `status`, on the web page and in
    /// the leases it holds. Each process needs its own; a second process with a name in use
    /// is refused at start. Default: the machine's host name.
    #[serde(default)]
    pub node: Option<String>,
    /// How long a runner's hold on a run lasts without renewal (it renews every third of
    /// it). A run whose runner died is taken over this long after its last renewal.
    /// Default 15s.
    #[serde(
        default = "default_lease",
        deserialize_with = "jarvis_design::duration::deserialize"
    )]
    pub lease: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: None,
            lease: default_lease(),
        }
    }
}

fn default_lease() -> Duration {
    Duration::from_secs(15)
}

impl ClusterConfig {
    /// The node name: the configured one, or the machine's host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "jarvis".into())
        })
    }

    pub fn check(&self) -> Result<(), String> {
        if let Some(node) = &self.node
            && (node.is_empty()
                || node.len() > 64
                || !node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
        {
            return Err(
                "cluster.node: one word of letters, digits, '-', '_', '.' or ':', at most 64"
                    .into(),
            );
        }
        if self.lease < Duration::from_secs(1) {
            return Err("cluster.lease: must be at least 1s".into());
        }
        Ok(())
    }
}

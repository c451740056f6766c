//! Environments (staging before production): their order in the configuration, which one a
//! design belongs to, the digest of a design's content, and the promotion rule: a pipeline
//! with `promote_within` runs on an environment only when the same design content succeeded
//! on the environment before it within that age.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::clipboard::Clipboard;
use crate::store::{Run, Store, StoreError, now_ms};

/// `environments:` — the environments in promotion order, and where a design names its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentsConfig {
    /// The design field that names a host's environment (a dotted path). Designs from LDAP
    /// get it through `designs.ldap.attributes` (e.g. `businessCategory: instance.environment`).
    #[serde(default = "default_field")]
    pub field: String,
    /// The environments, first to last: a promotion goes from one to the next.
    #[serde(default)]
    pub order: Vec<EnvironmentConfig>,
}

impl Default for EnvironmentsConfig {
    fn default() -> Self {
        EnvironmentsConfig {
            field: default_field(),
            order: Vec::new(),
        }
    }
}

fn default_field() -> String {
    "instance.environment".into()
}

/// One environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Its name, as `promote HOST to NAME` and designs say it.
    pub name: String,
    /// Every run here waits for an approver before its first stage.
    #[serde(default)]
    pub approval: bool,
}

impl EnvironmentsConfig {
    /// The configuration check: names are one word and unique; the field is a path.
    pub fn check(&self) -> Result<(), String> {
        let ok_path = self.field.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        if !ok_path || self.field.starts_with("jarvis.") {
            return Err(format!(
                "field: '{}' is not a design field path (like instance.environment)",
                self.field.escape_default()
            ));
        }
        for (i, env) in self.order.iter().enumerate() {
            super::command::group_arg(&env.name)
                .ok()
                .filter(|n| *n == env.name)
                .ok_or_else(|| {
                    format!(
                        "order[{i}].name: '{}' is not an environment name (lower-case letters, digits, '-', '_')",
                        env.name.escape_default()
                    )
                })?;
            if self.order[..i].iter().any(|e| e.name == env.name) {
                return Err(format!("order[{i}].name: '{}' is listed twice", env.name));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&EnvironmentConfig> {
        self.order.iter().find(|e| e.name == name)
    }

    /// The environment before `name`, if `name` is not the first.
    pub fn previous(&self, name: &str) -> Option<&EnvironmentConfig> {
        let i = self.order.iter().position(|e| e.name == name)?;
        i.checked_sub(1).map(|p| &self.order[p])
    }

    /// The environment a design names in its field, if any.
    pub fn of_design(&self, document: &Clipboard) -> Option<String> {
        let mut parts = self.field.split('.');
        let first = parts.next()?;
        let mut value = document.get(first)?;
        for part in parts {
            value = value.get(part)?;
        }
        value.as_str().map(|s| s.to_ascii_lowercase())
    }

    /// The environment a run goes to: the one asked for, else the design's. Refused when
    /// it names none configured.
    pub fn choose(
        &self,
        asked: Option<&str>,
        document: &Clipboard,
    ) -> Result<Option<String>, String> {
        // Without environments configured, a design's field is just data.
        if self.order.is_empty() && asked.is_none() {
            return Ok(None);
        }
        let chosen = asked
            .map(str::to_string)
            .or_else(|| self.of_design(document));
        let Some(name) = chosen else {
            return Ok(None);
        };
        if self.get(&name).is_some() {
            return Ok(Some(name));
        }
        let known = self
            .order
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Err(if known.is_empty() {
            format!("no environments are configured, so '{name}' is none of them")
        } else {
            format!(
                "'{}' is not a configured environment ({known})",
                crate::text::one_line(&name, 40)
            )
        })
    }

    /// The digest of a design's content: SHA-256 over its canonical JSON (keys sorted),
    /// leaving out what names the host and its environment (`instance.hostname`,
    /// `instance.fqdn`, the environment field), so the staging and production hosts of one
    /// design share it, and any other change makes a new one.
    pub fn digest(&self, document: &Clipboard) -> String {
        let mut doc = document.clone();
        doc.remove("jarvis");
        if let Some(Value::Object(instance)) = doc.get_mut("instance") {
            instance.remove("hostname");
            instance.remove("fqdn");
        }
        let path: Vec<&str> = self.field.split('.').collect();
        remove_path(&mut doc, &path);
        let text = canonical(&Value::Object(doc)).to_string();
        let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn remove_path(map: &mut serde_json::Map<String, Value>, path: &[&str]) {
    match path {
        [] => {}
        [last] => {
            map.remove(*last);
        }
        [first, rest @ ..] => {
            if let Some(Value::Object(inner)) = map.get_mut(*first) {
                remove_path(inner, rest);
            }
        }
    }
}

/// The value with every mapping's keys in sorted order.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The first characters of a digest, as shown.
pub fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Whether a run of `host` with design content `digest` may run on `environment` under a
/// pipeline whose `promote_within` is `within`: Ok, or the one line that names what is
/// missing (and the last run there, if any).
pub async fn check_promotion(
    store: &Store,
    environments: &EnvironmentsConfig,
    within: Option<Duration>,
    environment: &str,
    host: &str,
    digest: &str,
) -> Result<Result<(), String>, StoreError> {
    let (Some(within), Some(previous)) = (within, environments.previous(environment)) else {
        return Ok(Ok(()));
    };
    let since = now_ms() - within.as_millis() as i64;
    if store
        .succeeded_in_environment(&previous.name, digest, since)
        .await?
        .is_some()
    {
        return Ok(Ok(()));
    }
    let age = humantime::format_duration(Duration::from_secs(within.as_secs()));
    let needed = format!(
        "{environment} needs {host}'s design (content {}) to have succeeded on {} within {age}",
        short(digest),
        previous.name
    );
    let last = store
        .last_in_environment(&previous.name, digest, host)
        .await?;
    Ok(Err(match last {
        None => format!("{needed}; it has no run there yet"),
        Some(run) => format!("{needed}; the last run there: {}", last_run(&run, digest)),
    }))
}

/// `web1 deploy #4, failed 2h ago` (and whether its content differs).
fn last_run(run: &Run, digest: &str) -> String {
    let when = run
        .finished_at
        .map(|at| {
            let ago = Duration::from_secs(((now_ms() - at).max(0) / 1000) as u64);
            format!(" {} ago", humantime::format_duration(ago))
        })
        .unwrap_or_default();
    let content = match run.design_digest.as_deref() {
        Some(d) if d != digest => format!(", with other content ({})", short(d)),
        None => ", with no recorded content".into(),
        Some(_) => String::new(),
    };
    format!(
        "{} {} #{}, {}{when}{content}",
        run.host,
        run.kind.as_str(),
        run.id,
        run.state.as_str().replace('_', " ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Clipboard {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn the_digest_ignores_host_names_and_environment_but_nothing_else() {
        let envs = EnvironmentsConfig::default();
        let staging = doc(
            "instance: { hostname: web-s, fqdn: web-s.example.com, provider: local, environment: staging }\napp: { version: 3 }",
        );
        let production = doc(
            "app: { version: 3 }\ninstance: { provider: local, environment: production, hostname: web-p }",
        );
        assert_eq!(envs.digest(&staging), envs.digest(&production));
        let changed = doc("app: { version: 4 }\ninstance: { provider: local, hostname: web-p }");
        assert_ne!(envs.digest(&staging), envs.digest(&changed));
        assert_eq!(envs.digest(&staging).len(), 64);
    }

    #[test]
    fn the_environment_comes_from_the_request_or_the_design() {
        let envs: EnvironmentsConfig =
            serde_saphyr::from_str("order: [{ name: staging }, { name: production }]").unwrap();
        envs.check().unwrap();
        let d = doc("instance: { hostname: a, provider: local, environment: Staging }");
        assert_eq!(envs.choose(None, &d), Ok(Some("staging".into())));
        assert_eq!(
            envs.choose(Some("production"), &d),
            Ok(Some("production".into()))
        );
        assert!(
            envs.choose(Some("qa"), &d)
                .unwrap_err()
                .contains("staging, production")
        );
        assert_eq!(
            envs.previous("production").map(|e| e.name.as_str()),
            Some("staging")
        );
        assert!(envs.previous("staging").is_none());
        assert_eq!(EnvironmentsConfig::default().choose(None, &d), Ok(None));
        assert!(
            EnvironmentsConfig::default()
                .choose(Some("staging"), &d)
                .is_err()
        );
        let twice: EnvironmentsConfig =
            serde_saphyr::from_str("order: [{ name: a }, { name: a }]").unwrap();
        assert!(twice.check().unwrap_err().contains("order[1].name"));
    }
}

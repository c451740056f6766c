//! What a run keeps besides its clipboard: the secrets its workers made (sealed in the
//! store, opened for its later stages) and the host keys a stage may pin.

use super::*;

/// A run's secret, opened: its name, the module whose worker made it, and its value.
#[derive(Clone)]
pub(super) struct RunSecret {
    pub name: String,
    /// None for a secret stored before secrets were kept per module: it goes to every stage,
    /// as it did when it was made (a failed run from before an upgrade still resumes).
    pub module: Option<String>,
    pub value: String,
}

impl RunSecret {
    /// Whether a stage of `module` is handed this secret: its own module's, or a module
    /// the configuration lets it have secrets from.
    pub fn reaches(&self, module: &str, secrets_from: &BTreeMap<String, Vec<String>>) -> bool {
        match &self.module {
            None => true,
            Some(maker) => {
                maker == module
                    || secrets_from
                        .get(module)
                        .is_some_and(|from| from.iter().any(|m| m == maker))
            }
        }
    }
}

/// How a secret is named in the store: `MODULE:NAME`. A secret's name has no `:` (see
/// `seal::parse_secret_line`), so the last `:` parts them, and the store needs no column.
pub(super) fn stored_name(module: &str, name: &str) -> String {
    format!("{module}:{name}")
}

/// A stored name read back: the module that made the secret (none for older rows) and the
/// secret's own name.
pub(super) fn split_stored_name(stored: &str) -> (Option<&str>, &str) {
    match stored.rsplit_once(':') {
        Some((module, name)) => (Some(module), name),
        None => (None, stored),
    }
}

impl Engine {
    /// The run's secrets, opened, by name.
    pub(super) async fn open_secrets(&self, run: RunId) -> Result<Vec<RunSecret>, String> {
        let sealed = self.inner.store.sealed_secrets(run).await.map_err(|e| {
            tracing::error!(run, error = %e, "cannot read the run's secrets");
            "cannot read the run's secrets".to_string()
        })?;
        if sealed.is_empty() {
            return Ok(Vec::new());
        }
        let Some(sealer) = &self.inner.config.sealer else {
            return Err("the run has secrets, but jarvis has no key to open them".into());
        };
        sealed
            .into_iter()
            .map(|(stored, bytes)| {
                // The seal is bound to the stored name, module included: a sealed value
                // moved to another module's name does not open.
                let (module, name) = split_stored_name(&stored);
                let plain = sealer
                    .open(&secret_context(run, &stored), &bytes)
                    .map_err(|e| format!("secret {name} of run #{run}: {e}"))?;
                let value = String::from_utf8(plain)
                    .map_err(|_| format!("secret {name} of run #{run} is not text"))?;
                Ok(RunSecret {
                    name: name.to_string(),
                    module: module.map(str::to_string),
                    value,
                })
            })
            .collect()
    }

    /// Seals and stores what a worker of `module` handed back on its secret channel.
    pub(super) async fn keep_secrets(
        &self,
        run: RunId,
        module: &str,
        made: &[(String, String)],
    ) -> Result<(), String> {
        if made.is_empty() {
            return Ok(());
        }
        let Some(sealer) = &self.inner.config.sealer else {
            return Err("the worker made a secret, but jarvis has no key to keep it sealed".into());
        };
        let mut sealed = Vec::with_capacity(made.len());
        for (name, value) in made {
            let stored = stored_name(module, name);
            let bytes = sealer
                .seal(&secret_context(run, &stored), value.as_bytes())
                .map_err(|e| format!("cannot seal secret {name}: {e}"))?;
            sealed.push((stored, bytes));
        }
        self.inner
            .store
            .put_sealed_secrets(run, &sealed)
            .await
            .map_err(|e| {
                tracing::error!(run, error = %e, "cannot store the run's secrets");
                "cannot store the secrets the worker made".to_string()
            })
    }

    /// Pins the host keys a stage reports having learned, when its configuration lets it.
    pub(super) async fn pin_learned(
        &self,
        run: &Run,
        index: usize,
        stage: &Stage,
        learned: serde_json::Value,
    ) -> Result<(), String> {
        let keys: Vec<HostKey> = serde_json::from_value(learned).map_err(|_| {
            format!(
                "{} reported learned host keys that are not a list of {{algorithm, fingerprint}}",
                stage.task
            )
        })?;
        if keys.is_empty() {
            return Ok(());
        }
        let (log_stage, by) = match run.phase {
            Phase::Main => (
                Some(index + 1),
                format!("run #{} stage {} {}", run.id, index + 1, stage.task),
            ),
            Phase::OnFailure => (
                None,
                format!("run #{} on_failure {} {}", run.id, index + 1, stage.task),
            ),
        };
        if !stage.learns_host_keys() {
            tracing::warn!(run = run.id, task = %stage.task, "a stage not configured to learn host keys reported some; ignored");
            let line = format!(
                "ignored the host keys {} reported: its configuration does not say 'with: {{host_key: learn}}'",
                stage.task
            );
            let _ = self
                .inner
                .store
                .append_log(run.id, log_stage, &[line])
                .await;
            return Ok(());
        }
        if let Some(bad) = keys.iter().find(|k| !is_host_key(k)) {
            return Err(format!(
                "{} reported a host key that is no algorithm and SHA256 fingerprint ({})",
                stage.task,
                crate::text::one_line(&bad.algorithm, 40)
            ));
        }
        self.inner
            .store
            .learn_host_keys(run.id, &run.host, &keys, &by, log_stage)
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(run = run.id, error = %e, "cannot pin host keys");
                "cannot pin the host keys the stage learned".to_string()
            })
    }
}

/// What a secret's seal is bound to: its run and its stored name.
pub(super) fn secret_context(run: RunId, name: &str) -> String {
    format!("run {run} secret {name}")
}

/// Whether a reported host key looks like one: a known algorithm name and a SHA-256
/// fingerprint as `ssh-keygen -lf` prints it.
pub fn is_host_key(key: &HostKey) -> bool {
    let algorithm_ok = !key.algorithm.is_empty()
        && key.algorithm.len() <= 64
        && key
            .algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-@.".contains(c));
    let fingerprint_ok = key.fingerprint.strip_prefix("SHA256:").is_some_and(|b64| {
        b64.len() == 43
            && b64
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    });
    algorithm_ok && fingerprint_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_reaches_its_own_module_and_those_that_list_it() {
        let (module, name) = split_stored_name("linode:root_password");
        assert_eq!((module, name), (Some("linode"), "root_password"));
        assert_eq!(split_stored_name("root_password"), (None, "root_password"));
        let secret = RunSecret {
            name: "root_password".into(),
            module: Some("linode".into()),
            value: "x".into(),
        };
        let mut from = BTreeMap::new();
        from.insert("ssh".to_string(), vec!["linode".to_string()]);
        assert!(secret.reaches("linode", &from));
        assert!(secret.reaches("ssh", &from));
        assert!(!secret.reaches("dns", &from));
        let older = RunSecret {
            module: None,
            ..secret
        };
        assert!(older.reaches("dns", &from));
    }
}

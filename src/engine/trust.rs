//! What a run keeps besides its clipboard: the secrets its workers made (sealed in the
//! store, opened for its later stages) and the host keys a stage may pin.

use super::*;

impl Engine {
    /// The run's secrets, opened, by name.
    pub(super) async fn open_secrets(&self, run: RunId) -> Result<Vec<(String, String)>, String> {
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
            .map(|(name, bytes)| {
                let plain = sealer
                    .open(&secret_context(run, &name), &bytes)
                    .map_err(|e| format!("secret {name} of run #{run}: {e}"))?;
                let text = String::from_utf8(plain)
                    .map_err(|_| format!("secret {name} of run #{run} is not text"))?;
                Ok((name, text))
            })
            .collect()
    }

    /// Seals and stores what a worker handed back on its secret channel.
    pub(super) async fn keep_secrets(
        &self,
        run: RunId,
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
            let bytes = sealer
                .seal(&secret_context(run, name), value.as_bytes())
                .map_err(|e| format!("cannot seal secret {name}: {e}"))?;
            sealed.push((name.clone(), bytes));
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
            .map_err(|e| {
                tracing::error!(run = run.id, error = %e, "cannot pin host keys");
                "cannot pin the host keys the stage learned".to_string()
            })
    }
}

/// What a secret's seal is bound to: its run and its name.
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

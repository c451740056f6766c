//! One stage attempt: the worker's input, folder, environment and secret channel, the
//! process run to its end, and the pure judgement of how it ended ([`outcome_of`]).

use super::schedule::current_clipboard;
use super::stderr::{STDERR_BUFFER, consume_stderr};
use super::trust::RunSecret;
use super::worker::{ProcessExit, WorkerReport, stderr_cap_reason};
use super::*;

impl Engine {
    /// Runs the worker for one stage attempt and judges its outcome.
    pub(super) async fn execute(
        &self,
        run: &Run,
        index: usize,
        stage: &Stage,
        attempt: u32,
        cancel: &CancellationToken,
        context: &mut RunContext,
    ) -> StageVerdict {
        let config = &self.inner.config;
        let (module, task) = stage.module_task();
        let (program, args) = match resolve_worker(config, module, task) {
            Ok(found) => found,
            Err(reason) => {
                return StageVerdict::Failed {
                    reason,
                    retry: false,
                    exit_code: None,
                };
            }
        };
        // An SSH stage reads the pins afresh: an admin's `trust` said while the run was in
        // flight holds from its next SSH stage on. Other stages keep the run's first look.
        let cached = context.pins.as_ref().filter(|_| module != "ssh");
        let pins = match cached {
            Some(pins) => pins.clone(),
            None => match self.inner.store.host_keys(&run.host).await {
                Ok(pins) => {
                    let keys: Vec<&HostKey> = pins.iter().map(|p| &p.key).collect();
                    let value = serde_json::to_value(&keys).unwrap_or_default();
                    context.pins = Some(value.clone());
                    value
                }
                Err(e) => {
                    tracing::error!(run = run.id, error = %e, "cannot read the host's pinned keys");
                    return StageVerdict::failed("cannot read the host's pinned keys", true);
                }
            },
        };
        let input = clipboard::worker_input(current_clipboard(run), stage.with.as_ref(), pins);
        let run_secrets = match &context.secrets {
            Some(secrets) => secrets.clone(),
            None => match self.open_secrets(run.id).await {
                Ok(secrets) => {
                    context.secrets = Some(secrets.clone());
                    secrets
                }
                Err(reason) => return StageVerdict::failed(reason, false),
            },
        };
        // Every secret of the run is masked, whichever module it reaches.
        let masker = config
            .masker
            .with_clipboard(&input)
            .with_values(run_secrets.iter().map(|s| s.value.as_str()));
        let workdir = scratch::work_root(&config.scratch_dir).join(format!(
            "{}-{}{}-{}",
            run.id,
            phase_letter(run.phase),
            index + 1,
            attempt
        ));
        let _ = std::fs::remove_dir_all(&workdir);
        if let Err(e) = make_private_folder(&workdir) {
            return StageVerdict::failed(format!("cannot make the working folder: {e}"), true);
        }
        let secret_channel = workdir.join("secrets.fifo");
        let secrets_rx = match open_secret_channel(&secret_channel) {
            Ok(rx) => rx,
            Err(e) => {
                return StageVerdict::failed(format!("cannot make the secret channel: {e}"), true);
            }
        };
        let stages_total = run.phase_stages().len();
        let mut env: Vec<(String, String)> = vec![
            ("JARVIS_RUN_ID".into(), run.id.to_string()),
            ("JARVIS_STAGE".into(), (index + 1).to_string()),
            ("JARVIS_STAGES".into(), stages_total.to_string()),
            ("JARVIS_TASK".into(), stage.task.clone()),
            ("JARVIS_HOST".into(), run.host.clone()),
            ("JARVIS_ATTEMPT".into(), attempt.to_string()),
            ("JARVIS_PHASE".into(), run.phase.as_str().into()),
            (
                "PATH".into(),
                "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
            ),
            ("HOME".into(), workdir.display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
            (
                "JARVIS_SECRETS".into(),
                secret_channel.display().to_string(),
            ),
        ];
        // Handed-on secrets first, then the module's own: of two with one name, the
        // module's own wins.
        let reaching = run_secrets
            .iter()
            .filter(|s| s.reaches(module, &config.secrets_from));
        for secret in reaching
            .clone()
            .filter(|s| s.module.as_deref() != Some(module))
            .chain(reaching.filter(|s| s.module.as_deref() == Some(module)))
        {
            let variable = seal::variable_for(&secret.name);
            env.retain(|(name, _)| *name != variable);
            env.push((variable, secret.value.clone()));
        }
        if let Some(grant) = config.grants.get(module) {
            for (k, v) in grant {
                env.retain(|(name, _)| name != k);
                env.push((k.clone(), v.clone()));
            }
        }
        let spec = WorkerSpec {
            program,
            args,
            env,
            workdir: workdir.clone(),
            stdin: clipboard::to_yaml(&input).into_bytes(),
            timeout: Duration::from_millis(stage.timeout_ms),
            grace: config.kill_grace,
            stdout_cap: config.stdout_cap,
            stderr_keep: config.stderr_keep,
            stderr_lines_cap: config.stage_caps.log_lines,
            stderr_bytes_cap: config.stage_caps.log_bytes,
        };

        let (tx, rx) = mpsc::channel(STDERR_BUFFER);
        let live = self
            .lock_active()
            .get(&run.id)
            .map(|a| a.live.clone())
            .unwrap_or_default();
        if let Ok(mut l) = live.lock() {
            l.progress = None;
        }
        let consumer = tokio::spawn(consume_stderr(
            self.clone(),
            run.clone(),
            index,
            stage.task.clone(),
            masker.clone(),
            live.clone(),
            rx,
            secrets_rx,
        ));
        let marker = scratch::running_marker(&config.scratch_dir, run.id);
        let finished = worker::run(spec, tx, cancel.clone(), self.inner.halt.clone(), |pgid| {
            recovery::write_marker(&marker, pgid);
        })
        .await;
        recovery::remove_marker(&marker);
        let made_secrets = consumer.await.unwrap_or_default();
        let _ = std::fs::remove_dir_all(&workdir);
        let masker = masker.with_values(made_secrets.iter().map(|(_, v)| v.as_str()));
        if let Err(reason) = self.keep_secrets(run.id, module, &made_secrets).await {
            return StageVerdict::failed(reason, false);
        }
        if !made_secrets.is_empty() {
            context.secrets = None;
        }
        let progress = live.lock().ok().and_then(|l| l.progress.clone());

        let secrets: Vec<(&str, &str)> = run_secrets
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str()))
            .chain(made_secrets.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .collect();
        let checks = OutputChecks {
            clipboard_cap: config.stage_caps.clipboard_bytes,
            secrets: &secrets,
        };
        let (outcome, learned) = outcome_of(&finished, &masker, progress, &checks);
        if let Some(learned) = learned {
            // Whatever was pinned, the next stage reads the pins afresh.
            context.pins = None;
            if let Err(reason) = self.pin_learned(run, index, stage, learned).await {
                return StageVerdict::failed(reason, false);
            }
        }
        outcome
    }
}

/// What a run's stages need from the store besides the run itself: read once while this
/// process drives the run, and read again after a stage pinned keys or made secrets.
#[derive(Default)]
pub(super) struct RunContext {
    pins: Option<serde_json::Value>,
    secrets: Option<Vec<RunSecret>>,
}

/// What a worker's new clipboard is held to besides being one YAML mapping.
pub(super) struct OutputChecks<'a> {
    /// Its size once parsed, aliases expanded.
    pub clipboard_cap: usize,
    /// The run's secrets (name, value): none may be on the clipboard.
    pub secrets: &'a [(&'a str, &'a str)],
}

/// Secrets shorter than this are not looked for on the clipboard: a value that short turns
/// up in ordinary text by chance (and is no strong secret anyway).
pub(super) const SECRET_MIN_LEN_ON_CLIPBOARD: usize = 6;

/// The name of the first secret whose value is in any string of the clipboard (keys too).
fn secret_on_clipboard<'a>(clipboard: &Clipboard, secrets: &[(&'a str, &str)]) -> Option<&'a str> {
    fn holds(value: &serde_json::Value, secret: &str) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains(secret),
            serde_json::Value::Number(n) => n.to_string().contains(secret),
            serde_json::Value::Array(items) => items.iter().any(|v| holds(v, secret)),
            serde_json::Value::Object(map) => map
                .iter()
                .any(|(k, v)| k.contains(secret) || holds(v, secret)),
            _ => false,
        }
    }
    secrets
        .iter()
        .filter(|(_, value)| value.len() >= SECRET_MIN_LEN_ON_CLIPBOARD)
        .find(|(_, value)| {
            clipboard
                .iter()
                .any(|(k, v)| k.contains(value) || holds(v, value))
        })
        .map(|(name, _)| *name)
}

/// What a stage comes to for its run: the one thing the scheduler acts on (store the
/// clipboard, retry, fail with a reason, or leave the attempt in flight).
pub(super) enum StageVerdict {
    Done {
        clipboard: Option<Clipboard>,
        progress: Option<String>,
    },
    Failed {
        reason: String,
        retry: bool,
        exit_code: Option<i32>,
    },
    Cancelled,
    /// jarvis is stopping: the stage is left in flight for the next start to recover.
    Halted,
}

impl StageVerdict {
    pub(super) fn failed(reason: impl Into<String>, retry: bool) -> StageVerdict {
        StageVerdict::Failed {
            reason: reason.into(),
            retry,
            exit_code: None,
        }
    }
}

/// What a finished worker comes to: a pure judgement of its ending, its stdout and its last
/// stderr lines (masked), with the host keys it reports learned, which the caller pins.
pub(super) fn outcome_of(
    finished: &WorkerReport,
    masker: &Masker,
    progress: Option<String>,
    checks: &OutputChecks,
) -> (StageVerdict, Option<serde_json::Value>) {
    let reason_from_worker = |fallback: String| -> String {
        let text = finished
            .error_line
            .clone()
            .or_else(|| finished.last_stderr().map(str::to_string))
            .unwrap_or(fallback);
        masker.mask(&crate::text::one_line(&text, 300))
    };
    let outcome = match &finished.ending {
        ProcessExit::Exited(0) => {
            match clipboard::parse_worker_output_capped(&finished.stdout, checks.clipboard_cap) {
                Ok(mut clipboard) => {
                    if let Some(name) = clipboard
                        .as_ref()
                        .and_then(|c| secret_on_clipboard(c, checks.secrets))
                    {
                        // Named, never shown: the clipboard is stored and shown to viewers,
                        // which a secret must never reach.
                        let reason = format!(
                            "the worker put the run's secret '{name}' on the clipboard; secrets go on the secret channel only"
                        );
                        return (
                            StageVerdict::Failed {
                                reason,
                                retry: false,
                                exit_code: Some(0),
                            },
                            None,
                        );
                    }
                    let learned = clipboard.as_mut().and_then(clipboard::take_stage_extras);
                    return (
                        StageVerdict::Done {
                            clipboard,
                            progress,
                        },
                        learned,
                    );
                }
                Err(e) => StageVerdict::Failed {
                    reason: masker.mask(&e.to_string()),
                    retry: false,
                    exit_code: Some(0),
                },
            }
        }
        &ProcessExit::Exited(code) => StageVerdict::Failed {
            reason: reason_from_worker(format!("worker exited with status {code}")),
            retry: code == EXIT_TEMPFAIL,
            exit_code: Some(code),
        },
        &ProcessExit::Signalled(sig) => StageVerdict::Failed {
            reason: format!("worker was killed by signal {}", signal_name(sig)),
            retry: false,
            exit_code: None,
        },
        &ProcessExit::TimedOut(limit) => StageVerdict::Failed {
            reason: format!(
                "timed out after {}",
                crate::text::duration(limit.as_millis() as u64)
            ),
            retry: true,
            exit_code: None,
        },
        &ProcessExit::StdoutOverflow(cap) => StageVerdict::Failed {
            reason: format!(
                "worker printed more than {} on stdout, the limit for a clipboard",
                crate::text::bytes(cap as u64)
            ),
            retry: false,
            exit_code: None,
        },
        &ProcessExit::StderrOverflow(cap) => StageVerdict::Failed {
            reason: stderr_cap_reason(cap),
            retry: false,
            exit_code: None,
        },
        ProcessExit::Cancelled => StageVerdict::Cancelled,
        ProcessExit::Halted => StageVerdict::Halted,
        ProcessExit::SpawnFailed(reason) => StageVerdict::Failed {
            reason: reason.clone(),
            retry: false,
            exit_code: None,
        },
    };
    (outcome, None)
}

pub(super) fn phase_letter(phase: Phase) -> &'static str {
    match phase {
        Phase::Main => "s",
        Phase::OnFailure => "u",
    }
}

pub(super) fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| sig.to_string())
}

/// A working folder only jarvis's user can enter.
pub(super) fn make_private_folder(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// The secret channel: a named pipe the worker appends `NAME=VALUE` lines to. Held open for
/// reading and writing, so it never reads as ended while the worker has yet to open it.
pub(super) fn open_secret_channel(
    path: &Path,
) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    use nix::sys::stat::Mode;
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).map_err(std::io::Error::from)?;
    tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn finished(ending: ProcessExit, stdout: &str, stderr: &[&str]) -> WorkerReport {
        WorkerReport {
            ending,
            stdout: stdout.as_bytes().to_vec(),
            error_line: None,
            stderr_tail: stderr
                .iter()
                .map(|l| l.to_string())
                .collect::<VecDeque<_>>(),
        }
    }

    fn masker() -> Masker {
        Masker::new(vec![], vec!["hunter22".into()])
    }

    const NO_CHECKS: OutputChecks<'static> = OutputChecks {
        clipboard_cap: 1024 * 1024,
        secrets: &[],
    };

    fn failure(outcome: StageVerdict) -> (String, bool, Option<i32>) {
        match outcome {
            StageVerdict::Failed {
                reason,
                retry,
                exit_code,
            } => (reason, retry, exit_code),
            _ => panic!("expected a failure"),
        }
    }

    #[test]
    fn a_clean_exit_hands_on_the_clipboard_and_the_learned_keys() {
        let out = "ip: 192.0.2.7\njarvis:\n  with: {a: 1}\n  learned_host_keys: [{algorithm: ssh-ed25519, fingerprint: x}]\n";
        let (outcome, learned) = outcome_of(
            &finished(ProcessExit::Exited(0), out, &[]),
            &masker(),
            Some("3/4".into()),
            &NO_CHECKS,
        );
        let StageVerdict::Done {
            clipboard,
            progress,
        } = outcome
        else {
            panic!("expected done");
        };
        let clipboard = clipboard.expect("a clipboard");
        assert_eq!(clipboard["ip"], "192.0.2.7");
        // What jarvis handed the stage alone is taken back out.
        assert!(clipboard["jarvis"].get("with").is_none());
        assert_eq!(progress.as_deref(), Some("3/4"));
        assert!(learned.expect("learned keys").is_array());
    }

    #[test]
    fn empty_output_leaves_the_clipboard_unchanged() {
        let (outcome, learned) = outcome_of(
            &finished(ProcessExit::Exited(0), "", &[]),
            &masker(),
            None,
            &NO_CHECKS,
        );
        assert!(matches!(
            outcome,
            StageVerdict::Done {
                clipboard: None,
                ..
            }
        ));
        assert!(learned.is_none());
    }

    #[test]
    fn output_that_is_no_mapping_fails_without_retry() {
        let (outcome, _) = outcome_of(
            &finished(ProcessExit::Exited(0), "- a\n", &[]),
            &masker(),
            None,
            &NO_CHECKS,
        );
        let (_, retry, code) = failure(outcome);
        assert!(!retry);
        assert_eq!(code, Some(0));
    }

    #[test]
    fn a_failed_exit_is_told_by_its_last_stderr_line_masked() {
        let f = finished(
            ProcessExit::Exited(1),
            "",
            &["working", "login failed with hunter22", "progress: 2/3", ""],
        );
        let (reason, retry, code) = failure(outcome_of(&f, &masker(), None, &NO_CHECKS).0);
        assert_eq!(reason, "login failed with ********");
        assert!(!retry);
        assert_eq!(code, Some(1));
        let mut f = f;
        f.error_line = Some("error: no such image".into());
        let (reason, _, _) = failure(outcome_of(&f, &masker(), None, &NO_CHECKS).0);
        assert_eq!(reason, "error: no such image");
        let silent = finished(ProcessExit::Exited(3), "", &[]);
        let (reason, _, _) = failure(outcome_of(&silent, &masker(), None, &NO_CHECKS).0);
        assert_eq!(reason, "worker exited with status 3");
    }

    #[test]
    fn tempfail_and_timeouts_are_retried_signals_and_overflows_are_not() {
        let retry =
            |ending| failure(outcome_of(&finished(ending, "", &[]), &masker(), None, &NO_CHECKS).0);
        assert!(retry(ProcessExit::Exited(EXIT_TEMPFAIL)).1);
        let (reason, again, _) = retry(ProcessExit::TimedOut(Duration::from_secs(30)));
        assert_eq!((reason.as_str(), again), ("timed out after 30s", true));
        let (reason, again, _) = retry(ProcessExit::Signalled(9));
        assert_eq!(
            (reason.as_str(), again),
            ("worker was killed by signal SIGKILL", false)
        );
        let (reason, again, _) = retry(ProcessExit::StdoutOverflow(1024 * 1024));
        assert!(reason.contains("more than 1 MiB") && !again);
        let (reason, again, _) = retry(ProcessExit::SpawnFailed("no such file".into()));
        assert_eq!((reason.as_str(), again), ("no such file", false));
    }

    #[test]
    fn a_clipboard_holding_a_run_secret_fails_naming_the_key() {
        let secrets = [("root_password", "Zq8xLmP3"), ("pin", "1234")];
        let checks = OutputChecks {
            clipboard_cap: 1024 * 1024,
            secrets: &secrets,
        };
        let out = "instance:\n  notes: ['set up with Zq8xLmP3 today']\n";
        let (reason, retry, code) = failure(
            outcome_of(
                &finished(ProcessExit::Exited(0), out, &[]),
                &masker(),
                None,
                &checks,
            )
            .0,
        );
        assert_eq!(
            reason,
            "the worker put the run's secret 'root_password' on the clipboard; secrets go on the secret channel only"
        );
        assert!(!retry && code == Some(0) && !reason.contains("Zq8xLmP3"));
        // A value shorter than 6 characters is not looked for: "1234" turns up by chance.
        let out = "port: 1234\nnote: pin 1234\n";
        let (outcome, _) = outcome_of(
            &finished(ProcessExit::Exited(0), out, &[]),
            &masker(),
            None,
            &checks,
        );
        assert!(matches!(outcome, StageVerdict::Done { .. }));
    }

    #[test]
    fn passing_a_cap_fails_in_one_line() {
        use super::super::worker::StderrCap;
        let of =
            |ending| failure(outcome_of(&finished(ending, "", &[]), &masker(), None, &NO_CHECKS).0);
        let (reason, retry, _) = of(ProcessExit::StderrOverflow(StderrCap::Lines(10_000)));
        assert_eq!(
            reason,
            "the worker's stderr passed 10000 lines, the limit for a stage"
        );
        assert!(!retry);
        let (reason, _, _) = of(ProcessExit::StderrOverflow(StderrCap::Bytes(1024 * 1024)));
        assert_eq!(
            reason,
            "the worker's stderr passed 1 MiB, the limit for a stage"
        );
        let mut bomb = format!("big: &a '{}'\nrefs:\n", "x".repeat(4096));
        for _ in 0..400 {
            bomb.push_str("  - *a\n");
        }
        let (reason, _, _) = failure(
            outcome_of(
                &finished(ProcessExit::Exited(0), &bomb, &[]),
                &masker(),
                None,
                &NO_CHECKS,
            )
            .0,
        );
        assert!(
            reason.contains("more than 1 MiB once its aliases are expanded"),
            "{reason}"
        );
    }

    #[test]
    fn cancelled_and_halted_stay_what_they_are() {
        let of = |ending| outcome_of(&finished(ending, "", &[]), &masker(), None, &NO_CHECKS).0;
        assert!(matches!(
            of(ProcessExit::Cancelled),
            StageVerdict::Cancelled
        ));
        assert!(matches!(of(ProcessExit::Halted), StageVerdict::Halted));
    }
}

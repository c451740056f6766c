//! A worker's stderr and secret channel, read while it runs: progress for `status`,
//! notices as events, every line masked into the run's log in batches, and the secrets it
//! makes, masked from the moment they are read.

use super::worker::StderrLine;
use super::*;

/// How many of a worker's stderr lines may wait to be stored before reading pauses.
pub(super) const STDERR_BUFFER: usize = 1024;

/// Reads a worker's stderr lines as they come: progress for `status`, notices as events,
/// everything masked into the run's log, flushed in batches.
#[allow(clippy::too_many_arguments)]
pub(super) async fn consume_stderr(
    engine: Engine,
    run: Run,
    index: usize,
    task: String,
    mut masker: Masker,
    live: Arc<Mutex<StageProgress>>,
    mut rx: mpsc::Receiver<StderrLine>,
    secrets: tokio::net::unix::pipe::Receiver,
) -> Vec<(String, String)> {
    let store = engine.store().clone();
    let mut channel = SecretChannel::new(secrets);
    let mut batch: Vec<String> = Vec::new();
    let mut last_flush = Instant::now();
    // Undo stages log without a stage number, marked instead, so `log` never confuses them
    // with the main stages.
    let (stage, mark) = match run.phase {
        Phase::Main => (Some(index + 1), String::new()),
        Phase::OnFailure => (None, format!("[on_failure {}] ", index + 1)),
    };
    loop {
        let line = tokio::select! {
            line = rx.recv() => match line {
                Some(line) => line,
                None => break,
            },
            _ = channel.readable() => {
                masker = channel.drain(&masker, &mut batch);
                continue;
            }
        };
        // A worker writes its secret before it prints it: whatever is in the channel now is
        // known before this line is masked.
        masker = channel.drain(&masker, &mut batch);
        let shown = match &line {
            StderrLine::Progress(t) => {
                let masked = masker.mask(&crate::text::one_line(t, 300));
                if let Ok(mut l) = live.lock() {
                    l.progress = Some(masked.clone());
                }
                format!("progress: {masked}")
            }
            StderrLine::Notice(t) => {
                let masked = masker.mask(&crate::text::one_line(t, 300));
                let body = EventBody::for_run(&run)
                    .stage(index, &task)
                    .text(masked.clone());
                if let Err(e) = store.add_events(&[body.into_event(kind::NOTICE)]).await {
                    tracing::error!(run = run.id, error = %e, "cannot store a notice");
                }
                engine.after_events();
                format!("notice: {masked}")
            }
            StderrLine::Error(t) => format!("error: {}", masker.mask(t)),
            StderrLine::Log(t) => masker.mask(t),
        };
        batch.push(format!("{mark}{shown}"));
        if batch.len() >= 200 || last_flush.elapsed() > Duration::from_millis(500) {
            flush_log(&store, run.id, stage, &mut batch).await;
            last_flush = Instant::now();
        }
    }
    channel.finish(&masker, &mut batch);
    flush_log(&store, run.id, stage, &mut batch).await;
    channel.made
}

/// The reading end of a worker's secret channel.
pub(super) struct SecretChannel {
    rx: Option<tokio::net::unix::pipe::Receiver>,
    partial: Vec<u8>,
    made: Vec<(String, String)>,
    bytes: usize,
}

/// Reads what the pipe holds right now. A plain read comes first: tokio's `try_read` trusts
/// readiness its reactor may not have seen yet, and a secret written just before a stderr
/// line must be read before that line is masked. When the pipe is empty, `try_read` lets tokio
/// see it so, and `readable` waits for new data instead of spinning.
pub(super) fn read_now(
    rx: &tokio::net::unix::pipe::Receiver,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match nix::unistd::read(rx, buf) {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EAGAIN) => rx.try_read(buf),
        Err(e) => Err(e.into()),
    }
}

/// More than this on the secret channel is no secret but a runaway worker.
pub(super) const SECRET_CHANNEL_LIMIT: usize = 64 * 1024;

impl SecretChannel {
    pub(super) fn new(rx: tokio::net::unix::pipe::Receiver) -> SecretChannel {
        SecretChannel {
            rx: Some(rx),
            partial: Vec::new(),
            made: Vec::new(),
            bytes: 0,
        }
    }

    pub(super) async fn readable(&self) {
        match &self.rx {
            Some(rx) => {
                if rx.readable().await.is_err() {
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// The last read, once the worker is gone: a last line without its newline counts too.
    pub(super) fn finish(&mut self, masker: &Masker, log: &mut Vec<String>) {
        self.drain(masker, log);
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            self.rx = None;
            self.drain(masker, log);
        }
    }

    /// Reads what is waiting, learns the secrets in it, and returns a masker that knows them.
    /// Refused lines go to the log by their reason only, never with their value.
    pub(super) fn drain(&mut self, masker: &Masker, log: &mut Vec<String>) -> Masker {
        let mut buf = [0u8; 4096];
        while let Some(rx) = &self.rx {
            match read_now(rx, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.bytes += n;
                    self.partial.extend_from_slice(&buf[..n]);
                    if self.bytes > SECRET_CHANNEL_LIMIT {
                        log.push(
                            "the secret channel carried more than 64 KiB; the rest is ignored"
                                .into(),
                        );
                        self.rx = None;
                        self.partial.clear();
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.rx = None;
                    break;
                }
            }
        }
        let mut fresh = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if text.trim().is_empty() {
                continue;
            }
            match seal::parse_secret_line(&text) {
                Ok((name, value)) => {
                    log.push(format!("secret {name} received (sealed)"));
                    fresh.push(value.clone());
                    self.made.retain(|(n, _)| *n != name);
                    self.made.push((name, value));
                }
                Err(reason) => log.push(format!("ignored a line on the secret channel: {reason}")),
            }
        }
        masker.with_values(fresh.iter().map(String::as_str))
    }
}

pub(super) async fn flush_log(
    store: &Store,
    run: RunId,
    stage: Option<usize>,
    batch: &mut Vec<String>,
) {
    if let Err(e) = store.append_log(run, stage, batch).await {
        tracing::error!(run, error = %e, "cannot store log lines");
    }
    batch.clear();
}

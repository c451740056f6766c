//! The command line (SPEC 9).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use jarvis::app::Application;
use jarvis::config::Settings;
use jarvis::engine::BuiltinWorkers;

#[derive(Parser)]
#[command(name = "jarvis", version, about = "A chat-ops deployment daemon")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The daemon: chat adapters and engine.
    Run {
        #[arg(long, env = "JARVIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The same bot on this terminal, as the operating-system user running it.
    Shell {
        #[arg(long, env = "JARVIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file; names file, line and column of what is wrong.
    ///
    /// With --connect, once the file passes, it also tries every server the configuration
    /// names: chat servers, the LDAP design source, the gist API, and the endpoints granted to
    /// worker modules (DNS_SERVER, LDAP_URL, LINODE_API, ALERTMANAGER_URL). All at once, 3s
    /// each, one line per target: `irc libera (irc.libera.chat:6697, TLS): ok` or why not.
    /// Only a TCP connection is opened, then closed: no TLS handshake, no login, no
    /// credential is sent. The exit status is non-zero if any target failed.
    CheckConfig {
        #[arg(long, env = "JARVIS_CONFIG")]
        config: Option<PathBuf>,
        /// Then open a TCP connection to each target the configuration names (3s each).
        #[arg(long)]
        connect: bool,
    },
    /// Create or upgrade the database.
    Migrate {
        #[arg(long, env = "JARVIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Prune finished runs past `retention.keep` (log lines, clipboards, events) now.
    Prune {
        #[arg(long, env = "JARVIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Personal API tokens for the HTTP API and the web page: `create PERSON` (shows the
    /// token once), `revoke PERSON|#ID`, `list`. Kept only as their SHA-256.
    Token {
        #[arg(long, env = "JARVIS_CONFIG")]
        config: Option<PathBuf>,
        /// create PERSON | revoke PERSON|#ID | list
        #[arg(required = true, num_args = 1..=2)]
        words: Vec<String>,
    },
    /// The hosts jarvis made, from its records. With --orphans: what each configured
    /// provider (ec2, linode) holds under jarvis's tags that no record names, each with how
    /// to remove it; nothing is deleted. The exit status is non-zero if a provider did not
    /// answer.
    Hosts {
        #[arg(long, env = "JARVIS_CONFIG")]
        config: Option<PathBuf>,
        /// Ask each configured provider for tagged resources that no record holds.
        #[arg(long)]
        orphans: bool,
    },
    /// Run a built-in worker, as the engine runs it.
    Worker { module: String, task: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Worker { module, task } = &cli.command {
        // A worker is its own small program: no runtime, no logging setup of the daemon's.
        return jarvis_workers::run(module, task);
    }
    // Everything jarvis makes from here on — the data folder, the database and its -wal and
    // -shm, the key, the workers' folders and what workers write — is its user's alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let quiet = matches!(cli.command, Cmd::Shell { .. });
    init_logging(quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jarvis: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jarvis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(quiet: bool) {
    // PostgreSQL's notices ("relation … already exists, skipping" at every start) are the
    // server talking to itself.
    let default = if quiet {
        "warn"
    } else {
        "info,sqlx::postgres::notice=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("JARVIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The configuration file's settings, or the embedded demonstration when there is none.
fn settings(config: &Option<PathBuf>) -> anyhow::Result<(Settings, bool)> {
    match config {
        Some(path) => Ok((Settings::load(path)?, false)),
        None => Ok((Settings::embedded(jarvis::config::default_data_dir()), true)),
    }
}

fn builtin_workers() -> Option<BuiltinWorkers> {
    let exe = std::env::current_exe().ok()?;
    Some(BuiltinWorkers {
        exe,
        modules: jarvis_workers::MODULES
            .iter()
            .map(|m| m.to_string())
            .collect(),
    })
}

async fn run(command: Cmd) -> anyhow::Result<ExitCode> {
    match command {
        Cmd::CheckConfig { config, connect } => {
            let Some(path) = config else {
                anyhow::bail!("give the file to check with --config FILE (or JARVIS_CONFIG)");
            };
            let settings = match Settings::load(&path) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let problems = jarvis::app::check_workers(&settings, builtin_workers());
            for p in &problems {
                eprintln!("{}: {p}", path.display());
            }
            if problems.is_empty() {
                println!(
                    "{}: ok ({} pipelines, {} IRC networks, {} XMPP accounts)",
                    path.display(),
                    settings.pipelines.len(),
                    settings.chat.irc.len(),
                    settings.chat.xmpp.len()
                );
                if connect && !try_targets(&settings).await {
                    return Ok(ExitCode::FAILURE);
                }
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::Migrate { config } => {
            let (settings, _) = settings(&config)?;
            jarvis::app::check_at_rest(&settings)?;
            let url = settings.database_url();
            let shown = settings.database_url_shown();
            let (applied, total) =
                jarvis::store::Store::migrate(url.expose())
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot migrate the database {shown}: {}",
                            jarvis::secrets::redact_url_in(&e.to_string(), url.expose())
                        )
                    })?;
            println!("{shown}: up to date ({applied} of {total} migrations applied now)");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Prune { config } => {
            let (settings, _) = settings(&config)?;
            let shown = settings.database_url_shown();
            let store = open_store(&settings).await?;
            let retention = &settings.retention;
            let p = jarvis::retention::prune_once(&store, retention).await?;
            store.close().await;
            let summaries = match retention.forget {
                Some(age) => format!(
                    "{} run summaries older than {} forgotten",
                    p.forgotten,
                    humantime::format_duration(age)
                ),
                None => "run summaries stay".to_string(),
            };
            let audit = match retention.audit {
                Some(age) => format!(
                    "{} audit rows older than {} forgotten",
                    p.audit_rows,
                    humantime::format_duration(age)
                ),
                None => "the audit log stays".to_string(),
            };
            println!(
                "{shown}: pruned {} runs that ended more than {} ago ({} log lines, {} events, {} stage records, {} sent notifications); {summaries}; {audit}",
                p.runs,
                humantime::format_duration(retention.keep),
                p.log_lines,
                p.events,
                p.stage_records,
                p.notifications
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Hosts { config, orphans } => {
            let (settings, _) = settings(&config)?;
            let store = open_store(&settings).await?;
            let builtin = builtin_workers();
            let (lines, answered) =
                jarvis::orphans::hosts_command(&settings, &store, builtin.as_ref(), orphans)
                    .await?;
            store.close().await;
            for line in lines {
                println!("{line}");
            }
            Ok(if answered {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Token { config, words } => {
            let (settings, _) = settings(&config)?;
            token(&settings, &words).await
        }
        Cmd::Shell { config } => {
            let (settings, embedded) = settings(&config)?;
            let app = Application::start(settings, builtin_workers(), embedded).await?;
            // With no configuration the page is served on loopback (a free port); with one,
            // where its `http:` section says.
            let http = match (&app.settings().http, embedded) {
                (Some(http), _) => Some(http.clone()),
                (None, true) => Some(jarvis::http::HttpConfig::local()),
                (None, false) => None,
            };
            if let Some(http) = http {
                let server =
                    jarvis::http::start(&app, http, Some(jarvis::adapters::console::os_user()))
                        .await?;
                match &server.console_login {
                    Some(link) => eprintln!(
                        "jarvis: web page at {} (log in as yourself, once: {link})",
                        server.url
                    ),
                    None => eprintln!("jarvis: web page at {}", server.url),
                }
            }
            let engine = app.engine().clone();
            let grace = app.settings().limits.stop_grace;
            tokio::select! {
                done = app.shell() => done?,
                _ = wait_for_stop_signal() => graceful_stop(&engine, grace).await,
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { config } => {
            let (settings, embedded) = settings(&config)?;
            if embedded {
                tracing::warn!(
                    "no configuration given: running the demonstration setup with no chat networks"
                );
            }
            let app = Application::start(settings, builtin_workers(), embedded).await?;
            if let Some(http) = app.settings().http.clone() {
                jarvis::http::start(&app, http, None).await?;
            }
            app.start_networks().await?;
            wait_for_stop_signal().await;
            graceful_stop(app.engine(), app.settings().limits.stop_grace).await;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Worker { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// `jarvis token …`: the chat command's work, as the console user, on the store directly.
async fn token(settings: &Settings, words: &[String]) -> anyhow::Result<ExitCode> {
    let line = format!("token {}", words.join(" "));
    let command = jarvis::chat::command::parse(&line).map_err(|e| anyhow::anyhow!("{e}"))?;
    let jarvis::chat::command::Command::Token { action } = command else {
        anyhow::bail!("say create PERSON, revoke PERSON|#ID or list");
    };
    let store = open_store(settings).await?;
    let by = format!("console:{}", jarvis::adapters::console::os_user());
    let outcome = jarvis::chat::tokens::command(&store, &settings.roles, &action, &by).await;
    let audit_outcome = match &outcome {
        Ok((public, _)) => public.first().cloned().unwrap_or_default(),
        Err(e) => format!("token failed: {e}"),
    };
    if !matches!(action, jarvis::chat::command::TokenAction::List) {
        let entry = jarvis::store::AuditEntry {
            identity: by.clone(),
            person: settings
                .roles
                .person_of(&[jarvis::chat::roles::Identity::Console(
                    jarvis::adapters::console::os_user(),
                )])
                .map(str::to_string),
            network: "command-line".into(),
            channel: "jarvis token".into(),
            command: line.clone(),
            outcome: audit_outcome,
        };
        if let Err(e) = store.audit(&entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
    store.close().await;
    match outcome {
        Ok((public, private)) => {
            // The token itself goes to stdout alone, so it can be piped into a secret store.
            for line in &public {
                eprintln!("{line}");
            }
            for line in &private {
                println!("{}", line.rsplit(' ').next().unwrap_or(line));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("jarvis: token failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `check-config --connect`: one line per target the configuration names; true if all
/// could be reached.
async fn try_targets(settings: &Settings) -> bool {
    let targets = jarvis::reach::targets(settings);
    let outcomes = jarvis::reach::reach_all(&targets, jarvis::reach::TIMEOUT).await;
    for (target, outcome) in targets.iter().zip(&outcomes) {
        println!("{}", target.line(outcome));
    }
    outcomes.iter().all(Result::is_ok)
}

/// After SIGTERM or SIGINT: no new stage starts, running stages get `grace` to finish; a
/// second signal stops at once. Either way the next start recovers what is left.
async fn graceful_stop(engine: &jarvis::engine::Engine, grace: std::time::Duration) {
    tracing::info!(
        ?grace,
        "stopping: no new stage starts; running stages may finish (a second signal stops at once)"
    );
    tokio::select! {
        _ = engine.stop(grace) => {
            tracing::info!("stopped; unfinished runs go on at the next start");
        }
        _ = wait_for_stop_signal() => {
            tracing::warn!("stopping at once; running workers are recovered at the next start");
        }
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The configured database, opened (and migrated); an error names it without its password.
async fn open_store(settings: &Settings) -> anyhow::Result<jarvis::store::Store> {
    let url = settings.database_url();
    jarvis::store::Store::open(url.expose()).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot open the database {}: {}",
            settings.database_url_shown(),
            jarvis::secrets::redact_url_in(&e.to_string(), url.expose())
        )
    })
}

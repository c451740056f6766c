//! The application: everything built from typed [`Settings`] — the store, the engine, the
//! bot, the notification router and couriers — and the adapters attached to it. `jarvis run`
//! and `jarvis shell` are the same application with different adapters.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{Notify, mpsc};

use crate::adapters;
use crate::chat::admission::{self, Admission, Busy};
use crate::chat::bot::{Bot, BotConfig};
use crate::chat::outlet::{Outlet, Outlets};
use crate::chat::{ChatNetwork, Incoming, Target, TargetKind, command, notify};
use crate::config::Settings;
use crate::engine::{BuiltinWorkers, Engine, EngineConfig};
use crate::secrets::Masker;
use crate::store::Store;

/// The demonstration designs, written into the designs folder of the embedded setup.
const DEMO_DESIGNS: &[(&str, &str)] = &[
    ("demo.yaml", include_str!("../config/designs/demo.yaml")),
    ("broken.yaml", include_str!("../config/designs/broken.yaml")),
];

#[derive(Clone)]
pub struct Application {
    settings: Arc<Settings>,
    engine: Engine,
    bot: Arc<Bot>,
    masker: Masker,
    outlets: Outlets,
    outbox_written: Arc<Notify>,
    _lock: Arc<Flock<File>>,
    /// On a shared database: no other process runs as this node while this lives.
    _node: Arc<crate::store::Role>,
}

impl Application {
    /// Builds and starts the application: takes the data folder's lock, opens the store,
    /// recovers from whatever the last process left, and starts the engine and the router.
    pub async fn start(
        mut settings: Settings,
        builtin: Option<BuiltinWorkers>,
        embedded: bool,
    ) -> anyhow::Result<Application> {
        let data_dir = settings.data_dir();
        make_private_folder(&data_dir)?;
        check_at_rest(&settings)?;
        let lock = lock_data_dir(&data_dir)?;
        if settings.designs.folder.is_none() {
            settings.designs.folder = Some(data_dir.join("designs"));
        }
        // A design may not carry a section named like a worker module: that is the worker's
        // state, written by workers, never by whoever edits a design.
        let mut modules: Vec<String> = settings.workers.modules.keys().cloned().collect();
        for pipeline in settings.pipelines.values() {
            for stage in pipeline.stages.iter().chain(&pipeline.on_failure) {
                modules.push(stage.module_task().0.to_string());
            }
        }
        let reserved = &mut settings.designs.limits.reserved_keys;
        for module in modules {
            if !reserved.iter().any(|k| k.eq_ignore_ascii_case(&module)) {
                reserved.push(module);
            }
        }
        if embedded {
            write_demo_designs(&data_dir.join("designs"))?;
        }
        let masker = Masker::new(settings.secrets.keys.clone(), settings.secret_values());
        let builtin_for_orphans = builtin.clone();
        let config = engine_config(&settings, builtin, masker.clone(), None);
        // Whoever could write a worker would run as jarvis with its credentials.
        if let Some(problem) = crate::engine::check_folders(&config).into_iter().next() {
            bail!("{problem}");
        }
        let url = settings.database_url();
        // The URL may hold a password: errors show it redacted, and the password nowhere.
        let store = Store::open(url.expose()).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open the database {}: {}",
                settings.database_url_shown(),
                crate::secrets::redact_url_in(&e.to_string(), url.expose())
            )
        })?;
        let store = match store.backend() {
            crate::store::Backend::Postgres => store.for_node(&settings.cluster.node_name()),
            crate::store::Backend::Sqlite => store,
        };
        let node = store.hold_node(url.expose()).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot use the database {}: {}",
                settings.database_url_shown(),
                crate::secrets::redact_url_in(&e.to_string(), url.expose())
            )
        })?;
        let sealer = crate::seal::Sealer::for_data_dir(&data_dir)
            .context("cannot set up the key for secrets at rest")?;
        let engine = Engine::new(
            store.clone(),
            EngineConfig {
                sealer: Some(Arc::new(sealer)),
                ..config
            },
        );
        engine
            .start()
            .await
            .context("cannot recover the runs of the last start")?;
        let settings = Arc::new(settings);
        // Checked by the configuration's own check; one that fails here is left out, said.
        let schedules: Vec<crate::triggers::schedule::Schedule> = settings
            .schedules
            .iter()
            .filter_map(|(name, c)| {
                match crate::triggers::schedule::Schedule::new(name, c, &settings.environments) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(schedule = %name, error = %e, "schedule left out");
                        None
                    }
                }
            })
            .collect();
        let designs = Arc::new(jarvis_design::DesignSources::new(settings.designs.clone()));
        let bot_config = BotConfig {
            name: settings.name.clone(),
            roles: settings.roles.clone(),
            pipelines: settings.pipelines.clone(),
            default_timeout: settings.limits.default_timeout,
            channel_lines: settings.limits.channel_lines,
            ldap_designs: settings.designs.ldap.is_some(),
            actions: settings.actions.clone(),
            schedules: schedules
                .iter()
                .map(|s| (s.name.clone(), s.describe()))
                .collect(),
            environments: settings.environments.clone(),
            groups: settings.groups.clone(),
            orphans: Some(crate::orphans::lister(
                (*settings).clone(),
                builtin_for_orphans,
                store.clone(),
            )),
        };
        let bot = Arc::new(Bot::new(Arc::new(bot_config), engine.clone(), designs));
        let outbox_written = Arc::new(Notify::new());
        let extra: Vec<Target> = settings
            .chat
            .notify
            .iter()
            .filter_map(|t| t.split_once(' '))
            .map(|(network, name)| notify_target(network, name.trim()))
            .collect();
        tokio::spawn(crate::triggers::schedule::run_forever(
            bot.clone(),
            store.clone(),
            schedules,
            Arc::new(crate::triggers::schedule::SystemClock),
        ));
        tokio::spawn(crate::retention::prune_forever(
            store.clone(),
            settings.retention.clone(),
        ));
        tokio::spawn(drive_rollouts_in_turn(
            store.clone(),
            url.expose().to_string(),
            bot.clone(),
        ));
        tokio::spawn(route_in_turn(
            store.clone(),
            url.expose().to_string(),
            engine.events_written(),
            outbox_written.clone(),
            extra,
            settings.chat.notice_rate,
        ));
        if store.backend() == crate::store::Backend::Postgres {
            let (engine, events, outbox) = (
                engine.clone(),
                engine.events_written(),
                outbox_written.clone(),
            );
            tokio::spawn(crate::store::cluster::listen(
                url.expose().to_string(),
                Duration::from_secs(2),
                move |news| match news {
                    crate::store::cluster::news::WAKE => engine.wake(),
                    crate::store::cluster::news::EVENTS => events.notify_one(),
                    crate::store::cluster::news::OUTBOX => outbox.notify_waiters(),
                    crate::store::cluster::news::CANCEL => engine.check_cancels(),
                    _ => {}
                },
            ));
        }
        Ok(Application {
            settings,
            engine,
            bot,
            masker,
            outlets: Outlets::default(),
            outbox_written,
            _lock: Arc::new(lock),
            _node: Arc::new(node),
        })
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn bot(&self) -> &Arc<Bot> {
        &self.bot
    }

    /// The connected chat networks, for adapters that report their state (`/metrics`).
    pub fn chat_networks(&self) -> Vec<Arc<dyn ChatNetwork>> {
        self.outlets
            .all()
            .iter()
            .map(|o| o.network().clone())
            .collect()
    }

    /// What masks secrets in everything shown (adapters that show clipboards use it).
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Connects a chat network: its outlet, and a courier for its notifications. Refused
    /// when another network has its name.
    pub fn attach(&self, network: Arc<dyn ChatNetwork>) -> anyhow::Result<Arc<Outlet>> {
        let outlet = self
            .outlets
            .add(Outlet::new(network, self.masker.clone()))
            .map_err(|e| anyhow::anyhow!(e))?;
        tokio::spawn(notify::courier(
            self.engine.store().clone(),
            outlet.clone(),
            self.outbox_written.clone(),
            self.settings.chat.delivery.clone(),
        ));
        Ok(outlet)
    }

    /// Answers messages from the adapters, each in its own task so a slow design load
    /// never holds up a `status`. A network's place (`chat.commands_in_flight`) is held
    /// while the answer is computed, a sender's (`chat.commands_per_sender`) until it is
    /// sent: paced sending of one sender's long answers never shuts others out. Past
    /// either, a one-line "busy" answer instead of a task. Messages not for jarvis cost
    /// nothing.
    pub fn serve(&self, mut incoming: mpsc::Receiver<Incoming>) {
        let app = self.clone();
        let admission = Admission::new(
            self.settings.chat.commands_in_flight,
            self.settings.chat.commands_per_sender,
        );
        // Busy answers go out one at a time from one task; when even that queue is full,
        // the flood gets no answer at all.
        let (busy_tx, mut busy_rx) = mpsc::channel::<(Incoming, Busy)>(16);
        let replier = self.clone();
        tokio::spawn(async move {
            while let Some((msg, busy)) = busy_rx.recv().await {
                replier.answer_busy(&msg, busy).await;
            }
        });
        tokio::spawn(async move {
            while let Some(msg) = incoming.recv().await {
                let direct = msg.reply_to.kind == TargetKind::Direct;
                if command::addressed(&msg.text, &app.settings.name, direct).is_none() {
                    continue;
                }
                match admission.admit(&msg.reply_to.network, &sender_key(&msg)) {
                    Ok(ticket) => {
                        let app = app.clone();
                        tokio::spawn(async move {
                            let reply = app.reply_to(&msg).await;
                            let _sending = ticket.computed();
                            if let Some(reply) = reply {
                                app.deliver(&msg, reply).await;
                            }
                        });
                    }
                    Err(busy) => {
                        tracing::info!(network = %msg.reply_to.network, nick = %msg.nick, ?busy, "busy: command turned away");
                        if busy_tx.try_send((msg, busy)).is_err() {
                            tracing::warn!("busy answers are backed up; a command gets none");
                        }
                    }
                }
            }
        });
    }

    async fn answer_busy(&self, msg: &Incoming, busy: Busy) {
        let Some(outlet) = self.outlets.get(&msg.reply_to.network) else {
            return;
        };
        let prefix = match msg.reply_to.kind {
            TargetKind::Room => format!("{}: ", msg.nick),
            TargetKind::Direct => String::new(),
        };
        if let Err(e) = outlet.say(&msg.reply_to, &prefix, &busy.line()).await {
            tracing::warn!(error = %e, "busy answer not delivered");
        }
    }

    /// Answers one message where it was said (and privately for the overflow).
    pub async fn answer(&self, msg: Incoming) {
        if let Some(reply) = self.reply_to(&msg).await {
            self.deliver(&msg, reply).await;
        }
    }

    /// The answer to one message, cut to `chat.reply_lines`.
    async fn reply_to(&self, msg: &Incoming) -> Option<crate::chat::bot::Reply> {
        let mut reply = self.bot.handle(msg).await?;
        let pointer = self.rest_is_at(msg);
        admission::cut(
            &mut reply.public,
            &mut reply.private,
            self.settings.chat.reply_lines,
            &pointer,
        );
        Some(reply)
    }

    /// Where the lines of a cut answer can be read: the run's web page when the answer is
    /// a run's log and the page has a public address, else a smaller `log`.
    fn rest_is_at(&self, msg: &Incoming) -> String {
        let direct = msg.reply_to.kind == TargetKind::Direct;
        let parsed = command::addressed(&msg.text, &self.settings.name, direct)
            .and_then(|text| command::parse(text).ok());
        let public_url = (self.settings.http.as_ref()).and_then(|h| h.public_url.as_deref());
        admission::rest_is_at(parsed.as_ref(), public_url)
    }

    /// Sends an answer where the message was said (and privately for the overflow).
    async fn deliver(&self, msg: &Incoming, reply: crate::chat::bot::Reply) {
        let Some(outlet) = self.outlets.get(&msg.reply_to.network) else {
            tracing::error!(network = %msg.reply_to.network, "a message came from a network with no outlet");
            return;
        };
        let prefix = match msg.reply_to.kind {
            TargetKind::Room => format!("{}: ", msg.nick),
            TargetKind::Direct => String::new(),
        };
        for line in &reply.public {
            if let Err(e) = outlet.say(&msg.reply_to, &prefix, line).await {
                tracing::warn!(error = %e, "reply not delivered");
                return;
            }
        }
        let private = msg.private_target();
        for line in &reply.private {
            if let Err(e) = outlet.say(&private, "", line).await {
                tracing::warn!(error = %e, "private reply not delivered");
                return;
            }
        }
    }

    /// Starts every configured chat network, attaches each and serves its messages. An
    /// XMPP account that cannot log in the first time stops the start with one line.
    pub async fn start_networks(&self) -> anyhow::Result<()> {
        let settings = self.settings.clone();
        if settings.chat.irc.is_empty() && settings.chat.xmpp.is_empty() {
            tracing::warn!("no chat networks are configured");
        }
        for cfg in &settings.chat.irc {
            let speaker = match self.speaker_role(&cfg.name).await? {
                Some(role) => role,
                None => {
                    let (app, cfg) = (self.clone(), cfg.clone());
                    tokio::spawn(async move {
                        let role = app.wait_for_speaker_role(&cfg.name).await;
                        if let Err(e) = app.start_irc(&cfg) {
                            tracing::error!(network = %cfg.name, error = %e, "cannot start a chat network");
                        }
                        app.speak_until_lost(role).await;
                    });
                    continue;
                }
            };
            self.start_irc(cfg)?;
            tokio::spawn(self.clone().speak_until_lost(speaker));
        }
        for account in &settings.chat.xmpp {
            let speaker = match self.speaker_role(&account.name).await? {
                Some(role) => role,
                None => {
                    let (app, account) = (self.clone(), account.clone());
                    tokio::spawn(async move {
                        let role = app.wait_for_speaker_role(&account.name).await;
                        if let Err(e) = app.start_xmpp(&account).await {
                            tracing::error!(network = %account.name, error = %e, "cannot start a chat network");
                        }
                        app.speak_until_lost(role).await;
                    });
                    continue;
                }
            };
            self.start_xmpp(account).await?;
            tokio::spawn(self.clone().speak_until_lost(speaker));
        }
        Ok(())
    }

    fn start_irc(&self, cfg: &crate::config::irc::IrcNetworkConfig) -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel(256);
        let network = adapters::irc::IrcNetwork::start(cfg.clone(), &self.settings.name, tx)
            .map_err(|e| anyhow::anyhow!(e))?;
        self.attach(network)?;
        self.serve(rx);
        Ok(())
    }

    async fn start_xmpp(
        &self,
        account: &crate::config::xmpp::XmppAccountConfig,
    ) -> anyhow::Result<()> {
        let (network, incoming) = adapters::xmpp::start(account, &self.settings.name).await?;
        self.attach(network)?;
        self.serve(incoming);
        Ok(())
    }

    /// The role of speaking on `network`: one process of a cluster holds it (always this
    /// one on SQLite). `None` when another process holds it.
    async fn speaker_role(&self, network: &str) -> anyhow::Result<Option<crate::store::Role>> {
        let url = self.settings.database_url();
        self.engine
            .store()
            .hold_role(url.expose(), &format!("speaker:{network}"))
            .await
            .map_err(|e| anyhow::anyhow!("cannot ask the database who speaks on {network}: {e}"))
    }

    /// Waits until no other process speaks on `network`, then takes the role.
    async fn wait_for_speaker_role(&self, network: &str) -> crate::store::Role {
        tracing::info!(
            network,
            "another process speaks on this network; standing by"
        );
        loop {
            match self.speaker_role(network).await {
                Ok(Some(role)) => {
                    tracing::info!(network, "this process now speaks on the network");
                    return role;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot take a speaker's role"),
            }
            tokio::time::sleep(SPEAKER_RETRY).await;
        }
    }

    /// Holds a speaker's role. When it is lost (the database connection that holds it
    /// failed), another process takes the network over, so this one must stop speaking at
    /// once: it exits, for its supervisor to start it again as a stand-by.
    async fn speak_until_lost(self, role: crate::store::Role) {
        role.lost().await;
        tracing::error!(
            role = role.name(),
            "lost the database lock that makes this process a chat network's speaker; stopping \
             so that exactly one process speaks"
        );
        std::process::exit(75);
    }

    /// `jarvis shell`: the bot on this terminal, until input ends and the work it started
    /// is done and announced.
    pub async fn shell(&self) -> anyhow::Result<()> {
        use adapters::console;
        let outlet = self.attach(Arc::new(console::Console::new()))?;
        let mut lines = console::read_lines();
        let user = console::os_user();
        while let Some(line) = lines.recv().await {
            if line.trim().is_empty() {
                continue;
            }
            let msg = console::incoming(&user, line);
            if let Some(reply) = self.bot.handle(&msg).await {
                for text in reply.public.iter().chain(reply.private.iter()) {
                    let _ = outlet.say(&msg.reply_to, "", text).await;
                }
            }
        }
        self.engine.wait_idle().await;
        self.wait_delivered(console::NETWORK).await;
        self.engine.tidy_scratch();
        Ok(())
    }

    /// Waits until every notification for `network` has been delivered.
    pub async fn wait_delivered(&self, network: &str) {
        loop {
            match self.engine.store().count_unsent(network).await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// How often a stand-by process asks whether a chat network's speaker is gone: it takes
/// the network over within this (plus the time to connect) of the speaker's death.
const SPEAKER_RETRY: Duration = Duration::from_secs(2);

/// Drives the rollouts while this process holds the rollouts' role (one process of a
/// cluster does, so no two queue the same host; always this one on SQLite); stands by while
/// another does. A rollout's state is all in the store, so whoever takes over goes on.
async fn drive_rollouts_in_turn(store: Store, url: String, bot: Arc<Bot>) {
    loop {
        let role = match store.hold_role(&url, "rollouts").await {
            Ok(Some(role)) => role,
            Ok(None) => {
                tokio::time::sleep(SPEAKER_RETRY).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the rollouts' role");
                tokio::time::sleep(SPEAKER_RETRY).await;
                continue;
            }
        };
        tokio::select! {
            _ = bot.clone().drive_rollouts() => return,
            _ = role.lost() => tracing::warn!("lost the rollouts' role; standing by"),
        }
    }
}

/// Routes events into the outbox while this process holds the router's role (one process
/// of a cluster does; always this one on SQLite); stands by while another does.
async fn route_in_turn(
    store: Store,
    url: String,
    events_written: Arc<Notify>,
    outbox_written: Arc<Notify>,
    extra: Vec<Target>,
    notice_rate: notify::NoticeRate,
) {
    loop {
        let role = match store.hold_role(&url, "router").await {
            Ok(Some(role)) => role,
            Ok(None) => {
                tokio::time::sleep(SPEAKER_RETRY).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the router's role");
                tokio::time::sleep(SPEAKER_RETRY).await;
                continue;
            }
        };
        tokio::select! {
            _ = notify::route_events(
                store.clone(),
                events_written.clone(),
                outbox_written.clone(),
                extra.clone(),
                notice_rate,
            ) => return,
            _ = role.lost() => tracing::warn!("lost the router's role; standing by"),
        }
    }
}

/// The engine's part of the settings.
fn engine_config(
    settings: &Settings,
    builtin: Option<BuiltinWorkers>,
    masker: Masker,
    sealer: Option<Arc<crate::seal::Sealer>>,
) -> EngineConfig {
    let data_dir = settings.data_dir();
    EngineConfig {
        scratch_dir: crate::engine::scratch::choose(&data_dir, settings.scratch_dir.as_deref()),
        data_dir,
        worker_folders: settings.workers.folders.clone(),
        builtin,
        grants: settings
            .workers
            .modules
            .iter()
            .map(|(m, g)| {
                let env = g
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_string()))
                    .collect();
                (m.clone(), env)
            })
            .collect(),
        max_workers: settings.limits.workers,
        stdout_cap: settings.limits.stdout_bytes,
        stderr_keep: settings.limits.stderr_lines,
        stage_caps: settings.limits.stage_caps(),
        secrets_from: settings.workers.secrets_from(),
        kill_grace: settings.limits.kill_grace,
        masker,
        sealer,
        lease: settings.cluster.lease,
        sole: crate::model::Backend::of(settings.database_url().expose())
            .is_ok_and(|b| b == crate::model::Backend::Sqlite),
    }
}

/// Every stage's module must resolve to a worker; returns what does not (for `check-config`).
pub fn check_workers(settings: &Settings, builtin: Option<BuiltinWorkers>) -> Vec<String> {
    let config = engine_config(settings, builtin, Masker::new(vec![], vec![]), None);
    crate::engine::check_workers(&config, &settings.pipelines)
}

/// Who a command counts against: the sender's verified account, JID or user; else, on IRC
/// without an account, their user@host (a hostmask key holds the nick, and a new nick
/// must not buy a new share); else the nick on that network.
fn sender_key(msg: &Incoming) -> String {
    use crate::chat::roles::Identity;
    let network = &msg.reply_to.network;
    if let Some(id) = (msg.identities.iter()).find(|i| !matches!(i, Identity::IrcHostmask { .. })) {
        return id.key();
    }
    for id in &msg.identities {
        if let Identity::IrcHostmask { mask, .. } = id {
            let user_host = mask.split_once('!').map_or(mask.as_str(), |(_, uh)| uh);
            return format!("host:{network}:{user_host}");
        }
    }
    format!("nick:{network}:{}", msg.nick)
}

/// `#ops` is a room; anything else is a person.
fn notify_target(network: &str, name: &str) -> Target {
    if name.starts_with('#')
        || name.contains('@') && !name.contains('/') && name.contains("conference")
    {
        Target::room(network, name)
    } else {
        Target::direct(network, name)
    }
}

/// Makes `dir` (and any missing parent) mode 0700 when it does not exist yet: the data
/// folder holds the audit log, token hashes and clipboards, for jarvis's user alone.
fn make_private_folder(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot make the data folder {}", dir.display()))
}

/// Refuses what others could read or change at rest: the data folder (if it exists) when
/// group or others have any access to it, and the SQLite database with its `-wal` and `-shm`
/// files (those that exist) likewise — as for `seal.key`, one line with the `chmod` to run.
/// `jarvis migrate` and every start check this before opening the database.
pub fn check_at_rest(settings: &Settings) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let open = |path: &std::path::Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
            .filter(|mode| mode & 0o077 != 0)
    };
    let data_dir = settings.data_dir();
    if let Some(mode) = open(&data_dir) {
        let shown = data_dir.display();
        bail!(
            "the data folder {shown} is open to others (mode {mode:o}); say 'chmod 700 {shown}' so that only jarvis's user can read the runs, audit log and tokens"
        );
    }
    let url = settings.database_url();
    if let Some(path) = sqlite_file(url.expose()) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            let file = std::path::PathBuf::from(name);
            if let Some(mode) = open(&file) {
                let shown = file.display();
                bail!(
                    "{shown} is open to others (mode {mode:o}); say 'chmod 600 {shown}' so that only jarvis's user can read the database"
                );
            }
        }
    }
    Ok(())
}

/// The file of a `sqlite://PATH[?…]` URL; none for PostgreSQL or an in-memory database.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// One jarvis per data folder: a second one would recover runs the first is running.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<Flock<File>> {
    let path = data_dir.join("jarvis.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // A worker spawned an instant before a jarvis died holds that jarvis's descriptors
    // until its exec closes them: a restart right after such a death waits that instant out
    // rather than refusing.
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, _)) if std::time::Instant::now() < deadline => {
                file = back;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err((_, _)) => bail!(
                "another jarvis is already running with the data folder {}",
                data_dir.display()
            ),
        }
    }
}

/// How long a start waits for the data folder's lock before saying another jarvis has it.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

fn write_demo_designs(folder: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(folder).with_context(|| format!("cannot make {}", folder.display()))?;
    for (name, text) in DEMO_DESIGNS {
        let path: PathBuf = folder.join(name);
        if !path.exists() {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_file_is_read_from_the_url() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/jarvis/jarvis.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/jarvis/jarvis.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:data/j.db"),
            Some(PathBuf::from("data/j.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://j@db/j"), None);
    }

    #[test]
    fn a_sender_without_an_account_keeps_one_share_across_nicks() {
        use crate::chat::roles::Identity;
        let msg = |nick: &str, identities: Vec<Identity>| Incoming {
            reply_to: Target::room("irc", "#ops"),
            nick: nick.into(),
            identities,
            identity_note: None,
            text: "jarvis: log #1 200".into(),
        };
        let mask = |nick: &str| Identity::IrcHostmask {
            network: "irc".into(),
            mask: format!("{nick}!m@evil.example"),
        };
        assert_eq!(
            sender_key(&msg("mallory", vec![mask("mallory")])),
            sender_key(&msg("mallory_", vec![mask("mallory_")]))
        );
        let account = Identity::IrcAccount {
            network: "irc".into(),
            account: "alice".into(),
        };
        assert_eq!(
            sender_key(&msg("alice", vec![mask("alice"), account])),
            "irc:irc:alice"
        );
        assert_eq!(sender_key(&msg("x", vec![])), "nick:irc:x");
    }
}

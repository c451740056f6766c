//! Schedules: cron expressions in a time zone (croner, with chrono-tz's zones), each with
//! a command. The store keeps every schedule's next firing; [`tick`] claims the firings that
//! are due with one conditional UPDATE each (`WHERE next_at = <the instant read>`), so an
//! instant fires at most once — across a restart, and across several processes sharing one
//! database. After downtime a schedule fires once (`catch_up: once`) or not at all
//! (`catch_up: none`). Time comes in as an argument ([`Clock`]), so tests drive it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use chrono_tz::Tz;
use croner::Cron;

use super::config::{CatchUp, ScheduleConfig};
use crate::chat::Target;
use crate::chat::bot::{Bot, Trigger, Verdict};
use crate::chat::command::{self, Command};
use crate::chat::environments::EnvironmentsConfig;
use crate::store::{Store, StoreError};

/// How late a firing may be and still count as on time: past this, `catch_up: none` skips
/// it (jarvis was down, or the machine stalled).
pub const ON_TIME: Duration = Duration::from_secs(60);

/// The longest the loop sleeps between looks (so a clock step is noticed).
const MAX_NAP: Duration = Duration::from_secs(60);

/// Where time comes from: the system's clock, or a test's.
pub trait Clock: Send + Sync {
    /// Unix milliseconds now.
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::store::now_ms()
    }
}

/// One schedule, ready to fire.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    cron: Cron,
    tz: Tz,
    /// The cron and zone as written: a change of either plans the schedule afresh.
    pub spec: String,
    pub catch_up: CatchUp,
    pub command: Command,
    pub run: String,
    pub person: String,
    pub target: Target,
}

impl Schedule {
    /// The schedule configured as `name`, or what is wrong with it (a path below it first).
    pub fn new(
        name: &str,
        c: &ScheduleConfig,
        environments: &EnvironmentsConfig,
    ) -> Result<Schedule, String> {
        let cron = Cron::from_str(&c.cron).map_err(|e| format!("cron: {e}"))?;
        let tz = Tz::from_str(&c.timezone).map_err(|_| {
            format!(
                "timezone: '{}' is no IANA time zone (say e.g. Europe/Berlin or UTC)",
                crate::text::one_line(&c.timezone, 60)
            )
        })?;
        let command = super::command_for(&c.run, c.environment.as_deref(), environments)
            .map_err(|e| format!("run: {e}"))?;
        super::check_announce(&c.announce)?;
        let source = format!("schedule.{name}");
        let schedule = Schedule {
            name: name.to_string(),
            spec: format!("{} {}", c.cron.trim(), c.timezone),
            cron,
            tz,
            catch_up: c.catch_up,
            command,
            run: c.run.clone(),
            person: c.person.clone(),
            target: super::announce_target(c.announce.as_deref(), &source),
        };
        if schedule.next_after(crate::store::now_ms()).is_none() {
            return Err("cron: it never fires".into());
        }
        Ok(schedule)
    }

    /// The first firing strictly after `ms`.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let start = self.tz.timestamp_millis_opt(ms).single()?;
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// What `schedules` says of it: `0 3 * * * Europe/Berlin: redeploy web1`.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.spec, self.run)
    }
}

/// A firing claimed by [`tick`], to be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// The index of the schedule in the list given to [`tick`].
    pub schedule: usize,
    /// The instant it was due (unix ms).
    pub due: i64,
}

/// One look at the schedules at `now`: plans new or changed ones, claims the firings that
/// are due, notes the ones `catch_up: none` skips, and returns the firings to carry out and
/// when to look again.
pub async fn tick(
    store: &Store,
    schedules: &[Schedule],
    now: i64,
) -> Result<(Vec<Firing>, Option<i64>), StoreError> {
    let rows = store.schedules().await?;
    let mut firings = Vec::new();
    let mut wake: Option<i64> = None;
    let mut soonest = |at: i64| wake = Some(wake.map_or(at, |w| w.min(at)));
    for (i, s) in schedules.iter().enumerate() {
        let Some(next) = s.next_after(now) else {
            continue;
        };
        let row = rows.iter().find(|r| r.name == s.name);
        let Some(row) = row.filter(|r| r.spec == s.spec) else {
            store.plan_schedule(&s.name, &s.spec, next).await?;
            soonest(next);
            continue;
        };
        if row.next_at > now {
            soonest(row.next_at);
            continue;
        }
        soonest(next);
        if !store.claim_firing(&s.name, row.next_at, next).await? {
            // Another process (or an earlier look) took this instant.
            continue;
        }
        let late = now - row.next_at > ON_TIME.as_millis() as i64;
        if late && s.catch_up == CatchUp::None {
            let note = format!(
                "skipped: due at {}, and catch_up is none",
                crate::chat::render::utc_time(row.next_at)
            );
            tracing::info!(schedule = %s.name, "{note}");
            store.note_firing(&s.name, &note).await?;
            continue;
        }
        firings.push(Firing {
            schedule: i,
            due: row.next_at,
        });
    }
    Ok((firings, wake))
}

/// Carries out one claimed firing through the bot, and notes what came of it. A firing
/// for a busy host queues nothing and says so in the schedule's channel.
pub async fn carry_out(bot: &Bot, store: &Store, s: &Schedule, firing: &Firing) {
    let source = format!("schedule.{}", s.name);
    let trigger = Trigger {
        by: format!("schedule {}", s.name),
        ..Trigger::default()
    };
    let reply = super::fire(
        bot, &source, &s.person, &s.target, &s.command, &s.run, &trigger,
    )
    .await;
    let first = reply.public.first().cloned().unwrap_or_default();
    let outcome = match (reply.verdict, reply.run) {
        (Verdict::Done, Some(id)) => format!("queued run #{id}"),
        (Verdict::Conflict, Some(busy)) => {
            let note = format!("schedule {} skipped: {first}", s.name);
            let host = match &s.command {
                Command::Redeploy {
                    target: command::Target::Single(host),
                    ..
                }
                | Command::Destroy {
                    target: command::Target::Single(host),
                }
                | Command::Run {
                    target: command::Target::Single(host),
                    ..
                } => host.clone(),
                _ => String::new(),
            };
            let origin = super::origin_of(&s.target, &source);
            bot.announce(busy, &host, &origin, note).await;
            format!("skipped: {first}")
        }
        _ => format!("refused: {first}"),
    };
    tracing::info!(schedule = %s.name, due = firing.due, outcome = %outcome, "schedule fired");
    if let Err(e) = store
        .note_firing(&s.name, &crate::text::one_line(&outcome, 300))
        .await
    {
        tracing::error!(schedule = %s.name, error = %e, "cannot note a firing");
    }
}

/// Fires the schedules forever, by `clock`.
pub async fn run_forever(
    bot: Arc<Bot>,
    store: Store,
    schedules: Vec<Schedule>,
    clock: Arc<dyn Clock>,
) {
    if schedules.is_empty() {
        return;
    }
    loop {
        let now = clock.now_ms();
        let wake = match tick(&store, &schedules, now).await {
            Ok((firings, wake)) => {
                for firing in &firings {
                    if let Some(s) = schedules.get(firing.schedule) {
                        // Each in its own task: a slow design load holds up no other firing.
                        let (bot, store, s, firing) =
                            (bot.clone(), store.clone(), s.clone(), firing.clone());
                        tokio::spawn(async move { carry_out(&bot, &store, &s, &firing).await });
                    }
                }
                wake
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the schedules");
                None
            }
        };
        let nap = wake
            .map(|at| Duration::from_millis(at.saturating_sub(now).max(0) as u64))
            .unwrap_or(MAX_NAP)
            .min(MAX_NAP);
        tokio::time::sleep(nap.max(Duration::from_millis(10))).await;
    }
}

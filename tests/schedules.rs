//! Schedules under a clock the test holds: the scheduler's look ([`tick`]) takes the time
//! as an argument, and the store is the real one (SQLite and PostgreSQL), so "jarvis was
//! down from 02:30 to 05:00" is two looks at those times on one database, with the
//! schedules built afresh in between as a restart builds them. (The daemon's loop is the
//! same `tick` on the system clock; no test-only switch in the binary sets its time.)

mod support;

use chrono::{TimeZone, Utc};
use jarvis::chat::environments::EnvironmentsConfig;
use jarvis::store::Store;
use jarvis::triggers::config::ScheduleConfig;
use jarvis::triggers::schedule::{Schedule, tick};
use jarvis_testbed::Server;
use support::Postgres;

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("a valid time")
        .timestamp_millis()
}

/// The schedules as a start of jarvis builds them from the configuration.
fn start(yaml: &str) -> Vec<Schedule> {
    let configs: std::collections::BTreeMap<String, ScheduleConfig> =
        serde_saphyr::from_str(yaml).expect("schedules parse");
    configs
        .iter()
        .map(|(name, c)| {
            Schedule::new(name, c, &EnvironmentsConfig::default()).expect("a valid schedule")
        })
        .collect()
}

const NIGHTLY: &str = "
nightly:
  cron: '0 3 * * *'
  run: redeploy web1
  person: ci
late-not:
  cron: '0 3 * * *'
  run: redeploy web2
  person: ci
  catch_up: none
berlin:
  cron: '0 3 * * *'
  timezone: Europe/Berlin
  run: redeploy web3
  person: ci
";

fn names(schedules: &[Schedule], firings: &[jarvis::triggers::schedule::Firing]) -> Vec<String> {
    firings
        .iter()
        .map(|f| schedules[f.schedule].name.clone())
        .collect()
}

async fn restart_and_catch_up(url: &str) {
    let store = Store::open(url).await.unwrap();

    // First start at 01:00 UTC: every schedule is planned, none fires.
    let first = start(NIGHTLY);
    let (firings, wake) = tick(&store, &first, at(2026, 12, 1, 1, 0, 0))
        .await
        .unwrap();
    assert!(firings.is_empty());
    // Berlin's 03:00 is 02:00 UTC in winter: the soonest firing.
    assert_eq!(wake, Some(at(2026, 12, 1, 2, 0, 0)));
    let rows = store.schedules().await.unwrap();
    let next = |name: &str| rows.iter().find(|r| r.name == name).unwrap().next_at;
    assert_eq!(next("nightly"), at(2026, 12, 1, 3, 0, 0));
    assert_eq!(next("berlin"), at(2026, 12, 1, 2, 0, 0));
    let (firings, _) = tick(&store, &first, at(2026, 12, 1, 2, 0, 1))
        .await
        .unwrap();
    assert_eq!(names(&first, &firings), ["berlin"]);
    drop(first);

    // jarvis is down from 02:30 to 05:00 over the 03:00 firings. Started again, it fires
    // `nightly` once, late; `late-not` (catch_up: none) not at all.
    let second = start(NIGHTLY);
    let (firings, _) = tick(&store, &second, at(2026, 12, 1, 5, 0, 0))
        .await
        .unwrap();
    assert_eq!(names(&second, &firings), ["nightly"]);
    assert_eq!(firings[0].due, at(2026, 12, 1, 3, 0, 0));
    let rows = store.schedules().await.unwrap();
    let row = |name: &str| rows.iter().find(|r| r.name == name).unwrap().clone();
    assert_eq!(row("nightly").next_at, at(2026, 12, 2, 3, 0, 0));
    let skipped = row("late-not");
    assert_eq!(skipped.next_at, at(2026, 12, 2, 3, 0, 0));
    assert!(
        skipped
            .last_outcome
            .as_deref()
            .is_some_and(|o| o.starts_with("skipped: due at 2026-12-01 03:00:00 UTC")),
        "{skipped:?}"
    );

    // Another restart right after (or a second process looking at the same moment): the
    // 03:00 instant is taken, nothing fires twice.
    let third = start(NIGHTLY);
    let (firings, _) = tick(&store, &third, at(2026, 12, 1, 5, 0, 1))
        .await
        .unwrap();
    assert!(firings.is_empty(), "{firings:?}");

    // `catch_up: none` fires on time, as any schedule does (and Berlin's, an hour late
    // here, catches up once).
    let (firings, _) = tick(&store, &third, at(2026, 12, 2, 3, 0, 5))
        .await
        .unwrap();
    assert_eq!(names(&third, &firings), ["berlin", "late-not", "nightly"]);

    // Down for three days: `once` is once, not three times.
    let fourth = start(NIGHTLY);
    let (firings, _) = tick(&store, &fourth, at(2026, 12, 5, 12, 0, 0))
        .await
        .unwrap();
    assert_eq!(names(&fourth, &firings), ["berlin", "nightly"]);
    store.close().await;
}

/// Two processes on one database look at the same due instant at once: one wins it.
async fn one_claim_wins(url: &str) {
    let a = Store::open(url).await.unwrap();
    let b = Store::open(url).await.unwrap();
    let yaml = "tick:\n  cron: '*/10 * * * *'\n  run: redeploy web1\n  person: ci\n";
    let (sa, sb) = (start(yaml), start(yaml));
    tick(&a, &sa, at(2026, 12, 1, 0, 1, 0)).await.unwrap();
    for minute in [10, 20, 30] {
        let now = at(2026, 12, 1, 0, minute, 0);
        let (fa, fb) = tokio::join!(tick(&a, &sa, now), tick(&b, &sb, now));
        let total = fa.unwrap().0.len() + fb.unwrap().0.len();
        assert_eq!(total, 1, "minute {minute}");
    }
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn schedules_fire_once_across_restarts_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("j.db").display());
    restart_and_catch_up(&url).await;
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    one_claim_wins(&url).await;
}

#[tokio::test]
async fn schedules_fire_once_across_restarts_on_postgres() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    restart_and_catch_up(&Postgres::fresh(&server).url).await;
    one_claim_wins(&Postgres::fresh(&server).url).await;
}

#[test]
fn bad_schedules_are_refused_by_name() {
    let configs: std::collections::BTreeMap<String, ScheduleConfig> = serde_saphyr::from_str(
        "a: { cron: '61 * * * *', run: redeploy web1, person: ci }\n\
         b: { cron: '0 3 * * *', timezone: Mars/Olympus, run: redeploy web1, person: ci }\n\
         c: { cron: '0 3 * * *', run: status, person: ci }\n",
    )
    .unwrap();
    let problem =
        |n: &str| Schedule::new(n, &configs[n], &EnvironmentsConfig::default()).unwrap_err();
    assert!(problem("a").starts_with("cron: "), "{}", problem("a"));
    assert!(
        problem("b").starts_with("timezone: 'Mars/Olympus'"),
        "{}",
        problem("b")
    );
    assert!(problem("c").contains("queues no run"), "{}", problem("c"));
}

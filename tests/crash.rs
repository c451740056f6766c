//! `kill -9` at random points of a 10-stage pipeline, then a restart (SPEC 6): every run ends
//! correctly, the final clipboard is exact, and no finished stage ran again. The stages
//! append `RUN STAGE ATTEMPT` to a trace file when they start, so the test counts what
//! really ran.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use jarvis_testbed::Server;
use support::{Home, Postgres, Shell};

const STAGES: usize = 10;

/// Odd stages are idempotent (re-run by themselves), even ones are not (the run waits to be
/// resumed): both recoveries get exercised.
fn home(postgres: Option<Postgres>) -> Home {
    let mut stages = String::new();
    for i in 1..=STAGES {
        stages.push_str(&format!(
            "      - {{ task: \"local:step\", idempotent: {} }}\n",
            i % 2 == 1
        ));
    }
    let home = Home::on("", postgres);
    let trace = home.path("trace");
    let config = std::fs::read_to_string(home.config()).unwrap()
        + &format!(
            "workers:\n  modules:\n    local:\n      env: {{ LOCAL_TRACE: {} }}\n\
             pipelines:\n  ten:\n    providers: [local]\n    stages:\n{stages}\
             roles:\n  grants:\n    - {{ console: \"*\", roles: [admin] }}\n",
            trace.display()
        );
    std::fs::write(home.config(), config).unwrap();
    home.design(
        "k",
        "instance:\n  hostname: k\n  provider: local\ndemo:\n  step_ms: 120\n",
    );
    home
}

/// The trace: (stage, attempt) for every start of a stage.
fn trace(home: &Home) -> Vec<(usize, u32)> {
    std::fs::read_to_string(home.path("trace"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip(1);
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

/// A small deterministic generator, so a failing trial can be replayed from its seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn trial(seed: u64, postgres: Option<Postgres>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let home = home(postgres);
    let mut shell = home.shell();
    shell.ask("deploy k", "deploy #1 of k queued");

    let kills = 1 + rng.below(2);
    for _ in 0..kills {
        // Kill when a random stage has started, and a random moment into it.
        let at = 1 + rng.below(STAGES as u64) as usize;
        let started = |h: &Home| trace(h).iter().any(|(s, _)| *s >= at);
        let mut done = false;
        while !started(&home) {
            if home
                .sql("SELECT state FROM runs WHERE id = 1")
                .first()
                .map(String::as_str)
                == Some("succeeded")
            {
                done = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(rng.below(150)));
        shell.kill9();
        shell = Shell::start(&home.config());
        // After a restart the run either carries on or waits to be resumed.
        shell.say("status #1");
        let line = shell.expect("k deploy #1");
        if line.contains("interrupted") {
            shell.ask("resume #1", "resuming k deploy #1");
        }
    }
    shell.say("status #1");
    let mut outcome = shell.expect("k deploy #1");
    while !outcome.contains("succeeded") {
        if outcome.contains("interrupted") {
            // The notification of an interruption can arrive after `status` told of it and
            // the resume answered it: resume only what the run's state says is interrupted.
            shell.say("status #1");
            let now = shell.expect_where(|l| l.starts_with("k deploy #1:"), "the run's status");
            if now.contains("interrupted") {
                shell.ask("resume #1", "resuming");
            } else if now.contains("succeeded") || now.contains("FAILED") {
                // Its end may have been printed (and passed over) while waiting for status.
                assert!(!now.contains("FAILED"), "seed {seed}: {now}");
                outcome = now;
                continue;
            }
        }
        outcome = shell.expect_where(
            |l| {
                l.contains("k deploy #1 succeeded")
                    || l.contains("interrupted")
                    || l.contains("FAILED")
            },
            "the run's end",
        );
        assert!(!outcome.contains("FAILED"), "seed {seed}: {outcome}");
    }
    shell.finish();

    assert_eq!(
        home.sql("SELECT state FROM runs WHERE id = 1"),
        vec!["succeeded"],
        "seed {seed}"
    );
    let done = home.sql(if home.postgres.is_some() {
        "SELECT (clipboard::json -> 'local' -> 'done')::text FROM runs WHERE id = 1"
    } else {
        "SELECT json_extract(clipboard, '$.local.done') FROM runs WHERE id = 1"
    });
    let expected: Vec<String> = (1..=STAGES).map(|i| i.to_string()).collect();
    assert_eq!(
        done,
        vec![format!("[{}]", expected.join(","))],
        "seed {seed}: the final clipboard"
    );

    // The attempt each stage finished with, and every attempt that started.
    let finished: BTreeMap<usize, u32> = home
        .sql("SELECT stage, attempt FROM stage_runs WHERE run_id = 1 AND state = 'succeeded'")
        .iter()
        .filter_map(|l| {
            let (s, a) = l.split_once('|')?;
            Some((s.parse::<usize>().ok()? + 1, a.parse().ok()?))
        })
        .collect();
    assert_eq!(
        finished.len(),
        STAGES,
        "seed {seed}: every stage finished once"
    );
    let started = trace(&home);
    let mut seen = BTreeSet::new();
    for (stage, attempt) in &started {
        assert!(
            seen.insert((*stage, *attempt)),
            "seed {seed}: stage {stage} attempt {attempt} started twice"
        );
        assert!(
            *attempt <= finished[stage],
            "seed {seed}: stage {stage} ran again (attempt {attempt}) after it finished with attempt {}",
            finished[stage]
        );
    }
    let reruns = started.len() - STAGES;
    assert!(
        reruns as u64 <= kills,
        "seed {seed}: {reruns} re-runs for {kills} kills"
    );
}

#[test]
fn kill_9_at_random_points_loses_nothing_and_reruns_no_finished_stage() {
    trials(20, || None);
}

/// The same on PostgreSQL: a fresh database per trial.
#[test]
fn kill_9_on_postgres_loses_nothing_and_reruns_no_finished_stage() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    trials(8, || Some(Postgres::fresh(&server)));
}

fn trials(default: u64, database: impl Fn() -> Option<Postgres>) {
    let trials: u64 = std::env::var("JARVIS_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let base: u64 = std::env::var("JARVIS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    for i in 0..trials {
        let seed = base + i;
        eprintln!("crash trial {i} (JARVIS_CRASH_SEED={seed} JARVIS_CRASH_TRIALS=1 replays it)");
        trial(seed, database());
    }
}

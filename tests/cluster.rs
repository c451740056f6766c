//! Several `jarvis run` processes on one PostgreSQL (SPEC 6, several processes): random
//! `kill -9` of any of them, restarted at once, throughout 200 ten-stage runs. Every run ends
//! right, no finished stage runs again, and the final clipboards are exact. The stages append
//! `RUN STAGE ATTEMPT` to a trace file when they start, so the test counts what really ran.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jarvis_testbed::Server;
use support::{JARVIS, Postgres, Shell};

const STAGES: usize = 10;
const RUNS: usize = 200;
/// The one stage that is not idempotent: a run whose node dies in it waits for a resume.
const NOT_IDEMPOTENT: usize = 5;

struct Cluster {
    dir: tempfile::TempDir,
    pg: Postgres,
}

impl Cluster {
    fn new(pg: Postgres) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("jarvis-cluster-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("designs")).unwrap();
        Cluster { dir, pg }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The configuration of node `name`: its own data folder, everything else shared.
    fn config(&self, name: &str, workers: usize) -> PathBuf {
        let mut stages = String::new();
        for i in 1..=STAGES {
            stages.push_str(&format!(
                "      - {{ task: \"local:step\", idempotent: {} }}\n",
                i != NOT_IDEMPOTENT
            ));
        }
        let config = format!(
            "data_dir: {data}\n\
             designs:\n  folder: {designs}\n\
             database_url: {url}\n\
             cluster:\n  node: {name}\n  lease: 2s\n\
             limits:\n  workers: {workers}\n  stop_grace: 1s\n\
             workers:\n  modules:\n    local:\n      env: {{ LOCAL_TRACE: {trace} }}\n\
             pipelines:\n  ten:\n    providers: [local]\n    stages:\n{stages}\
             roles:\n  grants:\n    - {{ console: \"*\", roles: [admin] }}\n",
            data = self.path(name).join("data").display(),
            designs = self.path("designs").display(),
            url = self.pg.url,
            trace = self.path("trace").display(),
        );
        let path = self.path(&format!("{name}.yaml"));
        std::fs::write(&path, config).unwrap();
        path
    }

    fn sql(&self, query: &str) -> Vec<String> {
        self.pg.sql(query)
    }

    fn count(&self, query: &str) -> usize {
        self.sql(query)
            .first()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// A `jarvis run` process, its log kept in a file of its own.
struct Node {
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Child,
    starts: usize,
}

impl Node {
    fn start(cluster: &Cluster, name: &str) -> Node {
        let config = cluster.config(name, 8);
        let log = cluster.path(&format!("{name}.log"));
        let child = spawn(&config, &log);
        Node {
            name: name.to_string(),
            config,
            log,
            child,
            starts: 1,
        }
    }

    fn kill9_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.config, &self.log);
        self.starts += 1;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(JARVIS)
        .args(["run", "--config"])
        .arg(config)
        .env("JARVIS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("jarvis starts")
}

/// (run, stage, attempt) for every start of a stage.
fn trace(cluster: &Cluster) -> Vec<(i64, usize, u32)> {
    std::fs::read_to_string(cluster.path("trace"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_processes_lose_nothing_when_any_of_them_is_killed() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    let seed: u64 = std::env::var("JARVIS_CLUSTER_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("cluster chaos seed {seed} (JARVIS_CLUSTER_SEED={seed} replays it)");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let cluster = Cluster::new(Postgres::fresh(&server));
    for i in 1..=RUNS {
        std::fs::write(
            cluster.path("designs").join(format!("h{i}.yaml")),
            format!("instance:\n  hostname: h{i}\n  provider: local\ndemo:\n  step_ms: 40\n"),
        )
        .unwrap();
    }

    // The runs are queued through a shell, itself a node of the cluster that may take a
    // run or two; it is killed like the others once it has queued them.
    let mut queue = Shell::start(&cluster.config("queue", 1));
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Node::start(&cluster, n))
        .collect();
    for i in 1..=RUNS {
        queue.ask(&format!("deploy h{i}"), "queued");
    }
    queue.kill9();

    // Kill any node at random moments while runs go on, restarting it at once.
    let mut kills = 0;
    while kills < 12 {
        std::thread::sleep(Duration::from_millis(200 + rng.below(1200)));
        let busy = cluster.count("SELECT COUNT(*) FROM runs WHERE state IN ('queued', 'running')");
        if busy == 0 {
            break;
        }
        let node = &mut nodes[rng.below(3) as usize];
        eprintln!("kill -9 {} ({busy} runs queued or running)", node.name);
        node.kill9_and_restart();
        kills += 1;
    }

    // Runs whose node died in the stage that is not idempotent wait for a person; one says
    // `resume` for each, until all have succeeded.
    let mut fixer = Shell::start(&cluster.config("fixer", 1));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        wait_for("the runs to settle", Duration::from_secs(300), || {
            cluster.count("SELECT COUNT(*) FROM runs WHERE state IN ('queued', 'running')") == 0
        });
        let interrupted = cluster.sql("SELECT id FROM runs WHERE state = 'interrupted'");
        if interrupted.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "runs kept being interrupted");
        for id in interrupted {
            fixer.ask(&format!("resume #{}", id.trim()), "resuming");
        }
    }
    fixer.kill9();

    let states = cluster.sql("SELECT state, COUNT(*) FROM runs GROUP BY state");
    assert_eq!(
        states,
        vec![format!("succeeded|{RUNS}")],
        "seed {seed}: every run succeeded"
    );
    // The final clipboards are exact: each stage left its mark once, in order.
    let expected: Vec<String> = (1..=STAGES).map(|i| i.to_string()).collect();
    let exact = cluster.count(&format!(
        "SELECT COUNT(*) FROM runs WHERE (clipboard::json -> 'local' -> 'done')::text = '[{}]'",
        expected.join(",")
    ));
    assert_eq!(exact, RUNS, "seed {seed}: the final clipboards");

    // Every stage finished once; no (stage, attempt) started twice; no stage started again
    // after it had finished.
    let mut finished: BTreeMap<(i64, usize), u32> = BTreeMap::new();
    for line in cluster.sql(
        "SELECT run_id, stage, attempt FROM stage_runs WHERE phase = 'main' AND state = 'succeeded'",
    ) {
        let f: Vec<&str> = line.split('|').collect();
        let key = (f[0].parse().unwrap(), f[1].parse::<usize>().unwrap() + 1);
        assert!(
            finished.insert(key, f[2].parse().unwrap()).is_none(),
            "seed {seed}: run {} stage {} finished twice",
            key.0,
            key.1
        );
    }
    assert_eq!(finished.len(), RUNS * STAGES, "seed {seed}");
    let mut seen = BTreeSet::new();
    let started = trace(&cluster);
    for (run, stage, attempt) in &started {
        assert!(
            seen.insert((*run, *stage, *attempt)),
            "seed {seed}: run {run} stage {stage} attempt {attempt} started twice"
        );
        let Some(&done) = finished.get(&(*run, *stage)) else {
            panic!(
                "seed {seed}: run {run} stage {stage} attempt {attempt} started, never finished"
            );
        };
        assert!(
            *attempt <= done,
            "seed {seed}: run {run} stage {stage} ran again (attempt {attempt}) after it finished with attempt {done}"
        );
    }
    let taken_over: usize = nodes
        .iter()
        .map(|n| {
            std::fs::read_to_string(&n.log)
                .unwrap_or_default()
                .matches("took over a run")
                .count()
        })
        .sum();
    eprintln!(
        "seed {seed}: {kills} kills, {} stage starts for {} stages, {taken_over} runs taken over",
        started.len(),
        RUNS * STAGES
    );
}

/// `cancel` said on one node stops the stage another node runs: the runner there sees the
/// request (by NOTIFY, or at its next lease renewal) and the run ends cancelled, by whom.
#[test]
fn cancel_said_on_one_node_stops_a_run_another_node_runs() {
    let Some(server) = Server::start("postgres").unwrap() else {
        return;
    };
    let cluster = Cluster::new(Postgres::fresh(&server));
    for i in 1..=3 {
        std::fs::write(
            cluster.path("designs").join(format!("c{i}.yaml")),
            format!("instance:\n  hostname: c{i}\n  provider: local\n"),
        )
        .unwrap();
    }
    let config = |name: &str, workers: usize| {
        let text = format!(
            "data_dir: {data}\n\
             designs:\n  folder: {designs}\n\
             database_url: {url}\n\
             cluster:\n  node: {name}\n  lease: 2s\n\
             limits:\n  workers: {workers}\n\
             workers:\n  folders: [{workers_dir}]\n  modules:\n    slowstep: {{ env: {{ STEP_SECONDS: '120' }} }}\n\
             pipelines:\n  slow:\n    providers: [local]\n    stages:\n      - {{ task: \"slowstep:a\" }}\n\
             roles:\n  grants:\n    - {{ console: \"*\", roles: [admin] }}\n",
            data = cluster.path(name).join("data").display(),
            designs = cluster.path("designs").display(),
            url = cluster.pg.url,
            workers_dir = support::test_workers().display(),
        );
        let path = cluster.path(&format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let b = config("b", 8);
    let _b = Node {
        name: "b".into(),
        log: cluster.path("b.log"),
        child: spawn(&b, &cluster.path("b.log")),
        config: b,
        starts: 1,
    };
    // `a` may hold one run at most while the cluster holds none: `b` takes the others.
    let mut a = Shell::start(&config("a", 1));
    for i in 1..=3 {
        a.ask(&format!("deploy c{i}"), "queued");
    }
    wait_for("three running runs", Duration::from_secs(60), || {
        cluster.count("SELECT COUNT(*) FROM runs WHERE state = 'running'") == 3
    });
    let on_b = cluster.sql("SELECT id FROM runs WHERE lease_owner = 'b' ORDER BY id LIMIT 1");
    let id = on_b.first().expect("b runs a run").trim().to_string();
    a.say(&format!("status #{id}"));
    let status = a.expect(&format!("deploy #{id}:"));
    assert!(
        status.contains("running") && status.contains(" on b"),
        "{status}"
    );
    a.ask(&format!("cancel #{id}"), "cancelling");
    let ended = a.expect("cancelled by");
    assert!(ended.contains(&format!("#{id}")), "{ended}");
    assert_eq!(
        cluster.sql(&format!("SELECT state FROM runs WHERE id = {id}")),
        vec!["cancelled"]
    );
    a.kill9();
}

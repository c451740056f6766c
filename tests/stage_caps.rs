//! What one stage may leave behind (issue 28): a runaway stderr or an alias-bomb clipboard
//! fails its stage in one line and leaves the database small; a run secret copied onto the
//! clipboard fails its stage by name; run secrets reach only their own module's stages unless
//! the configuration hands them on; `log` masks secrets the ways tools print them. The real
//! binary, real worker processes, `jarvis shell` on pipes.

mod support;

use support::{Home, files_containing, test_workers};

/// A home whose pipeline `p` runs `stages` (YAML flow mappings), with `modules` under
/// `workers.modules`.
fn home(modules: &str, stages: &[&str]) -> Home {
    home_with("", modules, stages)
}

/// [`home`] with more top-level YAML (`limits:` …).
fn home_with(top: &str, modules: &str, stages: &[&str]) -> Home {
    let stages: String = stages.iter().map(|s| format!("      - {s}\n")).collect();
    let modules = if modules.is_empty() {
        " {}\n".to_string()
    } else {
        format!("\n{modules}")
    };
    let config = format!(
        "workers:\n  folders: [{}]\n  modules:{modules}\
         pipelines:\n  p:\n    providers: [test]\n    stages:\n{stages}\
         roles:\n  grants:\n    - {{ console: \"*\", roles: [admin] }}\n{top}",
        test_workers().display()
    );
    let home = Home::new(&config);
    home.design("h", "instance:\n  hostname: h\n  provider: test\n");
    home
}

/// Deploys `h`, waits for its outcome and returns that line with everything the shell said.
fn deploy(home: &Home, then: &[&str]) -> (String, Vec<String>) {
    let mut sh = home.shell();
    sh.ask("deploy h", "queued");
    let outcome = sh.expect_where(
        |l| l.contains("FAILED") || l.contains("succeeded"),
        "an outcome",
    );
    for line in then {
        sh.say(line);
    }
    if !then.is_empty() {
        sh.say("whoami");
        sh.expect("console");
    }
    (outcome, sh.finish())
}

/// The size of the data folder's database with its write-ahead log.
fn database_bytes(home: &Home) -> u64 {
    ["jarvis.db", "jarvis.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(home.path("data").join(f)).ok())
        .map(|m| m.len())
        .sum()
}

const TEN_MB: u64 = 10 * 1024 * 1024;

#[test]
fn two_million_stderr_lines_fail_the_stage_and_store_at_most_the_cap() {
    let home = home("", &["{ task: \"stderrflood:x\", timeout: 60s }"]);
    let (outcome, _) = deploy(&home, &[]);
    assert!(
        outcome.contains("FAILED at stage 1/1 stderrflood:x"),
        "{outcome}"
    );
    assert!(
        outcome.contains("the worker's stderr passed 10000 lines, the limit for a stage"),
        "{outcome}"
    );
    let rows: u64 = home.sql("SELECT COUNT(*) FROM log_lines")[0]
        .parse()
        .unwrap();
    assert!(rows <= 10_010, "{rows} log lines stored");
    let last = home.sql("SELECT line FROM log_lines ORDER BY id DESC LIMIT 1");
    assert!(last[0].contains("the rest was not kept"), "{last:?}");
    let size = database_bytes(&home);
    assert!(size < TEN_MB, "the database holds {size} bytes");
}

#[test]
fn the_caps_are_settings() {
    // 1,000 lines of 35 bytes pass 16 KiB of log long before 10,000 lines.
    let home = home_with(
        "limits:\n  log_bytes: 16384\n",
        "",
        &["{ task: \"stderrflood:x\", timeout: 60s }"],
    );
    let (outcome, _) = deploy(&home, &[]);
    assert!(
        outcome.contains("the worker's stderr passed 16 KiB, the limit for a stage"),
        "{outcome}"
    );
    let bytes: u64 = home.sql("SELECT SUM(LENGTH(line)) FROM log_lines")[0]
        .parse()
        .unwrap();
    assert!(bytes <= 16384 + 200, "{bytes} bytes of log stored");

    let home = home_with(
        "limits:\n  clipboard_bytes: 65536\n",
        "",
        &["{ task: \"aliasbomb:x\", timeout: 60s }"],
    );
    let (outcome, _) = deploy(&home, &[]);
    assert!(
        outcome.contains("more than 64 KiB once its aliases are expanded"),
        "{outcome}"
    );
}

#[test]
fn a_clipboard_of_aliases_fails_the_stage_before_it_is_expanded() {
    let home = home("", &["{ task: \"aliasbomb:x\", timeout: 60s }"]);
    let (outcome, _) = deploy(&home, &[]);
    assert!(
        outcome.contains("FAILED at stage 1/1 aliasbomb:x"),
        "{outcome}"
    );
    assert!(
        outcome.contains("more than 4 MiB once its aliases are expanded"),
        "{outcome}"
    );
    let size = database_bytes(&home);
    assert!(size < TEN_MB, "the database holds {size} bytes");
}

#[test]
fn a_run_secret_copied_onto_the_clipboard_fails_naming_the_key() {
    const SECRET: &str = "Copied-Secret-5150";
    let home = home(
        &format!("    secretcopier: {{ env: {{ SEED_SECRET: {SECRET} }} }}\n"),
        &[
            "{ task: \"secretcopier:make\" }",
            "{ task: \"secretcopier:copy\" }",
        ],
    );
    let (outcome, out) = deploy(&home, &["status #1"]);
    assert!(
        outcome.contains("FAILED at stage 2/2 secretcopier:copy"),
        "{outcome}"
    );
    assert!(
        outcome.contains(
            "the worker put the run's secret 'db_password' on the clipboard; secrets go on the secret channel only"
        ),
        "{outcome}"
    );
    assert!(!out.iter().any(|l| l.contains(SECRET)), "{out:#?}");
    // The clipboard was not stored, nor the secret anywhere in clear.
    let found = files_containing(&home.path("data"), SECRET.as_bytes());
    assert!(found.is_empty(), "the secret is in {found:?}");
}

#[test]
fn run_secrets_reach_other_modules_only_when_handed_on() {
    const SECRET: &str = "Scoped-Secret-8086";
    let stages = ["{ task: \"givesecret:x\" }", "{ task: \"envdump:x\" }"];
    let seed = format!("    givesecret: {{ env: {{ SEED_SECRET: {SECRET} }} }}\n");
    let env_names = |home: &Home| {
        home.sql("SELECT clipboard FROM runs WHERE id = 1")
            .join("\n")
    };

    let closed = home(&seed, &stages);
    let (outcome, _) = deploy(&closed, &[]);
    assert!(outcome.contains("succeeded"), "{outcome}");
    let names = env_names(&closed);
    assert!(names.contains("JARVIS_RUN_ID"), "{names}");
    assert!(!names.contains("JARVIS_SECRET_ROOT_PASSWORD"), "{names}");

    let open = home(
        &format!("{seed}    envdump: {{ secrets_from: [givesecret] }}\n"),
        &stages,
    );
    let (outcome, _) = deploy(&open, &[]);
    assert!(outcome.contains("succeeded"), "{outcome}");
    let names = env_names(&open);
    assert!(names.contains("JARVIS_SECRET_ROOT_PASSWORD"), "{names}");
}

#[test]
fn log_masks_quoted_environment_header_and_multi_word_secrets() {
    let home = home("", &["{ task: \"talker:x\" }"]);
    let (outcome, out) = deploy(&home, &["log #1 20"]);
    assert!(outcome.contains("succeeded"), "{outcome}");
    let shown = out.join("\n");
    for secret in [
        "Quoted Velvet",
        "Velvet Secret",
        "Env Style",
        "Style Secret",
        "HeaderTok3n",
        "horse battery",
        "battery staple",
    ] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        let found = files_containing(&home.path("data"), secret.as_bytes());
        assert!(found.is_empty(), "{secret} is in {found:?}");
    }
    for masked in [
        "db_password: '********'",
        "PGPASSWORD='********' psql -h db",
        "Authorization: Bearer ********",
        "passphrase: ********",
        "sshpubkey: ssh-ed25519 AAAAC3NzaPublicKey jarvis@h",
        "root_key_pub: ssh-ed25519 AAAAC3NzaRootPublic root@h",
    ] {
        assert!(shown.contains(masked), "{masked} not shown:\n{shown}");
    }
}

//! The `ssh` worker against a real OpenSSH sshd (tests/testbed), and the `local` host maker.
//! The tests play the engine: stage parameters go on the input as `jarvis.with`, and the keys
//! a learning stage reports (`jarvis.learned_host_keys`) become the pins (`jarvis.host_keys`)
//! of the stages after it.

mod hosts_common;

use hosts_common::*;
use jarvis_testbed::Server;
use serde_json::{Value, json};

/// An sshd, the design's clipboard, the ssh module's grants, and the stage parameters that
/// reach the sshd.
fn sshd() -> Option<(Server, Mapping, Env, Value)> {
    let server = Server::start("sshd").unwrap()?;
    let clipboard = design("loki", "7");
    let with = json!({
        "host": "127.0.0.1",
        "port": server.get("SSHD_PORT").parse::<u16>().unwrap(),
        "user": server.get("SSHD_USER"),
        "poll_ms": 50,
    });
    let env = vec![("SSH_KEY_FILE", server.get("SSHD_KEY").to_string())];
    Some((server, clipboard, env, with))
}

/// `with` plus more parameters.
fn plus(with: &Value, more: Value) -> Value {
    let mut out = with.clone();
    for (k, v) in more.as_object().unwrap() {
        out[k] = v.clone();
    }
    out
}

/// Runs `ssh:wait` in learn mode, as a pipeline that creates the host does: the clipboard
/// after it holds the learned key as the host's pin.
fn learn(clipboard: &Mapping, env: &Env, with: &Value) -> Mapping {
    stage(
        "ssh:wait",
        plus(with, json!({"host_key": "learn"})),
        clipboard,
        env,
    )
    .ok("ssh:wait (learn)")
}

/// The SSHFP lines `ssh-keygen -r loki -f FILE` prints for SHA-256: `ALG 2 HEX`.
fn keygen_sshfp(file: &str) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-r", "loki", "-f", file])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("2"))
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    format!("{} 2 {}", words[3], words[5])
}

#[test]
fn fingerprints_learn_every_key_and_then_check_the_pins() {
    let Some((server, clipboard, env, with)) = sshd() else {
        return;
    };
    let learning = plus(&with, json!({"host_key": "learn"}));
    let mut input = clipboard.clone();
    with_params(&mut input, learning.clone());
    let raw = worker("ssh:fingerprints", &input, &env);
    assert_eq!(raw.code, 0, "{}", raw.stderr);

    let files: Vec<&str> = server.get("SSHD_HOST_KEYS").split(',').collect();
    assert_eq!(
        files.len(),
        2,
        "the testbed sshd has an ed25519 and an rsa key"
    );
    let prints = get(&raw.clipboard, "ssh.fingerprints")
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(prints.len(), 2, "one fingerprint per host key: {prints:?}");
    let learned = get(&raw.clipboard, "jarvis.learned_host_keys")
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(learned.len(), 2, "{learned:?}");
    let mut pinned_clipboard = clipboard.clone();
    set(
        &mut pinned_clipboard,
        "jarvis.host_keys",
        Value::Array(learned.clone()),
    );
    // The dns worker's SSHFP records, made from the pins alone.
    let records: Vec<String> = jarvis_workers::host_facts::sshfp(&pinned_clipboard)
        .unwrap()
        .iter()
        .map(|r| r.presentation())
        .collect();
    for file in &files {
        let (expected, kind) = keygen_fingerprint(file);
        let name = match kind.as_str() {
            "ED25519" => "ssh-ed25519",
            "RSA" => "ssh-rsa",
            other => panic!("unexpected key type {other}"),
        };
        assert_eq!(prints[name], json!(expected), "{file}");
        assert!(
            learned.contains(&json!({"algorithm": name, "fingerprint": expected})),
            "{learned:?}"
        );
        assert!(
            raw.stderr.contains(&format!(
                "notice: learned loki's host key {name} {expected}"
            )),
            "{}",
            raw.stderr
        );

        // SSHFP data as ssh-keygen -r prints it: `NAME IN SSHFP ALG 2 HEX`.
        let sshfp = keygen_sshfp(file);
        let words: Vec<&str> = sshfp.split_whitespace().collect();
        let record = json!({
            "algorithm": words[0].parse::<u64>().unwrap(),
            "fptype": 2,
            "fingerprint": words[2],
        });
        let on_clipboard = get(&raw.clipboard, "ssh.sshfp").as_array().unwrap();
        assert!(
            on_clipboard.contains(&record),
            "{record} not in {on_clipboard:?}"
        );
        assert!(records.contains(&sshfp), "{sshfp} not in {records:?}");
    }

    // Default mode: each pinned key is checked; nothing is learned.
    let checked = stage("ssh:fingerprints", with.clone(), &pinned_clipboard, &env);
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    assert_eq!(get(&checked.clipboard, "ssh.fingerprints"), &json!(prints));
    let mut again = pinned_clipboard.clone();
    with_params(&mut again, with.clone());
    let raw = worker("ssh:fingerprints", &again, &env);
    assert_eq!(raw.code, 0, "{}", raw.stderr);
    assert_eq!(
        get(&raw.clipboard, "jarvis.learned_host_keys"),
        &Value::Null
    );
    assert!(!raw.stderr.contains("learned"), "{}", raw.stderr);
}

#[test]
fn a_changed_host_key_fails_run_with_both_fingerprints() {
    let Some((mut server, clipboard, env, with)) = sshd() else {
        return;
    };
    let clipboard = learn(&clipboard, &env, &with);
    let pins = get(&clipboard, "jarvis.host_keys")
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(pins.len(), 1, "{pins:?}");
    assert_eq!(pins[0]["algorithm"], json!("ssh-ed25519"));
    let old = pins[0]["fingerprint"].as_str().unwrap().to_string();

    // Same port, new host keys: what a man in the middle (or a silent rebuild) looks like.
    server.stop(None).unwrap();
    for entry in std::fs::read_dir(server.dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("ssh_host_") {
            std::fs::remove_file(path).unwrap();
        }
    }
    server.restart().unwrap();
    let (new, _) = keygen_fingerprint(&format!(
        "{}/ssh_host_ed25519_key.pub",
        server.dir().display()
    ));
    assert_ne!(old, new);

    let marker = tempfile::tempdir().unwrap();
    let touched = marker.path().join("ran");
    let run_with = plus(
        &with,
        json!({"commands": [["touch", touched.display().to_string()]]}),
    );
    let outcome = stage("ssh:run", run_with.clone(), &clipboard, &env);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert_eq!(
        outcome.error().unwrap(),
        format!(
            "loki's host key changed: pinned ssh-ed25519 {old}, offered ssh-ed25519 {new}; if \
             that is expected, an admin says 'trust loki ssh-ed25519 {new}', then 'resume'"
        )
    );
    assert!(!touched.exists(), "nothing ran on the impostor");

    // A wait without learning fails the same way, and does not replace the pin.
    let waited = stage("ssh:wait", with.clone(), &clipboard, &env);
    assert_eq!(waited.code, 1, "{}", waited.stderr);
    assert!(
        waited
            .error()
            .unwrap()
            .starts_with("loki's host key changed: pinned ssh-ed25519 "),
        "{}",
        waited.stderr
    );

    // The admin's `trust loki ssh-ed25519 NEW`: the engine's pin changes, and run works.
    let mut trusted = clipboard.clone();
    set(
        &mut trusted,
        "jarvis.host_keys",
        json!([{"algorithm": "ssh-ed25519", "fingerprint": new}]),
    );
    stage("ssh:run", run_with, &trusted, &env).ok("ssh:run after trust");
    assert!(touched.exists());

    // A pipeline that creates the host learns the new key, and says it differs.
    let relearned = stage(
        "ssh:wait",
        plus(&with, json!({"host_key": "learn"})),
        &clipboard,
        &env,
    );
    assert_eq!(relearned.code, 0, "{}", relearned.stderr);
    assert!(
        relearned.stderr.contains(&format!(
            "notice: loki offers a host key other than the one pinned before (ssh-ed25519 {old})"
        )),
        "{}",
        relearned.stderr
    );
    assert_eq!(
        get(&relearned.clipboard, "jarvis.host_keys"),
        &json!([{"algorithm": "ssh-ed25519", "fingerprint": new}])
    );
}

#[test]
fn without_a_pin_nothing_connects() {
    let Some((_server, clipboard, env, with)) = sshd() else {
        return;
    };
    let run_with = plus(&with, json!({"commands": ["true"]}));
    for (task, with) in [
        ("ssh:run", run_with.clone()),
        ("ssh:wait", with.clone()),
        ("ssh:fingerprints", with.clone()),
        ("ssh:keygen", with.clone()),
    ] {
        let outcome = stage(task, with, &clipboard, &env);
        assert_eq!(outcome.code, 1, "{task}: {}", outcome.stderr);
        assert_eq!(
            outcome.error().unwrap(),
            "jarvis has no pinned host key for loki; a pipeline that creates the host learns it \
             (with: {host_key: learn}), or an admin says 'trust loki ALGORITHM FINGERPRINT'",
            "{task}"
        );
    }
    // Only wait and fingerprints learn.
    let outcome = stage(
        "ssh:run",
        plus(&run_with, json!({"host_key": "learn"})),
        &clipboard,
        &env,
    );
    assert_eq!(outcome.code, 1);
    assert!(
        outcome
            .error()
            .unwrap()
            .starts_with("with.host_key: learn is for the ssh:wait and ssh:fingerprints stages")
    );
}

#[test]
fn the_design_never_chooses_commands_targets_or_sudo() {
    let Some((_server, clipboard, env, with)) = sshd() else {
        return;
    };
    let clipboard = learn(&clipboard, &env, &with);
    let marker = tempfile::tempdir().unwrap();
    let touched = marker.path().join("pwned");
    let mut evil = clipboard.clone();
    set(
        &mut evil,
        "ssh.commands",
        json!([format!("touch {}", touched.display())]),
    );
    set(&mut evil, "ssh.script", json!("greet"));
    set(
        &mut evil,
        "ssh.scripts",
        json!({"greet": [format!("touch {}", touched.display())]}),
    );
    set(&mut evil, "ssh.sudo", json!(true));
    let outcome = stage("ssh:run", with.clone(), &evil, &env);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert_eq!(
        outcome.error().unwrap(),
        "nothing to run: the stage's with: has no commands or script"
    );
    let outcome = stage("ssh:run.greet", with.clone(), &evil, &env);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(!touched.exists(), "the design's commands never ran");

    // Nor where: ssh.host, ssh.port, instance.ip on the clipboard name no target.
    let mut elsewhere = clipboard.clone();
    set(&mut elsewhere, "ssh.host", json!("127.0.0.1"));
    set(&mut elsewhere, "ssh.port", with["port"].clone());
    set(&mut elsewhere, "instance.ip", json!("127.0.0.1"));
    let outcome = stage("ssh:run", json!({"commands": ["true"]}), &elsewhere, &env);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert_eq!(
        outcome.error().unwrap(),
        "no SSH target: the stage's with: names no host or domain and no earlier stage created \
         the host"
    );
}

#[test]
fn run_streams_output_quotes_values_and_reports_the_last_line() {
    let Some((_server, clipboard, env, with)) = sshd() else {
        return;
    };
    let mut clipboard = learn(&clipboard, &env, &with);
    set(
        &mut clipboard,
        "instance.hostname",
        json!("lo'ki; touch /tmp/jarvis-pwned"),
    );
    let run_with = plus(
        &with,
        json!({"commands": [
            "echo first line; echo second line",
            ["printf", "%s\\n", "name={instance.hostname}"],
        ]}),
    );
    let outcome = stage("ssh:run", run_with, &clipboard, &env);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("127.0.0.1| first line"));
    assert!(outcome.stderr.contains("127.0.0.1| second line"));
    assert!(
        outcome
            .stderr
            .contains("127.0.0.1| name=lo'ki; touch /tmp/jarvis-pwned"),
        "the value arrives as one argument, unexecuted"
    );
    assert!(!std::path::Path::new("/tmp/jarvis-pwned").exists());

    let run_with = plus(
        &with,
        json!({"commands": ["echo working; echo 'disk full' >&2; exit 3", "echo never"]}),
    );
    let outcome = stage("ssh:run", run_with, &clipboard, &env);
    assert_eq!(outcome.code, 1);
    assert_eq!(
        outcome.error().unwrap(),
        "`echo working; echo 'disk full' >&2; exit 3` failed on 127.0.0.1 (exit 3): disk full"
    );
    assert!(!outcome.stderr.contains("| never"));
}

#[test]
fn sudo_runs_the_command_through_sudo() {
    let Some((_server, clipboard, env, with)) = sshd() else {
        return;
    };
    let clipboard = learn(&clipboard, &env, &with);
    let run_with = plus(&with, json!({"sudo": true, "commands": [["id", "-u"]]}));
    let outcome = stage("ssh:run", run_with, &clipboard, &env);
    let has_sudo = std::process::Command::new("sh")
        .args(["-c", "command -v sudo"])
        .status()
        .unwrap()
        .success();
    if has_sudo {
        assert_eq!(outcome.code, 0, "{}", outcome.stderr);
        assert!(outcome.stderr.contains("127.0.0.1| 0"));
    } else {
        // Without sudo on the host the shell says so: proof it was asked for.
        assert_eq!(outcome.code, 1);
        assert!(
            outcome.error().unwrap().contains("sudo"),
            "{}",
            outcome.stderr
        );
    }
}

#[test]
fn named_scripts_run_from_the_scripts_folder_with_quoted_arguments() {
    let Some((_server, clipboard, mut env, with)) = sshd() else {
        return;
    };
    let clipboard = learn(&clipboard, &env, &with);
    let scripts = tempfile::tempdir().unwrap();
    std::fs::write(
        scripts.path().join("greet.sh"),
        "set -eu\nprintf 'hello %s from %s\\n' \"$1\" \"$(hostname)\"\n",
    )
    .unwrap();
    env.push(("SSH_SCRIPTS", scripts.path().display().to_string()));
    let script_with = plus(&with, json!({"script_args": ["{jarvis.requester} $(id)"]}));
    let outcome = stage("ssh:run.greet", script_with.clone(), &clipboard, &env);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("127.0.0.1| hello alice $(id) from ")
    );

    // `with.script` names it for plain `run`; `with.scripts.NAME` overrides the file.
    let outcome = stage(
        "ssh:run",
        plus(&script_with, json!({"script": "greet"})),
        &clipboard,
        &env,
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("127.0.0.1| hello alice $(id) from ")
    );
    let outcome = stage(
        "ssh:run.greet",
        plus(
            &with,
            json!({"scripts": {"greet": [["echo", "inline {instance.hostname}"]]}}),
        ),
        &clipboard,
        &env,
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("127.0.0.1| inline loki"));

    let outcome = stage("ssh:run.nothere", with, &clipboard, &env);
    assert_eq!(
        outcome.error().unwrap(),
        "no script 'nothere' in the SSH_SCRIPTS folder"
    );
}

#[test]
fn keygen_makes_the_root_key_on_the_host_once() {
    let Some((_server, clipboard, env, with)) = sshd() else {
        return;
    };
    let clipboard = learn(&clipboard, &env, &with);
    let home = tempfile::tempdir().unwrap();
    let identity = home.path().join("dot-ssh/id_ed25519");
    let keygen_with = plus(
        &with,
        json!({"root_identity": identity.display().to_string()}),
    );
    let first = stage("ssh:keygen", keygen_with.clone(), &clipboard, &env).ok("ssh:keygen");
    let public = get(&first, "ssh.root_pubkey").as_str().unwrap().to_string();
    assert!(public.starts_with("ssh-ed25519 ") && public.ends_with(" root@loki.example.com"));
    let on_host = std::fs::read_to_string(identity.with_extension("pub")).unwrap();
    assert_eq!(on_host.trim(), public);

    let second = stage("ssh:keygen", keygen_with, &first, &env).ok("ssh:keygen again");
    assert_eq!(get(&second, "ssh.root_pubkey"), &Value::from(public));
}

#[test]
fn local_create_host_makes_a_real_sshd() {
    let has_sshd = ["/usr/sbin/sshd", "/sbin/sshd"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if !has_sshd {
        assert!(
            !jarvis_testbed::in_ci(),
            "sshd is not installed, and CI must not skip"
        );
        eprintln!("SKIPPING: sshd is not installed");
        return;
    }
    let hosts = tempfile::tempdir().unwrap();
    let env_local = vec![("JARVIS_LOCAL_HOSTS", hosts.path().display().to_string())];
    let clipboard = design("demo", "9");

    let no_grant = worker("local:create_host", &clipboard, &[]);
    assert_eq!(no_grant.code, 1);
    assert!(
        no_grant
            .error()
            .unwrap()
            .starts_with("no JARVIS_LOCAL_HOSTS")
    );

    let made = worker("local:create_host", &clipboard, &env_local).ok("local:create_host");
    assert_eq!(get(&made, "instance.ip"), &json!("127.0.0.1"));
    assert_eq!(get(&made, "jarvis.target.host"), &json!("127.0.0.1"));
    let port = get(&made, "jarvis.target.port").as_u64().unwrap();
    let again = worker("local:create_host", &clipboard, &env_local).ok("create_host again");
    assert_eq!(
        get(&again, "jarvis.target.port").as_u64(),
        Some(port),
        "the same host, not a second"
    );

    // The ssh module's grants: the operator key, and the user the local sshd lets in.
    let env_ssh = vec![
        (
            "SSH_KEY_FILE",
            hosts.path().join("client_key").display().to_string(),
        ),
        (
            "SSH_USER",
            get(&made, "ssh.user").as_str().unwrap().to_string(),
        ),
    ];
    // No host in with: the target is where create_host said the host answers.
    let learning = json!({"host_key": "learn", "poll_ms": 50});
    let waited = stage("ssh:wait", learning.clone(), &made, &env_ssh).ok("ssh:wait");
    let printed = stage("ssh:fingerprints", learning, &waited, &env_ssh).ok("ssh:fingerprints");
    let prints = get(&printed, "ssh.fingerprints")
        .as_object()
        .unwrap()
        .clone();
    let pins = get(&printed, "jarvis.host_keys")
        .as_array()
        .unwrap()
        .clone();
    let host_dir = get(&made, "local.host_dir").as_str().unwrap().to_string();
    for kind in ["ed25519", "ecdsa"] {
        let (expected, _) = keygen_fingerprint(&format!("{host_dir}/ssh_host_{kind}_key.pub"));
        assert!(
            prints.values().any(|v| v == &json!(expected)),
            "{kind}: {prints:?}"
        );
        assert!(
            pins.iter().any(|p| p["fingerprint"] == json!(expected)),
            "{kind}: {pins:?}"
        );
    }
    let outcome = stage(
        "ssh:run",
        json!({"commands": [["echo", "on {instance.hostname}"]]}),
        &printed,
        &env_ssh,
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("127.0.0.1| on demo"));

    let gone = worker("local:destroy_host", &printed, &env_local).ok("local:destroy_host");
    assert_eq!(get(&gone, "ssh.port"), &Value::Null);
    assert_eq!(get(&gone, "jarvis.target"), &Value::Null);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err());
    assert!(!std::path::Path::new(&host_dir).exists());
}

#[test]
fn wait_reports_progress_until_sshd_answers_and_gives_up_at_its_deadline() {
    let Some((mut server, clipboard, env, with)) = sshd() else {
        return;
    };
    server.stop(None).unwrap();
    let outcome = stage(
        "ssh:wait",
        plus(&with, json!({"host_key": "learn", "wait_seconds": 1})),
        &clipboard,
        &env,
    );
    assert_eq!(outcome.code, 75, "{}", outcome.stderr);
    let port = server.get("SSHD_PORT").to_string();
    assert!(
        outcome
            .error()
            .unwrap()
            .starts_with(&format!("no SSH on 127.0.0.1:{port} after 1s: ")),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .contains(&format!("progress: waiting for sshd on 127.0.0.1:{port}"))
    );

    // Started while sshd is down, it finishes once sshd is back, and reports the key it saw.
    let mut input = clipboard.clone();
    with_params(
        &mut input,
        plus(&with, json!({"host_key": "learn", "wait_seconds": 60})),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jarvis-worker"))
        .args(["ssh", "wait"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("JARVIS_HOST", "loki")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let text = serde_saphyr::to_string(&input).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let mut stderr = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let first = stderr.next().unwrap().unwrap();
    assert!(
        first.starts_with("progress: waiting for sshd on 127.0.0.1:"),
        "{first}"
    );
    server.restart().unwrap();
    let rest: Vec<String> = stderr.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("notice: sshd on 127.0.0.1:")),
        "{rest:?}"
    );
    let (expected, _) = keygen_fingerprint(&format!(
        "{}/ssh_host_ed25519_key.pub",
        server.dir().display()
    ));
    assert_eq!(
        rest.last().unwrap(),
        &format!("notice: learned loki's host key ssh-ed25519 {expected}")
    );
    let clipboard: Mapping = serde_saphyr::from_slice(&out.stdout).unwrap();
    assert_eq!(
        get(&clipboard, "jarvis.learned_host_keys"),
        &json!([{"algorithm": "ssh-ed25519", "fingerprint": expected}])
    );
}

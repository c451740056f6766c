//! The `ssh` worker against a real OpenSSH sshd (deploy/testbed), and the `local` host maker.

mod hosts_common;

use hosts_common::*;
use jarvis_testbed::Server;
use serde_json::{Value, json};

/// An sshd, and the clipboard and environment that reach it.
fn sshd() -> Option<(Server, Mapping, Env)> {
    let server = Server::start("sshd").unwrap()?;
    let mut clipboard = design("loki", "7");
    set(&mut clipboard, "ssh.host", json!("127.0.0.1"));
    set(
        &mut clipboard,
        "ssh.port",
        json!(server.get("SSHD_PORT").parse::<u16>().unwrap()),
    );
    set(&mut clipboard, "ssh.user", json!(server.get("SSHD_USER")));
    set(&mut clipboard, "ssh.poll_ms", json!(50));
    let env = vec![("SSH_KEY_FILE", server.get("SSHD_KEY").to_string())];
    Some((server, clipboard, env))
}

#[test]
fn fingerprints_match_ssh_keygen() {
    let Some((server, clipboard, env)) = sshd() else {
        return;
    };
    let clipboard = worker("ssh:fingerprints", &clipboard, &env).ok("ssh:fingerprints");

    let files: Vec<&str> = server.get("SSHD_HOST_KEYS").split(',').collect();
    assert_eq!(
        files.len(),
        2,
        "the testbed sshd has an ed25519 and an rsa key"
    );
    let prints = get(&clipboard, "ssh.fingerprints")
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(
        prints.len(),
        files.len(),
        "one fingerprint per host key: {prints:?}"
    );
    for file in &files {
        let (expected, kind) = keygen_fingerprint(file);
        let name = match kind.as_str() {
            "ED25519" => "ssh-ed25519",
            "RSA" => "ssh-rsa",
            other => panic!("unexpected key type {other}"),
        };
        assert_eq!(prints[name], json!(expected), "{file}");

        // SSHFP data as ssh-keygen -r prints it: `NAME IN SSHFP ALG 2 HEX`.
        let out = std::process::Command::new("ssh-keygen")
            .args(["-r", "loki", "-f", file])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.contains(" 2 ")).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let record = json!({
            "algorithm": words[3].parse::<u64>().unwrap(),
            "fptype": 2,
            "fingerprint": words[5],
        });
        let sshfp = get(&clipboard, "ssh.sshfp").as_array().unwrap();
        assert!(sshfp.contains(&record), "{record} not in {sshfp:?}");
    }
    let pins = get(&clipboard, "ssh.known_hosts").as_array().unwrap();
    assert_eq!(pins.len(), 2, "{pins:?}");
}

#[test]
fn a_changed_host_key_fails_run() {
    let Some((mut server, clipboard, env)) = sshd() else {
        return;
    };
    let clipboard = worker("ssh:wait", &clipboard, &env).ok("ssh:wait");
    assert_eq!(
        get(&clipboard, "ssh.known_hosts").as_array().unwrap().len(),
        1
    );

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

    let mut run = clipboard.clone();
    set(&mut run, "ssh.commands", json!(["true"]));
    let outcome = worker("ssh:run", &run, &env);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let port = server.get("SSHD_PORT");
    let error = outcome.error().unwrap();
    assert!(
        error.starts_with(&format!(
            "host key of 127.0.0.1:{port} changed since ssh:wait: it offers ssh-ed25519 SHA256:"
        )),
        "{error}"
    );
    assert!(error.contains("pinned ssh-ed25519 SHA256:"), "{error}");

    // ssh:wait is first contact: it pins the new key, and run works again.
    let clipboard = worker("ssh:wait", &clipboard, &env).ok("ssh:wait again");
    set(
        &mut run,
        "ssh.known_hosts",
        get(&clipboard, "ssh.known_hosts").clone(),
    );
    worker("ssh:run", &run, &env).ok("ssh:run after re-pinning");
}

#[test]
fn run_streams_output_quotes_values_and_reports_the_last_line() {
    let Some((_server, mut clipboard, env)) = sshd() else {
        return;
    };
    set(
        &mut clipboard,
        "instance.hostname",
        json!("lo'ki; touch /tmp/jarvis-pwned"),
    );
    set(
        &mut clipboard,
        "ssh.commands",
        json!([
            "echo first line; echo second line",
            ["printf", "%s\\n", "name={instance.hostname}"],
        ]),
    );
    let outcome = worker("ssh:run", &clipboard, &env);
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
    let pins = get(&outcome.clipboard, "ssh.known_hosts")
        .as_array()
        .unwrap();
    assert_eq!(
        pins.len(),
        1,
        "run pins at first contact when no wait came first"
    );

    set(
        &mut clipboard,
        "ssh.commands",
        json!(["echo working; echo 'disk full' >&2; exit 3", "echo never"]),
    );
    let outcome = worker("ssh:run", &clipboard, &env);
    assert_eq!(outcome.code, 1);
    assert_eq!(
        outcome.error().unwrap(),
        "`echo working; echo 'disk full' >&2; exit 3` failed on 127.0.0.1 (exit 3): disk full"
    );
    assert!(!outcome.stderr.contains("| never"));
}

#[test]
fn sudo_runs_the_command_through_sudo() {
    let Some((_server, mut clipboard, env)) = sshd() else {
        return;
    };
    set(&mut clipboard, "ssh.sudo", json!(true));
    set(&mut clipboard, "ssh.commands", json!([["id", "-u"]]));
    let outcome = worker("ssh:run", &clipboard, &env);
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
    let Some((_server, mut clipboard, mut env)) = sshd() else {
        return;
    };
    let scripts = tempfile::tempdir().unwrap();
    std::fs::write(
        scripts.path().join("greet.sh"),
        "set -eu\nprintf 'hello %s from %s\\n' \"$1\" \"$(hostname)\"\n",
    )
    .unwrap();
    env.push(("SSH_SCRIPTS", scripts.path().display().to_string()));
    set(
        &mut clipboard,
        "ssh.script_args",
        json!(["{jarvis.requester} $(id)"]),
    );
    let outcome = worker("ssh:run.greet", &clipboard, &env);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("127.0.0.1| hello alice $(id) from ")
    );

    let outcome = worker("ssh:run.nothere", &clipboard, &env);
    assert_eq!(
        outcome.error().unwrap(),
        "no script 'nothere' in the SSH_SCRIPTS folder"
    );
}

#[test]
fn keygen_makes_the_root_key_on_the_host_once() {
    let Some((_server, mut clipboard, env)) = sshd() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let identity = home.path().join("dot-ssh/id_ed25519");
    set(
        &mut clipboard,
        "ssh.root_identity",
        json!(identity.display().to_string()),
    );
    let first = worker("ssh:keygen", &clipboard, &env).ok("ssh:keygen");
    let public = get(&first, "ssh.root_pubkey").as_str().unwrap().to_string();
    assert!(public.starts_with("ssh-ed25519 ") && public.ends_with(" root@loki.example.com"));
    let on_host = std::fs::read_to_string(identity.with_extension("pub")).unwrap();
    assert_eq!(on_host.trim(), public);

    let second = worker("ssh:keygen", &first, &env).ok("ssh:keygen again");
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
    let env_ssh = vec![(
        "SSH_KEY_FILE",
        hosts.path().join("client_key").display().to_string(),
    )];
    let mut clipboard = design("demo", "9");
    set(&mut clipboard, "ssh.poll_ms", json!(50));

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
    let port = get(&made, "ssh.port").as_u64().unwrap();
    let again = worker("local:create_host", &clipboard, &env_local).ok("create_host again");
    assert_eq!(
        get(&again, "ssh.port").as_u64(),
        Some(port),
        "the same host, not a second"
    );

    let waited = worker("ssh:wait", &made, &env_ssh).ok("ssh:wait");
    let printed = worker("ssh:fingerprints", &waited, &env_ssh).ok("ssh:fingerprints");
    let prints = get(&printed, "ssh.fingerprints")
        .as_object()
        .unwrap()
        .clone();
    let host_dir = get(&made, "local.host_dir").as_str().unwrap().to_string();
    for kind in ["ed25519", "ecdsa"] {
        let (expected, _) = keygen_fingerprint(&format!("{host_dir}/ssh_host_{kind}_key.pub"));
        assert!(
            prints.values().any(|v| v == &json!(expected)),
            "{kind}: {prints:?}"
        );
    }
    let mut run = printed.clone();
    set(
        &mut run,
        "ssh.commands",
        json!([["echo", "on {instance.hostname}"]]),
    );
    let outcome = worker("ssh:run", &run, &env_ssh);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("127.0.0.1| on demo"));

    let gone = worker("local:destroy_host", &printed, &env_local).ok("local:destroy_host");
    assert_eq!(get(&gone, "ssh.port"), &Value::Null);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err());
    assert!(!std::path::Path::new(&host_dir).exists());
}

#[test]
fn wait_reports_progress_until_sshd_answers_and_gives_up_at_its_deadline() {
    let Some((mut server, mut clipboard, env)) = sshd() else {
        return;
    };
    server.stop(None).unwrap();
    set(&mut clipboard, "ssh.wait_seconds", json!(1));
    let outcome = worker("ssh:wait", &clipboard, &env);
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

    // Started while sshd is down, it finishes once sshd is back.
    set(&mut clipboard, "ssh.wait_seconds", json!(60));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jarvis-worker"))
        .args(["ssh", "wait"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_saphyr::to_string(&clipboard).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
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
        rest.last()
            .unwrap()
            .starts_with("notice: sshd on 127.0.0.1:"),
        "{rest:?}"
    );
    let clipboard: Mapping = serde_saphyr::from_slice(&out.stdout).unwrap();
    assert_eq!(
        get(&clipboard, "ssh.known_hosts").as_array().unwrap().len(),
        1
    );
}

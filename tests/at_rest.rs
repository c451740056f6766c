//! What others on the machine and on the network can get at, through the real binary: the
//! data folder and the database are jarvis's user's alone after a start, and a start on
//! folders or files others can read is refused; worker folders and programs others can
//! write are refused; `check-config` refuses every credential that would cross a network in
//! clear (and a lab's `insecure_cleartext_credentials` turns each into a warning); `/metrics`
//! wants its token.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{Daemon, JARVIS};

/// A throwaway folder with a configuration whose first line is `data_dir: DIR/data`.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new(config: &str) -> Place {
        let dir = tempfile::Builder::new()
            .prefix("jarvis-at-rest-")
            .tempdir()
            .unwrap();
        let place = Place { dir };
        place.write_config(config);
        place
    }

    fn write_config(&self, config: &str) {
        std::fs::write(
            self.config(),
            format!("data_dir: {}\n{config}", self.data().display()),
        )
        .unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("jarvis.yaml")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `jarvis ARGS --config FILE` to its end: whether it succeeded, and what it said
    /// (stdout then stderr), the file's path written as `config.yaml`.
    fn jarvis(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let mut command = Command::new(JARVIS);
        command
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().expect("jarvis runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let file = self.config().display().to_string();
        (out.status.success(), text.replace(&file, "config.yaml"))
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

const METRICS_TOKEN: &str = "m3trics-t0ken-0123456789abcdef";

#[test]
fn a_start_leaves_the_data_folder_and_database_to_jarvis_alone_and_metrics_want_the_token() {
    let place = Place::new("http:\n  listen: 127.0.0.1:0\n  metrics_token: ${METRICS_TOKEN}\n");
    let daemon = Daemon::start_on(&place.config(), &[("METRICS_TOKEN", METRICS_TOKEN)]);
    let data = place.data();
    assert_eq!(mode(&data), 0o700, "the data folder");
    for name in [
        "jarvis.db",
        "jarvis.db-wal",
        "jarvis.db-shm",
        "seal.key",
        "jarvis.lock",
    ] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }

    // reqwest is built without a default TLS provider: the one jarvis uses.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::blocking::Client::new();
    let metrics = format!("{}/metrics", daemon.base);
    let answer = http.get(&metrics).send().unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    assert_eq!(
        answer
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let answer = http
        .get(&metrics)
        .bearer_auth("m3trics-t0ken-0123456789abcdeX")
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    let answer = http
        .get(&metrics)
        .bearer_auth(METRICS_TOKEN)
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let text = answer.text().unwrap();
    assert!(text.contains("# TYPE jarvis_runs gauge"), "{text}");
    // Health stays open: a load balancer has no token.
    let answer = http.get(format!("{}/healthz", daemon.base)).send().unwrap();
    assert_eq!(answer.status().as_u16(), 200);
}

#[test]
fn a_start_on_a_data_folder_or_database_others_can_read_is_refused() {
    let place = Place::new("");
    let data = place.data();
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o755);
    let shown = data.display().to_string();
    for args in [&["run"][..], &["shell"], &["migrate"]] {
        let (ok, said) = place.jarvis(args, &[]);
        assert!(!ok, "{args:?} started:\n{said}");
        assert!(
            said.lines().any(|l| l
                == format!(
                    "jarvis: the data folder {shown} is open to others (mode 755); say 'chmod 700 {shown}' so that only jarvis's user can read the runs, audit log and tokens"
                )),
            "{args:?}: {said}"
        );
    }
    assert!(!data.join("jarvis.db").exists(), "nothing was opened");

    // The folder fixed, a database file others may read is refused the same way.
    chmod(&data, 0o700);
    for name in ["jarvis.db", "jarvis.db-wal"] {
        let file = data.join(name);
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        let (ok, said) = place.jarvis(&["run"], &[]);
        assert!(!ok, "started:\n{said}");
        let shown = file.display();
        assert!(
            said.lines().any(|l| l
                == format!(
                    "jarvis: {shown} is open to others (mode 644); say 'chmod 600 {shown}' so that only jarvis's user can read the database"
                )),
            "{said}"
        );
        chmod(&file, 0o600);
    }
    for name in ["jarvis.db", "jarvis.db-wal"] {
        std::fs::remove_file(data.join(name)).unwrap();
    }
    let (ok, said) = place.jarvis(&["migrate"], &[]);
    assert!(ok, "{said}");
    assert_eq!(mode(&data.join("jarvis.db")), 0o600);
}

#[test]
fn a_data_folder_jarvis_makes_is_private_with_its_parents() {
    let place = Place::new("");
    // A data folder two levels down: `migrate` makes it with the database.
    let nested = place.path("a/b/data");
    std::fs::write(place.config(), format!("data_dir: {}\n", nested.display())).unwrap();
    let (ok, said) = place.jarvis(&["migrate"], &[]);
    assert!(ok, "{said}");
    assert_eq!(mode(&place.path("a")), 0o700);
    assert_eq!(mode(&nested), 0o700);
    assert_eq!(mode(&nested.join("jarvis.db")), 0o600);
}

const WORKER_PIPELINE: &str = "pipelines:
  p:
    providers: [x]
    stages:
      - { task: \"mywork:go\" }
";

#[test]
fn worker_folders_and_programs_others_can_write_are_refused() {
    let place = Place::new("");
    let workers = place.path("workers");
    std::fs::create_dir(&workers).unwrap();
    let program = workers.join("mywork");
    std::fs::write(&program, "#!/bin/sh\ncat\n").unwrap();
    chmod(&program, 0o755);
    place.write_config(&format!(
        "workers:\n  folders: [{}]\n{WORKER_PIPELINE}",
        workers.display()
    ));
    chmod(&workers, 0o755);
    let (ok, said) = place.jarvis(&["check-config"], &[]);
    assert!(ok, "{said}");

    chmod(&workers, 0o777);
    let (ok, said) = place.jarvis(&["check-config"], &[]);
    assert!(!ok, "{said}");
    let folder = workers.display();
    assert_eq!(
        said.trim(),
        format!(
            "config.yaml: workers.folders: worker folder {folder} is writable by others (mode 777); say 'chmod go-w {folder}'"
        )
    );
    let (ok, said) = place.jarvis(&["run"], &[]);
    assert!(!ok, "{said}");
    assert!(
        said.lines().any(|l| l
            == format!(
                "jarvis: worker folder {folder} is writable by others (mode 777); say 'chmod go-w {folder}'"
            )),
        "{said}"
    );
    assert!(
        !place.data().join("jarvis.db").exists(),
        "the database was opened"
    );

    chmod(&workers, 0o755);
    chmod(&program, 0o775);
    let (ok, said) = place.jarvis(&["check-config"], &[]);
    assert!(!ok, "{said}");
    let shown = program.display();
    assert_eq!(
        said.trim(),
        format!(
            "config.yaml: workers.folders: worker program {shown} is writable by others (mode 775); say 'chmod go-w {shown}'"
        )
    );
    let (ok, said) = place.jarvis(&["shell"], &[]);
    assert!(!ok, "{said}");
    assert!(
        said.contains(&format!(
            "jarvis: worker program {shown} is writable by others (mode 775)"
        )),
        "{said}"
    );
}

/// Each case: the configuration (after `data_dir`, so it starts at line 2), the line it is
/// refused with, and the same with TLS or on loopback, which passes.
const CLEARTEXT: &[(&str, &str, &str)] = &[
    (
        "designs:\n  ldap:\n    url: ldap://ldap.example.com\n    bind_dn: cn=jarvis,dc=example,dc=com\n    password: ${SECRET}\n    base: ou=Hosts,dc=example,dc=com\n",
        "config.yaml:4:5: designs.ldap.url: ldap://ldap.example.com would carry the bind password in clear; use ldaps:// or set starttls: true (a lab may set insecure_cleartext_credentials: true)",
        "designs:\n  ldap:\n    url: ldap://ldap.example.com\n    starttls: true\n    bind_dn: cn=jarvis,dc=example,dc=com\n    password: ${SECRET}\n    base: ou=Hosts,dc=example,dc=com\n",
    ),
    (
        "designs:\n  gist:\n    api: http://github.example.com/api/v3\n    token: ${SECRET}\n",
        "config.yaml:4:5: designs.gist.api: http://github.example.com would carry the gist token in clear; use https:// (a lab may set insecure_cleartext_credentials: true)",
        "designs:\n  gist:\n    api: http://127.0.0.1:8000/api/v3\n    token: ${SECRET}\n",
    ),
    (
        "workers:\n  modules:\n    ldap:\n      env:\n        LDAP_URL: ldap://ldap.example.com\n        LDAP_BASE: dc=example,dc=com\n        LDAP_BIND_DN: cn=jarvis,dc=example,dc=com\n        LDAP_PASSWORD: ${SECRET}\n",
        "config.yaml:6:9: workers.modules.ldap.env.LDAP_URL: ldap://ldap.example.com without LDAP_STARTTLS: true would carry the bind password and the facts approvals rest on in clear; use ldaps:// or grant LDAP_STARTTLS: 'true' (a lab may set insecure_cleartext_credentials: true)",
        "workers:\n  modules:\n    ldap:\n      env:\n        LDAP_URL: ldap://ldap.example.com\n        LDAP_STARTTLS: 'true'\n        LDAP_BASE: dc=example,dc=com\n        LDAP_BIND_DN: cn=jarvis,dc=example,dc=com\n        LDAP_PASSWORD: ${SECRET}\n",
    ),
    (
        "workers:\n  modules:\n    linode:\n      env:\n        LINODE_TOKEN: ${SECRET}\n        LINODE_API: http://linode.example.com/v4\n",
        "config.yaml:7:9: workers.modules.linode.env.LINODE_API: http://linode.example.com would carry the Linode token in clear; use https:// (a lab may set insecure_cleartext_credentials: true)",
        "workers:\n  modules:\n    linode:\n      env:\n        LINODE_TOKEN: ${SECRET}\n        LINODE_API: http://127.0.0.1:8000/v4\n",
    ),
    (
        "workers:\n  modules:\n    alertmanager:\n      env:\n        ALERTMANAGER_URL: http://watcher:${SECRET}@alerts.example.com:9093\n",
        "config.yaml:6:9: workers.modules.alertmanager.env.ALERTMANAGER_URL: http://…@alerts.example.com would carry its user and password in clear; use https:// (a lab may set insecure_cleartext_credentials: true)",
        "workers:\n  modules:\n    alertmanager:\n      env:\n        ALERTMANAGER_URL: https://watcher:${SECRET}@alerts.example.com:9093\n",
    ),
    (
        "chat:\n  irc:\n    - name: libera\n      server: irc.libera.chat\n      port: 6667\n      tls: false\n",
        "config.yaml:7:7: chat.irc[0].tls: irc.libera.chat is not this machine, and without TLS anyone on the way reads every line and can forge the account tags roles rest on; set tls: true (a lab may set insecure_cleartext_credentials: true)",
        "chat:\n  irc:\n    - name: libera\n      server: '::1'\n      port: 6667\n      tls: false\n",
    ),
    (
        "database_url: postgres://jarvis:${SECRET}@db.example.com:5432/jarvis?sslmode=prefer\n",
        "config.yaml:2:1: database_url: postgres://jarvis:***@db.example.com:5432/jarvis?sslmode=prefer goes to db.example.com without TLS (or with TLS that may be skipped); add ?sslmode=verify-full (or require) (a lab may set insecure_cleartext_credentials: true)",
        "database_url: postgres://jarvis:${SECRET}@db.example.com:5432/jarvis?sslmode=verify-full\n",
    ),
];

const SECRET: &str = "hunter22-secret";

#[test]
fn check_config_refuses_every_credential_in_clear_with_one_line() {
    for (config, refusal, fine) in CLEARTEXT {
        let place = Place::new(config);
        let (ok, said) = place.jarvis(&["check-config"], &[("SECRET", SECRET)]);
        assert!(!ok, "accepted:\n{config}\nsaying: {said}");
        assert_eq!(said.trim(), *refusal, "for:\n{config}");
        assert!(!said.contains(SECRET));

        // ...and the start runs the same checks.
        let (ok, said) = place.jarvis(&["run"], &[("SECRET", SECRET)]);
        assert!(!ok && said.contains(refusal), "run: {said}");

        // The escape hatch of a lab: a warning with the same words, and it passes.
        place.write_config(&format!("insecure_cleartext_credentials: true\n{config}"));
        let (ok, said) = place.jarvis(&["check-config"], &[("SECRET", SECRET)]);
        assert!(ok, "refused with the hatch open:\n{config}\nsaying: {said}");
        let warning = said
            .lines()
            .find(|l| l.contains("WARN"))
            .unwrap_or_else(|| panic!("no warning in: {said}"));
        let path = refusal.split(": ").nth(1).unwrap();
        assert!(
            warning.contains(&format!("{path}: "))
                && warning.contains("allowed by insecure_cleartext_credentials"),
            "{warning}"
        );
        assert!(!said.contains(SECRET));

        // With TLS, or to this machine, it is fine without the hatch.
        place.write_config(fine);
        let (ok, said) = place.jarvis(&["check-config"], &[("SECRET", SECRET)]);
        assert!(ok, "refused:\n{fine}\nsaying: {said}");
    }
}

#[test]
fn every_cleartext_problem_is_listed_at_once() {
    let all: String = [
        "database_url: postgres://jarvis@db.example.com/jarvis\n",
        "chat:\n  irc:\n    - { name: libera, server: irc.libera.chat }\n",
        "workers:\n  modules:\n    linode: { env: { LINODE_API: 'http://linode.example.com' } }\n",
    ]
    .concat();
    let place = Place::new(&all);
    let (ok, said) = place.jarvis(&["check-config"], &[]);
    assert!(!ok);
    let lines: Vec<&str> = said.trim().lines().collect();
    assert_eq!(lines.len(), 3, "{said}");
    // In the order of the checks, each at its own line.
    assert!(
        lines[0].starts_with("config.yaml:2:1: database_url: "),
        "{said}"
    );
    assert!(
        lines[1].starts_with("config.yaml:8:")
            && lines[1].contains(" workers.modules.linode.env.LINODE_API: "),
        "{said}"
    );
    assert!(
        lines[2].starts_with("config.yaml:5:7: chat.irc[0].tls: "),
        "{said}"
    );
}

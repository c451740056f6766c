//! `jarvis check-config` on every configuration the project ships or documents: each file in
//! `config/` and each ```yaml block of README.md and docs/, with the variables they read set
//! to dummies; and what an operator sees when variables are missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::JARVIS;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The names of every `${NAME}` / `${NAME:-…}` in `text`, outside comment lines.
fn variables(text: &str) -> Vec<String> {
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !rest[..i].ends_with('$') && !names.contains(&name) {
            names.push(name);
        }
        rest = after;
    }
    names
}

/// Runs check-config on `path` with exactly `vars` set (beside PATH and HOME).
fn check(path: &Path, vars: &[(String, String)]) -> (bool, String) {
    let mut command = Command::new(JARVIS);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .arg("check-config")
        .arg("--config")
        .arg(path);
    for (k, v) in vars {
        command.env(k, v);
    }
    let out = command.output().expect("run jarvis check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn dummies(text: &str) -> Vec<(String, String)> {
    variables(text)
        .into_iter()
        .map(|name| {
            let value = format!("dummy-{}", name.to_lowercase());
            (name, value)
        })
        .collect()
}

#[test]
fn every_file_in_config_passes_check_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let (ok, said) = check(&path, &dummies(&text));
        assert!(ok, "{} refused: {said}", path.display());
        checked += 1;
    }
    assert!(checked >= 2, "config/ has example.yaml and embedded.yaml");
}

#[test]
fn the_example_lists_every_variable_it_reads_at_its_top() {
    let text = std::fs::read_to_string(root().join("config/example.yaml")).unwrap();
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let names = variables(&text);
    assert!(names.len() >= 8, "{names:?}");
    for name in &names {
        assert!(
            header.contains(&format!("#   {name} ")),
            "the header of config/example.yaml does not list {name}"
        );
    }
    // ...and the example shows the design sources and the IRC pacing.
    for needed in [
        "\n  ldap:\n",
        "\n  gist:\n",
        "allow_addresses:",
        "\n      rate: {burst",
    ] {
        assert!(
            text.contains(needed),
            "config/example.yaml lacks {needed:?}"
        );
    }
}

#[test]
fn with_no_variables_set_every_missing_one_is_named_at_once() {
    let path = root().join("config/example.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (ok, said) = check(&path, &[]);
    assert!(!ok, "check-config passed without the variables: {said}");
    let file = path.display().to_string();
    // One line per reference, each with file:line:column.
    let mut expected = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        for name in variables(line) {
            let column = line.find(&format!("${{{name}")).unwrap() + 1;
            let wanted = format!("{file}:{}:{column}: `{name}` is not set", i + 1);
            assert!(said.contains(&wanted), "missing {wanted:?} in:\n{said}");
            expected += 1;
        }
    }
    assert_eq!(said.trim().lines().count(), expected, "{said}");
    assert!(expected >= 10, "{said}");
}

/// Every ```yaml block of README.md and docs/*.md is a configuration (designs and other
/// YAML use other info strings) and must pass check-config.
#[test]
fn every_configuration_block_in_the_docs_passes_check_config() {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("md") {
            files.push(path);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut block: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            match &mut block {
                None if line.trim() == "```yaml" => block = Some((i + 1, String::new())),
                Some((start, yaml)) if line.trim() == "```" => {
                    let path: PathBuf = dir.path().join(format!("block-{checked}.yaml"));
                    std::fs::write(&path, &*yaml).unwrap();
                    let (ok, said) = check(&path, &dummies(yaml));
                    assert!(
                        ok,
                        "the block at {}:{start} fails check-config: {said}",
                        file.display()
                    );
                    checked += 1;
                    block = None;
                }
                Some((_, yaml)) => {
                    yaml.push_str(line);
                    yaml.push('\n');
                }
                None => {}
            }
        }
    }
    assert!(checked >= 1, "no configuration blocks found in the docs");
}

/// deploy/cluster/README.md's own steps: its `sed` makes the three node files from
/// `jarvis-1.yaml`; each passes check-config with the variables its `/etc/jarvis/env` sets,
/// and they differ only where the guide says.
#[test]
fn the_cluster_guides_three_node_files_pass_check_config_and_differ_where_it_says() {
    let guide = std::fs::read_to_string(root().join("deploy/cluster/README.md")).unwrap();
    let sed = guide
        .lines()
        .find_map(|l| l.split_once("sed \"").map(|(_, rest)| rest))
        .and_then(|rest| rest.split_once('"').map(|(script, _)| script))
        .expect("the guide's sed line");
    // `s/A/B/; s#C#D#`: each substitution with its own delimiter.
    let substitutions: Vec<(String, String)> = sed
        .split("; ")
        .map(|s| {
            let mut chars = s.chars();
            assert_eq!(chars.next(), Some('s'), "{s}");
            let delimiter = chars.next().expect("a delimiter");
            let parts: Vec<&str> = s[2..].split(delimiter).collect();
            (parts[0].to_string(), parts[1].to_string())
        })
        .collect();
    let template = std::fs::read_to_string(root().join("deploy/cluster/jarvis-1.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 1..=3 {
        // As sed does: each substitution once per line.
        let text: String = template
            .lines()
            .map(|line| {
                let mut line = line.to_string();
                for (from, to) in &substitutions {
                    line = line.replacen(from.as_str(), &to.replace("$i", &i.to_string()), 1);
                }
                line + "\n"
            })
            .collect();
        let path = dir.path().join(format!("jarvis-{i}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let vars = [
            (
                "JARVIS_DATABASE_URL".to_string(),
                "postgres://jarvis:pw@db.example.com:5432/jarvis?sslmode=verify-full".to_string(),
            ),
            ("JARVIS_IRC_PASSWORD".to_string(), "dummy".to_string()),
        ];
        let (ok, said) = check(&path, &vars);
        assert!(ok, "node {i}: {said}");
        files.push(text);
    }
    let differing: Vec<&str> = files[0]
        .lines()
        .zip(files[1].lines())
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.trim_start().split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(differing, ["data_dir", "node", "listen"], "{files:#?}");
}

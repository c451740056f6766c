//! Designs from gists, against the in-repo Gist API stand-in (and a scripted server for what
//! the stand-in never does).

mod support;

use std::path::Path;
use std::time::Duration;

use jarvis_design::{DesignError, DesignSources, DesignsConfig, HttpBase, Secret};
use jarvis_standins::gist::{self, Settings};
use serde_json::Value;
use support::{Reply, assert_is_loki, gists_dir, response, scripted};

fn sources(api: &str, tweak: impl FnOnce(&mut DesignsConfig)) -> DesignSources {
    let mut config = DesignsConfig::default();
    config.gist.api = HttpBase::parse(api).unwrap();
    config.gist.timeout = Duration::from_secs(5);
    tweak(&mut config);
    DesignSources::new(config)
}

/// Copies the fixtures into a fresh folder that a test may add gists to.
fn gist_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&gists_dir(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn add_gist(folder: &Path, id: &str, files: &[(&str, &str)]) {
    let dir = folder.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn plain_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The stand-in's record of requests, fetched over plain HTTP.
async fn requests(api: &str) -> Vec<Value> {
    let client = plain_client();
    let answer = client
        .get(format!("{api}/_standin/requests"))
        .send()
        .await
        .unwrap();
    let body = answer.bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

async fn control(api: &str, what: &str, body: &str) {
    let client = plain_client();
    let answer = client
        .post(format!("{api}/_standin/{what}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
}

#[tokio::test]
async fn gist_912450_yields_the_reference_design() {
    let folder = gist_folder();
    let api = gist::spawn(Settings::new(folder.path())).await.unwrap();
    let sources = sources(&api, |_| {});
    for reference in [
        "https://gist.github.com/912450",
        "https://gist.github.com/alice/912450",
    ] {
        let design = sources.load(reference).await.unwrap();
        assert_is_loki(&design);
        assert_eq!(design.reference, reference);
        assert_eq!(design.origin, "gist 912450 (loki.yaml)");
    }
    let seen = requests(&api).await;
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["path"], "/gists/912450");
    assert_eq!(seen[0]["accept"], "application/vnd.github+json");
    assert_eq!(seen[0]["auth"], "none");
}

#[tokio::test]
async fn the_token_is_sent_and_never_shown() {
    let folder = gist_folder();
    let mut settings = Settings::new(folder.path());
    settings.token = Some("right-token".into());
    let api = gist::spawn(settings).await.unwrap();
    let good = sources(&api, |c| c.gist.token = Some(Secret::new("right-token")));
    assert_is_loki(&good.load("https://gist.github.com/912450").await.unwrap());
    assert_eq!(requests(&api).await[0]["auth"], "valid");

    let bad = sources(&api, |c| c.gist.token = Some(Secret::new("wrong-token")));
    let error = bad
        .load("https://gist.github.com/912450")
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, DesignError::Source(_)));
    assert!(
        text.contains("refused jarvis's token (HTTP 401: Bad credentials)"),
        "{text}"
    );
    assert!(!text.contains("wrong-token") && !format!("{bad:?}").contains("wrong-token"));
}

#[tokio::test]
async fn unknown_gists_are_not_found() {
    let folder = gist_folder();
    let api = gist::spawn(Settings::new(folder.path())).await.unwrap();
    let error = sources(&api, |_| {})
        .load("https://gist.github.com/abc123")
        .await
        .unwrap_err();
    let port = api.rsplit(':').next().unwrap();
    assert_eq!(
        error,
        DesignError::NotFound(format!("there is no gist abc123 on 127.0.0.1:{port}"))
    );
}

#[tokio::test]
async fn rate_limits_say_when_they_end() {
    let folder = gist_folder();
    let api = gist::spawn(Settings::new(folder.path())).await.unwrap();
    let sources = sources(&api, |_| {});
    control(&api, "rate-limited", r#"{"on": true}"#).await;
    let text = sources
        .load("https://gist.github.com/912450")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("is rate limiting jarvis; it resets in 60 min"),
        "{text}"
    );
    assert!(
        text.contains("a token in designs.gist.token raises the limit"),
        "{text}"
    );

    control(&api, "rate-limited", r#"{"on": false}"#).await;
    control(&api, "fail", r#"{"status": 429, "retry_after": 30}"#).await;
    let text = sources
        .load("https://gist.github.com/912450")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("rate limiting jarvis; it resets in 30s"),
        "{text}"
    );
    assert_is_loki(
        &sources
            .load("https://gist.github.com/912450")
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn answers_that_are_not_json_are_named() {
    let folder = gist_folder();
    let api = gist::spawn(Settings::new(folder.path())).await.unwrap();
    let sources = sources(&api, |_| {});
    control(&api, "fail", r#"{"status": 200, "html": true}"#).await;
    let text = sources
        .load("https://gist.github.com/912450")
        .await
        .unwrap_err()
        .to_string();
    assert!(text.contains("that is not a gist (not JSON)"), "{text}");
    assert!(text.contains("bytes of text/html"), "{text}");

    control(&api, "fail", r#"{"status": 502, "html": true}"#).await;
    let text = sources
        .load("https://gist.github.com/912450")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("answered HTTP 502 Bad Gateway for gist 912450 ("),
        "{text}"
    );
}

#[tokio::test]
async fn truncated_files_come_from_raw_url_within_the_limit() {
    let folder = gist_folder();
    let mut big = String::from("instance:\n  hostname: big\n  provider: Linode\nnotes: |\n");
    while big.len() < 1_200_000 {
        big.push_str("  a long line of notes that makes this design larger than a MiB\n");
    }
    add_gist(folder.path(), "b16b16", &[("big.yaml", &big)]);
    let api = gist::spawn(Settings::new(folder.path())).await.unwrap();

    let roomy = sources(&api, |c| c.max_bytes = 2 * 1024 * 1024);
    let design = roomy.load("https://gist.github.com/b16b16").await.unwrap();
    assert_eq!(design.hostname, "big");
    let notes = design.document["notes"].as_str().unwrap();
    assert!(notes.len() > 1_100_000);
    let paths: Vec<Value> = requests(&api)
        .await
        .iter()
        .map(|r| r["path"].clone())
        .collect();
    assert_eq!(paths, ["/gists/b16b16", "/raw/b16b16/big.yaml"]);

    // Under the default limit the file's announced size refuses it before the download.
    let strict = sources(&api, |_| {});
    let text = strict
        .load("https://gist.github.com/b16b16")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("design: gist b16b16 file big.yaml is "),
        "{text}"
    );
    assert!(text.ends_with("over the limit of 262144 bytes"), "{text}");
    assert_eq!(requests(&api).await.len(), 3);
}

#[tokio::test]
async fn the_design_file_is_the_one_yaml_file() {
    let folder = gist_folder();
    let loki = std::fs::read_to_string(gists_dir().join("912450/loki.yaml")).unwrap();
    add_gist(folder.path(), "a1", &[("x.yaml", &loki), ("y.yml", &loki)]);
    add_gist(
        folder.path(),
        "a2",
        &[("notes.txt", "hi"), ("README.md", "hi")],
    );
    add_gist(folder.path(), "a3", &[("design", &loki)]);
    add_gist(
        folder.path(),
        "a4",
        &[("bad.yaml", "instance: {hostname: lo_ki, provider: x}")],
    );
    let api = gist::spawn(Settings::new(folder.path())).await.unwrap();
    let sources = sources(&api, |_| {});
    let error = |id: &str| {
        let sources = sources.clone();
        let reference = format!("https://gist.github.com/{id}");
        async move { sources.load(&reference).await.unwrap_err().to_string() }
    };
    assert_eq!(
        error("a1").await,
        "design: gist a1 has 2 YAML files (x.yaml, y.yml); keep one design per gist"
    );
    assert!(error("a2").await.contains("none ends in .yaml or .yml"));
    assert_is_loki(&sources.load("https://gist.github.com/a3").await.unwrap());
    assert!(
        error("a4")
            .await
            .starts_with("instance.hostname: 'lo_ki' is not an RFC 1123")
    );
}

#[tokio::test]
async fn redirects_are_bounded_and_stay_on_allowed_hosts() {
    let looping = scripted(|path| response("302 Found", &[("Location", path)], b"")).await;
    let text = sources(&looping, |_| {})
        .load("https://gist.github.com/912450")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("answered with more than 3 redirects; not followed"),
        "{text}"
    );

    let away = scripted(|_| {
        response(
            "301 Moved Permanently",
            &[("Location", "http://127.0.0.2:9/gists/912450")],
            b"",
        )
    })
    .await;
    let text = sources(&away, |_| {})
        .load("https://gist.github.com/912450")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("a redirect to 127.0.0.2:9, which is not an allowed host"),
        "{text}"
    );
}

#[tokio::test]
async fn silence_and_endless_answers_are_cut_off() {
    let silent = support::silent().await;
    let started = std::time::Instant::now();
    let text = sources(&silent, |c| c.gist.timeout = Duration::from_millis(700))
        .load("https://gist.github.com/912450")
        .await
        .unwrap_err()
        .to_string();
    assert!(text.ends_with("did not answer within 0.7s"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let endless = scripted(|_| {
        Reply::Endless("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".into())
    })
    .await;
    let text = sources(&endless, |c| c.gist.max_response_bytes = 100_000)
        .load("https://gist.github.com/912450")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("is more than 100000 bytes, over the limit of 100000 bytes"),
        "{text}"
    );
}

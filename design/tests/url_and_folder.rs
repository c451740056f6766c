//! Designs from allowed URLs (against a scripted HTTP server on 127.0.0.1) and from the
//! designs folder (symbolic links and all).

mod support;

use std::time::Duration;

use jarvis_design::{AllowedHost, DesignError, DesignSources, DesignsConfig, HostPort};
use support::{Reply, assert_is_loki, gists_dir, response, scripted};

fn loki_text() -> String {
    std::fs::read_to_string(gists_dir().join("912450/loki.yaml")).unwrap()
}

fn url_sources(base: &str, allow_http: bool) -> DesignSources {
    let host = base.trim_start_matches("http://");
    let mut config = DesignsConfig::default();
    config.urls.allow = vec![AllowedHost {
        host: HostPort::parse(host).unwrap(),
        allow_http,
    }];
    config.urls.timeout = Duration::from_secs(5);
    DesignSources::new(config)
}

async fn design_server() -> String {
    let loki = loki_text();
    scripted(move |path| match path {
        "/loki.yaml" => response(
            "200 OK",
            &[("Content-Type", "application/yaml")],
            loki.as_bytes(),
        ),
        "/moved.yaml" => response("302 Found", &[("Location", "/loki.yaml")], b""),
        "/elsewhere.yaml" => response(
            "302 Found",
            &[("Location", "http://127.0.0.1:9/loki.yaml")],
            b"",
        ),
        "/broken.yaml" => response("500 Internal Server Error", &[], b"oops"),
        "/huge.yaml" => {
            let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n".to_vec();
            head.extend_from_slice(b"instance:\n");
            Reply::Raw(head)
        }
        "/endless.yaml" => {
            Reply::Endless("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".into())
        }
        _ => response("404 Not Found", &[], b"no"),
    })
    .await
}

#[tokio::test]
async fn an_allowed_url_yields_its_design() {
    let base = design_server().await;
    let sources = url_sources(&base, true);
    let design = sources.load(&format!("{base}/loki.yaml")).await.unwrap();
    assert_is_loki(&design);
    assert_eq!(design.origin, format!("{base}/loki.yaml"));
    // A redirect on the same allowed host is followed.
    assert_is_loki(&sources.load(&format!("{base}/moved.yaml")).await.unwrap());
}

#[tokio::test]
async fn urls_are_refused_with_their_reason() {
    let base = design_server().await;
    let host = base.trim_start_matches("http://");
    let sources = url_sources(&base, true);
    let error = |path: &str| {
        let sources = sources.clone();
        let reference = format!("{base}{path}");
        async move { sources.load(&reference).await.unwrap_err() }
    };
    assert_eq!(
        error("/missing.yaml?token=sekrit").await,
        DesignError::NotFound(format!(
            "there is no design at {base}/missing.yaml (HTTP 404)"
        ))
    );
    assert_eq!(
        error("/broken.yaml").await.to_string(),
        format!("{host} answered HTTP 500 Internal Server Error for {base}/broken.yaml")
    );
    assert_eq!(
        error("/huge.yaml").await.to_string(),
        format!(
            "design: the design at {base}/huge.yaml is 300000 bytes, over the limit of 262144 bytes"
        )
    );
    assert_eq!(
        error("/endless.yaml").await.to_string(),
        format!(
            "design: the design at {base}/endless.yaml is more than 262144 bytes, over the limit of 262144 bytes"
        )
    );
    assert_eq!(
        error("/elsewhere.yaml").await.to_string(),
        format!(
            "{host} answered with a redirect to 127.0.0.1:9, which is not an allowed host; not followed"
        )
    );

    let https_only = url_sources(&base, false);
    let refused = https_only
        .load(&format!("{base}/loki.yaml"))
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        DesignError::Reference("plain http:// is not allowed for 127.0.0.1; use https://".into())
    );
    // https to a server that speaks plain HTTP: the TLS handshake fails, with a reason.
    let tls = https_only
        .load(&format!(
            "{}/loki.yaml",
            base.replace("http://", "https://")
        ))
        .await
        .unwrap_err();
    assert_eq!(
        tls,
        DesignError::Source(format!("cannot connect to {host}: tls handshake eof"))
    );

    let other = url_sources("http://127.0.0.2:1", true);
    let refused = other.load(&format!("{base}/loki.yaml")).await.unwrap_err();
    assert!(
        refused.to_string().contains("is not on the allow-list"),
        "{refused}"
    );
}

fn folder_sources(folder: &std::path::Path) -> DesignSources {
    DesignSources::new(DesignsConfig {
        folder: Some(folder.to_path_buf()),
        ..DesignsConfig::default()
    })
}

#[tokio::test]
async fn the_designs_folder_serves_names_and_nothing_outside() {
    let root = tempfile::tempdir().unwrap();
    let designs = root.path().join("designs");
    std::fs::create_dir(&designs).unwrap();
    std::fs::write(designs.join("loki.yaml"), loki_text()).unwrap();
    std::fs::write(root.path().join("secret.yaml"), loki_text()).unwrap();
    std::os::unix::fs::symlink(designs.join("loki.yaml"), designs.join("alias.yaml")).unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.yaml"), designs.join("escape.yaml"))
        .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", designs.join("passwd.yaml")).unwrap();
    std::fs::create_dir(designs.join("dir.yaml")).unwrap();
    std::fs::write(designs.join("huge.yaml"), "#".repeat(300_000)).unwrap();

    let sources = folder_sources(&designs);
    let design = sources.load("loki").await.unwrap();
    assert_is_loki(&design);
    assert_eq!(design.origin, "designs folder (loki.yaml)");
    assert_is_loki(&sources.load("alias").await.unwrap());

    for name in ["escape", "passwd"] {
        assert_eq!(
            sources.load(name).await.unwrap_err(),
            DesignError::Reference(format!(
                "design '{name}' is a link to outside the designs folder; refused"
            ))
        );
    }
    for path in ["../secret", "/etc/passwd", "./loki", "designs/../secret"] {
        let error = sources.load(path).await.unwrap_err();
        assert!(
            error.to_string().contains("looks like a local path"),
            "{path}: {error}"
        );
    }
    assert!(matches!(
        sources.load("file:///etc/passwd").await,
        Err(DesignError::Reference(_))
    ));
    assert_eq!(
        sources.load("nothing").await.unwrap_err(),
        DesignError::NotFound("there is no design 'nothing' in the designs folder".into())
    );
    assert_eq!(
        sources.load("dir").await.unwrap_err().to_string(),
        "design: dir.yaml in the designs folder is not a regular file"
    );
    assert_eq!(
        sources.load("huge").await.unwrap_err().to_string(),
        "design: is 300000 bytes, over the limit of 262144 bytes"
    );

    // The folder itself may be reached through a link.
    let linked = root.path().join("linked");
    std::os::unix::fs::symlink(&designs, &linked).unwrap();
    assert_is_loki(&folder_sources(&linked).load("loki").await.unwrap());
}

/// The demonstration designs the daemon ships pass the checks they will meet.
#[tokio::test]
async fn the_shipped_demo_designs_pass() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/designs");
    let sources = folder_sources(&shipped);
    for name in ["demo", "broken"] {
        let design = sources.load(name).await.unwrap();
        assert_eq!(design.hostname, name);
        assert_eq!(design.provider, "local");
    }
}

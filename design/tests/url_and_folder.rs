//! Designs from allowed URLs (against a scripted HTTP server on 127.0.0.1) and from the
//! designs folder (symbolic links and all).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jarvis_design::{
    AddressRange, AllowedHost, DesignError, DesignSources, DesignsConfig, HostPort,
};
use support::{Reply, assert_is_loki, gists_dir, response, scripted, scripted_on};

fn loki_text() -> String {
    std::fs::read_to_string(gists_dir().join("912450/loki.yaml")).unwrap()
}

/// Sources that accept URLs on `hosts` (`host:port`, plain http allowed) and connect to
/// the loopback `addresses` named, besides public ones.
fn sources_for(hosts: &[&str], addresses: &[&str]) -> DesignSources {
    let mut config = DesignsConfig::default();
    config.urls.allow = hosts
        .iter()
        .map(|host| AllowedHost {
            host: HostPort::parse(host).unwrap(),
            allow_http: true,
        })
        .collect();
    config.urls.allow_addresses = addresses
        .iter()
        .map(|a| AddressRange::parse(a).unwrap())
        .collect();
    config.urls.timeout = Duration::from_secs(5);
    DesignSources::new(config)
}

/// The stand-in lives on 127.0.0.1, which the configuration must name to be reached.
fn url_sources(base: &str, allow_http: bool) -> DesignSources {
    let host = base.trim_start_matches("http://");
    let mut config = DesignsConfig::default();
    config.urls.allow = vec![AllowedHost {
        host: HostPort::parse(host).unwrap(),
        allow_http,
    }];
    config.urls.allow_addresses = vec![AddressRange::parse("127.0.0.1").unwrap()];
    config.urls.timeout = Duration::from_secs(5);
    DesignSources::new(config)
}

/// A design server on `address` that counts the requests it gets; `redirects` maps a path
/// to where it redirects.
async fn counting_server(
    address: &str,
    redirects: &[(&str, String)],
) -> (String, Arc<AtomicUsize>) {
    let loki = loki_text();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let redirects: Vec<(String, String)> = redirects
        .iter()
        .map(|(from, to)| (from.to_string(), to.clone()))
        .collect();
    let base = scripted_on(address, move |path| {
        counter.fetch_add(1, Ordering::SeqCst);
        match redirects.iter().find(|(from, _)| from == path) {
            Some((_, to)) => response("302 Found", &[("Location", to)], b""),
            None if path == "/loki.yaml" => response(
                "200 OK",
                &[("Content-Type", "application/yaml")],
                loki.as_bytes(),
            ),
            None => response("404 Not Found", &[], b"no"),
        }
    })
    .await;
    (base, requests)
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

#[tokio::test]
async fn a_name_resolving_to_loopback_is_fetched_only_when_the_address_is_named() {
    let (base, requests) = counting_server("127.0.0.1", &[]).await;
    let port = base.rsplit(':').next().unwrap();
    let host = format!("localhost:{port}");
    let url = format!("http://{host}/loki.yaml");

    let refused = sources_for(&[&host], &[]).load(&url).await.unwrap_err();
    assert_eq!(
        refused,
        DesignError::Reference(format!(
            "{url}: localhost resolves to 127.0.0.1, a loopback address, which the URL allow-list does not name"
        ))
    );
    assert!(!refused.is_transient());
    assert_eq!(requests.load(Ordering::SeqCst), 0, "the server was asked");

    // A private range named does not name loopback.
    let other = sources_for(&[&host], &["10.0.0.0/8", "::1"]);
    assert!(matches!(
        other.load(&url).await,
        Err(DesignError::Reference(_))
    ));
    assert_eq!(requests.load(Ordering::SeqCst), 0, "the server was asked");

    let design = sources_for(&[&host], &["127.0.0.1"])
        .load(&url)
        .await
        .unwrap();
    assert_is_loki(&design);
    assert_eq!(design.origin, url);
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_literal_loopback_url_is_refused_unless_named() {
    let (base, requests) = counting_server("127.0.0.1", &[]).await;
    let host = base.trim_start_matches("http://");
    let url = format!("{base}/loki.yaml");
    assert_eq!(
        sources_for(&[host], &[]).load(&url).await.unwrap_err(),
        DesignError::Reference(format!(
            "{url}: 127.0.0.1 is a loopback address, which the URL allow-list does not name"
        ))
    );
    // Another address in the same /8 is not named by 127.0.0.2.
    assert!(
        sources_for(&[host], &["127.0.0.2"])
            .load(&url)
            .await
            .is_err()
    );
    assert_eq!(requests.load(Ordering::SeqCst), 0, "the server was asked");
    assert_is_loki(
        &sources_for(&[host], &["127.0.0.0/8"])
            .load(&url)
            .await
            .unwrap(),
    );

    // The cloud metadata service and private addresses are refused before any connection
    // (nothing is ever sent there): the refusal names what they are.
    for (target, ip, kind) in [
        (
            "169.254.169.254",
            "169.254.169.254",
            "the cloud metadata address",
        ),
        ("10.1.2.3:8080", "10.1.2.3", "a private address (RFC 1918)"),
        (
            "[::ffff:7f00:1]:1",
            "::ffff:127.0.0.1",
            "an IPv4-mapped loopback address",
        ),
        ("[fd00::1]", "fd00::1", "a unique local address (fc00::/7)"),
    ] {
        let url = format!("http://{target}/latest/meta-data");
        let error = sources_for(&[target], &[]).load(&url).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{url}: {ip} is {kind}, which the URL allow-list does not name"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn redirects_to_refused_addresses_are_not_followed() {
    // The stand-in on 127.0.0.2 redirects to other loopback addresses and to the cloud
    // metadata service; only 127.0.0.2 is named, and every other host is on the host list
    // so that it is the address that refuses them.
    let (probe, probe_requests) = counting_server("127.0.0.1", &[]).await;
    let port = probe.rsplit(':').next().unwrap().to_string();
    let (base, requests) = counting_server(
        "127.0.0.2",
        &[
            ("/to-loopback.yaml", format!("{probe}/loki.yaml")),
            (
                "/to-localhost.yaml",
                format!("http://localhost:{port}/loki.yaml"),
            ),
            (
                "/to-metadata.yaml",
                "http://169.254.169.254/latest/meta-data".into(),
            ),
            ("/to-self.yaml", "/loki.yaml".into()),
        ],
    )
    .await;
    let own = base.trim_start_matches("http://");
    let probe_host = probe.trim_start_matches("http://");
    let localhost = format!("localhost:{port}");
    let sources = sources_for(
        &[own, probe_host, &localhost, "169.254.169.254"],
        &["127.0.0.2"],
    );

    assert_is_loki(&sources.load(&format!("{base}/to-self.yaml")).await.unwrap());
    assert_eq!(requests.load(Ordering::SeqCst), 2);

    let error = |path: &str| {
        let sources = sources.clone();
        let url = format!("{base}{path}");
        async move { (sources.load(&url).await.unwrap_err(), url) }
    };
    let (refused, url) = error("/to-loopback.yaml").await;
    assert_eq!(
        refused,
        DesignError::Reference(format!(
            "{url}: not following a redirect to {probe_host}: 127.0.0.1 is a loopback address, which the URL allow-list does not name"
        ))
    );
    let (refused, url) = error("/to-metadata.yaml").await;
    assert_eq!(
        refused,
        DesignError::Reference(format!(
            "{url}: not following a redirect to 169.254.169.254: 169.254.169.254 is the cloud metadata address, which the URL allow-list does not name"
        ))
    );
    let (refused, url) = error("/to-localhost.yaml").await;
    assert_eq!(
        refused,
        DesignError::Reference(format!(
            "{url}: localhost resolves to 127.0.0.1, a loopback address, which the URL allow-list does not name"
        ))
    );
    // Only the three redirecting requests reached 127.0.0.2, and nothing reached 127.0.0.1.
    assert_eq!(requests.load(Ordering::SeqCst), 5);
    assert_eq!(probe_requests.load(Ordering::SeqCst), 0);
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

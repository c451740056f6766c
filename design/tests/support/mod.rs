//! Shared by the design source tests: the reference design's values, and a scripted HTTP
//! server for the misbehaviours no real server shows on demand (redirect loops, endless
//! bodies, silence).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jarvis_design::Design;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The gist fixtures (`tests/gists/ID/FILE`).
pub fn gists_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gists")
}

/// Checks that `design` carries the values of SPEC 3's reference design.
pub fn assert_is_loki(design: &Design) {
    assert_eq!(design.hostname, "loki");
    assert_eq!(design.provider, "Linode");
    let instance = &design.document["instance"];
    assert_eq!(instance["fqdn"], json!("loki.example.com"));
    assert_eq!(instance["guestid"], json!("Debian 12"));
    assert_eq!(instance["datacenter"], json!("Atlanta"));
    assert_eq!(instance["size"], json!(512));
    assert!(
        instance["sshpubkey"]
            .as_str()
            .is_some_and(|k| k.starts_with("ssh-ed25519 AAAA")),
        "{instance}"
    );
}

/// A server on a free 127.0.0.1 port that accepts connections, reads whatever comes (HTTP,
/// LDAP, TLS) and never answers; answers `http://127.0.0.1:PORT`.
pub async fn silent() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    url
}

/// What the scripted server does with one request, given its path.
pub enum Reply {
    /// Writes these bytes (a whole HTTP response) and closes.
    Raw(Vec<u8>),
    /// Sends the head and then body bytes without end, as fast as the client reads.
    Endless(String),
}

/// A complete HTTP/1.1 response.
pub fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut text = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    Reply::Raw(bytes)
}

/// Serves `script` on a free 127.0.0.1 port inside the test's runtime; answers
/// `http://127.0.0.1:PORT`.
pub async fn scripted<F>(script: F) -> String
where
    F: Fn(&str) -> Reply + Send + Sync + 'static,
{
    scripted_on("127.0.0.1", script).await
}

/// [`scripted`] on a free port of another loopback address (`127.0.0.2`); answers
/// `http://ADDRESS:PORT`.
pub async fn scripted_on<F>(address: &str, script: F) -> String
where
    F: Fn(&str) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind((address, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let script = script.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    // Not HTTP (a TLS ClientHello starts with 0x16): hang up at once.
                    if !head[0].is_ascii_uppercase() {
                        return;
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                match script(&path) {
                    Reply::Raw(bytes) => {
                        let _ = stream.write_all(&bytes).await;
                        let _ = stream.shutdown().await;
                    }
                    Reply::Endless(head) => {
                        if stream.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = format!("{:x}\r\n{}\r\n", 4096, "#".repeat(4096));
                        while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                    }
                }
            });
        }
    });
    url
}

//! jarvis in XMPP rooms and direct chats, against a real Prosody (tests/testbed), with the
//! real `jarvis run` binary; alice and mallory are small tokio-xmpp clients.

#[path = "xmpp/client.rs"]
mod client;
#[path = "xmpp/jarvis.rs"]
mod jarvis;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use client::Chatter;
use jarvis::{JARVIS, Jarvis};
use jarvis_testbed::Server;

const ROOM: &str = "ops@conference.localhost";
const ANON_ROOM: &str = "ops@anon.localhost";
const WAIT: Duration = Duration::from_secs(30);

fn port(server: &Server) -> u16 {
    server.get("XMPP_PORT").parse().unwrap_or(0)
}

/// Waits until `path` holds a line equal to `line`.
async fn wait_for_line(path: &Path, line: &str, limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.trim() == line) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{} never held '{line}': {text}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_direct_chats_with_real_jids() -> Result<()> {
    let Some(server) = Server::start("prosody")? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let mut alice =
        Chatter::connect(port(&server), "alice", server.get("XMPP_PASSWORD_ALICE")).await?;
    let mut mallory = Chatter::connect(
        port(&server),
        "mallory",
        server.get("XMPP_PASSWORD_MALLORY"),
    )
    .await?;
    // alice makes the semi-anonymous room first, so she owns it and jarvis is no moderator
    // there (moderators see real JIDs even in semi-anonymous rooms).
    alice.join(ANON_ROOM, "alice").await?;
    alice.join(ROOM, "alice").await?;
    let jarvis = Jarvis::start(
        dir.path(),
        &server,
        server.get("XMPP_PASSWORD_JARVIS"),
        &[ROOM, ANON_ROOM],
        600,
        "",
    )?;
    alice
        .expect_occupant(WAIT, ROOM, "jarvis")
        .await
        .with_context(|| jarvis.log())?;
    alice.expect_occupant(WAIT, ANON_ROOM, "jarvis").await?;

    // In the room: identity by real JID, replies addressed to the nick.
    alice.say(ROOM, "jarvis: whoami")?;
    let who = alice.expect(WAIT, ROOM, "alice: you are").await?;
    assert!(
        who.contains("alice@localhost") && who.contains("deployer"),
        "{who}"
    );

    alice.say(ROOM, "jarvis: deploy demo")?;
    alice
        .expect(WAIT, ROOM, "alice: deploy #1 of demo queued")
        .await?;
    alice.say(ROOM, "jarvis: status #1")?;
    alice
        .expect(WAIT, &format!("{ROOM}/jarvis"), "alice: demo deploy #1: ")
        .await?;

    // The same from a direct chat: no prefix needed, no nick in the answer.
    alice.tell(JARVIS, "status #1")?;
    let direct = alice.expect(WAIT, JARVIS, "demo deploy #1: ").await?;
    assert!(!direct.starts_with("alice: "), "{direct}");

    // The run's notifications come back to the room.
    alice
        .expect(WAIT, ROOM, "stage 2/4 local:step started")
        .await?;
    alice
        .expect(WAIT, ROOM, "demo deploy #1 succeeded in")
        .await?;

    // A run asked for in a direct chat notifies that chat.
    alice.tell(JARVIS, "deploy demo")?;
    alice
        .expect(WAIT, JARVIS, "deploy #2 of demo queued")
        .await?;
    alice
        .expect(WAIT, JARVIS, "demo deploy #2 succeeded in")
        .await?;
    assert_eq!(alice.count("demo deploy #1 succeeded in"), 1);

    // The semi-anonymous room cannot tell jarvis who alice is: refused, with the reason.
    alice.say(ANON_ROOM, "jarvis: deploy demo")?;
    let refused = alice.expect(WAIT, ANON_ROOM, "alice: ").await?;
    assert!(
        refused.contains("deployer") && refused.contains("hides real JIDs"),
        "{refused}"
    );

    // mallory takes the nick alice once alice has left: the room shows her real JID, so
    // the nick buys her nothing.
    alice.leave(ROOM, "alice").await?;
    mallory.join(ROOM, "alice").await?;
    mallory.say(ROOM, "jarvis: deploy demo")?;
    let denied = mallory.expect(WAIT, ROOM, "alice: ").await?;
    assert!(
        denied.contains("needs the deployer role") && denied.contains("mallory@localhost"),
        "{denied}"
    );
    mallory.tell(JARVIS, "deploy demo")?;
    let denied = mallory.expect(WAIT, JARVIS, "deployer").await?;
    assert!(denied.contains("mallory@localhost"), "{denied}");

    let log = jarvis.log();
    assert!(
        !log.contains(server.get("XMPP_PASSWORD_JARVIS")),
        "password in the log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_restart_mid_run_delivers_the_result_once() -> Result<()> {
    let Some(mut server) = Server::start("prosody")? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let mut alice =
        Chatter::connect(port(&server), "alice", server.get("XMPP_PASSWORD_ALICE")).await?;
    alice.join(ROOM, "alice").await?;
    let jarvis = Jarvis::start(
        dir.path(),
        &server,
        server.get("XMPP_PASSWORD_JARVIS"),
        &[ROOM],
        1200,
        "",
    )?;
    alice
        .expect_occupant(WAIT, ROOM, "jarvis")
        .await
        .with_context(|| jarvis.log())?;

    alice.say(ROOM, "jarvis: deploy demo")?;
    alice
        .expect(WAIT, ROOM, "stage 2/4 local:step started")
        .await?;
    server.stop(None)?;
    // The last stage starts (and the run ends) while the server is down or coming back.
    wait_for_line(&dir.path().join("trace"), "1 4 1", WAIT).await?;
    server.restart()?;

    alice
        .expect(Duration::from_secs(60), ROOM, "demo deploy #1 succeeded in")
        .await
        .with_context(|| jarvis.log())?;
    // The courier sends in order: once the next run's result is here, a second copy of the
    // first would have come before it.
    alice.say(ROOM, "jarvis: deploy demo")?;
    alice
        .expect(WAIT, ROOM, "demo deploy #2 succeeded in")
        .await?;
    assert_eq!(
        alice.count("demo deploy #1 succeeded in"),
        1,
        "{:#?}",
        alice.messages
    );
    let log = jarvis.log();
    assert!(log.contains("disconnected; reconnecting"), "{log}");
    Ok(())
}

/// Waits for jarvis to exit, within `limit`; its exit status and stderr.
async fn exit_of(
    mut jarvis: Jarvis,
    limit: Duration,
) -> Result<(std::process::ExitStatus, String)> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = jarvis.try_wait()? {
            return Ok((status, jarvis.log()));
        }
        if tokio::time::Instant::now() > deadline {
            bail!("jarvis still runs after {limit:?}: {}", jarvis.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_jarvis_with_one_line() -> Result<()> {
    let Some(server) = Server::start("prosody")? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let started = std::time::Instant::now();
    let jarvis = Jarvis::start(dir.path(), &server, "not-the-password", &[ROOM], 100, "")?;
    let (status, log) = exit_of(jarvis, Duration::from_secs(10)).await?;
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        log.contains(
            "jarvis: xmpp account 'jabber' (jarvis@localhost): the server refused the password"
        ),
        "{log}"
    );
    assert!(!log.contains("not-the-password"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_stops_jarvis_with_one_line() -> Result<()> {
    let Some(server) = Server::start("prosody")? else {
        return Ok(());
    };
    server.stop(None)?;
    let dir = tempfile::tempdir()?;
    let jarvis = Jarvis::start(
        dir.path(),
        &server,
        server.get("XMPP_PASSWORD_JARVIS"),
        &[ROOM],
        100,
        "",
    )?;
    let (status, log) = exit_of(jarvis, Duration::from_secs(20)).await?;
    assert!(!status.success());
    let expected = format!(
        "jarvis: xmpp account 'jabber' (jarvis@localhost): cannot connect to 127.0.0.1:{}: connection refused",
        server.get("XMPP_PORT")
    );
    assert!(log.contains(&expected), "{log}");
    Ok(())
}

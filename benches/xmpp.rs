//! `cargo bench --bench xmpp`: the round trip of `status` through a real Prosody — alice
//! asks in a room (and in a direct chat), jarvis answers — over many requests. Prints
//! `name value unit` lines; skips with a message when Prosody is not installed.
//!
//! It waits for readiness (alice online and in the room, jarvis in the room) rather than
//! for a fixed time; any single wait that gets nothing for 30 s fails with what it waited for.

#[path = "../tests/xmpp/client.rs"]
mod client;
mod common;
#[path = "../tests/xmpp/jarvis.rs"]
mod jarvis;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use client::Chatter;
use jarvis::{JARVIS, Jarvis};
use jarvis_testbed::Server;

const ROOM: &str = "bench@conference.localhost";
const ALICE: &str = "alice@localhost";
const REQUESTS: usize = 200;
const WARMUP: usize = 10;
const WAIT: Duration = Duration::from_secs(30);

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xmpp bench: no runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(bench()) {
        eprintln!("xmpp bench failed: {e:#}");
        std::process::exit(1);
    }
}

async fn bench() -> Result<()> {
    let Some(server) = Server::start("prosody")? else {
        println!("xmpp bench skipped: prosody is not installed");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let port: u16 = server.get("XMPP_PORT").parse()?;
    let mut alice = Chatter::connect(port, "alice", server.get("XMPP_PASSWORD_ALICE")).await?;
    alice.join(ROOM, "alice").await?;
    // The outlet's pacing is the configuration's business; measure the adapter, not it.
    let jarvis = Jarvis::start(
        dir.path(),
        &server,
        server.get("XMPP_PASSWORD_JARVIS"),
        &[ROOM],
        100,
        "      rate: { burst: 10000, per_second: 10000 }",
    )?;
    alice
        .expect_occupant(WAIT, ROOM, "jarvis")
        .await
        .with_context(|| jarvis.log())?;

    let mut room = measure(
        &mut alice,
        |a| a.say(ROOM, "jarvis: status"),
        ROOM,
        "alice: nothing is running",
    )
    .await
    .with_context(|| jarvis.log())?;
    common::latencies("xmpp_status_room", &mut room);
    let mut direct = measure(
        &mut alice,
        |a| a.tell(JARVIS, "status"),
        JARVIS,
        "nothing is running",
    )
    .await
    .with_context(|| jarvis.log())?;
    common::latencies("xmpp_status_direct", &mut direct);

    // The server's own share, with the same client: a line in the room comes back to its
    // sender, and a message to one's own address comes back too. A `status` crosses the
    // server twice (alice to jarvis, jarvis to alice), so twice these is the floor of the
    // figures above.
    let mut room_echo = measure(
        &mut alice,
        |a| a.say(ROOM, "echo"),
        &format!("{ROOM}/alice"),
        "echo",
    )
    .await?;
    common::latencies("xmpp_floor_room_echo", &mut room_echo);
    let mut own_echo = measure(&mut alice, |a| a.tell(ALICE, "echo"), ALICE, "echo").await?;
    common::latencies("xmpp_floor_direct_echo", &mut own_echo);
    Ok(())
}

async fn measure(
    alice: &mut Chatter,
    ask: impl Fn(&Chatter) -> Result<()>,
    from: &str,
    answer: &str,
) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..WARMUP + REQUESTS {
        let start = Instant::now();
        ask(alice)?;
        alice
            .expect(WAIT, from, answer)
            .await
            .with_context(|| format!("request {} of {}", i + 1, WARMUP + REQUESTS))?;
        if i >= WARMUP {
            times.push(start.elapsed());
        }
    }
    Ok(times)
}

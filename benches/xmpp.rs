//! `cargo bench --bench xmpp`: the round trip of `status` through a real Prosody — alice
//! asks in a room (and in a direct chat), jarvis answers — over many requests. Prints
//! `name value unit` lines; skips with a message when Prosody is not installed.

#[path = "../tests/xmpp/client.rs"]
mod client;
#[path = "../tests/xmpp/jarvis.rs"]
mod jarvis;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use client::Chatter;
use jarvis::{JARVIS, Jarvis};
use jarvis_testbed::Server;

const ROOM: &str = "bench@conference.localhost";
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

    let room = measure(
        &mut alice,
        |a| a.say(ROOM, "jarvis: status"),
        ROOM,
        "alice: nothing is running",
    )
    .await?;
    report("xmpp_status_room", &room);
    let direct = measure(
        &mut alice,
        |a| a.tell(JARVIS, "status"),
        JARVIS,
        "nothing is running",
    )
    .await?;
    report("xmpp_status_direct", &direct);
    Ok(())
}

async fn measure(
    alice: &mut Chatter,
    ask: impl Fn(&Chatter) -> Result<()>,
    from: &str,
    answer: &str,
) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..WARMUP + REQUESTS {
        let start = Instant::now();
        ask(alice)?;
        alice.expect(WAIT, from, answer).await?;
        if i >= WARMUP {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn report(name: &str, sorted_ms: &[f64]) {
    let at = |q: f64| {
        let i = ((sorted_ms.len() as f64 - 1.0) * q).round() as usize;
        sorted_ms.get(i).copied().unwrap_or(f64::NAN)
    };
    println!("{name}_median {:.2} ms", at(0.5));
    println!("{name}_p99 {:.2} ms", at(0.99));
    println!("{name}_requests {} count", sorted_ms.len());
}

//! `gist-standin`: the GitHub Gist API stand-in as a process for tests. Gists are folders
//! `GISTS/ID/FILENAME`. It prints `LISTENING http://127.0.0.1:PORT` on stdout once it accepts
//! connections; point jarvis's `designs.gist.api` at that URL.

use std::path::PathBuf;

use clap::Parser;
use jarvis_standins::gist::{Settings, TRUNCATE_OVER};

/// A stand-in for the GitHub Gist API (`GET /gists/ID`), for tests.
#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1 to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The folder of gists: one subfolder per gist id, holding its files.
    #[arg(long)]
    gists: PathBuf,
    /// The only bearer token accepted (requests without one are still served); default
    /// $GIST_STANDIN_TOKEN, else any token is accepted.
    #[arg(long, env = "GIST_STANDIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Start in rate-limit mode: every API request is answered 403 with
    /// `x-ratelimit-remaining: 0`.
    #[arg(long)]
    rate_limited: bool,
    /// File content longer than this many bytes comes `truncated: true`.
    #[arg(long, default_value_t = TRUNCATE_OVER)]
    truncate_over: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.gists.is_dir() {
        anyhow::bail!("--gists {} is not a folder", args.gists.display());
    }
    let settings = Settings {
        folder: args.gists,
        token: args.token,
        rate_limited: args.rate_limited,
        truncate_over: args.truncate_over,
    };
    jarvis_standins::serve(jarvis_standins::gist::router(settings), args.port).await
}

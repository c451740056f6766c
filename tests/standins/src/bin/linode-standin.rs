//! `linode-standin`: the in-memory Linode API v4 stand-in as a process for tests. It prints
//! `LISTENING http://127.0.0.1:PORT` on stdout once it accepts connections.

use std::net::Ipv4Addr;

use clap::Parser;
use jarvis_standins::linode::Settings;

/// An in-memory stand-in for Linode API v4 (instances), for tests.
#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1 to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The bearer token requests must carry (default: $LINODE_STANDIN_TOKEN, else
    /// "standin-token").
    #[arg(
        long,
        env = "LINODE_STANDIN_TOKEN",
        default_value = "standin-token",
        hide_env_values = true
    )]
    token: String,
    /// How long a new or rebuilt instance stays `provisioning`.
    #[arg(long, default_value_t = 300)]
    provision_ms: u64,
    /// How long an instance stays `booting`.
    #[arg(long, default_value_t = 300)]
    boot_ms: u64,
    /// How long an instance stays `shutting_down`.
    #[arg(long, default_value_t = 200)]
    shutdown_ms: u64,
    /// The IPv4 address every new instance gets (127.0.0.1 makes SSH reach a local sshd).
    #[arg(long)]
    ipv4: Option<Ipv4Addr>,
    /// Page size of lists when the client names none, and the most a page holds.
    #[arg(long, default_value_t = 100)]
    page_size: u64,
    /// Answer lists unfiltered, ignoring X-Filter.
    #[arg(long)]
    ignore_filter: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings {
        token: args.token,
        provision_ms: args.provision_ms,
        boot_ms: args.boot_ms,
        shutdown_ms: args.shutdown_ms,
        ipv4: args.ipv4,
        page_size: args.page_size,
        ignore_filter: args.ignore_filter,
    };
    jarvis_standins::serve(jarvis_standins::linode::router(settings), args.port).await
}

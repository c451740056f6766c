//! Chat adapters: each turns one protocol into [`crate::chat::Incoming`] messages with
//! verified identities, and implements [`crate::chat::ChatNetwork`] to send lines. Only
//! `irc` knows IRC and only `xmpp` knows XMPP; the console is the terminal.

pub mod console;
pub mod irc;
pub mod xmpp;

use crate::app::Application;

/// Starts every configured chat network and attaches it to the application.
pub async fn start_networks(app: &Application) -> anyhow::Result<()> {
    let settings = app.settings().clone();
    if settings.chat.irc.is_empty() && settings.chat.xmpp.is_empty() {
        tracing::warn!("no chat networks are configured");
    }
    let mut names = std::collections::HashSet::new();
    for cfg in &settings.chat.irc {
        if !names.insert(cfg.name.clone()) {
            anyhow::bail!("chat.irc: two networks are named '{}'", cfg.name);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let network = irc::IrcNetwork::start(cfg.clone(), &settings.name, tx)
            .map_err(|e| anyhow::anyhow!(e))?;
        app.attach(network);
        app.serve(rx);
    }
    xmpp::start_all(app).await?;
    Ok(())
}

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
    if !settings.chat.irc.is_empty() {
        tracing::error!("IRC networks are configured, but the IRC adapter is not built yet");
    }
    xmpp::start_all(app).await?;
    Ok(())
}

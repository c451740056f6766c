//! Chat adapters: each turns one protocol into [`crate::chat::Incoming`] messages with
//! verified identities, and implements [`crate::chat::ChatNetwork`] to send lines. Only
//! `irc` knows IRC and only `xmpp` knows XMPP; the console is the terminal.

pub mod console;
pub mod irc;
pub mod xmpp;

//! jarvis, a chat-ops deployment daemon. See ARCHITECTURE.md for the map.

pub mod adapters;
pub mod app;
pub mod chat;
pub mod clipboard;
pub mod config;
pub mod engine;
pub mod http;
pub mod inventory;
pub mod model;
pub mod orphans;
pub mod reach;
pub mod retention;
pub mod seal;
pub mod secrets;
pub mod store;
pub mod text;
pub mod triggers;

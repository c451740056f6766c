//! The chat language and the worker-output parser on arbitrary input: no panic, and every
//! error a user could see is one line without control characters.

#![no_main]

use jarvis::chat::command;
use jarvis::clipboard::parse_worker_output;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_worker_output(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(cmd) = command::addressed(text, "jarvis", false) {
            if let Err(e) = command::parse(cmd) {
                let line = e.to_string();
                assert!(!line.chars().any(char::is_control), "{line:?}");
            }
        }
        for piece in jarvis::text::split_to_fit(&jarvis::text::one_line(text, 2000), 400) {
            assert!(piece.len() <= 400);
        }
    }
});

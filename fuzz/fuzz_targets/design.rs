//! The design parser and the reference parser on arbitrary input: neither may panic, hang or
//! overflow the stack, and every refusal is one printable line.

#![no_main]

use std::sync::LazyLock;

use jarvis_design::{DesignError, DesignsConfig, YamlLimits, is_unsafe_char};
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<DesignsConfig> = LazyLock::new(config);

/// A configuration under which names, gists and allowed URLs are all references.
fn config() -> DesignsConfig {
    let mut config = DesignsConfig {
        folder: Some("/nonexistent/designs".into()),
        ..DesignsConfig::default()
    };
    config.urls.allow = vec![jarvis_design::AllowedHost {
        host: jarvis_design::HostPort::parse("designs.example.com").expect("a host"),
        allow_http: false,
    }];
    config
}

fn check(error: &DesignError) {
    let line = error.to_string();
    assert!(!line.contains('\n'), "multi-line reason: {line:?}");
    assert!(
        !line.chars().any(is_unsafe_char),
        "unsafe character in: {line:?}"
    );
}

fn assert_no_secret_keys(value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                assert!(!jarvis_design::is_secret_key(key), "secret key {key:?} accepted");
                assert_no_secret_keys(child);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(assert_no_secret_keys),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    match jarvis_design::parse_bytes("fuzz", data, 256 * 1024, &YamlLimits::default()) {
        Ok(design) => {
            assert!(jarvis_design::check_label(&design.hostname).is_ok());
            assert!(!design.provider.trim().is_empty());
            // A design carries data: no worker's section, no target address, no secret.
            for key in design.document.keys() {
                assert!(
                    !jarvis_design::BUILTIN_RESERVED_KEYS
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(key)),
                    "reserved key {key:?} accepted"
                );
            }
            if let Some(serde_json::Value::Object(instance)) = design.document.get("instance") {
                for key in instance.keys() {
                    assert!(
                        !jarvis_design::INSTANCE_RESERVED_KEYS
                            .contains(&key.to_ascii_lowercase().as_str()),
                        "instance.{key} accepted"
                    );
                }
            }
            assert_no_secret_keys(&serde_json::Value::Object(design.document));
        }
        Err(error) => check(&error),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(error) = jarvis_design::parse_reference(text, &CONFIG) {
            check(&error);
        }
    }
});

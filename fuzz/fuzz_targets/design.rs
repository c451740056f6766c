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

fuzz_target!(|data: &[u8]| {
    match jarvis_design::parse_bytes("fuzz", data, 256 * 1024, &YamlLimits::default()) {
        Ok(design) => {
            assert!(jarvis_design::check_label(&design.hostname).is_ok());
            assert!(!design.provider.trim().is_empty());
        }
        Err(error) => check(&error),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(error) = jarvis_design::parse_reference(text, &CONFIG) {
            check(&error);
        }
    }
});

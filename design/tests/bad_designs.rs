//! The corpus of bad designs: each file `tests/bad-designs/NAME.yaml` is refused with a
//! reason that contains the text of `NAME.reason`, each reason is one printable line, and no
//! two designs get the same reason. The designs too big to keep as files are made here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jarvis_design::{
    DesignError, DesignSources, DesignsConfig, YamlLimits, is_unsafe_char, parse_bytes,
};

const MAX_BYTES: usize = 256 * 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-designs")
}

/// NAME → (document bytes, expected reason substring).
fn corpus() -> BTreeMap<String, (Vec<u8>, String)> {
    let mut cases = BTreeMap::new();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            let reason = std::fs::read_to_string(path.with_extension("reason"))
                .unwrap_or_else(|_| panic!("{name}.yaml has no {name}.reason"));
            let text = std::fs::read(&path).unwrap();
            cases.insert(name, (text, reason.trim_end_matches('\n').to_string()));
        }
    }
    cases
}

/// Designs too large to keep in the repository, made as the test runs.
fn generated() -> BTreeMap<String, (Vec<u8>, String)> {
    let valid = "instance:\n  hostname: loki\n  provider: Linode\n";
    let mut cases = BTreeMap::new();
    let mut oversize = String::from(valid);
    while oversize.len() <= MAX_BYTES {
        oversize.push_str("# padding padding padding padding padding padding padding\n");
    }
    cases.insert(
        "generated-oversize-comment".to_string(),
        (
            oversize.into_bytes(),
            format!("over the limit of {MAX_BYTES} bytes"),
        ),
    );
    let mut big_value = format!("{valid}notes: ");
    big_value.push_str(&"x".repeat(MAX_BYTES));
    cases.insert(
        "generated-oversize-value".to_string(),
        (
            big_value.into_bytes(),
            format!("over the limit of {MAX_BYTES} bytes"),
        ),
    );
    // 10,000 levels of block mappings need ~50 MB of indentation: refused by size first,
    // so the same depth is also tried under a limit that lets the parser see it.
    let mut deep = String::new();
    for level in 0..10_000 {
        deep.push_str(&" ".repeat(level));
        deep.push_str("a:\n");
    }
    cases.insert(
        "generated-nesting-10000-block".to_string(),
        (deep.into_bytes(), "over the limit".to_string()),
    );
    cases
}

fn refusal(name: &str, bytes: &[u8], max_bytes: usize) -> (String, Duration) {
    let started = Instant::now();
    let result = parse_bytes(name, bytes, max_bytes, &YamlLimits::default());
    let elapsed = started.elapsed();
    match result {
        Err(DesignError::Invalid(why)) => (why, elapsed),
        other => panic!("{name}: expected an invalid-design refusal, got {other:?}"),
    }
}

#[test]
fn every_bad_design_is_refused_with_its_own_reason() {
    let cases = corpus();
    assert!(
        cases.len() >= 50,
        "only {} bad designs in the corpus",
        cases.len()
    );
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, (bytes, expected)) in cases.iter().chain(generated().iter()) {
        let (why, elapsed) = refusal(name, bytes, MAX_BYTES);
        eprintln!("{name}: {why} [{elapsed:?}]");
        if !why.contains(expected.as_str()) {
            failures.push(format!("{name}: expected '{expected}', got '{why}'"));
        }
        if why.contains('\n') || why.chars().any(is_unsafe_char) {
            failures.push(format!("{name}: reason is not one printable line: {why:?}"));
        }
        if elapsed > Duration::from_secs(1) {
            failures.push(format!("{name}: took {elapsed:?}"));
        }
        if let Some(other) = seen.insert(why.clone(), name.clone()) {
            failures.push(format!("{name} and {other} share the reason '{why}'"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn deep_block_nesting_is_refused_by_depth_when_size_allows() {
    let mut deep = String::new();
    for level in 0..10_000 {
        deep.push_str(&" ".repeat(level));
        deep.push_str("a:\n");
    }
    let (why, elapsed) = refusal("deep", deep.as_bytes(), 64 * 1024 * 1024);
    assert!(why.contains("nested deeper than 32 levels"), "{why}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

/// The same corpus through the designs-folder source, as `deploy NAME` would load it.
#[tokio::test]
async fn the_folder_source_refuses_them_the_same_way() {
    let config = DesignsConfig {
        folder: Some(corpus_dir()),
        ..DesignsConfig::default()
    };
    let sources = DesignSources::new(config);
    for (name, (bytes, _)) in corpus() {
        let direct = parse_bytes(&name, &bytes, MAX_BYTES, &YamlLimits::default()).unwrap_err();
        let loaded = sources.load(&name).await.unwrap_err();
        assert_eq!(loaded, direct, "{name}");
    }
}

//! The module graph of ARCHITECTURE.md, checked: reads every `src/**.rs`, collects the
//! `crate::…` paths each module names (in `use` lines, in code and in serde attributes such
//! as `deserialize_with = "crate::…"`), and asserts that each module names only the modules
//! below it:
//!
//! ```text
//! main, lib, app, reach, orphans     (wiring: may name anything)
//!   http                             → app, config, chat, engine, store, triggers, leaves (an adapter
//!                                      whose API also reads runs, stages and events)
//!   adapters::{irc, xmpp, console}   → config (their own settings), chat, leaves
//!   config                           → chat, engine, retention, triggers (it composes their
//!                                      settings)
//!   triggers                         → chat, engine, store (webhooks and schedules run
//!                                      commands through the bot)
//!   chat                             → engine, store, leaves
//!   retention                        → store, leaves
//!   engine                           → store, leaves
//!   store                            → leaves
//!   leaves: model, clipboard, text, secrets, seal, inventory → other leaves only
//! ```
//!
//! And by crate: only `adapters::xmpp` uses the XMPP crates, only `adapters::irc` is named
//! nowhere but the wiring, and only `main` links the workers crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LEAVES: &[&str] = &["model", "clipboard", "text", "secrets", "seal", "inventory"];

/// The modules each module may name beside itself and the leaves; `None`: anything.
fn allowed(module: &str) -> Option<&'static [&'static str]> {
    Some(match module {
        "main" | "lib" | "app" | "reach" | "orphans" => return None,
        "adapters" | "adapters::console" => &["chat"],
        "http" => &["app", "config", "chat", "engine", "store", "triggers"],
        "adapters::irc" | "adapters::xmpp" => &["config", "chat"],
        "config" => &["chat", "engine", "retention", "triggers"],
        "triggers" => &["chat", "engine", "store"],
        "chat" => &["engine", "store"],
        "retention" => &["store"],
        "engine" => &["store"],
        "store" => &[],
        leaf if LEAVES.contains(&leaf) => &[],
        other => panic!(
            "src module '{other}' is not in the architecture test: place it in a layer \
             (tests/architecture.rs) and in ARCHITECTURE.md's code map"
        ),
    })
}

/// Which module a source file belongs to: `src/engine/worker.rs` → `engine`,
/// `src/adapters/irc/session.rs` → `adapters::irc`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [adapters, sub, ..] if adapters == "adapters" && sub != "mod" => {
            format!("adapters::{sub}")
        }
        [first, ..] => first.clone(),
        [] => unreachable!(),
    }
}

/// The module a `crate::a::b…` path names, at the granularity of [`module_of`].
fn module_named(path: &[&str]) -> String {
    match path {
        ["adapters", sub, ..] => format!("adapters::{sub}"),
        [first, ..] => first.to_string(),
        [] => String::new(),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (line comments, doc comments and `/* */`),
/// strings kept: serde attributes name paths in strings.
fn code(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, c)| chars.get(i + k) == Some(&c))
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_string = false;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_string = false;
            }
            i += 1;
        } else if c == '"' {
            in_string = true;
            out.push('"');
            i += 1;
        } else if at(i, "//") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            while i < chars.len() && !at(i, "*/") {
                i += 1;
            }
            i += 2;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A char literal like '"' must not open a string.
            out.extend(&chars[i..i + 3]);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Every `crate::…` path in `code`, with `use crate::{a::b, c}` groups expanded to their
/// first segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `jarvis_crate::` or the like
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut start = 0;
            let inner = &group[..end];
            for (i, c) in inner.char_indices().chain([(inner.len(), ',')]) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let item = inner[start..i].trim();
                        if !item.is_empty() {
                            paths.push(segments(item));
                        }
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            paths.push(segments(rest));
        }
    }
    paths
}

fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    out
}

struct Graph {
    /// module → module named → the files that name it.
    edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// file → its code.
    code: BTreeMap<String, (String, String)>,
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut all_code = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let code = code(&text);
        let shown = file
            .strip_prefix(root)
            .expect("under the root")
            .display()
            .to_string();
        let named = edges.entry(module.clone()).or_default();
        for path in crate_paths(&code) {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let target = module_named(&path);
            if !target.is_empty() && target != module {
                named.entry(target).or_default().insert(shown.clone());
            }
        }
        all_code.insert(shown, (module, code));
    }
    Graph {
        edges,
        code: all_code,
    }
}

#[test]
fn every_module_names_only_the_layers_below_it() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (module, named) in &graph.edges {
        let Some(allowed) = allowed(module) else {
            continue;
        };
        for (target, files) in named {
            let ok = allowed.contains(&target.as_str()) || LEAVES.contains(&target.as_str());
            if !ok {
                wrong.push(format!("{module} → {target} (in {files:?})"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against ARCHITECTURE.md's layers:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &Graph,
        on_path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = on_path.iter().position(|n| n == node) {
            let mut cycle = on_path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        on_path.push(node.to_string());
        for next in graph.edges.get(node).into_iter().flat_map(|n| n.keys()) {
            // The crate root and main declare modules; they are not part of a cycle.
            if next == "lib" || next == "main" {
                continue;
            }
            if let Some(cycle) = visit(next, graph, on_path, done) {
                return Some(cycle);
            }
        }
        on_path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.edges.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("the module graph has a cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn only_the_xmpp_adapter_knows_xmpp_and_only_main_links_the_workers() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (file, (module, code)) in &graph.code {
        for krate in ["tokio_xmpp::", "xmpp_parsers::", "sasl::"] {
            let named = code.match_indices(krate).any(|(at, _)| {
                !code[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if named && module != "adapters::xmpp" {
                wrong.push(format!("{file} uses {krate}"));
            }
        }
        if code.contains("jarvis_workers::") && module != "main" {
            wrong.push(format!("{file} links the workers crate"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_engine_and_the_store_know_no_chat_and_no_settings() {
    let graph = graph();
    for (module, forbidden) in [
        ("engine", &["chat", "adapters", "config", "app"][..]),
        (
            "store",
            &["engine", "chat", "adapters", "config", "app"][..],
        ),
        ("chat", &["adapters", "config", "app"][..]),
    ] {
        let named = graph.edges.get(module).cloned().unwrap_or_default();
        for target in named.keys() {
            let top = target.split("::").next().unwrap_or_default();
            assert!(
                !forbidden.contains(&top),
                "{module} names {target} in {:?}",
                named[target]
            );
        }
    }
    // Nothing below the wiring sees the whole configuration.
    for (file, (module, code)) in &graph.code {
        if allowed(module).is_some() && module != "config" {
            assert!(
                !code.contains("Settings"),
                "{file} ({module}) names Settings; give it its own settings type"
            );
        }
    }
}

#[test]
fn the_reader_finds_what_it_should() {
    // The parser itself, on the shapes that occur in src.
    let code = code(
        "use crate::{a::B, c::{D, E}};\n// crate::comment\nlet x = crate::f::g();\n\
         #[serde(deserialize_with = \"crate::h::i\")]\nlet c = '\"'; let s = \"crate::j\";",
    );
    let firsts: Vec<String> = crate_paths(&code)
        .into_iter()
        .map(|p| p[0].clone())
        .collect();
    assert_eq!(firsts, ["a", "c", "f", "h", "j"]);
    assert_eq!(
        module_named(&["adapters", "irc", "proto", "Message"]),
        "adapters::irc"
    );
}

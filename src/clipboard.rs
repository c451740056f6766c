//! The clipboard (SPEC 4): a YAML mapping handed from stage to stage. In memory and in the
//! store it is a JSON object with keys in written order; users and workers see YAML.

use serde_json::{Map, Value};

pub type Clipboard = Map<String, Value>;

/// Why a worker's stdout is not a clipboard.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClipboardError {
    #[error("stdout is not valid YAML: {0}")]
    Yaml(String),
    #[error("stdout is YAML but not one mapping (it is {0})")]
    NotMapping(&'static str),
    #[error("stdout is not UTF-8 text")]
    NotText,
    #[error(
        "stdout reads as a clipboard of more than {} once its aliases are expanded, the limit for a clipboard",
        crate::text::bytes(*.0 as u64)
    )]
    TooLarge(usize),
}

/// The largest parsed clipboard [`parse_worker_output`] accepts: 4 MiB, four times the
/// default stdout cap, since a clipboard in JSON is about as large as in YAML.
pub const DEFAULT_PARSED_CAP: usize = 4 * 1024 * 1024;

/// The clipboard as YAML, as a worker reads it on stdin.
pub fn to_yaml(clipboard: &Clipboard) -> String {
    serde_saphyr::to_string(clipboard).unwrap_or_else(|_| "{}\n".into())
}

/// Parses a worker's stdout: empty means "unchanged" (`None`); anything else must be one
/// YAML mapping. Pure, so it can be fuzzed.
pub fn parse_worker_output(bytes: &[u8]) -> Result<Option<Clipboard>, ClipboardError> {
    parse_worker_output_capped(bytes, DEFAULT_PARSED_CAP)
}

/// [`parse_worker_output`] with a cap on the parsed clipboard's size (its JSON length, about)
/// after YAML aliases are expanded. Stdout is capped already, but a few hundred KiB of
/// anchors and aliases expand to hundreds of MiB; the size is counted while the value is
/// built, so an alias bomb stops at the cap instead of after it filled the memory.
pub fn parse_worker_output_capped(
    bytes: &[u8],
    cap: usize,
) -> Result<Option<Clipboard>, ClipboardError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ClipboardError::NotText)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let budget = SizeBudget {
        left: std::cell::Cell::new(cap),
        passed: std::cell::Cell::new(false),
    };
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde::de::DeserializeSeed::deserialize(Counted(&budget), de)
    });
    if budget.passed.get() {
        return Err(ClipboardError::TooLarge(cap));
    }
    let value = parsed.map_err(|e| {
        ClipboardError::Yaml(e.to_string().lines().next().unwrap_or("").to_string())
    })?;
    match value {
        Value::Object(map) => Ok(Some(map)),
        Value::Array(_) => Err(ClipboardError::NotMapping("a list")),
        Value::String(_) => Err(ClipboardError::NotMapping("a string")),
        Value::Number(_) => Err(ClipboardError::NotMapping("a number")),
        Value::Bool(_) => Err(ClipboardError::NotMapping("a boolean")),
        Value::Null => Err(ClipboardError::NotMapping("null")),
    }
}

/// What is left of a parse's size budget, in bytes of JSON (about: a number counts 8).
struct SizeBudget {
    left: std::cell::Cell<usize>,
    passed: std::cell::Cell<bool>,
}

impl SizeBudget {
    fn charge<E: serde::de::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.left.get().checked_sub(bytes) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.passed.set(true);
                Err(E::custom("the clipboard is too large"))
            }
        }
    }
}

/// Builds a `serde_json::Value` as serde_json's own `Deserialize` does, charging every
/// scalar, key and element to the budget before it is kept.
#[derive(Clone, Copy)]
struct Counted<'a>(&'a SizeBudget);

impl<'de> serde::de::DeserializeSeed<'de> for Counted<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Counted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.charge(5)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.charge(8)?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.charge(8)?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.charge(8)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.charge(v.len() + 2)?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.0.charge(v.len() + 2)?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.0.charge(4)?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, de)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.charge(2)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            self.0.charge(1)?;
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.charge(2)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.0.charge(key.len() + 4)?;
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The value at a dotted path, e.g. `ldap.production`.
pub fn get_path<'a>(clipboard: &'a Clipboard, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = clipboard.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// What jarvis hands a worker beside the run's clipboard, under its own `jarvis` key (which
/// no design may set): the stage's configured parameters and the host's pinned keys.
pub const WITH: &str = "with";
pub const HOST_KEYS: &str = "host_keys";
/// What a stage allowed to learn host keys hands back.
pub const LEARNED_HOST_KEYS: &str = "learned_host_keys";

/// The worker's input: the clipboard with `jarvis.with` and `jarvis.host_keys` set. Pure.
pub fn worker_input(
    clipboard: &Clipboard,
    with: Option<&Map<String, Value>>,
    host_keys: Value,
) -> Clipboard {
    let mut input = clipboard.clone();
    let jarvis = input
        .entry("jarvis")
        .or_insert_with(|| Value::Object(Map::new()));
    if !jarvis.is_object() {
        *jarvis = Value::Object(Map::new());
    }
    if let Value::Object(jarvis) = jarvis {
        match with {
            Some(with) => {
                jarvis.insert(WITH.into(), Value::Object(with.clone()));
            }
            None => {
                jarvis.remove(WITH);
            }
        }
        jarvis.insert(HOST_KEYS.into(), host_keys);
    }
    input
}

/// Takes back from a worker's output what jarvis handed it for this stage only, and the host
/// keys it reports having learned. Pure.
pub fn take_stage_extras(output: &mut Clipboard) -> Option<Value> {
    let Some(Value::Object(jarvis)) = output.get_mut("jarvis") else {
        return None;
    };
    jarvis.remove(WITH);
    jarvis.remove(HOST_KEYS);
    jarvis.remove(LEARNED_HOST_KEYS)
}

/// What the run recorded as made outside (`jarvis.made`, written by workers), in words:
/// "linode 123 (stage 1 linode:deploy), dns loki.example.com (stage 5 dns:update)". Pure.
pub fn made_summary(clipboard: &Clipboard) -> Option<String> {
    let items = get_path(clipboard, "jarvis.made")?.as_array()?;
    let parts: Vec<String> = items
        .iter()
        .filter_map(|item| {
            let what = item.get("what")?.as_str()?;
            let id = item.get("id")?.as_str()?;
            let task = item.get("task").and_then(Value::as_str).unwrap_or("");
            let stage = item.get("stage").and_then(Value::as_str).unwrap_or("");
            Some(if task.is_empty() {
                format!("{what} {id}")
            } else {
                format!("{what} {id} (stage {stage} {task})")
            })
        })
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(crate::text::one_line(&parts.join(", "), 300))
    }
}

/// Whether a value counts as "yes" for a condition such as `approval_if`.
pub fn is_truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "yes" | "on" | "production"
        ),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stage_extras_go_in_and_come_back_out() {
        let mut clipboard = Clipboard::new();
        clipboard.insert("instance".into(), serde_json::json!({"hostname": "loki"}));
        let mut with = Map::new();
        with.insert("commands".into(), serde_json::json!(["uptime"]));
        let input = worker_input(&clipboard, Some(&with), serde_json::json!([]));
        assert_eq!(
            get_path(&input, "jarvis.with.commands"),
            Some(&serde_json::json!(["uptime"]))
        );
        let mut output = input.clone();
        if let Some(Value::Object(j)) = output.get_mut("jarvis") {
            j.insert(
                LEARNED_HOST_KEYS.into(),
                serde_json::json!([{"algorithm": "a"}]),
            );
        }
        let learned = take_stage_extras(&mut output);
        assert_eq!(learned, Some(serde_json::json!([{"algorithm": "a"}])));
        assert_eq!(get_path(&output, "jarvis.with"), None);
        assert_eq!(get_path(&output, "jarvis.host_keys"), None);
    }

    use super::*;

    #[test]
    fn worker_output_must_be_one_mapping() {
        assert_eq!(parse_worker_output(b"").unwrap(), None);
        assert_eq!(parse_worker_output(b"  \n").unwrap(), None);
        let map = parse_worker_output(b"a: 1\nb: [x]\n").unwrap().unwrap();
        assert_eq!(map["a"], Value::from(1));
        assert_eq!(
            parse_worker_output(b"- a\n- b\n"),
            Err(ClipboardError::NotMapping("a list"))
        );
        assert!(matches!(
            parse_worker_output(b"a: [\n"),
            Err(ClipboardError::Yaml(_))
        ));
        assert_eq!(
            parse_worker_output(&[0xff, 0xfe]),
            Err(ClipboardError::NotText)
        );
    }

    #[test]
    fn an_alias_bomb_stops_at_the_cap() {
        // 10 KiB anchored once and aliased 1,000 times: 10 MiB once expanded.
        let mut bomb = format!("big: &a '{}'\nrefs:\n", "x".repeat(10 * 1024));
        for _ in 0..1000 {
            bomb.push_str("  - *a\n");
        }
        assert_eq!(
            parse_worker_output_capped(bomb.as_bytes(), 1024 * 1024),
            Err(ClipboardError::TooLarge(1024 * 1024))
        );
        let reason = ClipboardError::TooLarge(1024 * 1024).to_string();
        assert!(reason.contains("more than 1 MiB"), "{reason}");
        // Under the cap the same shapes parse as before.
        let small = parse_worker_output_capped(b"a: &x [1, 2]\nb: *x\nc: null\nd: 1.5\n", 1024)
            .unwrap()
            .unwrap();
        assert_eq!(small["b"], serde_json::json!([1, 2]));
        assert_eq!(small["c"], Value::Null);
        assert_eq!(small["d"], serde_json::json!(1.5));
    }

    #[test]
    fn yaml_round_trip_keeps_order() {
        let map = parse_worker_output(b"z: 1\na: {c: 2, b: 3}\n")
            .unwrap()
            .unwrap();
        let again = parse_worker_output(to_yaml(&map).as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(map, again);
        assert_eq!(map.keys().collect::<Vec<_>>(), vec!["z", "a"]);
    }
}

//! Masking (SPEC 2): values under keys that name secrets, and known secret values, never
//! leave jarvis. Used on everything shown or stored as text: replies, notifications, log
//! lines, errors.

use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::clipboard::Clipboard;

pub const MASK: &str = "********";

/// Words that make a key a secret; `sshpubkey` and `*_pub` are public by name.
/// `authorization` covers the HTTP headers (`Authorization`, `Proxy-Authorization`), whose
/// value is a credential whatever its scheme.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "key",
    "authorization",
];

/// HTTP authentication schemes: `Authorization: Bearer X` keeps the scheme visible (it says
/// what kind of credential was used) and masks the credential.
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "digest", "token", "negotiate"];

/// Whether `key` names a secret, given the configured extra names.
pub fn is_secret_key(key: &str, extra: &[String]) -> bool {
    let k = key.to_ascii_lowercase();
    // A host key is public by nature: it is what a server shows everyone who connects.
    if k.ends_with("_pub")
        || k.ends_with("-pub")
        || k.contains("pubkey")
        || k.contains("public")
        || k.contains("host_key")
        || k.contains("hostkey")
    {
        return false;
    }
    SECRET_WORDS.iter().any(|w| k.contains(w)) || extra.iter().any(|e| e.eq_ignore_ascii_case(&k))
}

/// Masks secrets in text, knowing some secret values by heart.
#[derive(Clone)]
pub struct Masker {
    extra_keys: Arc<Vec<String>>,
    known: Arc<Vec<String>>,
    inline: Arc<Regex>,
}

impl Masker {
    pub fn new(extra_keys: Vec<String>, known_values: Vec<String>) -> Masker {
        let mut words: Vec<String> = SECRET_WORDS.iter().map(|w| regex::escape(w)).collect();
        words.extend(extra_keys.iter().map(|k| regex::escape(k)));
        // `password: x`, `token=x`, `"secret": "x"`, `PGPASSWORD='a b'`: the value is masked.
        // A quoted value is masked to its closing quote; an unquoted one to the end of the
        // line, since a secret may hold spaces and where it ends cannot be known (the safe
        // side). A secret word in prose ("TSIG key dns-jarvis") is not a key: known values
        // catch real secrets there. The key's closing quote may be `"` (JSON) only: `'name':`
        // is how jarvis quotes a field's name in a reason, which is not a value. A word right
        // after a `:` is no key (`ssh:keygen: refused` names a task), and neither is one with
        // a bare `:` right after it (`secretstore:sync`); the value is read in `mask_inline`.
        let pattern = format!(
            r#"(?i)\b([A-Za-z0-9_\-]*(?:{})[A-Za-z0-9_\-]*)("?[ \t]*[:=][ \t]*)"#,
            words.join("|")
        );
        let inline = Regex::new(&pattern).unwrap_or_else(|_| {
            // The pattern is built from escaped words only; this cannot fail, but a
            // never-matching fallback beats a panic.
            Regex::new("a^").unwrap_or_else(|_| unreachable!("a fixed, valid pattern"))
        });
        let mut known: Vec<String> = known_values.into_iter().filter(|v| v.len() >= 4).collect();
        known.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Masker {
            extra_keys: Arc::new(extra_keys),
            known: Arc::new(known),
            inline: Arc::new(inline),
        }
    }

    /// A masker that also knows the secret values found on a clipboard.
    pub fn with_clipboard(&self, clipboard: &Clipboard) -> Masker {
        let mut values = Vec::new();
        collect_secret_values(
            &Value::Object(clipboard.clone()),
            false,
            &self.extra_keys,
            &mut values,
        );
        self.with_values(values.iter().map(String::as_str))
    }

    /// A masker that also knows these secret values (a run's secrets, from the moment a
    /// worker hands them back).
    pub fn with_values<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut known: Vec<String> = self.known.as_ref().clone();
        let before = known.len();
        known.extend(
            values
                .into_iter()
                .filter(|v| v.len() >= 4)
                .map(str::to_string),
        );
        if known.len() == before {
            return self.clone();
        }
        known.sort_by_key(|v| std::cmp::Reverse(v.len()));
        known.dedup();
        Masker {
            extra_keys: self.extra_keys.clone(),
            known: Arc::new(known),
            inline: self.inline.clone(),
        }
    }

    /// The text with every known secret value and every `secret-key: value` masked.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in self.known.iter() {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), MASK);
            }
        }
        mask_bearer(&self.mask_inline(&out))
    }

    /// Masks the values of `key: value`, `key=value` and `"key": "value"` in `text`. The
    /// regex finds a key and its separator only; where the value ends is found here, so a
    /// match that is no secret's key costs no scan to the end of its line, and the text
    /// after it is still read (linear, however many such matches a long string holds).
    fn mask_inline(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        while let Some(caps) = self.inline.captures_at(text, pos) {
            let (Some(key), Some(sep)) = (caps.get(1), caps.get(2)) else {
                break;
            };
            let after_colon = text[..key.start()].ends_with(':');
            if after_colon || !is_secret_key(key.as_str(), &self.extra_keys) {
                out.push_str(&text[pos..key.end()]);
                pos = key.end();
                continue;
            }
            let line_end = text[sep.end()..]
                .find(['\r', '\n'])
                .map_or(text.len(), |i| sep.end() + i);
            let value = &text[sep.end()..line_end];
            let (masked, end) = if let Some(inner) = value.strip_prefix('"') {
                match closing_double_quote(inner) {
                    Some(i) => (format!("\"{MASK}\""), sep.end() + 1 + i + 1),
                    None => (format!("\"{MASK}"), line_end),
                }
            } else if let Some(inner) = value.strip_prefix('\'') {
                match inner.find('\'') {
                    Some(i) => (format!("'{MASK}'"), sep.end() + 1 + i + 1),
                    None => (format!("'{MASK}"), line_end),
                }
            } else if value.trim().is_empty() || sep.as_str() == ":" {
                // `password:` ending a line heads a mapping, and `secretstore:sync` names a
                // task: neither is followed by a value.
                out.push_str(&text[pos..sep.end()]);
                pos = sep.end();
                continue;
            } else {
                (format!("{}{MASK}", auth_scheme(value)), line_end)
            };
            out.push_str(&text[pos..sep.end()]);
            out.push_str(&masked);
            pos = end;
        }
        out.push_str(&text[pos..]);
        out
    }

    /// A copy of the clipboard with the values under secret keys masked, for display.
    pub fn mask_clipboard(&self, clipboard: &Clipboard) -> Clipboard {
        match mask_value(&Value::Object(clipboard.clone()), &self.extra_keys) {
            Value::Object(m) => m,
            _ => Clipboard::new(),
        }
    }
}

/// Where a double-quoted value that began just before `inner` ends: its closing quote's
/// index, a backslash escaping the character after it (JSON).
fn closing_double_quote(inner: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// The scheme word that opens an `Authorization` value (`Bearer `), kept in sight.
fn auth_scheme(value: &str) -> &str {
    let word_end = value.find([' ', '\t']).unwrap_or(value.len());
    let word = &value[..word_end];
    let rest = value[word_end..].trim_start();
    if !rest.is_empty() && AUTH_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(word)) {
        &value[..value.len() - rest.len()]
    } else {
        ""
    }
}

/// A bearer token outside a header (`curl … Bearer abc.def`): the token is masked. Only
/// `Bearer`: `Basic` is too common a word in prose to mean a credential alone.
fn mask_bearer(text: &str) -> String {
    static BEARER: std::sync::LazyLock<Option<Regex>> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)\b(bearer[ \t]+)([A-Za-z0-9\-._~+/]{6,}=*)").ok()
    });
    match BEARER.as_ref() {
        Some(re) if re.is_match(text) => re
            .replace_all(text, |caps: &regex::Captures| format!("{}{MASK}", &caps[1]))
            .into_owned(),
        _ => text.to_string(),
    }
}

fn mask_value(value: &Value, extra: &[String]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let masked = if is_secret_key(k, extra) && !v.is_object() {
                        Value::String(MASK.into())
                    } else {
                        mask_value(v, extra)
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| mask_value(v, extra)).collect()),
        other => other.clone(),
    }
}

fn collect_secret_values(value: &Value, secret: bool, extra: &[String], out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                collect_secret_values(v, secret || is_secret_key(k, extra), extra, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_secret_values(v, secret, extra, out);
            }
        }
        Value::String(s) if secret => out.push(s.clone()),
        Value::Number(n) if secret => out.push(n.to_string()),
        _ => {}
    }
}

/// A secret from the configuration (already expanded from `${VAR}`). `Debug` and `Display`
/// print `***`; the value itself only through [`Secret::expose`], at the one place that
/// sends it.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A URL fit to show: the password of `scheme://user:password@host` becomes `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.split_once(':') {
        Some((user, _)) => user,
        None => return url.to_string(),
    };
    format!(
        "{}{user}:***{}",
        &url[..scheme_end + 3],
        &url[scheme_end + 3 + at..]
    )
}

/// `text` (an error from a library that was given `url`) with the URL's password gone, both
/// within the URL and anywhere it shows alone.
pub fn redact_url_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    if let Some(password) = url_password(url)
        && password.len() >= 3
    {
        out = out.replace(password, "***");
    }
    out
}

pub fn url_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_name_secrets() {
        for k in [
            "password",
            "root_password",
            "TOKEN",
            "api_key",
            "tsig-secret",
            "passwd",
        ] {
            assert!(is_secret_key(k, &[]), "{k}");
        }
        for k in ["sshpubkey", "host_key_pub", "hostname", "public_key"] {
            assert!(!is_secret_key(k, &[]), "{k}");
        }
        assert!(is_secret_key("pin", &["pin".into()]));
    }

    #[test]
    fn text_is_masked_by_value_and_by_key() {
        let m = Masker::new(vec![], vec!["s3cr3t-value".into()]);
        assert_eq!(m.mask("got s3cr3t-value here"), format!("got {MASK} here"));
        assert_eq!(
            m.mask("root_password: hunter2"),
            format!("root_password: {MASK}")
        );
        // Where an unquoted secret ends cannot be known: the rest of the line goes.
        assert_eq!(m.mask("token=abc def"), format!("token={MASK}"));
        assert_eq!(
            m.mask(r#"{"api_key": "zzz"}"#),
            format!(r#"{{"api_key": "{MASK}"}}"#)
        );
        assert_eq!(
            m.mask("sshpubkey: ssh-ed25519 AAAA"),
            "sshpubkey: ssh-ed25519 AAAA"
        );
        assert_eq!(m.mask("nothing to see"), "nothing to see");
        assert_eq!(
            m.mask("BADSIG (TSIG key dns-jarvis): the key is wrong"),
            "BADSIG (TSIG key dns-jarvis): the key is wrong"
        );
    }

    #[test]
    fn quoted_values_are_masked_whole() {
        let m = Masker::new(vec![], vec![]);
        assert_eq!(
            m.mask("db_password: 'correct horse battery' # set by ops"),
            format!("db_password: '{MASK}' # set by ops")
        );
        assert_eq!(
            m.mask(r#"db_password: "two words""#),
            format!(r#"db_password: "{MASK}""#)
        );
        assert_eq!(
            m.mask(r#"{"api_key": "a \"quoted\" b", "host": "loki"}"#),
            format!(r#"{{"api_key": "{MASK}", "host": "loki"}}"#)
        );
        // An unclosed quote hides the rest of the line.
        assert_eq!(
            m.mask("password: 'never closed and long"),
            format!("password: '{MASK}")
        );
    }

    #[test]
    fn environment_style_values_are_masked() {
        let m = Masker::new(vec![], vec![]);
        assert_eq!(
            m.mask("PGPASSWORD='s3 cr3t' psql -h db"),
            format!("PGPASSWORD='{MASK}' psql -h db")
        );
        assert_eq!(
            m.mask(r#"export API_TOKEN="abc def""#),
            format!(r#"export API_TOKEN="{MASK}""#)
        );
        assert_eq!(
            m.mask("running with PGPASSWORD=hunter2 psql"),
            format!("running with PGPASSWORD={MASK}")
        );
    }

    #[test]
    fn header_style_credentials_are_masked() {
        let m = Masker::new(vec![], vec![]);
        assert_eq!(
            m.mask("Authorization: Bearer eyJhbGciOi.abc.def"),
            format!("Authorization: Bearer {MASK}")
        );
        assert_eq!(
            m.mask("authorization: Basic dXNlcjpwYXNz"),
            format!("authorization: Basic {MASK}")
        );
        assert_eq!(
            m.mask("Proxy-Authorization: Basic dXNlcjpwYXNz"),
            format!("Proxy-Authorization: Basic {MASK}")
        );
        assert_eq!(
            m.mask("Authorization: s3cr3t-opaque"),
            format!("Authorization: {MASK}")
        );
        assert_eq!(
            m.mask("curl -H 'Authorization: Bearer abcdef123' https://x"),
            format!("curl -H 'Authorization: Bearer {MASK}")
        );
        assert_eq!(
            m.mask("sent bearer abcdef.123456 to the API"),
            format!("sent bearer {MASK} to the API")
        );
        assert_eq!(m.mask("Basic setup done"), "Basic setup done");
    }

    #[test]
    fn passphrases_and_multi_word_values_are_masked_to_the_end_of_the_line() {
        let m = Masker::new(vec![], vec![]);
        assert_eq!(
            m.mask("passphrase: correct horse battery staple"),
            format!("passphrase: {MASK}")
        );
        assert_eq!(
            m.mask("root_password: two words\nnext: line"),
            format!("root_password: {MASK}\nnext: line")
        );
        assert!(is_secret_key("ssh_passphrase", &[]));
        assert!(is_secret_key("Proxy-Authorization", &[]));
        // A key that heads a mapping has nothing after it to hide.
        assert_eq!(m.mask("password:\n  a: b"), "password:\n  a: b");
    }

    #[test]
    fn a_long_string_of_keys_that_are_not_secrets_is_masked_in_linear_time() {
        let m = Masker::new(vec![], vec![]);
        let text = "monkey_pub:x ".repeat(100_000) + "password: hunter2";
        let started = std::time::Instant::now();
        let shown = m.mask(&text);
        assert!(shown.ends_with(&format!("password: {MASK}")));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn task_names_are_no_keys_but_what_follows_them_is_still_read() {
        let m = Masker::new(vec![], vec![]);
        for line in [
            "h deploy #1 FAILED at stage 8/11 ssh:keygen: connection refused",
            "FAILED at stage 2/2 secretstore:sync: the vault is sealed",
            "started 12:30, token cache at redis:6379",
        ] {
            assert_eq!(m.mask(line), line);
        }
        assert_eq!(
            m.mask("stage secretstore:sync says password: two words"),
            format!("stage secretstore:sync says password: {MASK}")
        );
        assert_eq!(
            m.mask("host_key_pub: AAAA, then token=abc def"),
            format!("host_key_pub: AAAA, then token={MASK}")
        );
        assert_eq!(
            m.mask(r#"{"password":"x y","user":"u"}"#),
            format!(r#"{{"password":"{MASK}","user":"u"}}"#)
        );
    }

    #[test]
    fn public_keys_stay_visible() {
        let m = Masker::new(vec![], vec![]);
        for line in [
            "sshpubkey: ssh-ed25519 AAAAC3Nza jarvis@loki",
            "root_key_pub: ssh-ed25519 AAAAC3Nza root@loki",
            "host_key_pub: 'ssh-ed25519 AAAAC3Nza'",
            "public_key=\"ssh-rsa AAAAB3 x\"",
        ] {
            assert_eq!(m.mask(line), line);
        }
    }

    #[test]
    fn clipboard_secrets_are_learnt_and_masked() {
        let clip: Clipboard = serde_json::from_str(
            r#"{"instance":{"hostname":"loki","root_password":"pa55word!"},"sshpubkey":"ssh-ed25519 A"}"#,
        )
        .unwrap();
        let m = Masker::new(vec![], vec![]).with_clipboard(&clip);
        assert_eq!(m.mask("echo pa55word!"), format!("echo {MASK}"));
        let shown = m.mask_clipboard(&clip);
        assert_eq!(shown["instance"]["root_password"], MASK);
        assert_eq!(shown["instance"]["hostname"], "loki");
        assert_eq!(shown["sshpubkey"], "ssh-ed25519 A");
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://jarvis:hunter2@db.example:5432/jarvis?sslmode=require"),
            "postgres://jarvis:***@db.example:5432/jarvis?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://p%40ss:s3cr@t@db/x"),
            "postgres://p%40ss:***@db/x"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/jarvis.db"),
            "sqlite:///var/lib/jarvis.db"
        );
        assert_eq!(
            redact_url("postgres://jarvis@db/x"),
            "postgres://jarvis@db/x"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        let url = "postgres://jarvis:hunter2@db.example/jarvis";
        let error = format!("cannot connect to {url}: password hunter2 refused");
        let shown = redact_url_in(&error, url);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://jarvis:***@db.example/jarvis"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter22");
        assert_eq!(format!("{s} {s:?} {:?}", Some(&s)), "*** *** Some(***)");
        assert_eq!(s.expose(), "hunter22");
    }
}

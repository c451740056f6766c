//! Secrets at rest: what workers hand back on their secret channel is sealed (ChaCha20-Poly1305)
//! before it reaches the store, and opened only to go into a later worker's environment.
//!
//! The key is `JARVIS_SEAL_KEY` (64 hex digits) when set, else the file `seal.key` in the data
//! folder, made with mode 0600 on first start. `ring` does the cryptography: it is already
//! linked for TLS, and its AEAD and random source are well reviewed.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The environment variable that may hold the sealing key.
pub const KEY_VARIABLE: &str = "JARVIS_SEAL_KEY";
/// The key file's name in the data folder.
pub const KEY_FILE: &str = "seal.key";

const KEY_LEN: usize = 32;

/// Seals and opens secrets, bound to the run and name they belong to.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{KEY_VARIABLE} must be 64 hexadecimal digits (32 bytes)")]
    BadVariable,
    #[error("{path} must hold 64 hexadecimal digits (32 bytes); it holds something else")]
    BadFile { path: String },
    #[error(
        "{path} is readable by others (mode {mode:o}); say 'chmod 600 {path}' so that only jarvis's user can read the key"
    )]
    OpenToOthers { path: String, mode: u32 },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("no random bytes from the system")]
    Random,
    #[error("a sealed secret does not open with this key (was the key changed?)")]
    Open,
}

impl Sealer {
    /// The sealer for a data folder: the key from the environment, else the key file there,
    /// made on first use.
    pub fn for_data_dir(data_dir: &Path) -> Result<Sealer, SealError> {
        if let Ok(text) = std::env::var(KEY_VARIABLE)
            && !text.trim().is_empty()
        {
            let bytes = from_hex(text.trim()).ok_or(SealError::BadVariable)?;
            return Sealer::from_key(&bytes).ok_or(SealError::BadVariable);
        }
        let path = data_dir.join(KEY_FILE);
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0o600);
                if mode & 0o077 != 0 {
                    return Err(SealError::OpenToOthers { path: shown, mode });
                }
                let bytes = from_hex(text.trim()).ok_or(SealError::BadFile {
                    path: shown.clone(),
                })?;
                Sealer::from_key(&bytes).ok_or(SealError::BadFile { path: shown })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let random = SystemRandom::new();
                let mut key = [0u8; KEY_LEN];
                random.fill(&mut key).map_err(|_| SealError::Random)?;
                let io = |action: &'static str| {
                    let shown = shown.clone();
                    move |source| SealError::Io {
                        action,
                        path: shown,
                        source,
                    }
                };
                std::fs::create_dir_all(data_dir).map_err(io("make the folder of"))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io("create"))?;
                file.write_all(format!("{}\n", to_hex(&key)).as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(io("write"))?;
                tracing::info!(path = %shown, "made a new key for secrets at rest");
                Sealer::from_key(&key).ok_or(SealError::Random)
            }
            Err(source) => Err(SealError::Io {
                action: "read",
                path: shown,
                source,
            }),
        }
    }

    /// A sealer with this 32-byte key.
    pub fn from_key(key: &[u8]) -> Option<Sealer> {
        if key.len() != KEY_LEN {
            return None;
        }
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).ok()?;
        Some(Sealer {
            key: LessSafeKey::new(unbound),
            random: SystemRandom::new(),
        })
    }

    /// The secret sealed: a fresh nonce, then the ciphertext and its tag. `context` (the run
    /// and the secret's name) is bound in, so a sealed value moved elsewhere does not open.
    pub fn seal(&self, context: &str, value: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut data = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + data.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// The secret, from what [`Sealer::seal`] made with the same context.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut data = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Whether `name` may name a secret: lowercase letters, digits and `_`, starting with a
/// letter, at most 64 characters. It becomes `JARVIS_SECRET_<NAME>` for later stages.
pub fn is_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The environment variable a later stage reads a secret from.
pub fn variable_for(name: &str) -> String {
    format!("JARVIS_SECRET_{}", name.to_ascii_uppercase())
}

/// Parses one line of the secret channel, `NAME=VALUE`. Pure.
pub fn parse_secret_line(line: &str) -> Result<(String, String), String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let Some((name, value)) = line.split_once('=') else {
        return Err("a secret line must read NAME=VALUE".into());
    };
    let name = name.trim();
    if !is_secret_name(name) {
        // The name is not echoed: a worker that wrote its value first would show it.
        return Err(
            "the name is no secret name (lowercase letters, digits and '_', starting with a letter, at most 64)"
                .into(),
        );
    }
    if value.is_empty() {
        return Err(format!("secret {name} is empty"));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_in_their_context() {
        let sealer = Sealer::from_key(&[7u8; 32]).unwrap();
        let sealed = sealer
            .seal("run 1 root_password", b"hunter2hunter2")
            .unwrap();
        assert!(
            !sealed.windows(14).any(|w| w == b"hunter2hunter2"),
            "the value is not in clear"
        );
        assert_eq!(
            sealer.open("run 1 root_password", &sealed).unwrap(),
            b"hunter2hunter2"
        );
        assert!(sealer.open("run 2 root_password", &sealed).is_err());
        let other = Sealer::from_key(&[8u8; 32]).unwrap();
        assert!(other.open("run 1 root_password", &sealed).is_err());
        assert!(sealer.open("x", &sealed[..5]).is_err());
    }

    #[test]
    fn the_key_file_is_made_private_and_refused_when_open_to_others() {
        let dir = tempfile::tempdir().unwrap();
        let first = Sealer::for_data_dir(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = first.seal("c", b"value").unwrap();
        let again = Sealer::for_data_dir(dir.path()).unwrap();
        assert_eq!(again.open("c", &sealed).unwrap(), b"value");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Sealer::for_data_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn secret_lines_are_name_equals_value() {
        assert_eq!(
            parse_secret_line("root_password=a=b c\r").unwrap(),
            ("root_password".to_string(), "a=b c".to_string())
        );
        assert!(parse_secret_line("Root=x").is_err());
        assert!(parse_secret_line("novalue").is_err());
        assert!(parse_secret_line("empty=").is_err());
        assert!(parse_secret_line("1abc=x").is_err());
        assert_eq!(variable_for("root_password"), "JARVIS_SECRET_ROOT_PASSWORD");
    }
}

//! The IRC line grammar (RFC 1459 framing with IRCv3 message tags): parsing what the server
//! sends, and building what jarvis sends so that no parameter can smuggle a second line in.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Whether a name can be a PRIVMSG target as one word, and whether it is a channel: the
/// same rules the configuration checks its nicks and channels by.
pub use crate::config::irc::{is_channel, valid_target};

/// The longest line accepted from a server: 8191 bytes of tags plus a 512-byte message.
pub const MAX_INCOMING: usize = 8191 + 512;
/// The longest line jarvis sends, without its CRLF.
pub const MAX_OUTGOING: usize = 510;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tags: Vec<(String, String)>,
    /// `nick!user@host` or a server name, without the leading `:`.
    pub source: Option<String>,
    /// Upper case (`PRIVMSG`, `001`).
    pub command: String,
    pub params: Vec<String>,
}

impl Message {
    /// Parses one line without its line ending; `None` for a line with no command.
    pub fn parse(line: &str) -> Option<Message> {
        let mut rest = line.trim_end_matches(['\r', '\n']);
        let mut tags = Vec::new();
        if let Some(after) = rest.strip_prefix('@') {
            let (raw, tail) = after.split_once(' ')?;
            for item in raw.split(';').filter(|t| !t.is_empty()) {
                let (key, value) = item.split_once('=').unwrap_or((item, ""));
                tags.push((key.to_string(), unescape_tag(value)));
            }
            rest = tail.trim_start_matches(' ');
        }
        let mut source = None;
        if let Some(after) = rest.strip_prefix(':') {
            let (src, tail) = after.split_once(' ')?;
            source = Some(src.to_string());
            rest = tail.trim_start_matches(' ');
        }
        let (command, mut rest) = match rest.split_once(' ') {
            Some((c, tail)) => (c, tail),
            None => (rest, ""),
        };
        if command.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_string());
                break;
            }
            match rest.split_once(' ') {
                Some((p, tail)) => {
                    params.push(p.to_string());
                    rest = tail;
                }
                None => {
                    params.push(rest.to_string());
                    break;
                }
            }
        }
        Some(Message {
            tags,
            source,
            command: command.to_ascii_uppercase(),
            params,
        })
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `i`th parameter, or "" when there is none.
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }

    /// The nick of the source (`alice` of `alice!a@host`), or the server name.
    pub fn nick(&self) -> Option<&str> {
        let src = self.source.as_deref()?;
        Some(src.split_once('!').map(|(n, _)| n).unwrap_or(src))
    }

    /// `user@host` of a user source.
    pub fn user_host(&self) -> Option<(&str, &str)> {
        let (_, uh) = self.source.as_deref()?.split_once('!')?;
        uh.split_once('@')
    }
}

fn unescape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("'{0}' is not a valid IRC parameter")]
    BadParam(String),
}

/// A command line from a command and its parameters. Every parameter but the last must be
/// one non-empty word; the last may hold spaces. Nothing may hold CR, LF or NUL. Lines past
/// the protocol's 510 bytes are cut at a character boundary.
pub fn build(command: &str, params: &[&str]) -> Result<String, LineError> {
    let mut line = command.to_string();
    for (i, p) in params.iter().enumerate() {
        if p.contains(['\r', '\n', '\0']) {
            return Err(LineError::BadParam(crate::text::one_line(p, 40)));
        }
        let last = i + 1 == params.len();
        if last && (p.is_empty() || p.contains(' ') || p.starts_with(':')) {
            line.push_str(" :");
        } else if p.is_empty() || p.contains(' ') || p.starts_with(':') {
            return Err(LineError::BadParam(crate::text::one_line(p, 40)));
        } else {
            line.push(' ');
        }
        line.push_str(p);
    }
    if line.len() > MAX_OUTGOING {
        let mut cut = MAX_OUTGOING;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    Ok(line)
}

/// Text for a PRIVMSG: every control character (CR, LF, NUL, CTCP's \x01, colour and bold
/// codes) becomes a space, whoever produced the text.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Reads CRLF- (or LF-) terminated lines, refusing to buffer past [`MAX_INCOMING`].
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: Vec::with_capacity(4096),
        }
    }

    /// The next line (lossily decoded), `Ok(None)` at end of stream.
    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(pos + 1);
                let line = std::mem::replace(&mut self.buf, rest);
                let text = String::from_utf8_lossy(&line);
                return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
            }
            if self.buf.len() > MAX_INCOMING {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the server sent a line longer than IRC allows",
                ));
            }
            let mut chunk = [0u8; 4096];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_source_and_trailing() {
        let m = Message::parse(
            "@account=alice;time=2024-01-01T00:00:00Z;x=a\\sb\\:c :alice!~a@host PRIVMSG #ops :jarvis: status  x",
        )
        .unwrap();
        assert_eq!(m.tag("account"), Some("alice"));
        assert_eq!(m.tag("x"), Some("a b;c"));
        assert_eq!(m.nick(), Some("alice"));
        assert_eq!(m.user_host(), Some(("~a", "host")));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, vec!["#ops", "jarvis: status  x"]);
    }

    #[test]
    fn parses_numerics_and_bare_commands() {
        let m = Message::parse(":irc.test 001 jarvis :Welcome").unwrap();
        assert_eq!(m.nick(), Some("irc.test"));
        assert_eq!(m.params, vec!["jarvis", "Welcome"]);
        let m = Message::parse("PING irc.test").unwrap();
        assert_eq!(m.params, vec!["irc.test"]);
        let m = Message::parse(":a!b@c JOIN #ops alice :Alice A").unwrap();
        assert_eq!(m.params, vec!["#ops", "alice", "Alice A"]);
        assert!(Message::parse("").is_none());
        assert!(Message::parse("@only-tags").is_none());
    }

    #[test]
    fn built_lines_cannot_carry_a_second_line() {
        assert_eq!(
            build("PRIVMSG", &["#ops", "hi there"]).unwrap(),
            "PRIVMSG #ops :hi there"
        );
        assert!(build("PRIVMSG", &["#ops", "a\r\nQUIT"]).is_err());
        assert!(build("PRIVMSG", &["#ops x", "a"]).is_err());
        assert_eq!(
            clean_text("a\r\nPRIVMSG #x :y\x01\x02\x03"),
            "a  PRIVMSG #x :y   "
        );
        let long = "é".repeat(400);
        let line = build("PRIVMSG", &["#ops", &long]).unwrap();
        assert!(line.len() <= MAX_OUTGOING);
        assert!(!valid_target("#a b"));
        assert!(!valid_target("a,b"));
        assert!(valid_target("#ops"));
    }

    #[tokio::test]
    async fn reads_lines_across_chunks_and_refuses_endless_ones() {
        let data: &[u8] = b"PING :a\r\nPRIVMSG #x :b\nPART";
        let mut r = LineReader::new(data);
        assert_eq!(r.next_line().await.unwrap().unwrap(), "PING :a");
        assert_eq!(r.next_line().await.unwrap().unwrap(), "PRIVMSG #x :b");
        assert_eq!(r.next_line().await.unwrap(), None);
        let endless = vec![b'a'; MAX_INCOMING + 5000];
        let mut r = LineReader::new(endless.as_slice());
        assert!(r.next_line().await.is_err());
    }
}

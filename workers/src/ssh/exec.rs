//! Commands on the host: built from trusted templates with every clipboard value quoted,
//! run over one SSH session each, output streamed into the log line by line.

use russh::ChannelMsg;
use russh::client::Handle;
use serde_json::Value;

use super::connect::Checker;
use crate::protocol::{self, Failure, Mapping};

/// A command as the pipeline wrote it.
#[derive(Debug, Clone)]
pub enum Template {
    /// A shell line from the pipeline's author, run as written; it takes no clipboard values.
    Line(String),
    /// A program and its arguments; `{a.b}` in an argument is the clipboard's value there,
    /// and every argument is shell-quoted.
    Argv(Vec<String>),
}

impl Template {
    pub fn from_value(value: &Value, field: &str) -> Result<Template, Failure> {
        match value {
            Value::String(line) if !line.trim().is_empty() => Ok(Template::Line(line.clone())),
            Value::Array(words) if !words.is_empty() => words
                .iter()
                .map(|w| match w {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(Failure::fatal(format!(
                        "{field} has an argument that is not a text"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Template::Argv),
            _ => Err(Failure::fatal(format!(
                "{field} must be a shell line or a list of program and arguments"
            ))),
        }
    }

    /// What the log and errors show: the template, never the values put into it.
    pub fn shown(&self) -> String {
        let text = match self {
            Template::Line(line) => line.clone(),
            Template::Argv(words) => words.join(" "),
        };
        let first: String = text.lines().next().unwrap_or("").chars().take(80).collect();
        if first.len() < text.len() {
            format!("{first}…")
        } else {
            first
        }
    }

    /// The command line for the remote shell, run through `sudo -n` when asked.
    pub fn render(&self, clipboard: &Mapping, sudo: bool) -> Result<String, Failure> {
        match self {
            Template::Line(line) if sudo => Ok(format!("sudo -n sh -c {}", quote(line)?)),
            Template::Line(line) => Ok(line.clone()),
            Template::Argv(words) => {
                let mut parts = Vec::with_capacity(words.len() + 2);
                if sudo {
                    parts.extend(["sudo".to_string(), "-n".to_string()]);
                }
                for word in words {
                    parts.push(quote(&fill(word, clipboard)?)?);
                }
                Ok(parts.join(" "))
            }
        }
    }
}

/// Quotes one word for a POSIX shell.
pub fn quote(word: &str) -> Result<String, Failure> {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .map_err(|_| Failure::fatal("a command argument holds a NUL byte"))
}

/// Replaces each `{a.b.c}` in `word` with the clipboard's text or number at `a.b.c`.
pub fn fill(word: &str, clipboard: &Mapping) -> Result<String, Failure> {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let path = &rest[start + 1..start + len];
        let is_path = !path.is_empty()
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        out.push_str(&rest[..start]);
        if is_path {
            let value = match protocol::get_path(clipboard, path) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(_) => {
                    return Err(Failure::fatal(format!(
                        "{{{path}}} in a command is not a text or a number"
                    )));
                }
                None => {
                    return Err(Failure::fatal(format!(
                        "{{{path}}} in a command: the clipboard has nothing there"
                    )));
                }
            };
            out.push_str(&value);
        } else {
            out.push_str(&rest[start..=start + len]);
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Runs `command` on the host, feeding it `stdin` when given, logging each output line as
/// `HOST| line`. A non-zero exit fails with the command's last output line.
pub async fn run(
    handle: &Handle<Checker>,
    host: &str,
    shown: &str,
    command: &str,
    stdin: Option<&[u8]>,
) -> Result<Vec<String>, Failure> {
    let lost = |e: russh::Error| Failure::retry(format!("{host}: lost the SSH session: {e}"));
    let mut channel = handle.channel_open_session().await.map_err(lost)?;
    channel.exec(true, command.as_bytes()).await.map_err(lost)?;
    if let Some(input) = stdin {
        channel.data(input).await.map_err(lost)?;
    }
    channel.eof().await.map_err(lost)?;

    let mut lines = LineSplitter::default();
    let mut status = None;
    let mut signal = None;
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                lines.push(&data, host);
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => {
                signal = Some(format!("{signal_name:?}"));
            }
            _ => {}
        }
    }
    let output = lines.finish(host);
    let last = output
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "no output".to_string());
    match (status, signal) {
        (Some(0), _) => Ok(output),
        (Some(code), _) => Err(Failure::fatal(format!(
            "`{shown}` failed on {host} (exit {code}): {last}"
        ))),
        (None, Some(signal)) => Err(Failure::fatal(format!(
            "`{shown}` was killed on {host} by {signal}: {last}"
        ))),
        (None, None) => Err(Failure::retry(format!(
            "`{shown}` on {host}: the session ended without an exit status"
        ))),
    }
}

/// Cuts a byte stream into lines, logging each complete one.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
    lines: Vec<String>,
}

impl LineSplitter {
    fn push(&mut self, data: &[u8], host: &str) {
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.emit(&line[..line.len() - 1], host);
        }
    }

    fn emit(&mut self, line: &[u8], host: &str) {
        let text = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string();
        protocol::log(&format!("{host}| {text}"));
        self.lines.push(text);
    }

    fn finish(mut self, host: &str) -> Vec<String> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.emit(&rest, host);
        }
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_quoted_never_pasted() {
        let clipboard = json!({"instance": {"hostname": "x; rm -rf /", "size": 512}});
        let clipboard = clipboard.as_object().unwrap();
        let words = |line: String| shlex::split(&line).unwrap();
        let t = Template::Argv(vec![
            "hostnamectl".into(),
            "set-hostname".into(),
            "{instance.hostname}".into(),
            "--size={instance.size}".into(),
            "{not a path}".into(),
        ]);
        assert_eq!(
            words(t.render(clipboard, false).unwrap()),
            [
                "hostnamectl",
                "set-hostname",
                "x; rm -rf /",
                "--size=512",
                "{not a path}"
            ]
        );
        assert_eq!(
            words(t.render(clipboard, true).unwrap())[..3],
            ["sudo", "-n", "hostnamectl"]
        );
        assert_eq!(
            t.shown(),
            "hostnamectl set-hostname {instance.hostname} --size={instance.size} {not a path}"
        );
        let missing = Template::Argv(vec!["echo".into(), "{instance.nothing}".into()]);
        assert!(missing.render(clipboard, false).is_err());
        let line = Template::Line("echo 'hi' && id -u".into());
        assert_eq!(
            words(line.render(clipboard, true).unwrap()),
            ["sudo", "-n", "sh", "-c", "echo 'hi' && id -u"]
        );
    }
}

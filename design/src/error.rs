//! Why a design was refused, and how text from outside is made safe to show in that reason.

/// Why a design was refused: one line for the user that says which field or what, and why.
///
/// The text never holds raw control characters (they are escaped), never a secret (the gist
/// token and the LDAP password are never formatted into it), and is kept short; the detail goes
/// to `tracing` logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesignError {
    /// The reference itself is not one jarvis accepts (a local path, another host, …).
    #[error("{0}")]
    Reference(String),
    /// The source answered, but has no such design (no gist, no entry, no file).
    #[error("{0}")]
    NotFound(String),
    /// The design was found but is refused: the field and the reason.
    #[error("{0}")]
    Invalid(String),
    /// The source could not be asked (unreachable, timed out, rate limited, refused our
    /// credentials, answered nonsense).
    #[error("{0}")]
    Source(String),
}

impl DesignError {
    /// True when trying again later may help (timeouts, rate limits, a source that is down).
    pub fn is_transient(&self) -> bool {
        matches!(self, DesignError::Source(_))
    }
}

/// The longest piece of outside text quoted in an error, in characters.
pub const QUOTE_MAX_CHARS: usize = 80;

/// Text from outside, made safe to put in a one-line reason: control characters, line breaks
/// and characters that reorder or hide text are escaped, and long text is cut with `…`.
pub fn printable(text: &str) -> String {
    printable_max(text, QUOTE_MAX_CHARS)
}

/// [`printable`] with a chosen length limit.
pub fn printable_max(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count >= max_chars {
            out.push('…');
            break;
        }
        if is_unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// True for characters never shown raw: controls (C0, DEL, C1), and the invisible or
/// bidirectional formatting characters that can make a line read differently than it is.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\nb\r\u{1b}[31m"), "a\\nb\\r\\u{1b}[31m");
        assert_eq!(printable("evil\u{202E}txt"), "evil\\u{202e}txt");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(200);
        let shown = printable(&long);
        assert_eq!(shown.chars().count(), QUOTE_MAX_CHARS + 1);
        assert!(shown.ends_with('…'));
    }
}

//! `${VAR}` in the configuration: read from the environment in every scalar style (plain,
//! single- and double-quoted, block, inside flow collections), with `${VAR:-default}` for a
//! value used when VAR is unset or empty, and `$${` for a literal `${`.
//!
//! Substitution works on the parsed scalars, never on raw text, so a value cannot change
//! the document's structure: a value with `: `, `#`, quotes or newlines stays one scalar.
//! How:
//!
//! 1. every `${…}` in the text is found, with its line and column;
//! 2. each is replaced by a placeholder of the same length in characters (private-use
//!    characters that any scalar style takes as plain content), so the text parses even
//!    where a raw `{` would not (a flow mapping), and positions do not move;
//! 3. the YAML parser then tells which scalars hold placeholders (those in comments are left
//!    alone) and what each such scalar's value is;
//! 4. each such scalar is written anew in the original text: as a plain scalar when its new
//!    value is a harmless word (so `port: ${PORT}` stays a number), else double-quoted with
//!    every special character escaped;
//! 5. [`Expanded::original_position`] maps a line and column of the new text back to the
//!    file the operator wrote, so every error still names their line.

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle};

/// Starts a placeholder; the next character is `BASE + index`, the rest is `PAD`.
const MARK: char = '\u{F8FF}';
const PAD: char = '\u{F8FE}';
const BASE: u32 = 0xE000;
/// Placeholder indexes fit between `BASE` and `PAD`.
const MAX_REFERENCES: usize = 0xF8FD - 0xE000;

/// One `${…}` (or `$${`) as written.
#[derive(Debug, Clone)]
struct Reference {
    /// Character offset and length in the original text.
    start: usize,
    len: usize,
    /// 1-based.
    line: usize,
    column: usize,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// `${NAME}` or `${NAME:-default}`.
    Var {
        name: String,
        default: Option<String>,
    },
    /// `$${`: a literal `${`.
    Escape,
    /// `${` not followed by `NAME}` or `NAME:-default}`.
    Malformed,
}

/// A variable the configuration needs and the environment lacks, or a malformed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The configuration text with every reference in a scalar replaced by its value.
#[derive(Debug)]
pub struct Expanded {
    pub text: String,
    /// (original start, original end, new length), in characters, in order.
    edits: Vec<(usize, usize, usize)>,
    original_lines: Vec<usize>,
    new_lines: Vec<usize>,
}

impl Expanded {
    /// Where a 1-based line and column of [`Expanded::text`] was in the original text.
    /// A position inside a rewritten scalar maps to that scalar's start.
    pub fn original_position(&self, line: u64, column: u64) -> (u64, u64) {
        let Some(&line_start) = self.new_lines.get((line as usize).saturating_sub(1)) else {
            return (line, column);
        };
        let index = line_start + (column as usize).saturating_sub(1);
        let mut shift: isize = 0;
        let mut original = None;
        for &(start, end, new_len) in &self.edits {
            let new_start = (start as isize + shift) as usize;
            if index < new_start {
                break;
            }
            if index < new_start + new_len {
                original = Some(start);
                break;
            }
            shift += new_len as isize - (end - start) as isize;
        }
        let original = original.unwrap_or((index as isize - shift).max(0) as usize);
        let line_index = match self.original_lines.binary_search(&original) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        (
            line_index as u64 + 1,
            (original - self.original_lines[line_index]) as u64 + 1,
        )
    }
}

/// Character offsets at which lines start.
fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, c) in text.chars().enumerate() {
        if c == '\n' {
            starts.push(i + 1);
        }
    }
    starts
}

/// Every `${…}` and `$${` in `chars`.
fn scan(chars: &[char]) -> Vec<Reference> {
    let mut found = Vec::new();
    let (mut line, mut column) = (1, 1);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' && chars.get(i + 1) == Some(&'$') && chars.get(i + 2) == Some(&'{') {
            found.push(Reference {
                start: i,
                len: 3,
                line,
                column,
                kind: Kind::Escape,
            });
            i += 3;
            column += 3;
            continue;
        }
        if c == '$' && chars.get(i + 1) == Some(&'{') {
            let (len, kind) = reference_at(&chars[i..]);
            found.push(Reference {
                start: i,
                len,
                line,
                column,
                kind,
            });
            i += len;
            column += len;
            continue;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
        i += 1;
    }
    found
}

/// The reference at the start of `chars` (which begins with `${`): its length and kind.
fn reference_at(chars: &[char]) -> (usize, Kind) {
    let mut i = 2;
    let name_start = i;
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
        i += 1;
    }
    let name: String = chars[name_start..i].iter().collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return (2, Kind::Malformed);
    }
    match chars.get(i) {
        Some('}') => (
            i + 1,
            Kind::Var {
                name,
                default: None,
            },
        ),
        Some(':') if chars.get(i + 1) == Some(&'-') => {
            let default_start = i + 2;
            let mut j = default_start;
            while j < chars.len() && chars[j] != '}' && chars[j] != '\n' {
                j += 1;
            }
            if chars.get(j) != Some(&'}') {
                return (2, Kind::Malformed);
            }
            let default = chars[default_start..j].iter().collect();
            (
                j + 1,
                Kind::Var {
                    name,
                    default: Some(default),
                },
            )
        }
        _ => (2, Kind::Malformed),
    }
}

/// Expands every reference that stands in a scalar. Returns every problem at once (each
/// unset variable, each malformed `${`), or, when the text is no YAML at all, the text with
/// placeholders so that the YAML error is reported at the right place.
pub fn expand(text: &str, env: &HashMap<String, String>) -> Result<Expanded, Vec<Problem>> {
    let chars: Vec<char> = text.chars().collect();
    let references = scan(&chars);
    let unchanged = || Expanded {
        text: text.to_string(),
        edits: Vec::new(),
        original_lines: line_starts(text),
        new_lines: line_starts(text),
    };
    if references.is_empty() {
        return Ok(unchanged());
    }
    if references.len() > MAX_REFERENCES {
        return Err(vec![Problem {
            line: 1,
            column: 1,
            message: format!("more than {MAX_REFERENCES} ${{…}} references"),
        }]);
    }

    // Placeholders of the same length, so that the parser's positions are the file's.
    let mut masked = chars.clone();
    for (index, r) in references.iter().enumerate() {
        masked[r.start] = MARK;
        masked[r.start + 1] = char::from_u32(BASE + index as u32).unwrap_or(PAD);
        for c in &mut masked[r.start + 2..r.start + r.len] {
            *c = PAD;
        }
    }
    let masked: String = masked.into_iter().collect();

    // Values of the references.
    let mut problems = Vec::new();
    let values: Vec<Option<String>> = references
        .iter()
        .map(|r| match &r.kind {
            Kind::Escape => Some("${".to_string()),
            Kind::Malformed => None,
            Kind::Var { name, default } => match (env.get(name), default) {
                (Some(v), Some(_)) if !v.is_empty() => Some(v.clone()),
                (Some(_), Some(d)) | (None, Some(d)) => Some(d.clone()),
                (Some(v), None) => Some(v.clone()),
                (None, None) => None,
            },
        })
        .collect();

    // The scalars that hold placeholders.
    let mut edits = Vec::new();
    for event in Parser::new_from_str(&masked) {
        let Ok((event, span)) = event else {
            // Not YAML: serde-saphyr will say where, on the same positions.
            return Ok(Expanded {
                text: masked.clone(),
                edits: Vec::new(),
                original_lines: line_starts(text),
                new_lines: line_starts(&masked),
            });
        };
        let Event::Scalar(value, style, _, _) = event else {
            continue;
        };
        if !value.contains(MARK) {
            continue;
        }
        let mut expanded = String::new();
        let mut complete = true;
        let mut value_chars = value.chars().peekable();
        while let Some(c) = value_chars.next() {
            if c != MARK {
                expanded.push(c);
                continue;
            }
            let index = value_chars
                .next()
                .map(|c| (c as u32).wrapping_sub(BASE) as usize)
                .unwrap_or(usize::MAX);
            while value_chars.peek() == Some(&PAD) {
                value_chars.next();
            }
            let (Some(reference), Some(value)) = (references.get(index), values.get(index)) else {
                continue;
            };
            match (value, &reference.kind) {
                (Some(v), _) => expanded.push_str(v),
                (None, Kind::Var { name, .. }) => {
                    complete = false;
                    problems.push(Problem {
                        line: reference.line,
                        column: reference.column,
                        message: format!(
                            "`{name}` is not set in the environment (set it, or write ${{{name}:-DEFAULT}})"
                        ),
                    });
                }
                (None, _) => {
                    complete = false;
                    problems.push(Problem {
                        line: reference.line,
                        column: reference.column,
                        message: "`${` must start ${NAME} or ${NAME:-DEFAULT}; write $${ for a literal `${`".into(),
                    });
                }
            }
        }
        if !complete {
            continue;
        }
        let (mut start, end) = (span.start.index(), span.end.index());
        let mut trailing_newline = false;
        if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
            // The span holds the content only: take the `|`/`>` header along.
            if let Some(header) = block_header(&chars, start) {
                start = header;
            }
            trailing_newline = chars.get(end.wrapping_sub(1)) == Some(&'\n');
        }
        let mut written = if style == ScalarStyle::Plain && is_plain_word(&expanded) {
            expanded
        } else {
            double_quoted(&expanded)
        };
        if trailing_newline {
            written.push('\n');
        }
        edits.push((start, end, written));
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(problems);
    }

    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut recorded = Vec::new();
    for (start, end, written) in edits {
        if start < at {
            continue;
        }
        out.extend(&chars[at..start]);
        out.push_str(&written);
        recorded.push((start, end, written.chars().count()));
        at = end;
    }
    out.extend(&chars[at..]);
    Ok(Expanded {
        new_lines: line_starts(&out),
        original_lines: line_starts(text),
        text: out,
        edits: recorded,
    })
}

/// The offset of the `|` or `>` that opens the block scalar whose content starts at
/// `content`: on the last line before it that is not blank.
fn block_header(chars: &[char], content: usize) -> Option<usize> {
    let mut line_end = chars[..content].iter().rposition(|&c| c == '\n')?;
    loop {
        let line_start = chars[..line_end]
            .iter()
            .rposition(|&c| c == '\n')
            .map_or(0, |i| i + 1);
        let line = &chars[line_start..line_end];
        if line.iter().all(|c| c.is_whitespace()) {
            line_end = line_start.checked_sub(1)?;
            continue;
        }
        for (i, &c) in line.iter().enumerate() {
            let after_space = i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t';
            if (c == '|' || c == '>') && after_space && is_header_rest(&line[i + 1..]) {
                return Some(line_start + i);
            }
        }
        return None;
    }
}

/// `[-+0-9]*` then blanks, then nothing or a comment.
fn is_header_rest(rest: &[char]) -> bool {
    let indicators = rest
        .iter()
        .take_while(|c| matches!(c, '-' | '+' | '0'..='9'))
        .count();
    let rest = &rest[indicators..];
    let blanks = rest
        .iter()
        .take_while(|c| **c == ' ' || **c == '\t')
        .count();
    let rest = &rest[blanks..];
    rest.is_empty() || (rest[0] == '#' && blanks > 0) || rest == ['\r']
}

/// A value that reads the same as a plain scalar in any context: `6697`, `eu-west`,
/// `/etc/jarvis`, `alice@example.com`.
fn is_plain_word(value: &str) -> bool {
    let mut chars = value.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || matches!(first, '/' | '_' | '.'))
        && chars.all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '.' | '/' | '+' | '=' | '-' | '@' | ':' | '%')
        })
        && !value.ends_with(':')
}

/// `value` as a YAML double-quoted scalar on one line.
pub fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
                || ('\u{FFFE}'..='\u{FFFF}').contains(&c) =>
            {
                if (c as u32) <= 0xFFFF {
                    out.push_str(&format!("\\u{:04X}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08X}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("TOKEN".to_string(), "s3cret".to_string()),
            ("PORT".to_string(), "6697".to_string()),
            ("EMPTY".to_string(), String::new()),
            (
                "NASTY".to_string(),
                "a: b\n- c # d\n\"e' {f}, [g]\\".to_string(),
            ),
        ])
    }

    fn text_of(yaml: &str) -> String {
        expand(yaml, &env())
            .map(|e| e.text)
            .unwrap_or_else(|p| panic!("{p:?}"))
    }

    #[test]
    fn every_scalar_style_is_expanded() {
        assert_eq!(text_of("a: ${TOKEN}\n"), "a: s3cret\n");
        assert_eq!(text_of("a: \"${TOKEN}\"\n"), "a: \"s3cret\"\n");
        assert_eq!(text_of("a: '${TOKEN}'\n"), "a: \"s3cret\"\n");
        assert_eq!(
            text_of("a: {b: ${TOKEN}, c: 1}\n"),
            "a: {b: s3cret, c: 1}\n"
        );
        assert_eq!(text_of("a: [x-${TOKEN}-y]\n"), "a: [x-s3cret-y]\n");
        assert_eq!(
            text_of("a: |\n  k=${TOKEN}\nb: 1\n"),
            "a: \"k=s3cret\\n\"\nb: 1\n"
        );
        assert_eq!(text_of("a: ${PORT}\n"), "a: 6697\n");
    }

    #[test]
    fn defaults_and_escapes() {
        assert_eq!(text_of("a: ${NOPE:-fallback}\n"), "a: fallback\n");
        assert_eq!(text_of("a: ${EMPTY:-fallback}\n"), "a: fallback\n");
        assert_eq!(text_of("a: ${EMPTY}\n"), "a: \"\"\n");
        assert_eq!(text_of("a: ${TOKEN:-fallback}\n"), "a: s3cret\n");
        assert_eq!(text_of("a: $${TOKEN}\n"), "a: \"${TOKEN}\"\n");
        // Comments are not read.
        assert_eq!(text_of("a: 1 # ${NOPE}\n"), "a: 1 # ${NOPE}\n");
    }

    #[test]
    fn a_value_with_yaml_syntax_stays_one_scalar() {
        let text = text_of("a: ${NASTY}\nb: {c: ${NASTY}}\n");
        assert_eq!(
            text,
            "a: \"a: b\\n- c # d\\n\\\"e' {f}, [g]\\\\\"\nb: {c: \"a: b\\n- c # d\\n\\\"e' {f}, [g]\\\\\"}\n"
        );
    }

    #[test]
    fn every_missing_variable_is_named_with_its_place() {
        let problems = expand(
            "a: ${ONE}\nb:\n  - \"x ${TWO} ${ONE}\"\nc: ${3bad}\n",
            &env(),
        )
        .unwrap_err();
        let shown: Vec<String> = problems
            .iter()
            .map(|p| format!("{}:{} {}", p.line, p.column, p.message))
            .collect();
        assert_eq!(shown.len(), 4, "{shown:?}");
        assert!(shown[0].starts_with("1:4 `ONE`"), "{shown:?}");
        assert!(shown[1].starts_with("3:8 `TWO`"), "{shown:?}");
        assert!(shown[2].starts_with("3:15 `ONE`"), "{shown:?}");
        assert!(shown[3].starts_with("4:4 `${` must"), "{shown:?}");
    }

    #[test]
    fn positions_map_back_to_the_file() {
        let e = expand("a: ${NASTY}\nb: {k: ${TOKEN}, x: 1}\nc: [1, 2]\n", &env()).unwrap();
        // `x` on line 2 (column 18 of the original) moved: its new column maps back.
        let new_line = e.text.lines().nth(1).unwrap();
        let new_column = new_line.find(" x").unwrap() as u64 + 2;
        assert_eq!(e.original_position(2, new_column), (2, 18));
        assert_eq!(e.original_position(3, 4), (3, 4));
        // Inside a rewritten scalar: its start.
        assert_eq!(e.original_position(1, 8), (1, 4));
    }
}

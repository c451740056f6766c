//! Text that leaves jarvis: one line, no control characters, split to fit a protocol's line
//! length on word boundaries, durations and sizes the way people read them. Pure.

/// Folds `text` into one line: control characters (CR, LF, IRC formatting codes, ESC…)
/// become spaces and runs of spaces shrink; longer than `max_chars` it ends with `…`.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars + 3));
    let mut last_space = true;
    let mut count = 0;
    for c in text.chars() {
        let c = if c.is_control() || is_invisible_format(c) {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        if count == max_chars {
            out.push('…');
            return out.trim_end().to_string();
        }
        out.push(c);
        count += 1;
    }
    out.trim_end().to_string()
}

/// Unicode format characters that could reorder or hide text (bidi overrides, zero-width).
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Splits one line into pieces of at most `max_bytes` bytes, on spaces where possible and
/// never inside a UTF-8 character.
pub fn split_to_fit(line: &str, max_bytes: usize) -> Vec<String> {
    let max_bytes = max_bytes.max(8);
    let mut pieces = Vec::new();
    let mut rest = line.trim();
    while rest.len() > max_bytes {
        let mut cut = max_bytes;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let at_space = rest[..cut].rfind(' ').filter(|&i| i > max_bytes / 3);
        let (head, tail) = match at_space {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&rest[..cut], &rest[cut..]),
        };
        pieces.push(head.trim_end().to_string());
        rest = tail.trim_start();
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest.to_string());
    }
    pieces
}

/// `38s`, `4m 12s`, `1h 3m`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        if ms < 1000 {
            return format!("{:.1}s", ms as f64 / 1000.0);
        }
        return format!("{s}s");
    }
    let (m, s) = (s / 60, s % 60);
    if m < 60 {
        return if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m {s}s")
        };
    }
    let (h, m) = (m / 60, m % 60);
    if m == 0 {
        format!("{h}h")
    } else {
        format!("{h}h {m}m")
    }
}

/// `512 B`, `4 KiB`, `1 MiB`.
pub fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    if n >= KIB * KIB && n.is_multiple_of(KIB * KIB) {
        format!("{} MiB", n / (KIB * KIB))
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_characters_never_survive() {
        assert_eq!(
            one_line("a\r\nPRIVMSG #x :pwned\x01\x02b", 100),
            "a PRIVMSG #x :pwned b"
        );
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("\u{202E}evil", 10), "evil");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(400), "0.4s");
        assert_eq!(duration(38_000), "38s");
        assert_eq!(duration(252_000), "4m 12s");
        assert_eq!(duration(3_780_000), "1h 3m");
        assert_eq!(bytes(1024 * 1024), "1 MiB");
    }

    #[test]
    fn splitting_prefers_spaces() {
        let parts = split_to_fit("aaaa bbbb cccc dddd", 10);
        assert_eq!(parts, vec!["aaaa bbbb", "cccc dddd"]);
    }

    proptest! {
        #[test]
        fn split_pieces_fit_and_keep_every_word(text in "[a-zé ]{0,300}", max in 8usize..80) {
            let line = one_line(&text, 1000);
            let parts = split_to_fit(&line, max);
            for p in &parts {
                prop_assert!(p.len() <= max, "{p:?} longer than {max}");
            }
            let joined: String = parts.concat().split_whitespace().collect();
            let original: String = line.split_whitespace().collect();
            prop_assert_eq!(joined, original);
        }

        #[test]
        fn one_line_has_no_control_characters(text in any::<String>()) {
            let line = one_line(&text, 500);
            prop_assert!(!line.chars().any(|c| c.is_control()));
        }
    }
}

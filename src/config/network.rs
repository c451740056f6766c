//! What every chat network's settings share, whatever its protocol: a name that is one word
//! and unique across all networks, and the pace of its lines.

use serde::Deserialize;

/// How fast lines may go out: up to `burst` at once, then `per_second`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub burst: u32,
    pub per_second: f64,
}

impl RateConfig {
    /// `at.rate: …` when a value would stop the network's lines or mean nothing.
    pub fn check(&self, at: &str) -> Result<(), String> {
        if self.burst == 0 || self.per_second.is_nan() || self.per_second <= 0.0 {
            return Err(format!("{at}: burst and per_second must be positive"));
        }
        Ok(())
    }
}

/// `at.name: …` unless `name` is one word.
pub fn check_name(name: &str, at: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains(char::is_control) {
        return Err(format!("{at}.name: must be one word"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_let_lines_out() {
        let rate = |burst, per_second| RateConfig { burst, per_second };
        assert!(rate(5, 0.8).check("chat.irc[0].rate").is_ok());
        for bad in [rate(0, 1.0), rate(5, 0.0), rate(5, -1.0), rate(5, f64::NAN)] {
            assert_eq!(
                bad.check("chat.xmpp[1].rate").unwrap_err(),
                "chat.xmpp[1].rate: burst and per_second must be positive"
            );
        }
    }

    #[test]
    fn names_are_one_word() {
        assert!(check_name("libera", "chat.irc[0]").is_ok());
        assert_eq!(
            check_name("my net", "chat.xmpp[0]").unwrap_err(),
            "chat.xmpp[0].name: must be one word"
        );
        assert!(check_name("", "chat.irc[0]").is_err());
    }
}

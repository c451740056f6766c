//! The one duration syntax of jarvis's configuration, for every timeout and interval
//! (stages, limits, chat networks, design sources):
//!
//! - a number with a unit: `500ms`, `30s`, `5m`, `2h`, `1d`, fractions allowed (`1.5s`);
//! - several of them added up: `1h 30m` or `1h30m`;
//! - a bare number: seconds (`timeout: 120` is two minutes).
//!
//! Units: `ms`, `s` (`sec`, `secs`, `second(s)`), `m` (`min`, `mins`, `minute(s)`),
//! `h` (`hr`, `hour(s)`), `d` (`day(s)`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// What [`parse`] says about text it does not take.
pub const EXPECTING: &str =
    "a duration: a number of seconds, or with units like 500ms, 30s, 5m, 1h 30m";

/// Parses the duration syntax described in the module documentation.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("'{text}' is not {EXPECTING}");
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = trimmed.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" | "msec" | "msecs" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(number * scale).map_err(|_| bad())?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// For `#[serde(deserialize_with = "…")]`: a string in the syntax above, or a number of
/// seconds.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(EXPECTING)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v).map_err(|_| E::custom(format!("{v} is not {EXPECTING}")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
    }
    d.deserialize_any(DurationVisitor)
}

/// The same for an optional duration.
pub fn deserialize_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Wrapped(Duration);
    impl<'de> serde::Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Wrapped, D::Error> {
            deserialize(d).map(Wrapped)
        }
    }
    Ok(<Option<Wrapped> as serde::Deserialize>::deserialize(d)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_syntax() {
        let s = Duration::from_secs;
        assert_eq!(parse("120"), Ok(s(120)));
        assert_eq!(parse("30s"), Ok(s(30)));
        assert_eq!(parse("5m"), Ok(s(300)));
        assert_eq!(parse("1h 30m"), Ok(s(5400)));
        assert_eq!(parse("1h30m"), Ok(s(5400)));
        assert_eq!(parse("2 minutes"), Ok(s(120)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1d"), Ok(s(86_400)));
        for bad in ["", "5 parsecs", "-3s", "m", "1h-30m", "s5"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_and_strings_deserialize_alike() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "deserialize")]
            a: Duration,
            #[serde(deserialize_with = "deserialize")]
            b: Duration,
            #[serde(default, deserialize_with = "deserialize_option")]
            c: Option<Duration>,
            #[serde(default, deserialize_with = "deserialize_option")]
            d: Option<Duration>,
        }
        let t: T = serde_saphyr::from_str("a: 120\nb: 2m\nc: 1h 30m\n").unwrap();
        assert_eq!(
            (t.a, t.b),
            (Duration::from_secs(120), Duration::from_secs(120))
        );
        assert_eq!(t.c, Some(Duration::from_secs(5400)));
        assert_eq!(t.d, None);
    }
}

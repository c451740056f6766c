//! Host names: RFC 1123 labels and DNS names.

/// Checks an RFC 1123 label: 1–63 letters, digits and inner hyphens. The error completes
/// the sentence "'NAME' …".
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("is empty".into());
    }
    if label.len() > 63 {
        return Err("is longer than 63 characters (RFC 1123)".into());
    }
    if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err("is not an RFC 1123 host name (letters, digits and '-' only)".into());
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("starts or ends with '-' (RFC 1123)".into());
    }
    Ok(())
}

/// Checks a fully qualified DNS name: at least two RFC 1123 labels, at most 253 characters,
/// an optional final dot, and a top-level label that is not all digits.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err("is not a fully qualified domain name (no domain)".into());
    }
    for label in &labels {
        check_label(label).map_err(|why| format!("has a label '{label}' that {why}"))?;
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("ends in an all-numeric label (an address, not a name)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn labels() {
        for good in ["loki", "a", "web-01", "0day", &"a".repeat(63)] {
            assert!(check_label(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "x-",
            "lo_ki",
            "lo.ki",
            "lökí",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_names() {
        for good in ["loki.example.com", "loki.example.com.", "a.b"] {
            assert!(check_dns_name(good).is_ok(), "{good}");
        }
        for bad in [
            "loki",
            "loki..com",
            "1.2.3.4",
            "-a.com",
            "a.com..",
            ".a.com",
        ] {
            assert!(check_dns_name(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn accepted_labels_are_ldh(label in "\\PC{0,70}") {
            if check_label(&label).is_ok() {
                prop_assert!(label.len() <= 63 && !label.is_empty());
                prop_assert!(label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            }
        }
    }
}

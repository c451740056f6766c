//! LDAP distinguished names (RFC 4514), parsed without I/O so that a DN from chat can be
//! checked against the configured base before anything is asked of the server.

use std::fmt;

/// One attribute-value assertion of an RDN: the attribute type as written, and the value
/// with its escapes decoded.
#[derive(Debug, Clone)]
pub struct Ava {
    pub attribute: String,
    pub value: String,
}

/// A parsed distinguished name: its RDNs from the leaf (`cn=loki`) to the root (`dc=com`).
#[derive(Debug, Clone)]
pub struct Dn {
    rdns: Vec<Vec<Ava>>,
}

impl Dn {
    /// Parses a DN such as `cn=loki,ou=Hosts,dc=example,dc=com`. Values given as `#hex` BER
    /// and the obsolete `;` separator are refused; spaces around separators are tolerated.
    pub fn parse(text: &str) -> Result<Dn, String> {
        if text.trim().is_empty() {
            return Err("the DN is empty".into());
        }
        let mut rdns = Vec::new();
        let mut rdn = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            let attribute = read_attribute(&mut chars)?;
            let value = read_value(&mut chars)?;
            rdn.push(Ava { attribute, value });
            match chars.next() {
                None => {
                    rdns.push(std::mem::take(&mut rdn));
                    break;
                }
                Some(',') => rdns.push(std::mem::take(&mut rdn)),
                Some('+') => {}
                Some(c) => return Err(format!("unexpected '{}' in the DN", c.escape_default())),
            }
        }
        Ok(Dn { rdns })
    }

    /// The number of RDNs.
    pub fn len(&self) -> usize {
        self.rdns.len()
    }

    /// Never true for a parsed DN; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }

    /// True when `self` is strictly below `base` (has more RDNs and ends with base's RDNs).
    /// Attribute types compare case-insensitively and values ignoring case, as the
    /// directory's `caseIgnoreMatch` does for the naming attributes in use (cn, ou, dc).
    pub fn is_under(&self, base: &Dn) -> bool {
        self.rdns.len() > base.rdns.len()
            && self.rdns[self.rdns.len() - base.rdns.len()..]
                .iter()
                .zip(&base.rdns)
                .all(|(a, b)| rdn_eq(a, b))
    }

    /// The first (leaf) RDN's first attribute and value, e.g. `("cn", "loki")`.
    pub fn leaf(&self) -> Option<&Ava> {
        self.rdns.first().and_then(|rdn| rdn.first())
    }
}

fn rdn_eq(a: &[Ava], b: &[Ava]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter().any(|y| {
                x.attribute.eq_ignore_ascii_case(&y.attribute)
                    && x.value.to_lowercase() == y.value.to_lowercase()
            })
        })
}

impl fmt::Display for Dn {
    /// The DN in RFC 4514 string form, values escaped, as sent to the server.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            for (j, ava) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str("+")?;
                }
                write!(f, "{}={}", ava.attribute, ldap3::dn_escape(&ava.value))?;
            }
        }
        Ok(())
    }
}

impl PartialEq for Dn {
    fn eq(&self, other: &Dn) -> bool {
        self.rdns.len() == other.rdns.len()
            && self.rdns.iter().zip(&other.rdns).all(|(a, b)| rdn_eq(a, b))
    }
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

fn skip_spaces(chars: &mut Chars) {
    while chars.peek() == Some(&' ') {
        chars.next();
    }
}

fn read_attribute(chars: &mut Chars) -> Result<String, String> {
    skip_spaces(chars);
    let mut attribute = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            attribute.push(c);
            chars.next();
        } else {
            break;
        }
    }
    skip_spaces(chars);
    if attribute.is_empty() || !attribute.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("an RDN has no attribute name".into());
    }
    if chars.next() != Some('=') {
        return Err(format!("the RDN '{attribute}' has no '='"));
    }
    Ok(attribute)
}

fn read_value(chars: &mut Chars) -> Result<String, String> {
    skip_spaces(chars);
    if chars.peek() == Some(&'#') {
        return Err("BER-encoded (#…) DN values are not accepted".into());
    }
    let mut bytes = Vec::new();
    // Trailing unescaped spaces are not part of the value.
    let mut trailing_spaces = 0;
    while let Some(&c) = chars.peek() {
        match c {
            ',' | '+' => break,
            ';' => return Err("';' is not a DN separator here; use ','".into()),
            '"' | '<' | '>' | '=' | '\0' => {
                return Err(format!(
                    "'{}' must be escaped in a DN value",
                    c.escape_default()
                ));
            }
            '\\' => {
                chars.next();
                trailing_spaces = 0;
                match chars.next() {
                    Some(e @ (' ' | '"' | '#' | '+' | ',' | ';' | '<' | '=' | '>' | '\\')) => {
                        bytes.push(e as u8)
                    }
                    Some(h) if h.is_ascii_hexdigit() => {
                        let l = chars
                            .next()
                            .filter(char::is_ascii_hexdigit)
                            .ok_or("a '\\' escape in the DN is not two hex digits")?;
                        let pair = format!("{h}{l}");
                        bytes.push(u8::from_str_radix(&pair, 16).map_err(|e| e.to_string())?);
                    }
                    _ => return Err("a '\\' in the DN escapes nothing valid".into()),
                }
            }
            c => {
                chars.next();
                trailing_spaces = if c == ' ' { trailing_spaces + 1 } else { 0 };
                let mut buf = [0; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    bytes.truncate(bytes.len() - trailing_spaces);
    if bytes.is_empty() {
        return Err("an RDN has an empty value".into());
    }
    String::from_utf8(bytes).map_err(|_| "a DN value is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares_under_base() {
        let base = Dn::parse("ou=Hosts,dc=example,dc=com").unwrap();
        let dn = Dn::parse("cn=loki, OU=hosts,dc=Example,dc=com").unwrap();
        assert!(dn.is_under(&base));
        assert!(!base.is_under(&base));
        assert!(
            !Dn::parse("cn=loki,dc=example,dc=com")
                .unwrap()
                .is_under(&base)
        );
        assert_eq!(dn.leaf().unwrap().value, "loki");
    }

    #[test]
    fn escapes_round_trip() {
        let dn = Dn::parse(r"cn=a\,b\2Bc,dc=x").unwrap();
        assert_eq!(dn.leaf().unwrap().value, "a,b+c");
        assert_eq!(Dn::parse(&dn.to_string()).unwrap(), dn);
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "loki",
            "cn=",
            "cn=a,,dc=x",
            "=x",
            "cn=#0403",
            "cn=a;dc=x",
            "cn=a\\",
            "cn=a\\zz",
            "cn=a=b",
            "cn=*)(objectClass=*,dc=x",
        ] {
            assert!(Dn::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}

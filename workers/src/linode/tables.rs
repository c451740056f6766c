//! From the design's words to Linode's ids: datacenter → region, size → plan type, guestid →
//! image. A `linode.regions`, `linode.types` or `linode.images` mapping on the clipboard adds to
//! and overrides the built-in table; a value that already has the shape of an id passes as it
//! is; anything else fails with the field and the names the table knows.

use serde_json::Value;

use crate::protocol::{self, Failure, Mapping};

const REGIONS: &[(&str, &str)] = &[
    ("Atlanta", "us-southeast"),
    ("Chicago", "us-ord"),
    ("Dallas", "us-central"),
    ("Frankfurt", "eu-central"),
    ("Fremont", "us-west"),
    ("London", "eu-west"),
    ("Mumbai", "ap-west"),
    ("Newark", "us-east"),
    ("Paris", "fr-par"),
    ("Seattle", "us-sea"),
    ("Singapore", "ap-south"),
    ("Sydney", "ap-southeast"),
    ("Tokyo", "ap-northeast"),
    ("Toronto", "ca-central"),
];

/// Sizes are the memory the design asks for, in MB; a request below the smallest plan gets
/// the smallest plan (the 512 MB Linodes are long gone).
const TYPES: &[(&str, &str)] = &[
    ("512", "g6-nanode-1"),
    ("1024", "g6-nanode-1"),
    ("2048", "g6-standard-1"),
    ("4096", "g6-standard-2"),
    ("8192", "g6-standard-4"),
    ("16384", "g6-standard-6"),
    ("32768", "g6-standard-8"),
];

const IMAGES: &[(&str, &str)] = &[
    ("Debian 11", "linode/debian11"),
    ("Debian 12", "linode/debian12"),
    ("Debian 13", "linode/debian13"),
    ("Ubuntu 22.04", "linode/ubuntu22.04"),
    ("Ubuntu 24.04", "linode/ubuntu24.04"),
    ("AlmaLinux 9", "linode/almalinux9"),
    ("Rocky 9", "linode/rocky9"),
    ("Alpine 3.20", "linode/alpine3.20"),
];

/// Which table, where its overrides live on the clipboard, and what a ready id looks like.
#[derive(Clone, Copy)]
pub enum Table {
    Region,
    Type,
    Image,
}

impl Table {
    fn builtin(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Table::Region => REGIONS,
            Table::Type => TYPES,
            Table::Image => IMAGES,
        }
    }

    fn clipboard_key(self) -> &'static str {
        match self {
            Table::Region => "linode.regions",
            Table::Type => "linode.types",
            Table::Image => "linode.images",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Table::Region => "region",
            Table::Type => "plan type",
            Table::Image => "image",
        }
    }

    /// True for a value that is already a Linode id: `us-east`, `g6-standard-2`,
    /// `linode/debian12`, `private/1234`.
    fn is_id(self, value: &str) -> bool {
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        };
        match self {
            Table::Region => plain(value) && value.contains('-'),
            Table::Type => {
                plain(value)
                    && value.starts_with('g')
                    && value.contains('-')
                    && !value.contains('.')
            }
            Table::Image => value
                .split_once('/')
                .is_some_and(|(owner, name)| plain(owner) && plain(name)),
        }
    }

    /// The Linode id for the design's `value` (a text or a number).
    pub fn lookup(
        self,
        clipboard: &Mapping,
        field: &str,
        value: &Value,
    ) -> Result<String, Failure> {
        let wanted = match value {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(Failure::fatal(format!(
                    "{field} must be a text or a number to choose a Linode {}",
                    self.noun()
                )));
            }
        };
        let overrides =
            protocol::get_path(clipboard, self.clipboard_key()).and_then(Value::as_object);
        if let Some(overrides) = overrides
            && let Some(id) = overrides
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(&wanted))
                .and_then(|(_, id)| id.as_str())
        {
            return Ok(id.to_string());
        }
        if let Some((_, id)) = self
            .builtin()
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&wanted))
        {
            return Ok((*id).to_string());
        }
        if self.is_id(&wanted) {
            return Ok(wanted);
        }
        let mut known: Vec<String> = self
            .builtin()
            .iter()
            .map(|(n, _)| (*n).to_string())
            .collect();
        if let Some(overrides) = overrides {
            known.extend(overrides.keys().cloned());
        }
        Err(Failure::fatal(format!(
            "{field} '{wanted}' names no Linode {} (known: {}; or add it under {})",
            self.noun(),
            known.join(", "),
            self.clipboard_key()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clipboard(value: Value) -> Mapping {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn builtin_names_overrides_and_ids() {
        let empty = Mapping::new();
        let region = |v: Value| Table::Region.lookup(&empty, "instance.datacenter", &v);
        assert_eq!(region(json!("Atlanta")).unwrap(), "us-southeast");
        assert_eq!(region(json!("atlanta")).unwrap(), "us-southeast");
        assert_eq!(region(json!("us-east")).unwrap(), "us-east");
        let err = region(json!("Atlantis")).unwrap_err().to_string();
        assert!(err.contains("instance.datacenter 'Atlantis'"), "{err}");
        assert_eq!(
            Table::Type
                .lookup(&empty, "instance.size", &json!(512))
                .unwrap(),
            "g6-nanode-1"
        );
        assert_eq!(
            Table::Image
                .lookup(&empty, "instance.guestid", &json!("Debian 12"))
                .unwrap(),
            "linode/debian12"
        );
        assert!(
            Table::Image
                .lookup(&empty, "x", &json!("Debian 99"))
                .is_err()
        );
        let custom = clipboard(json!({"linode": {"regions": {"Atlanta": "us-east"}}}));
        assert_eq!(
            Table::Region
                .lookup(&custom, "instance.datacenter", &json!("Atlanta"))
                .unwrap(),
            "us-east"
        );
    }
}

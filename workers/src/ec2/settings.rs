//! The operator's EC2 settings, from the environment the configuration grants `ec2`: the
//! tables from the design's words (datacenter, size, guestid) to region, instance type and
//! AMI, and the key pair, security groups and subnet. The design chooses among what these
//! name and never past them (except a datacenter that is already a region or zone name).

use serde_json::Value;

use crate::protocol::Failure;

/// Built-in datacenter names → regions. `Atlanta`, SPEC's example, has no AWS region of its
/// own: the nearest is us-east-1.
const REGIONS: &[(&str, &str)] = &[
    ("Atlanta", "us-east-1"),
    ("Virginia", "us-east-1"),
    ("Newark", "us-east-1"),
    ("Ohio", "us-east-2"),
    ("Dallas", "us-east-2"),
    ("Fremont", "us-west-1"),
    ("California", "us-west-1"),
    ("Oregon", "us-west-2"),
    ("Seattle", "us-west-2"),
    ("Toronto", "ca-central-1"),
    ("Montreal", "ca-central-1"),
    ("Sao Paulo", "sa-east-1"),
    ("Ireland", "eu-west-1"),
    ("London", "eu-west-2"),
    ("Paris", "eu-west-3"),
    ("Frankfurt", "eu-central-1"),
    ("Stockholm", "eu-north-1"),
    ("Mumbai", "ap-south-1"),
    ("Singapore", "ap-southeast-1"),
    ("Sydney", "ap-southeast-2"),
    ("Tokyo", "ap-northeast-1"),
];

/// Built-in sizes (memory in MB, as SPEC's designs give it) → burstable instance types.
const TYPES: &[(&str, &str)] = &[
    ("512", "t3.nano"),
    ("1024", "t3.micro"),
    ("2048", "t3.small"),
    ("4096", "t3.medium"),
    ("8192", "t3.large"),
    ("16384", "t3.xlarge"),
    ("32768", "t3.2xlarge"),
];

/// A region and, when the datacenter named one, an availability zone in it.
#[derive(Debug, PartialEq, Eq)]
pub struct Placement {
    pub region: String,
    pub zone: Option<String>,
}

#[derive(Debug, Default)]
pub struct Settings {
    regions: Vec<(String, String)>,
    types: Vec<(String, String)>,
    images: Vec<(String, String)>,
    default_region: Option<String>,
    pub key_name: Option<String>,
    pub security_groups: Vec<String>,
    pub subnet: Option<String>,
}

impl Settings {
    pub fn from_env() -> Result<Settings, Failure> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Settings::from_vars(var)
    }

    /// The settings from a lookup of variables (the environment, or a test's map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, Failure> {
        let table = |name: &str| match var(name) {
            Some(text) => parse_table(name, &text),
            None => Ok(Vec::new()),
        };
        let default_region = var("EC2_REGION");
        if let Some(region) = &default_region
            && !is_region(region)
        {
            return Err(Failure::fatal(format!(
                "EC2_REGION '{region}' is no region name (like eu-west-1)"
            )));
        }
        let security_groups = var("EC2_SECURITY_GROUPS")
            .map(|text| {
                text.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Settings {
            regions: table("EC2_REGIONS")?,
            types: table("EC2_TYPES")?,
            images: table("EC2_IMAGES")?,
            default_region,
            key_name: var("EC2_KEY_NAME"),
            security_groups,
            subnet: var("EC2_SUBNET"),
        })
    }

    /// Every region the operator's tables name (`EC2_REGIONS`' values, zones as their
    /// region, and `EC2_REGION`): where jarvis may have made instances.
    pub fn known_regions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let values = self
            .regions
            .iter()
            .map(|(_, v)| v.clone())
            .chain(self.default_region.clone());
        for value in values {
            let region = if is_region(&value) {
                value
            } else {
                // A zone is its region and one letter.
                let trimmed = value.trim_end_matches(|c: char| c.is_ascii_lowercase());
                if !is_region(trimmed) {
                    continue;
                }
                trimmed.to_string()
            };
            if !out.contains(&region) {
                out.push(region);
            }
        }
        out
    }

    /// Where the design's `datacenter` (if any) puts the instance.
    pub fn placement(&self, datacenter: Option<&Value>) -> Result<Placement, Failure> {
        let wanted = match datacenter {
            None | Some(Value::Null) => {
                return self
                    .default_region
                    .clone()
                    .map(|region| Placement { region, zone: None })
                    .ok_or_else(|| {
                        Failure::fatal(
                            "the design has no instance.datacenter and the configuration \
                             grants ec2 no EC2_REGION",
                        )
                    });
            }
            Some(value) => word("instance.datacenter", value)?,
        };
        let named = lookup(&self.regions, &wanted).or_else(|| lookup(REGIONS, &wanted));
        let value = named.unwrap_or(wanted.clone());
        if is_region(&value) {
            return Ok(Placement {
                region: value,
                zone: None,
            });
        }
        if let Some(region) = zone_region(&value) {
            return Ok(Placement {
                region,
                zone: Some(value),
            });
        }
        let mut known = names(&self.regions);
        known.extend(names(REGIONS));
        Err(Failure::fatal(format!(
            "instance.datacenter '{wanted}' names no EC2 region (known: {}; or add it to \
             EC2_REGIONS)",
            known.join(", ")
        )))
    }

    /// The instance type for the design's `size`: the operator's table, else the built-in one.
    pub fn instance_type(&self, size: &Value) -> Result<String, Failure> {
        let wanted = word("instance.size", size)?;
        lookup(&self.types, &wanted)
            .or_else(|| lookup(TYPES, &wanted))
            .ok_or_else(|| {
                let mut known = names(&self.types);
                known.extend(names(TYPES));
                Failure::fatal(format!(
                    "instance.size '{wanted}' names no EC2 instance type (known: {}; or add it \
                     to EC2_TYPES)",
                    known.join(", ")
                ))
            })
    }

    /// The AMI for the design's `guestid` in `region`: `NAME@REGION` first, then `NAME`.
    pub fn image(&self, guestid: &Value, region: &str) -> Result<String, Failure> {
        let wanted = word("instance.guestid", guestid)?;
        lookup(&self.images, &format!("{wanted}@{region}"))
            .or_else(|| lookup(&self.images, &wanted))
            .ok_or_else(|| {
                let known = names(&self.images);
                Failure::fatal(format!(
                    "instance.guestid '{wanted}' names no AMI in {region} (EC2_IMAGES knows: \
                     {})",
                    if known.is_empty() {
                        "nothing".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })
    }
}

/// `NAME=VALUE,NAME=VALUE` (names may hold spaces; blanks around each part are dropped).
fn parse_table(variable: &str, text: &str) -> Result<Vec<(String, String)>, Failure> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
                Ok((name.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(Failure::fatal(format!(
                "{variable} holds '{}', which is no NAME=VALUE",
                entry.chars().take(60).collect::<String>()
            ))),
        })
        .collect()
}

fn lookup<N: AsRef<str>, V: AsRef<str>>(table: &[(N, V)], wanted: &str) -> Option<String> {
    table
        .iter()
        .find(|(name, _)| name.as_ref().eq_ignore_ascii_case(wanted))
        .map(|(_, value)| value.as_ref().to_string())
}

fn names<N: AsRef<str>, V>(table: &[(N, V)]) -> Vec<String> {
    table.iter().map(|(n, _)| n.as_ref().to_string()).collect()
}

/// A design value as one word: a text or a number.
fn word(field: &str, value: &Value) -> Result<String, Failure> {
    match value {
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Failure::fatal(format!(
            "{field} must be a text or a number"
        ))),
    }
}

/// `eu-west-1`, `us-gov-west-1`, `ap-southeast-2`: lowercase words and a number, with dashes.
pub fn is_region(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() >= 3
        && parts.len() <= 4
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts[..parts.len() - 1]
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

/// The region of a zone name (`eu-west-1a` → `eu-west-1`).
fn zone_region(value: &str) -> Option<String> {
    let region = value.strip_suffix(|c: char| c.is_ascii_lowercase())?;
    is_region(region).then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(|name| lookup(&vars, name)).unwrap()
    }

    #[test]
    fn regions_and_zones_from_the_tables_or_as_named() {
        let s = settings(&[("EC2_REGIONS", "Frankfurt=eu-central-1b, Lab=eu-west-3")]);
        let place = |v: Value| s.placement(Some(&v));
        assert_eq!(
            place(json!("Frankfurt")).unwrap(),
            Placement {
                region: "eu-central-1".into(),
                zone: Some("eu-central-1b".into())
            }
        );
        assert_eq!(place(json!("lab")).unwrap().region, "eu-west-3");
        assert_eq!(place(json!("Atlanta")).unwrap().region, "us-east-1");
        assert_eq!(place(json!("eu-west-1")).unwrap().region, "eu-west-1");
        assert_eq!(
            place(json!("us-gov-west-1a")).unwrap().zone.as_deref(),
            Some("us-gov-west-1a")
        );
        let err = place(json!("Atlantis")).unwrap_err().to_string();
        assert!(
            err.contains("'Atlantis'") && err.contains("EC2_REGIONS"),
            "{err}"
        );
        assert!(s.placement(None).is_err(), "no datacenter, no EC2_REGION");
        let d = settings(&[("EC2_REGION", "eu-north-1")]);
        assert_eq!(d.placement(None).unwrap().region, "eu-north-1");
    }

    #[test]
    fn types_and_images_only_from_the_tables() {
        let s = settings(&[
            ("EC2_TYPES", "512=t4g.nano"),
            (
                "EC2_IMAGES",
                "Debian 12=ami-0aaa, Debian 12@eu-west-1=ami-0bbb",
            ),
        ]);
        assert_eq!(s.instance_type(&json!(512)).unwrap(), "t4g.nano");
        assert_eq!(s.instance_type(&json!("4096")).unwrap(), "t3.medium");
        let err = s
            .instance_type(&json!("p5.48xlarge"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no EC2 instance type"), "{err}");
        assert_eq!(
            s.image(&json!("debian 12"), "us-east-1").unwrap(),
            "ami-0aaa"
        );
        assert_eq!(
            s.image(&json!("Debian 12"), "eu-west-1").unwrap(),
            "ami-0bbb"
        );
        let err = s
            .image(&json!("ami-0123"), "us-east-1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("names no AMI"),
            "a design names no AMI itself: {err}"
        );
    }

    #[test]
    fn malformed_settings_are_refused_by_name() {
        let vars = |name: &str| (name == "EC2_IMAGES").then(|| "Debian 12".to_string());
        let err = Settings::from_vars(vars).unwrap_err().to_string();
        assert!(
            err.contains("EC2_IMAGES") && err.contains("NAME=VALUE"),
            "{err}"
        );
        let vars = |name: &str| (name == "EC2_REGION").then(|| "Frankfurt".to_string());
        assert!(Settings::from_vars(vars).is_err());
        let s = settings(&[
            ("EC2_SECURITY_GROUPS", "sg-1, sg-2,"),
            ("EC2_SUBNET", "subnet-9"),
        ]);
        assert_eq!(s.security_groups, vec!["sg-1", "sg-2"]);
        assert_eq!(s.subnet.as_deref(), Some("subnet-9"));
    }
}

//! The EC2 Query API's XML answers, read with quick-xml's serde support into the few fields
//! the worker uses (everything else in an answer is ignored). Pure: text in, values out.

use serde::Deserialize;

/// A list as EC2 writes it: `<fooSet><item>…</item><item>…</item></fooSet>` (or `<fooSet/>`).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Items<T> {
    #[serde(rename = "item", default = "Vec::new")]
    pub items: Vec<T>,
}

/// `DescribeInstances`: reservations, each with its instances, and the next page's token.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeInstances {
    #[serde(default)]
    pub reservation_set: Items<Reservation>,
    #[serde(default)]
    pub next_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    #[serde(default)]
    pub instances_set: Items<Instance>,
}

/// `RunInstances`: the instances it made (one, here).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInstances {
    #[serde(default)]
    pub instances_set: Items<Instance>,
}

/// `StopInstances`, `StartInstances`, `TerminateInstances`: each instance's state change.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateChanges {
    #[serde(default)]
    pub instances_set: Items<StateChange>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateChange {
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub current_state: State,
}

/// One instance, as far as jarvis cares.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub image_id: Option<String>,
    #[serde(default)]
    pub instance_type: Option<String>,
    #[serde(default)]
    pub instance_state: State,
    #[serde(default)]
    pub client_token: Option<String>,
    /// The public IPv4 address, if it has one.
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub private_ip_address: Option<String>,
    /// The primary IPv6 address, where EC2 names one.
    #[serde(default)]
    pub ipv6_address: Option<String>,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub tag_set: Items<Tag>,
    #[serde(default)]
    pub network_interface_set: Items<NetworkInterface>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    #[serde(default)]
    pub availability_zone: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct Tag {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    #[serde(default)]
    pub ipv6_addresses_set: Items<Ipv6Item>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ipv6Item {
    #[serde(default)]
    pub ipv6_address: Option<String>,
}

impl Instance {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tag_set
            .items
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }

    /// The state's name: `pending`, `running`, `stopping`, `stopped`, `shutting-down`,
    /// `terminated`.
    pub fn state(&self) -> &str {
        &self.instance_state.name
    }

    /// The public IPv4 address, else the private one.
    pub fn ipv4(&self) -> Option<&str> {
        non_empty(&self.ip_address).or(non_empty(&self.private_ip_address))
    }

    /// The primary IPv6 address, else the first one of any network interface.
    pub fn ipv6(&self) -> Option<&str> {
        non_empty(&self.ipv6_address).or_else(|| {
            self.network_interface_set
                .items
                .iter()
                .flat_map(|n| n.ipv6_addresses_set.items.iter())
                .find_map(|a| non_empty(&a.ipv6_address))
        })
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// An error answer: `<Response><Errors><Error><Code>…</Code><Message>…</Message></Error>
/// </Errors></Response>` (EC2), or `<ErrorResponse><Error>…</Error></ErrorResponse>`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorAnswer {
    #[serde(rename = "Errors", default)]
    pub errors: Option<ErrorList>,
    #[serde(rename = "Error", default)]
    pub error: Option<ApiError>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorList {
    #[serde(rename = "Error", default = "Vec::new")]
    pub errors: Vec<ApiError>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    #[serde(rename = "Code", default)]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
}

/// Parses an answer of the expected shape; the error is one line about the XML.
pub fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
    quick_xml::de::from_str(text).map_err(|e| {
        let text: String = e.to_string().chars().filter(|c| !c.is_control()).collect();
        format!(
            "unreadable XML: {}",
            text.chars().take(200).collect::<String>()
        )
    })
}

/// The first error an error answer names, if the text is one.
pub fn error(text: &str) -> Option<ApiError> {
    let answer: ErrorAnswer = parse(text).ok()?;
    answer
        .errors
        .and_then(|list| list.errors.into_iter().next())
        .or(answer.error)
        .filter(|e| !e.code.is_empty())
}

/// Every instance of a `DescribeInstances` page.
pub fn instances(answer: DescribeInstances) -> Vec<Instance> {
    answer
        .reservation_set
        .items
        .into_iter()
        .flat_map(|r| r.instances_set.items)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>8f7724cf-496f-496e-8fe3-example</requestId>
  <reservationSet>
    <item>
      <reservationId>r-1234567890abcdef0</reservationId>
      <groupSet/>
      <instancesSet>
        <item>
          <instanceId>i-1234567890abcdef0</instanceId>
          <imageId>ami-bff32ccc</imageId>
          <instanceState><code>16</code><name>running</name></instanceState>
          <privateIpAddress>10.0.0.157</privateIpAddress>
          <ipAddress>54.194.252.215</ipAddress>
          <instanceType>t3.micro</instanceType>
          <clientToken>jarvis-loki-7</clientToken>
          <placement><availabilityZone>eu-west-1c</availabilityZone><groupName/></placement>
          <networkInterfaceSet>
            <item>
              <networkInterfaceId>eni-0</networkInterfaceId>
              <ipv6AddressesSet><item><ipv6Address>2001:db8::7</ipv6Address></item></ipv6AddressesSet>
            </item>
          </networkInterfaceSet>
          <tagSet>
            <item><key>Name</key><value>loki</value></item>
            <item><key>jarvis:host</key><value>loki</value></item>
          </tagSet>
        </item>
        <item>
          <instanceId>i-2</instanceId>
          <instanceState><code>80</code><name>stopped</name></instanceState>
          <privateIpAddress>10.0.0.9</privateIpAddress>
          <ipAddress/>
          <tagSet/>
        </item>
      </instancesSet>
    </item>
  </reservationSet>
  <nextToken>page2</nextToken>
</DescribeInstancesResponse>"#;

    #[test]
    fn described_instances_with_tags_states_and_addresses() {
        let page: DescribeInstances = parse(DESCRIBED).unwrap();
        assert_eq!(page.next_token.as_deref(), Some("page2"));
        let found = instances(page);
        assert_eq!(found.len(), 2);
        let loki = &found[0];
        assert_eq!(loki.instance_id, "i-1234567890abcdef0");
        assert_eq!(loki.state(), "running");
        assert_eq!(loki.tag("Name"), Some("loki"));
        assert_eq!(loki.tag("jarvis:host"), Some("loki"));
        assert_eq!(loki.tag("jarvis:run"), None);
        assert_eq!(loki.ipv4(), Some("54.194.252.215"));
        assert_eq!(loki.ipv6(), Some("2001:db8::7"));
        assert_eq!(
            loki.placement.availability_zone.as_deref(),
            Some("eu-west-1c")
        );
        assert_eq!(loki.client_token.as_deref(), Some("jarvis-loki-7"));
        let stopped = &found[1];
        assert_eq!(stopped.state(), "stopped");
        assert_eq!(
            stopped.ipv4(),
            Some("10.0.0.9"),
            "the private one, no public"
        );
        assert_eq!(stopped.ipv6(), None);
        assert!(stopped.tag_set.items.is_empty());
    }

    #[test]
    fn an_empty_answer_has_no_instances() {
        let empty = r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>x</requestId><reservationSet/></DescribeInstancesResponse>"#;
        let page: DescribeInstances = parse(empty).unwrap();
        assert!(page.next_token.is_none());
        assert!(instances(page).is_empty());
    }

    #[test]
    fn run_and_state_change_answers() {
        let run = r#"<RunInstancesResponse><reservationId>r-1</reservationId><instancesSet><item><instanceId>i-9</instanceId><instanceState><code>0</code><name>pending</name></instanceState><instanceType>t3.nano</instanceType></item></instancesSet></RunInstancesResponse>"#;
        let made: RunInstances = parse(run).unwrap();
        assert_eq!(made.instances_set.items[0].instance_id, "i-9");
        assert_eq!(made.instances_set.items[0].state(), "pending");
        let stop = r#"<TerminateInstancesResponse><instancesSet><item><instanceId>i-9</instanceId><currentState><code>32</code><name>shutting-down</name></currentState><previousState><code>16</code><name>running</name></previousState></item></instancesSet></TerminateInstancesResponse>"#;
        let changed: StateChanges = parse(stop).unwrap();
        assert_eq!(changed.instances_set.items[0].instance_id, "i-9");
        assert_eq!(
            changed.instances_set.items[0].current_state.name,
            "shutting-down"
        );
    }

    #[test]
    fn error_answers_of_both_shapes() {
        let ec2 = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able to validate the provided access credentials</Message></Error></Errors><RequestID>ea966190</RequestID></Response>"#;
        let e = error(ec2).unwrap();
        assert_eq!(e.code, "AuthFailure");
        assert!(e.message.starts_with("AWS was not able"));
        let other = r#"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>"#;
        assert_eq!(error(other).unwrap().code, "Throttling");
        let moto = r#"<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>bad</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"#;
        assert_eq!(error(moto).unwrap().code, "InvalidClientTokenId");
        assert!(error("<html><body>502 Bad Gateway</body></html>").is_none());
        assert!(error("not xml at all <").is_none());
    }

    #[test]
    fn unreadable_xml_is_one_line() {
        let e = parse::<DescribeInstances>("<a><b></a>").unwrap_err();
        assert!(e.starts_with("unreadable XML"), "{e}");
        assert!(!e.contains('\n'));
    }
}

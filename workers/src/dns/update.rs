//! What `dns` sends: the records now at the name, the zone that holds it, and the one UPDATE
//! message (RFC 2136) that replaces or removes the host's records.

use std::collections::BTreeSet;

use hickory_net::proto;
use proto::op::{Edns, Message, OpCode, Query, ResponseCode, UpdateMessage};
use proto::rr::{DNSClass, Name, Record, RecordType};

use super::transport::Client;
use super::{OWNED_TYPES, presentation, shown};
use crate::protocol::{self, Failure};

/// The UDP answer size this client accepts (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

impl Client<'_> {
    /// Replaces the owned records at `name` with `wanted`; returns the zone it updated.
    pub(super) async fn replace(&self, name: &Name, wanted: &[Record]) -> Result<Name, Failure> {
        let zone = self.zone_of(name).await?;
        let mut current = Vec::new();
        let mut readable = true;
        for rtype in OWNED_TYPES {
            match self.read(name, rtype).await? {
                Some(records) => current.extend(records),
                None => readable = false,
            }
        }
        if readable && same_records(&current, wanted) {
            protocol::log(&format!(
                "the records of {} are already current",
                shown(name)
            ));
            return Ok(zone);
        }
        let mut message = update_message(&zone);
        message.add_pre_requisite(absent(name, RecordType::CNAME));
        if readable {
            for rtype in OWNED_TYPES {
                let old: Vec<&Record> = current
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .collect();
                if old.is_empty() {
                    message.add_pre_requisite(absent(name, rtype));
                } else {
                    for record in old {
                        message.add_pre_requisite(present(record));
                    }
                }
            }
            log_records("to remove", &current);
        } else {
            protocol::log(
                "the server does not answer queries: updating without checking the old records",
            );
        }
        for rtype in OWNED_TYPES {
            message.add_update(delete_rrset(name, rtype));
        }
        log_records("to add", wanted);
        message.add_updates(wanted.iter().cloned());
        self.update(message, &zone, name).await?;
        Ok(zone)
    }

    /// Deletes the owned records at `name`; returns the zone it updated.
    pub(super) async fn remove(&self, name: &Name) -> Result<Name, Failure> {
        let zone = self.zone_of(name).await?;
        let mut message = update_message(&zone);
        for rtype in OWNED_TYPES {
            message.add_update(delete_rrset(name, rtype));
        }
        self.update(message, &zone, name).await?;
        Ok(zone)
    }

    async fn update(&self, message: Message, zone: &Name, name: &Name) -> Result<(), Failure> {
        let answer = self.exchange(message).await?;
        let code = answer.response_code;
        if code == ResponseCode::NoError {
            protocol::log(&format!(
                "{} accepted the update of {}",
                self.settings.server_label,
                shown(name)
            ));
            return Ok(());
        }
        Err(self.refusal(code, zone, name))
    }

    /// The zone that holds `name`: DNS_ZONE, else the owner of the SOA the server names.
    async fn zone_of(&self, name: &Name) -> Result<Name, Failure> {
        if let Some(zone) = &self.settings.zone {
            if !zone.zone_of(name) {
                return Err(Failure::fatal(format!(
                    "{} is not in DNS_ZONE {}",
                    shown(name),
                    shown(zone)
                )));
            }
            return Ok(zone.clone());
        }
        let answer = self.exchange(query_message(name, RecordType::SOA)).await?;
        let soa_owner = answer
            .answers
            .iter()
            .chain(answer.authorities.iter())
            .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(name))
            .map(|r| r.name.clone());
        Ok(soa_owner.unwrap_or_else(|| {
            let parent = name.base_name();
            protocol::log(&format!(
                "the server names no zone for {name}: trying {parent}"
            ));
            parent
        }))
    }

    /// The records of `rtype` at `name`, or `None` when the server will not say.
    async fn read(&self, name: &Name, rtype: RecordType) -> Result<Option<Vec<Record>>, Failure> {
        let answer = self.exchange(query_message(name, rtype)).await?;
        match answer.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(Some(
                answer
                    .answers
                    .iter()
                    .filter(|r| r.record_type() == rtype && r.name.eq_ignore_root(name))
                    .cloned()
                    .collect(),
            )),
            code => {
                protocol::log(&format!(
                    "{} answers {code} to a {rtype} query for {name}",
                    self.settings.server_label
                ));
                Ok(None)
            }
        }
    }
}

/// Logs the records an update removes or adds, the first few of a long list.
fn log_records(what: &str, records: &[Record]) {
    const SHOWN: usize = 8;
    for record in records.iter().take(SHOWN) {
        protocol::log(&format!("{what}: {}", presentation(record)));
    }
    if records.len() > SHOWN {
        protocol::log(&format!("{what}: … and {} more", records.len() - SHOWN));
    }
}

fn update_message(zone: &Name) -> Message {
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    let mut section = Query::query(zone.clone(), RecordType::SOA);
    section.set_query_class(DNSClass::IN);
    message.add_zone(section);
    message
}

fn query_message(name: &Name, rtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = false;
    message.add_query(Query::query(name.clone(), rtype));
    message
        .edns
        .get_or_insert_with(Edns::new)
        .set_max_payload(EDNS_PAYLOAD)
        .set_version(0);
    message
}

/// Prerequisite "no RRset of this type at the name" (RFC 2136 2.4.3).
fn absent(name: &Name, rtype: RecordType) -> Record {
    let mut record = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
    record.dns_class = DNSClass::NONE;
    record
}

/// Prerequisite "this exact record is in the RRset" (RFC 2136 2.4.2).
fn present(record: &Record) -> Record {
    let mut record = record.clone();
    record.ttl = 0;
    record.dns_class = DNSClass::IN;
    record
}

/// Update "delete the RRset of this type at the name" (RFC 2136 2.5.2).
fn delete_rrset(name: &Name, rtype: RecordType) -> Record {
    let mut record = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
    record.dns_class = DNSClass::ANY;
    record
}

/// True when both lists hold the same records with the same TTLs, in any order.
fn same_records(current: &[Record], wanted: &[Record]) -> bool {
    let key = |records: &[Record]| -> BTreeSet<String> {
        records
            .iter()
            .map(|r| format!("{} {} {}", r.ttl, r.record_type(), r.data))
            .collect()
    };
    current.len() == wanted.len() && key(current) == key(wanted)
}

#[cfg(test)]
mod tests {
    use super::super::address_record;
    use super::*;

    #[test]
    fn same_records_ignores_order_but_not_ttl() {
        let name = Name::from_ascii("loki.example.com.").unwrap();
        let a = address_record(&name, 300, "203.0.113.7".parse().unwrap());
        let b = address_record(&name, 300, "2001:db8::7".parse().unwrap());
        assert!(same_records(
            &[a.clone(), b.clone()],
            &[b.clone(), a.clone()]
        ));
        let a600 = address_record(&name, 600, "203.0.113.7".parse().unwrap());
        assert!(!same_records(&[a600, b.clone()], &[a, b]));
    }

    #[test]
    fn prerequisite_and_delete_records_have_the_rfc_2136_classes() {
        let name = Name::from_ascii("loki.example.com.").unwrap();
        assert_eq!(absent(&name, RecordType::CNAME).dns_class, DNSClass::NONE);
        assert_eq!(delete_rrset(&name, RecordType::A).dns_class, DNSClass::ANY);
        let a = address_record(&name, 300, "203.0.113.7".parse().unwrap());
        let p = present(&a);
        assert_eq!((p.ttl, p.dns_class), (0, DNSClass::IN));
    }
}

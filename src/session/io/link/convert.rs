//! Conversions between the link's neutral types and rumqttc's MQTT 3.1.1 and MQTT 5
//! packets and events (plain functions, table-tested below).

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;

use super::{BrokerAck, IncomingPublish, LinkEvent, OwedAck};
use crate::message::{MessageProperties, Publish, QoS};
use crate::reason::ReasonCode;
use crate::session::io::failure::{puback_code, pubrec_code, suback_code};

/// A publish as rumqttc's MQTT 3.1.1 PUBLISH, with the packet id `pkid` the outbox chose
/// (QoS >= 1; a QoS 0 publish has none).
pub(super) fn publish_v4(p: &Publish, pkid: u16) -> rumqttc::Publish {
    let mut out = rumqttc::Publish::from_bytes(p.topic.clone(), qos_v4(p.qos), p.payload.clone());
    out.retain = p.retain;
    if p.qos != QoS::AtMostOnce {
        out.pkid = pkid;
    }
    out
}

/// The same for MQTT 5, with the publish's properties.
pub(super) fn publish_v5(p: &Publish, pkid: u16) -> p5::Publish {
    let mut out = p5::Publish::new(
        p.topic.as_str(),
        qos5(p.qos),
        p.payload.clone(),
        p.properties.as_ref().map(|props| props_to_v5(props)),
    );
    out.retain = p.retain;
    if p.qos != QoS::AtMostOnce {
        out.pkid = pkid;
    }
    out
}

/// rumqttc builds an acknowledgement from a publish's QoS and packet id only.
pub(super) fn ack_publish_v5(t: OwedAck) -> p5::Publish {
    let mut p = p5::Publish::new(String::new(), qos5(t.qos), Bytes::new(), None);
    p.pkid = t.pkid;
    p
}

/// The PUBACK (QoS 1) or PUBREC (QoS 2) of a received message, as a request to rumqttc's
/// MQTT 3.1.1 state.
pub(super) fn ack_request_v4(t: OwedAck) -> rumqttc::Request {
    match t.qos {
        QoS::ExactlyOnce => rumqttc::Request::PubRec(rumqttc::PubRec::new(t.pkid)),
        _ => rumqttc::Request::PubAck(rumqttc::PubAck::new(t.pkid)),
    }
}

/// The same for MQTT 5.
pub(super) fn ack_request_v5(t: OwedAck) -> v5::Request {
    match t.qos {
        QoS::ExactlyOnce => v5::Request::PubRec(p5::PubRec::new(t.pkid, None)),
        _ => v5::Request::PubAck(p5::PubAck::new(t.pkid, None)),
    }
}

pub(super) fn from_v4(ev: rumqttc::Event) -> LinkEvent {
    use rumqttc::{Event, Packet};
    match ev {
        Event::Incoming(Packet::Publish(p)) => LinkEvent::Publish(IncomingPublish {
            topic: Arc::from(p.topic.as_str()),
            payload: p.payload,
            qos: qos_from_v4(p.qos),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            properties: None,
        }),
        Event::Incoming(Packet::PubAck(a)) => LinkEvent::Ack(BrokerAck::Pub {
            pkid: a.pkid,
            refused: None,
        }),
        Event::Incoming(Packet::PubComp(c)) => LinkEvent::Ack(BrokerAck::Comp(c.pkid)),
        Event::Incoming(Packet::SubAck(s)) => LinkEvent::Ack(BrokerAck::Sub {
            pkid: s.pkid,
            codes: s
                .return_codes
                .iter()
                .map(|c| match c {
                    rumqttc::SubscribeReasonCode::Success(q) => Ok(qos_from_v4(*q)),
                    rumqttc::SubscribeReasonCode::Failure => Err(ReasonCode::UNSPECIFIED_ERROR),
                })
                .collect(),
        }),
        Event::Outgoing(o) => LinkEvent::Written(o.into()),
        Event::Incoming(_) => LinkEvent::Other,
    }
}

pub(super) fn from_v5(ev: v5::Event) -> LinkEvent {
    use p5::Packet;
    match ev {
        v5::Event::Incoming(Packet::Publish(p)) => LinkEvent::Publish(IncomingPublish {
            topic: match std::str::from_utf8(&p.topic) {
                Ok(t) => Arc::from(t),
                Err(_) => Arc::from(String::from_utf8_lossy(&p.topic).as_ref()),
            },
            payload: p.payload,
            qos: qos_from5(p.qos),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            properties: p.properties.map(props_from_v5).map(Arc::new),
        }),
        v5::Event::Incoming(Packet::PubAck(a)) => LinkEvent::Ack(BrokerAck::Pub {
            pkid: a.pkid,
            refused: Some(puback_code(&a.reason)).filter(|c| c.is_failure()),
        }),
        v5::Event::Incoming(Packet::PubRec(r)) => {
            let code = pubrec_code(&r.reason);
            if code.is_failure() {
                LinkEvent::Ack(BrokerAck::Pub {
                    pkid: r.pkid,
                    refused: Some(code),
                })
            } else {
                LinkEvent::Other
            }
        }
        v5::Event::Incoming(Packet::PubComp(c)) => LinkEvent::Ack(BrokerAck::Comp(c.pkid)),
        v5::Event::Incoming(Packet::SubAck(s)) => LinkEvent::Ack(BrokerAck::Sub {
            pkid: s.pkid,
            codes: s.return_codes.iter().map(suback_code).collect(),
        }),
        v5::Event::Outgoing(o) => LinkEvent::Written(o.into()),
        v5::Event::Incoming(_) => LinkEvent::Other,
    }
}

pub(super) fn qos5(q: QoS) -> v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

pub(super) fn qos_from5(q: v5::mqttbytes::QoS) -> QoS {
    match q {
        v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(super) fn props_to_v5(p: &MessageProperties) -> p5::PublishProperties {
    p5::PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        // Never: this crate sends no topic aliases, so the broker's Topic Alias Maximum
        // is always respected.
        topic_alias: None,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        // Only a server sets subscription identifiers [MQTT-3.3.4-6].
        subscription_identifiers: Vec::new(),
        content_type: p.content_type.clone(),
    }
}

pub(super) fn props_from_v5(p: p5::PublishProperties) -> MessageProperties {
    MessageProperties {
        user_properties: p.user_properties,
        content_type: p.content_type,
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        subscription_identifiers: p.subscription_identifiers,
    }
}

/// Our QoS as rumqttc's (MQTT 3.1.1 client); a function, not a `From` impl, so that no
/// rumqttc type appears in the crate's public API.
pub(super) fn qos_v4(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// rumqttc's QoS (MQTT 3.1.1 client) as ours.
pub(super) fn qos_from_v4(q: rumqttc::QoS) -> QoS {
    match q {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

    #[test]
    fn qos_round_trips_through_both_protocols() {
        for q in ALL {
            assert_eq!(qos_from_v4(qos_v4(q)), q);
            assert_eq!(qos_from5(qos5(q)), q);
        }
    }

    #[test]
    fn acknowledgements_carry_the_packet_id_and_qos_only() {
        let t = OwedAck {
            qos: QoS::ExactlyOnce,
            pkid: 42,
        };
        assert!(matches!(
            ack_request_v4(t),
            rumqttc::Request::PubRec(rumqttc::PubRec { pkid: 42, .. })
        ));
        let p5 = ack_publish_v5(t);
        assert_eq!((p5.pkid, qos_from5(p5.qos)), (42, QoS::ExactlyOnce));
    }

    #[test]
    fn mqtt5_properties_survive_the_round_trip() {
        let props = MessageProperties {
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            content_type: Some("application/json".into()),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            response_topic: Some("reply/to".into()),
            correlation_data: Some(Bytes::from_static(b"id-1")),
            subscription_identifiers: vec![],
        };
        assert_eq!(props_from_v5(props_to_v5(&props)), props);
        assert_eq!(
            props_from_v5(props_to_v5(&MessageProperties::default())),
            MessageProperties::default()
        );
    }

    #[test]
    fn v4_events_map_to_neutral_ones() {
        use rumqttc::{Event, Packet};
        let mut p = rumqttc::Publish::new("a/b", rumqttc::QoS::AtLeastOnce, "x");
        p.pkid = 7;
        match from_v4(Event::Incoming(Packet::Publish(p))) {
            LinkEvent::Publish(i) => {
                assert_eq!((&*i.topic, i.pkid, i.qos), ("a/b", 7, QoS::AtLeastOnce));
                assert_eq!(&i.payload[..], b"x");
            }
            other => panic!("{other:?}"),
        }
        match from_v4(Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(9)))) {
            LinkEvent::Ack(BrokerAck::Pub {
                pkid: 9,
                refused: None,
            }) => {}
            other => panic!("{other:?}"),
        }
        match from_v4(Event::Incoming(Packet::PubComp(rumqttc::PubComp::new(3)))) {
            LinkEvent::Ack(BrokerAck::Comp(3)) => {}
            other => panic!("{other:?}"),
        }
    }
}

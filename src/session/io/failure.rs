//! Why a connection failed: rumqttc's errors (MQTT 3.1.1 and MQTT 5) mapped to a
//! [`ConnectionFailure`] with a kind, a readable message and, when the broker gave one,
//! its reason code.

use rumqttc::v5;
use rumqttc::{ConnectReturnCode, ConnectionError, StateError};

use rumqttc::v5::mqttbytes::v5 as p5;

use crate::event::{ConnectionFailure, ErrorKind};
use crate::message::QoS;
use crate::options::BrokerUrl;
use crate::reason::ReasonCode;

/// Maps a rumqttc connection error to a failure kind and message.
///
/// TLS failures are recognised wherever rumqttc wraps them (the handshake's
/// `ConnectionError::Tls`, or an I/O error carrying a TLS alert when the broker refuses
/// the client certificate after the handshake, as TLS 1.3 brokers do) and reported as
/// [`ErrorKind::Tls`] with rustls' reason and a hint.
pub(super) fn classify_v4(e: &ConnectionError, broker: &BrokerUrl) -> ConnectionFailure {
    if let Some(tls) = find_rustls_error(e) {
        return ConnectionFailure {
            kind: ErrorKind::Tls,
            broker: broker.url.clone(),
            message: describe_tls_error(tls),
            reason: None,
        };
    }
    let reason = match e {
        ConnectionError::ConnectionRefused(code) => Some(connack_code_v4(code)),
        _ => None,
    };
    let kind = match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => ErrorKind::Auth,
        ConnectionError::ConnectionRefused(_) => ErrorKind::Refused,
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => ErrorKind::Timeout,
        ConnectionError::MqttState(StateError::AwaitPingResp) => ErrorKind::Timeout,
        ConnectionError::MqttState(StateError::Io(_)) | ConnectionError::Io(_) => ErrorKind::Io,
        ConnectionError::MqttState(StateError::ConnectionAborted) => ErrorKind::Io,
        ConnectionError::Tls(_) => ErrorKind::Tls,
        _ => ErrorKind::Protocol,
    };
    let message = match e {
        ConnectionError::ConnectionRefused(code @ ConnectReturnCode::BadUserNamePassword) => {
            format!("broker refused the connection: {code:?} (check the username and password)")
        }
        ConnectionError::ConnectionRefused(code @ ConnectReturnCode::NotAuthorized) => {
            format!(
                "broker refused the connection: {code:?} (check the username and password, or the broker's access rules)"
            )
        }
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "no PINGRESP from the broker".to_string()
        }
        ConnectionError::Tls(other) => format!("TLS connection failed: {other}"),
        other => other.to_string(),
    };
    ConnectionFailure {
        kind,
        broker: broker.url.clone(),
        message,
        reason,
    }
}

/// [`classify_v4`] for the MQTT 5 client: CONNACK refusals carry their reason code
/// (in the message and in [`ConnectionFailure::reason`]), and so does a DISCONNECT sent
/// by the broker.
pub(super) fn classify_v5(e: &v5::ConnectionError, broker: &BrokerUrl) -> ConnectionFailure {
    use v5::mqttbytes::v5::ConnectReturnCode as C;
    use v5::{ConnectionError as E, StateError as S};
    let fail = |kind, message, reason| ConnectionFailure {
        kind,
        broker: broker.url.clone(),
        message,
        reason,
    };
    if let Some(tls) = find_rustls_error(e) {
        return fail(ErrorKind::Tls, describe_tls_error(tls), None);
    }
    match e {
        E::ConnectionRefused(code) | E::MqttState(S::ConnFail { reason: code }) => {
            let reason = connack_code_v5(code);
            let (kind, hint) = match code {
                C::BadUserNamePassword => (ErrorKind::Auth, " (check the username and password)"),
                C::NotAuthorized | C::BadAuthenticationMethod => (
                    ErrorKind::Auth,
                    " (check the username and password, or the broker's access rules)",
                ),
                _ => (ErrorKind::Refused, ""),
            };
            fail(
                kind,
                format!("broker refused the connection: {reason}{hint}"),
                Some(reason),
            )
        }
        E::MqttState(S::ServerDisconnect {
            reason_code,
            reason_string,
        }) => {
            let reason = ReasonCode(*reason_code as u8);
            let message = match reason_string {
                Some(why) => format!("broker sent DISCONNECT: {reason}: {why}"),
                None => format!("broker sent DISCONNECT: {reason}"),
            };
            fail(ErrorKind::Protocol, message, Some(reason))
        }
        E::Timeout(_) | E::MqttState(S::AwaitPingResp) => fail(
            ErrorKind::Timeout,
            match e {
                E::MqttState(S::AwaitPingResp) => "no PINGRESP from the broker".to_string(),
                other => other.to_string(),
            },
            None,
        ),
        E::MqttState(S::Io(_) | S::ConnectionAborted) | E::Io(_) => {
            fail(ErrorKind::Io, e.to_string(), None)
        }
        E::Tls(other) => fail(
            ErrorKind::Tls,
            format!("TLS connection failed: {other}"),
            None,
        ),
        other => fail(ErrorKind::Protocol, other.to_string(), None),
    }
}

/// The rustls error somewhere in `e`'s chain of causes (looking inside `io::Error`s,
/// whose `source()` skips the error they wrap).
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current: &(dyn std::error::Error + 'static) = e;
    for _ in 0..16 {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let next = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
        current = next?;
    }
    None
}

/// `"TLS handshake failed: <rustls' reason> (<hint>)"`.
fn describe_tls_error(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C};
    let hint = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => Some("the broker's certificate is not signed by a trusted CA: check tls.ca_file"),
            C::NotValidForName | C::NotValidForNameContext { .. } => Some(
                "the broker's certificate is not issued for this host: check the URL's host or set tls.server_name",
            ),
            C::Expired | C::ExpiredContext { .. } => Some("the broker's certificate has expired"),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                Some("the broker's certificate is not valid yet (check the clock)")
            }
            _ => None,
        },
        rustls::Error::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied,
        ) => Some("the broker refused the client certificate or requires one: check tls.client_cert"),
        rustls::Error::NoApplicationProtocol
        | rustls::Error::AlertReceived(A::NoApplicationProtocol) => {
            Some("no common ALPN protocol: check tls.alpn")
        }
        _ => None,
    };
    match hint {
        Some(h) => format!("TLS handshake failed: {e} ({h})"),
        None => format!("TLS handshake failed: {e}"),
    }
}

// Reason codes of rumqttc's packets (MQTT 5 §2.4), here with the failures they explain.

/// The MQTT 5 reason code of a v5 CONNACK refusal.
fn connack_code_v5(c: &p5::ConnectReturnCode) -> ReasonCode {
    use p5::ConnectReturnCode as C;
    ReasonCode(match c {
        C::Success => 0x00,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => 0x84,
        C::BadClientId | C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServiceUnavailable | C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::BadAuthenticationMethod => 0x8C,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::ConnectionRateExceeded => 0x9F,
    })
}

/// The MQTT 5 counterpart of an MQTT 3.1.1 CONNACK refusal.
fn connack_code_v4(c: &rumqttc::ConnectReturnCode) -> ReasonCode {
    use rumqttc::ConnectReturnCode as C;
    ReasonCode(match c {
        C::Success => 0x00,
        C::RefusedProtocolVersion => 0x84,
        C::BadClientId => 0x85,
        C::ServiceUnavailable => 0x88,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
    })
}

pub(super) fn puback_code(r: &p5::PubAckReason) -> ReasonCode {
    use p5::PubAckReason as R;
    ReasonCode(match r {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    })
}

pub(super) fn pubrec_code(r: &p5::PubRecReason) -> ReasonCode {
    use p5::PubRecReason as R;
    ReasonCode(match r {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    })
}

pub(super) fn suback_code(c: &p5::SubscribeReasonCode) -> Result<QoS, ReasonCode> {
    use p5::SubscribeReasonCode as S;
    Err(ReasonCode(match c {
        S::Success(q) => {
            return Ok(match q {
                rumqttc::v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
                rumqttc::v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
            })
        }
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8F,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9E,
        S::SubscriptionIdNotSupported => 0xA1,
        S::WildcardSubscriptionsNotSupported => 0xA2,
    }))
}

//! [`ReasonCode`]: the MQTT 5 reason codes a broker answers with, as one small type.

use serde::{Deserialize, Serialize};

/// An MQTT 5 reason code (MQTT 5 section 2.4), as sent by the broker in CONNACK, PUBACK,
/// PUBREC, SUBACK or DISCONNECT. Codes `0x80` and above are failures.
///
/// MQTT 3.1.1 sessions report their few failure codes with the same type: a refused
/// subscription is `0x80` (unspecified error); CONNACK refusals are mapped to their MQTT 5
/// counterparts (`NotAuthorized` is `0x87`, and so on).
///
/// ```
/// use mqtt_sessions::ReasonCode;
/// assert_eq!(ReasonCode(0x87).to_string(), "not authorized (0x87)");
/// assert!(ReasonCode(0x87).is_failure());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// Success (0x00).
    pub const SUCCESS: ReasonCode = ReasonCode(0x00);
    /// Unspecified error (0x80).
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    /// Not authorized (0x87).
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);

    /// Whether the code reports a failure (0x80 and above).
    pub fn is_failure(self) -> bool {
        self.0 >= 0x80
    }

    /// The code's name from the MQTT 5 specification, in lower case.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "success",
            0x01 => "granted qos 1",
            0x02 => "granted qos 2",
            0x04 => "disconnect with will message",
            0x10 => "no matching subscribers",
            0x11 => "no subscription existed",
            0x18 => "continue authentication",
            0x19 => "re-authenticate",
            0x80 => "unspecified error",
            0x81 => "malformed packet",
            0x82 => "protocol error",
            0x83 => "implementation specific error",
            0x84 => "unsupported protocol version",
            0x85 => "client identifier not valid",
            0x86 => "bad user name or password",
            0x87 => "not authorized",
            0x88 => "server unavailable",
            0x89 => "server busy",
            0x8A => "banned",
            0x8B => "server shutting down",
            0x8C => "bad authentication method",
            0x8D => "keep alive timeout",
            0x8E => "session taken over",
            0x8F => "topic filter invalid",
            0x90 => "topic name invalid",
            0x91 => "packet identifier in use",
            0x92 => "packet identifier not found",
            0x93 => "receive maximum exceeded",
            0x94 => "topic alias invalid",
            0x95 => "packet too large",
            0x96 => "message rate too high",
            0x97 => "quota exceeded",
            0x98 => "administrative action",
            0x99 => "payload format invalid",
            0x9A => "retain not supported",
            0x9B => "qos not supported",
            0x9C => "use another server",
            0x9D => "server moved",
            0x9E => "shared subscriptions not supported",
            0x9F => "connection rate exceeded",
            0xA0 => "maximum connect time",
            0xA1 => "subscription identifiers not supported",
            0xA2 => "wildcard subscriptions not supported",
            _ => "unknown reason code",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::ReasonCode;

    #[test]
    fn names_and_failure_threshold() {
        for (code, name, failure) in [
            (0x00, "success", false),
            (0x10, "no matching subscribers", false),
            (0x80, "unspecified error", true),
            (0x97, "quota exceeded", true),
            (0xFF, "unknown reason code", true),
        ] {
            assert_eq!(ReasonCode(code).name(), name);
            assert_eq!(ReasonCode(code).is_failure(), failure);
        }
        assert_eq!(ReasonCode(0x8A).to_string(), "banned (0x8a)");
    }
}

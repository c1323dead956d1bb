//! What a packet from the broker is, told from its first bytes without I/O:
//! a `PUBLISH` whose payload is over the limit is recognised from its
//! headers alone, so the connection can skip the payload as it streams in
//! instead of holding it (or dropping the connection over it).

use rumqttc::mqttbytes::{self, QoS};

/// `PUBLISH` in the high four bits of a packet's first byte.
const PUBLISH: u8 = 3;

/// What the bytes at the start of the read buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Too few bytes to tell yet.
    Partial,
    /// A packet the codec reads whole, up to its own size limit.
    Whole,
    /// A `PUBLISH` whose payload is over the limit.
    Oversized(Oversized),
}

/// The headers of a `PUBLISH` whose payload is skipped unread.
#[derive(Debug, PartialEq, Eq)]
pub struct Oversized {
    /// The topic, any bytes that are not UTF-8 replaced.
    pub topic: String,
    pub qos: QoS,
    /// To acknowledge with (0 at QoS 0).
    pub pkid: u16,
    pub retain: bool,
    /// Bytes of the fixed and variable headers, read before the payload.
    pub headers: usize,
    /// Bytes of the payload, which follow the headers.
    pub payload: usize,
}

/// Looks at the packet `buf` starts with: a `PUBLISH` with a payload over
/// `max_payload` bytes is [`Head::Oversized`] as soon as its headers are in
/// (at most 5 + 2 + 65535 + 2 bytes), whatever its length; anything else is
/// left to the codec.
pub fn head(buf: &[u8], max_payload: usize) -> Result<Head, mqttbytes::Error> {
    let Some(&first) = buf.first() else {
        return Ok(Head::Partial);
    };
    let Some((length_bytes, remaining)) = remaining_length(&buf[1..])? else {
        return Ok(Head::Partial);
    };
    if first >> 4 != PUBLISH || remaining <= max_payload {
        return Ok(Head::Whole);
    }
    let qos = mqttbytes::qos((first >> 1) & 0b11)?;
    let fixed = 1 + length_bytes;
    let Some(topic_length) = buf.get(fixed..fixed + 2) else {
        return Ok(Head::Partial);
    };
    let topic_length = usize::from(u16::from_be_bytes([topic_length[0], topic_length[1]]));
    let id_length = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let variable = 2 + topic_length + id_length;
    if variable > remaining {
        return Err(mqttbytes::Error::BoundaryCrossed(variable));
    }
    let Some(header) = buf.get(fixed..fixed + variable) else {
        return Ok(Head::Partial);
    };
    let payload = remaining - variable;
    if payload <= max_payload {
        return Ok(Head::Whole);
    }
    let topic = String::from_utf8_lossy(&header[2..2 + topic_length]).into_owned();
    let pkid = match id_length {
        0 => 0,
        _ => u16::from_be_bytes([header[variable - 2], header[variable - 1]]),
    };
    if qos != QoS::AtMostOnce && pkid == 0 {
        return Err(mqttbytes::Error::PacketIdZero);
    }
    Ok(Head::Oversized(Oversized {
        topic,
        qos,
        pkid,
        retain: first & 1 != 0,
        headers: fixed + variable,
        payload,
    }))
}

/// MQTT's remaining length (1 to 4 bytes, 7 bits each, least significant
/// first) at the start of `buf`, with the bytes it takes; `None` until all
/// of it is there.
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, mqttbytes::Error> {
    let mut length = 0;
    for (i, byte) in buf.iter().enumerate().take(4) {
        length |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((i + 1, length)));
        }
    }
    if buf.len() >= 4 {
        return Err(mqttbytes::Error::MalformedRemainingLength);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use rumqttc::mqttbytes::QoS;
    use rumqttc::{Packet, Publish};

    use super::{Head, Oversized, head};

    const LIMIT: usize = 64 << 10;

    fn encoded(topic: &str, qos: QoS, pkid: u16, retain: bool, payload: usize) -> Vec<u8> {
        let mut publish = Publish::from_bytes(topic, qos, Bytes::from(vec![b'x'; payload]));
        publish.pkid = pkid;
        publish.retain = retain;
        let mut buf = BytesMut::new();
        Packet::Publish(publish)
            .write(&mut buf, usize::MAX)
            .unwrap();
        buf.to_vec()
    }

    #[test]
    fn an_oversized_publish_is_known_by_its_headers_alone() {
        let packet = encoded("bits/set/message", QoS::AtLeastOnce, 7, true, 2 << 20);
        // 1 + 4 length bytes (2 MiB and the headers need 22 bits) + 2 + 16 + 2.
        let headers = 25;
        for cut in 0..headers {
            assert_eq!(head(&packet[..cut], LIMIT).unwrap(), Head::Partial, "{cut}");
        }
        for cut in [headers, headers + 1, 1000, packet.len()] {
            let expected = Oversized {
                topic: "bits/set/message".into(),
                qos: QoS::AtLeastOnce,
                pkid: 7,
                retain: true,
                headers,
                payload: 2 << 20,
            };
            let got = head(&packet[..cut], LIMIT).unwrap();
            assert_eq!(got, Head::Oversized(expected), "{cut}");
        }
        assert_eq!(packet.len(), headers + (2 << 20));
    }

    #[test]
    fn at_qos_0_there_is_no_packet_id() {
        let packet = encoded("a/set/status", QoS::AtMostOnce, 0, false, LIMIT + 1);
        let Ok(Head::Oversized(o)) = head(&packet, LIMIT) else {
            panic!("not oversized");
        };
        assert_eq!((o.qos, o.pkid, o.retain), (QoS::AtMostOnce, 0, false));
        assert_eq!((o.headers, o.payload), (1 + 3 + 2 + 12, LIMIT + 1));
    }

    #[test]
    fn packets_within_the_limit_are_left_to_the_codec() {
        let cases = [
            encoded("bits/set/message", QoS::AtLeastOnce, 1, false, LIMIT),
            encoded("bits/set/message", QoS::AtMostOnce, 0, false, 10),
            // The whole packet is over the limit, its payload is not.
            encoded(&"t".repeat(1000), QoS::AtLeastOnce, 1, false, LIMIT),
        ];
        for packet in &cases {
            assert_eq!(head(packet, LIMIT).unwrap(), Head::Whole);
        }
        let mut puback = BytesMut::new();
        Packet::PubAck(rumqttc::PubAck::new(3))
            .write(&mut puback, 100)
            .unwrap();
        assert_eq!(head(&puback, LIMIT).unwrap(), Head::Whole);
        assert_eq!(head(&[0xd0, 0], LIMIT).unwrap(), Head::Whole, "PINGRESP");
        assert_eq!(head(&[], LIMIT).unwrap(), Head::Partial);
        assert_eq!(head(&[0x30, 0x80], LIMIT).unwrap(), Head::Partial);
    }

    #[test]
    fn malformed_headers_are_errors() {
        // A fifth length byte.
        assert!(head(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], LIMIT).is_err());
        // QoS 3.
        assert!(head(&[0x36, 0xff, 0xff, 0x7f, 0, 1, b'a'], LIMIT).is_err());
        // A topic longer than the packet.
        assert!(head(&[0x30, 0x20, 0xff, 0xff], 10).is_err());
        // Packet id 0 at QoS 1.
        let mut packet = encoded("t", QoS::AtLeastOnce, 1, false, LIMIT + 1);
        packet[7] = 0;
        packet[8] = 0;
        assert!(head(&packet, LIMIT).is_err());
    }
}

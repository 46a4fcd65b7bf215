//! A minimal MQTT 3.1.1 codec: just what the mosquitto side of the benchmark
//! sends and receives (CONNECT with username/password, SUBSCRIBE at QoS 1,
//! PUBLISH at QoS 0/1, PUBACK, PINGREQ). Pure code: bytes in, packets out.

/// Packets the benchmark receives from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    ConnAck {
        return_code: u8,
    },
    SubAck {
        packet_id: u16,
        granted: Vec<u8>,
    },
    Publish {
        qos: u8,
        packet_id: Option<u16>,
        topic: String,
        payload: Vec<u8>,
    },
    PubAck {
        packet_id: u16,
    },
    PingResp,
    /// Any other packet type (first byte), skipped.
    Other(u8),
}

/// A malformed stream (remote protocol error): drop the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn push_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(out: &mut Vec<u8>, first: u8, body: &[u8]) {
    out.push(first);
    push_remaining_length(out, body.len());
    out.extend_from_slice(body);
}

/// CONNECT, clean session, with username and password.
pub fn connect(out: &mut Vec<u8>, client_id: &str, user: &str, password: &str, keepalive: u16) {
    let mut b = Vec::with_capacity(32 + client_id.len() + user.len() + password.len());
    push_str(&mut b, b"MQTT");
    b.push(4); // protocol level 3.1.1
    b.push(0x80 | 0x40 | 0x02); // username, password, clean session
    b.extend_from_slice(&keepalive.to_be_bytes());
    push_str(&mut b, client_id.as_bytes());
    push_str(&mut b, user.as_bytes());
    push_str(&mut b, password.as_bytes());
    packet(out, 0x10, &b);
}

/// SUBSCRIBE to one topic filter.
pub fn subscribe(out: &mut Vec<u8>, packet_id: u16, topic: &str, qos: u8) {
    let mut b = Vec::with_capacity(5 + topic.len());
    b.extend_from_slice(&packet_id.to_be_bytes());
    push_str(&mut b, topic.as_bytes());
    b.push(qos);
    packet(out, 0x82, &b);
}

/// PUBLISH; `packet_id` is required for QoS 1 and ignored for QoS 0.
pub fn publish(out: &mut Vec<u8>, topic: &str, qos: u8, packet_id: u16, payload: &[u8]) {
    let mut b = Vec::with_capacity(4 + topic.len() + payload.len());
    push_str(&mut b, topic.as_bytes());
    if qos > 0 {
        b.extend_from_slice(&packet_id.to_be_bytes());
    }
    b.extend_from_slice(payload);
    packet(out, 0x30 | (qos << 1), &b);
}

pub fn puback(out: &mut Vec<u8>, packet_id: u16) {
    out.push(0x40);
    out.push(2);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

pub fn pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xC0, 0]);
}

/// Largest packet accepted from the broker (the benchmark's are tiny).
pub const MAX_PACKET: usize = 64 * 1024;

/// Incremental decoder: `push` received bytes, then `next_packet` until `Ok(None)`.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    start: usize,
}

impl Reader {
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    pub fn next_packet(&mut self) -> Result<Option<Packet>, Malformed> {
        let avail = &self.buf[self.start..];
        if avail.len() < 2 {
            return Ok(None);
        }
        let first = avail[0];
        let mut len = 0usize;
        let mut shift = 0;
        let mut i = 1;
        loop {
            let Some(&b) = avail.get(i) else {
                return Ok(None);
            };
            len |= ((b & 0x7F) as usize) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if i > 4 {
                return Err(Malformed);
            }
        }
        if len > MAX_PACKET {
            return Err(Malformed);
        }
        if avail.len() < i + len {
            return Ok(None);
        }
        let body = &avail[i..i + len];
        let p = decode(first, body)?;
        self.start += i + len;
        if self.start > 4096 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(p))
    }
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, Malformed> {
    Ok(u16::from_be_bytes([
        *b.get(at).ok_or(Malformed)?,
        *b.get(at + 1).ok_or(Malformed)?,
    ]))
}

fn decode(first: u8, body: &[u8]) -> Result<Packet, Malformed> {
    Ok(match first >> 4 {
        2 => Packet::ConnAck {
            return_code: *body.get(1).ok_or(Malformed)?,
        },
        3 => {
            let qos = (first >> 1) & 3;
            let tlen = u16_at(body, 0)? as usize;
            let topic = body.get(2..2 + tlen).ok_or(Malformed)?;
            let mut at = 2 + tlen;
            let packet_id = if qos > 0 {
                let id = u16_at(body, at)?;
                at += 2;
                Some(id)
            } else {
                None
            };
            Packet::Publish {
                qos,
                packet_id,
                topic: String::from_utf8(topic.to_vec()).map_err(|_| Malformed)?,
                payload: body[at..].to_vec(),
            }
        }
        4 => Packet::PubAck {
            packet_id: u16_at(body, 0)?,
        },
        9 => Packet::SubAck {
            packet_id: u16_at(body, 0)?,
            granted: body.get(2..).ok_or(Malformed)?.to_vec(),
        },
        13 => Packet::PingResp,
        _ => Packet::Other(first),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Packet> {
        let mut r = Reader::default();
        r.push(bytes);
        std::iter::from_fn(|| r.next_packet().unwrap()).collect()
    }

    #[test]
    fn connect_matches_the_spec_layout() {
        let mut out = Vec::new();
        connect(&mut out, "c1", "u", "pw", 60);
        let expected: &[u8] = &[
            0x10, 21, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 2, b'c', b'1', 0, 1, b'u',
            0, 2, b'p', b'w',
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn subscribe_puback_ping_bytes() {
        let mut out = Vec::new();
        subscribe(&mut out, 7, "a/b", 1);
        assert_eq!(out, [0x82, 8, 0, 7, 0, 3, b'a', b'/', b'b', 1]);
        out.clear();
        puback(&mut out, 0x1234);
        pingreq(&mut out);
        assert_eq!(out, [0x40, 2, 0x12, 0x34, 0xC0, 0]);
    }

    #[test]
    fn publish_round_trips_at_both_qos() {
        let mut out = Vec::new();
        publish(&mut out, "t", 1, 9, b"hello");
        publish(&mut out, "t", 0, 0, b"x");
        assert_eq!(
            decode_all(&out),
            vec![
                Packet::Publish {
                    qos: 1,
                    packet_id: Some(9),
                    topic: "t".into(),
                    payload: b"hello".to_vec()
                },
                Packet::Publish {
                    qos: 0,
                    packet_id: None,
                    topic: "t".into(),
                    payload: b"x".to_vec()
                },
            ]
        );
    }

    #[test]
    fn remaining_length_multi_byte() {
        let payload = vec![b'p'; 300];
        let mut out = Vec::new();
        publish(&mut out, "t", 1, 1, &payload);
        assert_eq!(&out[1..3], &[(305 % 128) as u8 | 0x80, (305 / 128) as u8]);
        let got = decode_all(&out);
        assert!(matches!(&got[0], Packet::Publish { payload: p, .. } if p.len() == 300));
    }

    #[test]
    fn broker_packets_byte_by_byte() {
        let stream: &[u8] = &[
            0x20, 2, 0, 0, // CONNACK accepted
            0x90, 3, 0, 7, 1, // SUBACK id 7 granted QoS 1
            0x40, 2, 0, 5, // PUBACK 5
            0xD0, 0, // PINGRESP
        ];
        let mut r = Reader::default();
        let mut got = Vec::new();
        for b in stream {
            r.push(std::slice::from_ref(b));
            while let Some(p) = r.next_packet().unwrap() {
                got.push(p);
            }
        }
        assert_eq!(
            got,
            vec![
                Packet::ConnAck { return_code: 0 },
                Packet::SubAck {
                    packet_id: 7,
                    granted: vec![1]
                },
                Packet::PubAck { packet_id: 5 },
                Packet::PingResp,
            ]
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let mut r = Reader::default();
        r.push(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert_eq!(r.next_packet(), Err(Malformed));
        let mut r = Reader::default();
        r.push(&[0x30, 3, 0, 9, b'x']); // topic length beyond the body
        assert_eq!(r.next_packet(), Err(Malformed));
    }
}

//! go-micro's envelope on NATS: its `broker.Message` encoded by its default broker codec
//! (`codec/json`, Go's `encoding/json` for a non-proto value):
//! `{"Header":{"Content-Type":"application/grpc+proto","Micro-Topic":"t",..},"Body":"<base64>"}`.
//!
//! Go writes the header map sorted and `null` for a nil map, the body as standard base64 with
//! padding (`null` for a nil slice). Go's decoder matches field names without case, so
//! `header` / `body` decode too.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Message;

/// A payload that is not go-micro's envelope.
#[derive(Debug, thiserror::Error)]
#[error("not a go-micro broker message ({len} bytes): {reason}")]
pub struct EnvelopeError {
    /// The payload's size.
    pub len: usize,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Serialize)]
struct Out<'a> {
    #[serde(rename = "Header")]
    header: &'a BTreeMap<String, String>,
    #[serde(rename = "Body", serialize_with = "base64_out")]
    body: &'a [u8],
}

#[derive(Deserialize)]
struct In {
    #[serde(
        rename = "Header",
        alias = "header",
        default,
        deserialize_with = "null_map"
    )]
    header: BTreeMap<String, String>,
    #[serde(
        rename = "Body",
        alias = "body",
        default,
        deserialize_with = "base64_in"
    )]
    body: Vec<u8>,
}

fn base64_out<S: Serializer>(body: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(body))
}

fn base64_in<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    match text {
        None => Ok(Vec::new()),
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom),
    }
}

fn null_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

/// The envelope of `message`, as go-micro's NATS broker publishes it.
pub fn encode(message: &Message) -> Bytes {
    let out = Out {
        header: &message.header,
        body: &message.body,
    };
    // A map of strings and a string cannot fail to serialise.
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// The message in an envelope go-micro (or micro-rs) published.
pub fn decode(payload: &[u8]) -> Result<Message, EnvelopeError> {
    // Go decodes only an object into a struct (serde would take an array too).
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(EnvelopeError {
            len: payload.len(),
            reason: "not a JSON object".into(),
        });
    }
    let parsed: In = serde_json::from_slice(payload).map_err(|e| EnvelopeError {
        len: payload.len(),
        reason: e.to_string(),
    })?;
    Ok(Message {
        header: parsed.header,
        body: Bytes::from(parsed.body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_go_micro() {
        let mut message = Message::new(&b"\x0a\x02hi"[..]);
        message
            .header
            .insert("Micro-Topic".into(), "greeter.events".into());
        message
            .header
            .insert("Content-Type".into(), "application/grpc+proto".into());
        let text = String::from_utf8(encode(&message).to_vec()).unwrap();
        assert_eq!(
            text,
            r#"{"Header":{"Content-Type":"application/grpc+proto","Micro-Topic":"greeter.events"},"Body":"CgJoaQ=="}"#
        );
        assert_eq!(decode(text.as_bytes()).unwrap(), message);
    }

    #[test]
    fn decodes_go_nulls_and_any_case() {
        let message = decode(br#"{"Header":null,"Body":null}"#).unwrap();
        assert!(message.header.is_empty() && message.body.is_empty());
        let message = decode(br#"{"header":{"a":"b"},"body":"AQI="}"#).unwrap();
        assert_eq!(message.get("A"), Some("b"));
        assert_eq!(&message.body[..], &[1, 2]);
        assert_eq!(decode(b"{}").unwrap(), Message::default());
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [&b"\x0a\x02hi"[..], b"[]", br#"{"Body":"not base64!"}"#, b""] {
            let err = decode(bad).unwrap_err();
            assert_eq!(err.len, bad.len());
        }
    }
}

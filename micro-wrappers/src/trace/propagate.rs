//! The propagation formats, read from and written to a call's metadata in place: W3C
//! `traceparent` / `tracestate`, B3 single (`b3`) and multi (`x-b3-*`), Jaeger's
//! `uber-trace-id`. Nothing is copied but the header value written. W3C baggage and Jaeger's
//! `uberctx-*` are call metadata that micro's [`CallContext`](micro_core::CallContext) carries
//! on to the handler's calls as they are.
//!
//! A malformed header is ignored (the call starts a new trace): never an error.

use http::{HeaderMap, HeaderName, HeaderValue};
use micro_core::TraceParent;

use super::Propagation;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
const UBER_TRACE_ID: HeaderName = HeaderName::from_static("uber-trace-id");

/// A remote parent: its ids, its decision (`None`: deferred to this side's sampler, as a B3
/// header without a sampling state asks), its `tracestate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) sampled: Option<bool>,
    pub(crate) state: Option<HeaderValue>,
}

/// The caller's context in the first of `formats` (in order; B3 single before B3 multi, as
/// the B3 specification asks) that the headers carry well-formed; a later format overrides
/// an earlier one, as OpenTelemetry's composite propagator.
pub(crate) fn extract(headers: &HeaderMap, formats: &[Propagation]) -> Option<Remote> {
    let mut found = None;
    for format in formats {
        let remote = match format {
            Propagation::TraceContext => w3c(headers),
            Propagation::Baggage => None,
            Propagation::B3 => b3_single(headers),
            Propagation::B3Multi
                if formats.contains(&Propagation::B3) && b3_single(headers).is_some() =>
            {
                None
            }
            Propagation::B3Multi => b3_multi(headers),
            Propagation::Jaeger => jaeger(headers),
        };
        if remote.is_some() {
            found = remote;
        }
    }
    found
}

/// Writes `span` in every one of `formats` (one new header value each).
pub(crate) fn inject(headers: &mut HeaderMap, formats: &[Propagation], span: &TraceParent) {
    for format in formats {
        match format {
            Propagation::TraceContext => {
                let mut buf = [0u8; 55];
                buf[..3].copy_from_slice(b"00-");
                hex_into(&mut buf[3..35], span.trace_id);
                buf[35] = b'-';
                hex_into(&mut buf[36..52], u128::from(span.span_id));
                buf[52..].copy_from_slice(if span.sampled { b"-01" } else { b"-00" });
                put(headers, TRACEPARENT, &buf);
                if let Some(state) = &span.state {
                    headers.insert(TRACESTATE, state.clone());
                }
            }
            Propagation::Baggage => {}
            Propagation::B3 => {
                let mut buf = [0u8; 51];
                hex_into(&mut buf[..32], span.trace_id);
                buf[32] = b'-';
                hex_into(&mut buf[33..49], u128::from(span.span_id));
                buf[49..].copy_from_slice(if span.sampled { b"-1" } else { b"-0" });
                put(headers, B3, &buf);
            }
            Propagation::B3Multi => {
                let mut buf = [0u8; 32];
                hex_into(&mut buf, span.trace_id);
                put(headers, B3_TRACE_ID, &buf);
                let mut buf = [0u8; 16];
                hex_into(&mut buf, u128::from(span.span_id));
                put(headers, B3_SPAN_ID, &buf);
                let sampled = HeaderValue::from_static(if span.sampled { "1" } else { "0" });
                headers.insert(B3_SAMPLED, sampled);
            }
            Propagation::Jaeger => {
                let mut buf = [0u8; 53];
                hex_into(&mut buf[..32], span.trace_id);
                buf[32] = b':';
                hex_into(&mut buf[33..49], u128::from(span.span_id));
                buf[49..].copy_from_slice(if span.sampled { b":0:1" } else { b":0:0" });
                put(headers, UBER_TRACE_ID, &buf);
            }
        }
    }
}

/// Inserts a value that changes from call to call, marked never to be indexed by HTTP/2's
/// header compression: indexed, each call's span id would take a place in the connection's
/// 4 KiB table and push out the headers every call repeats.
fn put(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) {
    if let Ok(mut value) = HeaderValue::from_bytes(value) {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
}

/// `value` as `out.len()` lowercase hex digits (its low `4 * out.len()` bits).
fn hex_into(out: &mut [u8], value: u128) {
    /// Each byte as its two lowercase hex digits.
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut pairs = [[0; 2]; 256];
        let mut i = 0;
        while i < 256 {
            pairs[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
            i += 1;
        }
        pairs
    };
    // From the last digit: a byte (two digits) at a time.
    let mut rest = value;
    for chunk in out.rchunks_mut(2) {
        let pair = PAIRS[(rest & 0xff) as usize];
        match chunk {
            [high, low] => (*high, *low) = (pair[0], pair[1]),
            [low] => *low = pair[1],
            _ => {}
        }
        rest >>= if chunk.len() == 2 { 8 } else { 4 };
    }
}

/// The value of each byte as a hex digit, 0xff when it is none; `UPPER` also reads capitals.
const fn digits(upper: bool) -> [u8; 256] {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        table[b"0123456789abcdef"[i] as usize] = i as u8;
        if upper {
            table[b"0123456789ABCDEF"[i] as usize] = i as u8;
        }
        i += 1;
    }
    table
}
const LOWER_DIGITS: [u8; 256] = digits(false);
const ANY_DIGITS: [u8; 256] = digits(true);

/// Hex digits, 1 to 32 of them, as a number; `lower` refuses capitals (W3C). Read by
/// table, 16 digits at a time in a `u64` (an id is parsed on every traced call).
fn hex(s: &[u8], lower: bool) -> Option<u128> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    let table = if lower { &LOWER_DIGITS } else { &ANY_DIGITS };
    let half = |part: &[u8]| -> Option<u64> {
        let mut n: u64 = 0;
        let mut bad = 0u8;
        for &b in part {
            let d = table[b as usize];
            bad |= d;
            n = (n << 4) | u64::from(d & 0xf);
        }
        (bad & 0xf0 == 0).then_some(n)
    };
    let split = s.len().saturating_sub(16);
    let low = half(&s[split..])?;
    let high = half(&s[..split])?;
    Some((u128::from(high) << 64) | u128::from(low))
}

fn ids(trace: Option<u128>, span: Option<u128>) -> Option<(u128, u64)> {
    let (trace, span) = (trace?, u64::try_from(span?).ok()?);
    (trace != 0 && span != 0).then_some((trace, span))
}

fn value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    headers.get(name).map(HeaderValue::as_bytes)
}

/// `traceparent: <version>-<32 hex>-<16 hex>-<2 hex>` as OpenTelemetry reads it: lowercase
/// hex, version `ff` refused, version 00 with exactly four fields, ids not all zero.
fn w3c(headers: &HeaderMap) -> Option<Remote> {
    let v = value(headers, &TRACEPARENT)?;
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex(&v[..2], true)?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let (trace_id, span_id) = ids(hex(&v[3..35], true), hex(&v[36..52], true))?;
    let flags = hex(&v[53..55], true)?;
    let state = headers
        .get(TRACESTATE)
        .filter(|s| valid_state(s.as_bytes()))
        .cloned();
    Some(Remote {
        trace_id,
        span_id,
        sampled: Some(flags & 1 == 1),
        state,
    })
}

/// A `tracestate` kept to pass on: printable ASCII, at most 32 `key=value` members.
fn valid_state(s: &[u8]) -> bool {
    let mut members = 0;
    for member in s.split(|&b| b == b',') {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        members += 1;
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            return false;
        };
        if eq == 0 || eq + 1 == member.len() || members > 32 {
            return false;
        }
        if !member.iter().all(|&b| (0x20..0x7f).contains(&b)) {
            return false;
        }
    }
    members > 0
}

/// `b3: <trace>-<span>[-<1|0|d>[-<parent>]]`; `b3: 0` alone is a decision without a parent.
fn b3_single(headers: &HeaderMap) -> Option<Remote> {
    let v = value(headers, &B3)?;
    let mut parts = v.split(|&b| b == b'-');
    let (trace, span) = (parts.next()?, parts.next()?);
    if trace.len() != 16 && trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let (trace_id, span_id) = ids(hex(trace, false), hex(span, false))?;
    let sampled = match parts.next() {
        None => None,
        Some(b"1" | b"d") => Some(true),
        Some(b"0") => Some(false),
        Some(_) => return None,
    };
    if let Some(parent) = parts.next()
        && (parent.len() != 16 || hex(parent, false).is_none())
    {
        return None;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Remote {
        trace_id,
        span_id,
        sampled,
        state: None,
    })
}

/// `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled` (`1`/`true`, `0`/`false`), `x-b3-flags: 1`
/// (debug: sampled).
fn b3_multi(headers: &HeaderMap) -> Option<Remote> {
    let trace = value(headers, &B3_TRACE_ID)?;
    let span = value(headers, &B3_SPAN_ID)?;
    if trace.len() != 16 && trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let (trace_id, span_id) = ids(hex(trace, false), hex(span, false))?;
    let debug = value(headers, &B3_FLAGS) == Some(b"1");
    let sampled = match value(headers, &B3_SAMPLED) {
        _ if debug => Some(true),
        None => None,
        Some(b"1" | b"true") => Some(true),
        Some(b"0" | b"false") => Some(false),
        Some(_) => return None,
    };
    Some(Remote {
        trace_id,
        span_id,
        sampled,
        state: None,
    })
}

/// `uber-trace-id: <trace>:<span>:<parent>:<flags>` (hex; some clients write the colons as
/// `%3A`); flag 1 sampled, 2 debug (sampled).
fn jaeger(headers: &HeaderMap) -> Option<Remote> {
    let v = value(headers, &UBER_TRACE_ID)?;
    let mut fields: [&[u8]; 4] = [&[]; 4];
    let (mut n, mut start, mut i) = (0, 0, 0);
    while i < v.len() {
        let sep = if v[i] == b':' {
            1
        } else if v[i] == b'%' && v.len() >= i + 3 && v[i + 1] == b'3' && v[i + 2] | 0x20 == b'a' {
            3
        } else {
            i += 1;
            continue;
        };
        *fields.get_mut(n)? = &v[start..i];
        n += 1;
        i += sep;
        start = i;
    }
    *fields.get_mut(n)? = &v[start..];
    if n != 3 {
        return None;
    }
    let [trace, span, parent, flags] = fields;
    if span.len() > 16 || flags.len() > 2 || hex(parent, false).is_none() {
        return None;
    }
    let (trace_id, span_id) = ids(hex(trace, false), hex(span, false))?;
    let flags = hex(flags, false)?;
    Some(Remote {
        trace_id,
        span_id,
        sampled: Some(flags & 0b11 != 0),
        state: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;
    const SPAN: u64 = 0x00f067aa0ba902b7;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn hex_writes_as_format() {
        for value in [0, 1, 0xab, TRACE, u128::from(SPAN), u128::MAX] {
            for width in [1usize, 2, 3, 16, 31, 32] {
                let mut out = vec![0u8; width];
                hex_into(&mut out, value);
                let all = format!("{value:032x}");
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    &all[32 - width..],
                    "{value:x} {width}"
                );
            }
        }
    }

    #[test]
    fn hex_reads_as_from_str_radix() {
        for s in [
            "0",
            "f",
            "F",
            "00f067aa0ba902b7",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "1234567890abcdef1",
            "ffffffffffffffffffffffffffffffff",
            "aB",
            "g",
            "12 4",
            "-1",
            "+1",
            "",
            "123456789012345678901234567890123",
        ] {
            let want = (!s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u128::from_str_radix(s, 16).unwrap());
            assert_eq!(hex(s.as_bytes(), false), want, "{s:?}");
            let lower = want.filter(|_| !s.bytes().any(|b| b.is_ascii_uppercase()));
            assert_eq!(hex(s.as_bytes(), true), lower, "{s:?} lowercase");
        }
    }

    fn one(format: Propagation, pairs: &[(&'static str, &str)]) -> Option<Remote> {
        extract(&headers(pairs), &[format])
    }

    #[test]
    fn every_format_round_trips() {
        let span = TraceParent {
            trace_id: TRACE,
            span_id: SPAN,
            sampled: true,
            state: Some(HeaderValue::from_static("a=1,b=2")),
            route: 0,
        };
        for format in [
            Propagation::TraceContext,
            Propagation::B3,
            Propagation::B3Multi,
            Propagation::Jaeger,
        ] {
            for sampled in [true, false] {
                let span = TraceParent {
                    sampled,
                    ..span.clone()
                };
                let mut map = HeaderMap::new();
                inject(&mut map, &[format], &span);
                let got = extract(&map, &[format]).unwrap_or_else(|| panic!("{format:?}"));
                assert_eq!((got.trace_id, got.span_id), (TRACE, SPAN), "{format:?}");
                assert_eq!(got.sampled, Some(sampled), "{format:?}");
                if format == Propagation::TraceContext {
                    assert_eq!(got.state, span.state);
                }
            }
        }
        let mut map = HeaderMap::new();
        inject(&mut map, &[Propagation::TraceContext], &span);
        assert_eq!(
            map["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(map["traceparent"].is_sensitive());
    }

    #[test]
    fn the_formats_peers_write_are_read() {
        let w3c = one(
            Propagation::TraceContext,
            &[(
                "traceparent",
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-future",
            )],
        )
        .unwrap();
        assert_eq!(
            (w3c.trace_id, w3c.span_id, w3c.sampled),
            (TRACE, SPAN, Some(true))
        );
        let b3 = one(
            Propagation::B3,
            &[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7")],
        )
        .unwrap();
        assert_eq!((b3.trace_id, b3.sampled), (0xa3ce929d0e0e4736, None));
        let b3 = one(
            Propagation::B3,
            &[(
                "b3",
                "4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-d-0000000000000001",
            )],
        )
        .unwrap();
        assert_eq!((b3.trace_id, b3.sampled), (TRACE, Some(true)));
        let multi = one(
            Propagation::B3Multi,
            &[
                ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("x-b3-spanid", "00f067aa0ba902b7"),
                ("x-b3-flags", "1"),
            ],
        )
        .unwrap();
        assert_eq!(multi.sampled, Some(true));
        let jaeger = one(
            Propagation::Jaeger,
            &[("uber-trace-id", "abc%3A1f%3A0%3A2")],
        )
        .unwrap();
        assert_eq!(
            (jaeger.trace_id, jaeger.span_id, jaeger.sampled),
            (0xabc, 0x1f, Some(true))
        );
        // B3 single wins over multi; a later format over an earlier one.
        let both = headers(&[
            ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
            ("x-b3-traceid", "0000000000000001"),
            ("x-b3-spanid", "0000000000000002"),
            ("uber-trace-id", "5:6:0:1"),
        ]);
        let got = extract(&both, &[Propagation::B3, Propagation::B3Multi]).unwrap();
        assert_eq!(got.trace_id, TRACE);
        let got = extract(&both, &[Propagation::B3Multi, Propagation::B3]).unwrap();
        assert_eq!(got.trace_id, TRACE);
        let got = extract(&both, &[Propagation::B3, Propagation::Jaeger]).unwrap();
        assert_eq!(got.trace_id, 5);
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(
                one(Propagation::TraceContext, &[("traceparent", bad)]).is_none(),
                "{bad}"
            );
        }
        for bad in [
            "",
            "0",
            "not-a-b3-header",
            "abc-def-1",
            "4bf92f3577b34da6-00f067aa0ba902b7-x",
        ] {
            assert!(one(Propagation::B3, &[("b3", bad)]).is_none(), "{bad}");
        }
        for bad in [
            "",
            "garbage",
            "1:2:3",
            "1:2:3:4:5",
            "0:1:0:1",
            "1:0:0:1",
            "xyz:1:0:1",
            "zz:yy:0:1",
            "4bf92f3577b34da6a3ce929d0e0e47361:1:0:1",
            "1:2:0:100",
        ] {
            assert!(
                one(Propagation::Jaeger, &[("uber-trace-id", bad)]).is_none(),
                "{bad}"
            );
        }
        let state = one(
            Propagation::TraceContext,
            &[
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("tracestate", "%%%"),
            ],
        )
        .unwrap();
        assert_eq!(state.state, None, "a malformed tracestate is dropped");
    }
}

//! Request timeouts on the wire: gRPC's `grpc-timeout` and go-micro's `timeout` header.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// gRPC's standard timeout header.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
/// [`GRPC_TIMEOUT`] as a header name, for lookups and inserts on every call (a `&str` name is
/// parsed, and copied on insert, each time).
pub static GRPC_TIMEOUT_NAME: HeaderName = HeaderName::from_static(GRPC_TIMEOUT);
/// go-micro's timeout header: nanoseconds as a decimal string.
pub const MICRO_TIMEOUT: &str = "timeout";

/// Reads the timeout a caller sent: `grpc-timeout`, else go-micro's `timeout`. A malformed
/// value is ignored (no timeout), never an error: a bad header must not fail the call.
pub fn from_headers(headers: &HeaderMap) -> Option<Duration> {
    grpc_from_headers(headers).or_else(|| micro_from_headers(headers))
}

/// `grpc-timeout`, if present and well formed.
pub fn grpc_from_headers(headers: &HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get(&GRPC_TIMEOUT_NAME)?.as_bytes())
}

/// go-micro's `timeout` (nanoseconds), if present and well formed.
pub fn micro_from_headers(headers: &HeaderMap) -> Option<Duration> {
    static NAME: HeaderName = HeaderName::from_static(MICRO_TIMEOUT);
    let nanos = headers
        .get(&NAME)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Parses `grpc-timeout`: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    // At most 8 digits: no overflow.
    let mut n = 0u64;
    for digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(digit - b'0');
    }
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats the time left for `grpc-timeout`, rounded down to 3 significant digits.
///
/// Rounding makes consecutive calls send the same value (a 30 s budget is `29900m` on every
/// call), so HTTP/2 header compression sends it as a one-byte index instead of re-encoding a
/// fresh literal on both sides; the budget shrinks by under 1 %, never grows.
pub fn format_grpc_timeout_rounded(timeout: Duration) -> HeaderValue {
    thread_local! {
        /// The last value formatted on this thread: calls with the same budget reuse it.
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    // u64 nanoseconds last 584 years; one division by a power of ten (u128 would divide in
    // software, once per digit).
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let scale = 10u64.pow(nanos.checked_ilog10().unwrap_or(0).saturating_sub(2));
    let rounded = nanos / scale * scale;
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((key, value)) if *key == rounded => value.clone(),
            _ => {
                let value = format_grpc_timeout(Duration::from_nanos(rounded));
                *last = Some((rounded, value.clone()));
                value
            }
        }
    })
}

/// Formats a timeout for `grpc-timeout` with the finest unit that fits in 8 digits.
pub fn format_grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let (value, unit) = if nanos <= MAX {
        (nanos, 'n')
    } else if nanos / 1_000 <= MAX {
        (nanos.div_ceil(1_000), 'u')
    } else if nanos / 1_000_000 <= MAX {
        (nanos.div_ceil(1_000_000), 'm')
    } else if timeout.as_secs() as u128 <= MAX {
        (timeout.as_secs() as u128, 'S')
    } else {
        ((timeout.as_secs() / 3600).min(MAX as u64) as u128, 'H')
    };
    // Digits and an ASCII unit: always a valid header value.
    HeaderValue::from_str(&format!("{value}{unit}")).unwrap_or(HeaderValue::from_static("0n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse_grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout(b"50m"), Some(Duration::from_millis(50)));
        assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(b"9n"), Some(Duration::from_nanos(9)));
        for bad in [
            &b""[..],
            b"S",
            b"123456789S",
            b"-1S",
            b"1x",
            b"1.5S",
            b"\xff",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn format_round_trips_within_a_unit() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(50),
            Duration::from_secs(30),
            Duration::from_secs(86_400 * 365 * 10),
        ] {
            let parsed = parse_grpc_timeout(format_grpc_timeout(d).as_bytes()).unwrap();
            assert!(
                parsed >= d && parsed - d < Duration::from_secs(3600),
                "{d:?} -> {parsed:?}"
            );
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(50)), "50000000n");
        assert_eq!(format_grpc_timeout(Duration::from_secs(30)), "30000000u");
    }

    #[test]
    fn rounded_format_is_stable_and_never_longer() {
        let a = format_grpc_timeout_rounded(Duration::from_nanos(29_999_871_234));
        let b = format_grpc_timeout_rounded(Duration::from_nanos(29_998_000_001));
        assert_eq!(a, b);
        assert_eq!(a, "29900000u");
        assert_eq!(
            format_grpc_timeout_rounded(Duration::from_millis(50)),
            "50000000n"
        );
        assert_eq!(format_grpc_timeout_rounded(Duration::from_nanos(7)), "7n");
        assert_eq!(format_grpc_timeout_rounded(Duration::ZERO), "0n");
        for nanos in [1u64, 999, 1_234_567, 86_400_000_000_000, u64::MAX] {
            let d = Duration::from_nanos(nanos);
            let back = parse_grpc_timeout(format_grpc_timeout_rounded(d).as_bytes()).unwrap();
            assert!(
                back <= d && back.as_nanos() * 1000 >= (d.as_nanos() * 990).saturating_sub(1000),
                "{d:?} -> {back:?}"
            );
        }
    }

    #[test]
    fn go_micro_timeout_header_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert(MICRO_TIMEOUT, HeaderValue::from_static("50000000"));
        assert_eq!(from_headers(&headers), Some(Duration::from_millis(50)));
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("1S"));
        assert_eq!(from_headers(&headers), Some(Duration::from_secs(1)));
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("garbage"));
        assert_eq!(from_headers(&headers), Some(Duration::from_millis(50)));
        headers.insert(MICRO_TIMEOUT, HeaderValue::from_static("soon"));
        assert_eq!(from_headers(&headers), None);
    }
}

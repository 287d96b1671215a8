//! Pure, I/O-free protocol codecs.
//!
//! Every decoder works on the connection's input buffer as a `&[u8]` and
//! reports how many bytes it consumed, so the event loop can drop exactly
//! that prefix; "need more bytes" is `Ok(None)` rather than an error. Every
//! encoder appends to the connection's output buffer. Nothing here performs
//! I/O, so each codec can be tested and fuzzed in isolation.

pub mod frame;
pub mod http;
pub mod proxy_protocol;
pub mod resp;

/// Longest decimal rendering of a `u64` (`18446744073709551615`).
const MAX_U64_DIGITS: usize = 20;

/// Appends the decimal form of `value` to `out`.
///
/// Replies and response heads are written on the hot path; formatting into a
/// stack buffer avoids the temporary `String` that `format!` would allocate.
pub fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; MAX_U64_DIGITS];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        // `rest % 10` is below 10, so the narrowing cannot lose information.
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends the decimal form of `value`, with a leading `-` when negative.
pub fn push_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    // `unsigned_abs` sidesteps the overflow of negating `i64::MIN`.
    push_u64(out, value.unsigned_abs());
}

/// Cuts `data` at the given points (taken modulo its length, in any order)
/// into consecutive chunks: the property tests feed a decoder every such
/// split of one byte stream.
#[cfg(test)]
pub(crate) fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points {
        chunks.push(&data[start..point]);
        start = point;
    }
    chunks.push(&data[start..]);
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_u64(value: u64) -> String {
        let mut out = Vec::new();
        push_u64(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    fn render_i64(value: i64) -> String {
        let mut out = Vec::new();
        push_i64(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn formats_unsigned_edges() {
        for value in [0, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(render_u64(value), value.to_string());
        }
    }

    #[test]
    fn formats_signed_edges() {
        for value in [0, -1, 1, -10, i64::MIN, i64::MAX] {
            assert_eq!(render_i64(value), value.to_string());
        }
    }

    proptest::proptest! {
        #[test]
        fn matches_std_formatting(value: i64) {
            proptest::prop_assert_eq!(render_i64(value), value.to_string());
        }
    }
}

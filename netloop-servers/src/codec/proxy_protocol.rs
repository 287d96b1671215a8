//! The PROXY protocol (HAProxy's specification, versions 1 and 2): a header
//! a proxy sends first on its upstream connection, naming the client's
//! address and the address the client connected to, so the server behind
//! it knows who is talking.
//!
//! - v1 is a text line: `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`
//!   (at most 107 bytes), or `PROXY UNKNOWN ...\r\n`.
//! - v2 is binary: a 12-byte signature, version and command, family, a
//!   length, then the addresses (and optional TLVs, skipped here).
//!
//! [`ProxyDecoder`] is strict, as a receiver must be: the first byte that
//! cannot begin a header is an error, so a client that sends no header is
//! refused at once instead of being waited for. It keeps its place between
//! calls, so feeding it a header split into any number of reads costs time
//! linear in the bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// What every v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (the specification's limit).
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a v2 header: signature, version and command, family,
/// length.
const V2_FIXED_LEN: usize = 16;
/// The longest v2 address block (addresses and TLVs) accepted. The
/// specification allows up to 65535 bytes; real senders use a few hundred,
/// and a receiver must buffer the whole header before it can relay a byte.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// Which version to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The text line.
    V1,
    /// The binary header.
    V2,
}

/// What a header says about the connection it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied TCP connection: the client's address, and the address it
    /// connected to.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// Where the client connected.
        destination: SocketAddr,
    },
    /// No client address: v1 `UNKNOWN`, a v2 `LOCAL` command (a health
    /// check from the balancer itself), or a v2 family other than TCP. The
    /// receiver uses the connection's own addresses.
    Local,
}

/// Why a header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes do not begin with either version's signature.
    #[error("no PROXY protocol signature")]
    NoSignature,
    /// No CRLF within the 107 bytes a v1 header may take.
    #[error("PROXY v1 header longer than 107 bytes")]
    V1TooLong,
    /// A v1 line that does not follow the grammar.
    #[error("malformed PROXY v1 header")]
    V1Malformed,
    /// A v2 version other than 2.
    #[error("unsupported PROXY v2 version")]
    V2Version,
    /// A v2 command other than LOCAL and PROXY.
    #[error("unsupported PROXY v2 command")]
    V2Command,
    /// A v2 family or transport the specification does not define.
    #[error("unknown PROXY v2 address family")]
    V2Family,
    /// A v2 address block shorter than its family's addresses.
    #[error("PROXY v2 address block too short")]
    V2Short,
    /// A v2 address block longer than [`V2_MAX_PAYLOAD`].
    #[error("PROXY v2 header too long")]
    V2TooLong,
}

/// A complete header and the bytes it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// What it says.
    pub header: ProxyHeader,
    /// Its length: the stream's payload begins after it.
    pub len: usize,
}

/// An incremental header decoder.
///
/// Give [`decode`](Self::decode) the connection's unconsumed input each
/// time more arrives (the same stream, grown); it looks only at the bytes
/// it has not seen. Once it returns a header, consume [`Decoded::len`]
/// bytes: the rest is the client's payload.
///
/// ```
/// use netloop_servers::codec::proxy_protocol::{ProxyDecoder, ProxyHeader};
///
/// let stream = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
/// let mut decoder = ProxyDecoder::default();
/// assert_eq!(decoder.decode(&stream[..20]), Ok(None));
/// let decoded = decoder.decode(stream).unwrap().unwrap();
/// assert_eq!(&stream[decoded.len..], b"GET / HTTP/1.1\r\n");
/// assert!(matches!(decoded.header, ProxyHeader::Proxied { .. }));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyDecoder {
    stage: Stage,
}

/// Where the decoder is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Stage {
    /// Matching the signature the first byte chose; `matched` bytes of it
    /// are checked.
    #[default]
    Start,
    Signature {
        version: Version,
        matched: usize,
    },
    /// A v1 line whose first `scanned` bytes hold no line feed.
    V1 {
        scanned: usize,
    },
    /// A v2 header: waiting for its fixed part, then its address block.
    V2,
}

impl ProxyDecoder {
    /// Decodes a header from the start of `input`: `Ok(None)` until it is
    /// complete, then the header and its length.
    pub fn decode(&mut self, input: &[u8]) -> Result<Option<Decoded>, ProxyError> {
        loop {
            match self.stage {
                Stage::Start => {
                    let version = match input.first() {
                        None => return Ok(None),
                        Some(b'P') => Version::V1,
                        Some(b'\r') => Version::V2,
                        Some(_) => return Err(ProxyError::NoSignature),
                    };
                    self.stage = Stage::Signature {
                        version,
                        matched: 0,
                    };
                }
                Stage::Signature { version, matched } => {
                    let signature = match version {
                        Version::V1 => V1_PREFIX,
                        Version::V2 => &V2_SIGNATURE[..],
                    };
                    let end = input.len().min(signature.len());
                    if input.get(matched..end) != signature.get(matched..end) {
                        return Err(ProxyError::NoSignature);
                    }
                    if end < signature.len() {
                        self.stage = Stage::Signature {
                            version,
                            matched: end,
                        };
                        return Ok(None);
                    }
                    self.stage = match version {
                        Version::V1 => Stage::V1 { scanned: end },
                        Version::V2 => Stage::V2,
                    };
                }
                Stage::V1 { scanned } => return self.decode_v1(input, scanned),
                Stage::V2 => return decode_v2(input),
            }
        }
    }

    fn decode_v1(&mut self, input: &[u8], scanned: usize) -> Result<Option<Decoded>, ProxyError> {
        let limit = input.len().min(V1_MAX_LEN);
        let fresh = input.get(scanned..limit).unwrap_or_default();
        let Some(at) = fresh.iter().position(|&b| b == b'\n') else {
            if input.len() >= V1_MAX_LEN {
                return Err(ProxyError::V1TooLong);
            }
            self.stage = Stage::V1 { scanned: limit };
            return Ok(None);
        };
        let len = scanned + at + 1;
        let line = input
            .get(V1_PREFIX.len()..len)
            .and_then(|l| l.strip_suffix(b"\r\n"))
            .ok_or(ProxyError::V1Malformed)?;
        let header = parse_v1(line)?;
        Ok(Some(Decoded { header, len }))
    }
}

/// The v1 line between `PROXY ` and CRLF.
fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyError::V1Malformed)?;
    if let Some(rest) = text.strip_prefix("UNKNOWN") {
        // Whatever follows UNKNOWN is to be ignored.
        return if rest.is_empty() || rest.starts_with(' ') {
            Ok(ProxyHeader::Local)
        } else {
            Err(ProxyError::V1Malformed)
        };
    }
    let mut fields = text.split(' ');
    let mut next = || fields.next().ok_or(ProxyError::V1Malformed);
    let (family, source, destination) = (next()?, next()?, next()?);
    let (source_port, destination_port) = (port(next()?)?, port(next()?)?);
    if fields.next().is_some() {
        return Err(ProxyError::V1Malformed);
    }
    let (source, destination): (IpAddr, IpAddr) = match family {
        "TCP4" => (ipv4(source)?.into(), ipv4(destination)?.into()),
        "TCP6" => (ipv6(source)?.into(), ipv6(destination)?.into()),
        _ => return Err(ProxyError::V1Malformed),
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    })
}

fn ipv4(text: &str) -> Result<Ipv4Addr, ProxyError> {
    text.parse().map_err(|_| ProxyError::V1Malformed)
}

fn ipv6(text: &str) -> Result<Ipv6Addr, ProxyError> {
    text.parse().map_err(|_| ProxyError::V1Malformed)
}

/// A decimal port: digits only (no sign), at most five, within `u16`.
fn port(text: &str) -> Result<u16, ProxyError> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::V1Malformed);
    }
    text.parse().map_err(|_| ProxyError::V1Malformed)
}

/// A v2 header whose signature matched.
fn decode_v2(input: &[u8]) -> Result<Option<Decoded>, ProxyError> {
    let Some(fixed) = input.get(..V2_FIXED_LEN) else {
        return Ok(None);
    };
    let (version_command, family) = (fixed[12], fixed[13]);
    if version_command >> 4 != 2 {
        return Err(ProxyError::V2Version);
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::V2Command),
    };
    let payload_len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    // Refused before waiting for it: the length alone says it is too long.
    if payload_len > V2_MAX_PAYLOAD {
        return Err(ProxyError::V2TooLong);
    }
    let len = V2_FIXED_LEN + payload_len;
    let Some(payload) = input.get(V2_FIXED_LEN..len) else {
        return Ok(None);
    };
    let addresses = v2_addresses(family, payload)?;
    let header = match addresses {
        Some((source, destination)) if !local => ProxyHeader::Proxied {
            source,
            destination,
        },
        _ => ProxyHeader::Local,
    };
    Ok(Some(Decoded { header, len }))
}

/// The addresses of a v2 address block, for TCP over IPv4 or IPv6; `None`
/// for the families that carry none a TCP proxy can use (UNSPEC, UDP,
/// UNIX), which are still checked for length.
fn v2_addresses(
    family: u8,
    payload: &[u8],
) -> Result<Option<(SocketAddr, SocketAddr)>, ProxyError> {
    let (address_family, transport) = (family >> 4, family & 0x0f);
    if address_family > 3 || transport > 2 || (address_family == 0) != (transport == 0) {
        return Err(ProxyError::V2Family);
    }
    let needed = match address_family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if payload.len() < needed {
        return Err(ProxyError::V2Short);
    }
    let at = |i: usize| u16::from_be_bytes([payload[i], payload[i + 1]]);
    Ok(match (address_family, transport) {
        (1, 1) => {
            let ip = |i: usize| {
                Ipv4Addr::new(payload[i], payload[i + 1], payload[i + 2], payload[i + 3])
            };
            Some((
                SocketAddr::new(ip(0).into(), at(8)),
                SocketAddr::new(ip(4).into(), at(10)),
            ))
        }
        (2, 1) => {
            let ip = |i: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&payload[i..i + 16]);
                Ipv6Addr::from(octets)
            };
            Some((
                SocketAddr::new(ip(0).into(), at(32)),
                SocketAddr::new(ip(16).into(), at(34)),
            ))
        }
        _ => None,
    })
}

/// Appends a header naming `source` (the client) and `destination` (where
/// it connected) to `out`. A pair of IPv4 addresses is sent as such; with
/// an IPv6 address on either side, both are sent as IPv6 (an IPv4 one
/// mapped), since a header carries one family.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let pair = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Family::V4(s, d),
        (s, d) => Family::V6(as_v6(s), as_v6(d)),
    };
    let (sport, dport) = (source.port(), destination.port());
    match version {
        Version::V1 => encode_v1(pair, sport, dport, out),
        Version::V2 => encode_v2(pair, sport, dport, out),
    }
}

/// The addresses of one header, in one family.
#[derive(Clone, Copy)]
enum Family {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn encode_v1(pair: Family, sport: u16, dport: u16, out: &mut Vec<u8>) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = match pair {
        Family::V4(s, d) => write!(out, "PROXY TCP4 {s} {d} {sport} {dport}\r\n"),
        Family::V6(s, d) => write!(out, "PROXY TCP6 {s} {d} {sport} {dport}\r\n"),
    };
}

fn encode_v2(pair: Family, sport: u16, dport: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    // Version 2, command PROXY.
    out.push(0x21);
    match pair {
        Family::V4(s, d) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        Family::V6(s, d) => {
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
    }
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
}

/// The fuzz target's body: decoding `data` must never panic, must give the
/// same answer however it is split, and a header it accepts must survive
/// encoding and decoding again.
pub fn fuzz_decode(data: &[u8]) {
    fuzz_stream(data);
    // Past the signatures, so the fuzzer reaches the grammar at once.
    for prefix in [V1_PREFIX, &V2_SIGNATURE[..]] {
        let mut prefixed = prefix.to_vec();
        prefixed.extend_from_slice(data);
        fuzz_stream(&prefixed);
    }
}

fn fuzz_stream(data: &[u8]) {
    let whole = ProxyDecoder::default().decode(data);
    // Byte by byte, as the slowest client sends it: the first answer that
    // is not "more" must be the whole stream's.
    let mut decoder = ProxyDecoder::default();
    for end in 0..=data.len() {
        match decoder.decode(&data[..end]) {
            Ok(None) => continue,
            split => {
                assert_eq!(split, whole, "split at {end} decoded differently");
                break;
            }
        }
    }
    if let Ok(Some(Decoded {
        header: ProxyHeader::Proxied {
            source,
            destination,
        },
        ..
    })) = whole
    {
        for version in [Version::V1, Version::V2] {
            let mut encoded = Vec::new();
            encode(version, source, destination, &mut encoded);
            let again = ProxyDecoder::default().decode(&encoded);
            let Ok(Some(decoded)) = again else {
                panic!("{version:?} of {source} {destination} did not decode: {again:?}");
            };
            assert_eq!(decoded.len, encoded.len());
            let ProxyHeader::Proxied {
                source: s,
                destination: d,
            } = decoded.header
            else {
                panic!("{version:?}: not proxied");
            };
            let canonical = |a: SocketAddr| (a.ip().to_canonical(), a.port());
            assert_eq!(
                (canonical(s), canonical(d)),
                (canonical(source), canonical(destination))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8]) -> Result<Option<Decoded>, ProxyError> {
        ProxyDecoder::default().decode(input)
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: addr(source),
            destination: addr(destination),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6_from_the_specification() {
        let line = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\nrest";
        let decoded = decode_all(line).unwrap().unwrap();
        assert_eq!(decoded.len, line.len() - 4);
        assert_eq!(
            decoded.header,
            proxied("255.255.255.255:65535", "255.255.255.255:65535")
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 56324 443\r\n";
        assert_eq!(
            decode_all(line).unwrap().unwrap().header,
            proxied("[2001:db8::1]:56324", "[::1]:443")
        );
    }

    #[test]
    fn v1_unknown_is_local() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff:f...f 1 2\r\n",
        ] {
            assert_eq!(
                decode_all(line).unwrap().unwrap().header,
                ProxyHeader::Local
            );
        }
    }

    #[test]
    fn v1_malformed_lines_are_refused() {
        for line in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY UNKNOWNX\r\n",
        ] {
            assert_eq!(
                decode_all(line),
                Err(ProxyError::V1Malformed),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn no_header_is_refused_at_the_first_byte_that_cannot_begin_one() {
        assert_eq!(decode_all(b"G"), Err(ProxyError::NoSignature));
        assert_eq!(decode_all(b"PROXI"), Err(ProxyError::NoSignature));
        assert_eq!(
            decode_all(b"\r\n\r\n\0\r\nQUIT\r"),
            Err(ProxyError::NoSignature)
        );
        assert_eq!(decode_all(b"PROX"), Ok(None));
    }

    #[test]
    fn v1_without_crlf_within_107_bytes_is_refused() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(decode_all(&line), Ok(None));
        line.push(b'x');
        assert_eq!(decode_all(&line), Err(ProxyError::V1TooLong));
        // A CRLF at exactly 107 bytes is fine.
        line.truncate(V1_MAX_LEN - 2);
        line.extend_from_slice(b"\r\n");
        assert_eq!(decode_all(&line).unwrap().unwrap().len, V1_MAX_LEN);
    }

    fn v2(version_command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn v2_tcp4_tcp6_local_and_tlvs() {
        let mut payload = vec![192, 0, 2, 1, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb];
        let header = v2(0x21, 0x11, &payload);
        let decoded = decode_all(&header).unwrap().unwrap();
        assert_eq!(decoded.len, header.len());
        assert_eq!(
            decoded.header,
            proxied("192.0.2.1:56324", "198.51.100.1:443")
        );
        // A TLV after the addresses is skipped.
        payload.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        let header = v2(0x21, 0x11, &payload);
        assert_eq!(decode_all(&header).unwrap().unwrap().len, header.len());
        // LOCAL: addresses are ignored.
        assert_eq!(
            decode_all(&v2(0x20, 0x00, &[])).unwrap().unwrap().header,
            ProxyHeader::Local
        );
        let mut six = [0u8; 36];
        six[15] = 1;
        six[31] = 2;
        six[33] = 80;
        six[35] = 81;
        assert_eq!(
            decode_all(&v2(0x21, 0x21, &six)).unwrap().unwrap().header,
            proxied("[::1]:80", "[::2]:81")
        );
    }

    #[test]
    fn v2_malformed_headers_are_refused() {
        let four = [1u8; 12];
        assert_eq!(
            decode_all(&v2(0x11, 0x11, &four)),
            Err(ProxyError::V2Version)
        );
        assert_eq!(
            decode_all(&v2(0x22, 0x11, &four)),
            Err(ProxyError::V2Command)
        );
        assert_eq!(
            decode_all(&v2(0x21, 0x41, &four)),
            Err(ProxyError::V2Family)
        );
        assert_eq!(
            decode_all(&v2(0x21, 0x10, &four)),
            Err(ProxyError::V2Family)
        );
        assert_eq!(
            decode_all(&v2(0x21, 0x11, &four[..8])),
            Err(ProxyError::V2Short)
        );
        assert_eq!(decode_all(&v2(0x21, 0x21, &four)), Err(ProxyError::V2Short));
        // Too long, known from the length field alone.
        let mut long = v2(0x21, 0x11, &[]);
        long[14..16].copy_from_slice(&((V2_MAX_PAYLOAD + 1) as u16).to_be_bytes());
        assert_eq!(decode_all(&long), Err(ProxyError::V2TooLong));
    }

    #[test]
    fn encodes_what_it_decodes_in_both_versions() {
        let cases = [
            (
                "192.0.2.1:56324",
                "198.51.100.1:443",
                "192.0.2.1:56324",
                "198.51.100.1:443",
            ),
            ("[2001:db8::1]:1", "[::1]:2", "[2001:db8::1]:1", "[::1]:2"),
            // Mixed families go as IPv6, the IPv4 side mapped.
            ("192.0.2.1:1", "[::1]:2", "[::ffff:192.0.2.1]:1", "[::1]:2"),
        ];
        for (source, destination, want_source, want_destination) in cases {
            for version in [Version::V1, Version::V2] {
                let mut out = Vec::new();
                encode(version, addr(source), addr(destination), &mut out);
                let decoded = decode_all(&out).unwrap().unwrap();
                assert_eq!(decoded.len, out.len());
                assert_eq!(decoded.header, proxied(want_source, want_destination));
            }
        }
        let mut out = Vec::new();
        encode(Version::V1, addr("1.2.3.4:5"), addr("6.7.8.9:10"), &mut out);
        assert_eq!(out, b"PROXY TCP4 1.2.3.4 6.7.8.9 5 10\r\n");
    }

    #[test]
    fn fuzz_entry_point_handles_odd_inputs() {
        fuzz_decode(b"");
        fuzz_decode(b"TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
        fuzz_decode(&[0x21, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        fuzz_decode(&[0xff; 300]);
    }

    proptest! {
        #[test]
        fn any_split_decodes_to_the_same_header(
            v4 in any::<bool>(),
            version in prop_oneof![Just(Version::V1), Just(Version::V2)],
            a in any::<[u8; 16]>(),
            b in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let (source, destination) = if v4 {
                let ip = |o: [u8; 16]| IpAddr::from([o[0], o[1], o[2], o[3]]);
                (SocketAddr::new(ip(a), ports.0), SocketAddr::new(ip(b), ports.1))
            } else {
                (SocketAddr::new(IpAddr::from(a), ports.0), SocketAddr::new(IpAddr::from(b), ports.1))
            };
            let mut stream = Vec::new();
            encode(version, source, destination, &mut stream);
            let header_len = stream.len();
            stream.extend_from_slice(&payload);
            let mut decoder = ProxyDecoder::default();
            let mut end = 0;
            let mut result = None;
            for chunk in crate::codec::split(&stream, &cuts) {
                end += chunk.len();
                if let Some(decoded) = decoder.decode(&stream[..end]).unwrap() {
                    result = Some(decoded);
                    break;
                }
            }
            let decoded = result.unwrap();
            prop_assert_eq!(decoded.len, header_len);
            prop_assert_eq!(decoded.header, ProxyHeader::Proxied { source, destination });
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            fuzz_decode(&data);
        }
    }
}

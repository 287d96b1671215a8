//! HTTP/1.1 server side: request-head parsing, body framing (RFC 9112) and
//! response writing.
//!
//! `httparse` does the tokenising; this module adds the framing decisions
//! that keep pipelined requests from being mis-split: which body follows a
//! head, whether the connection stays open, and how to skip a chunked body.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// Header slots kept on the stack per parse; `max_headers` is capped to this
/// so parsing never allocates.
pub const HEADER_CAPACITY: usize = 128;

/// Longest chunk-size line (size plus extensions) accepted. Extensions are
/// ignored, so there is no reason to let a peer stream them indefinitely.
const MAX_CHUNK_LINE: usize = 4096;

/// Size limits applied to requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line plus headers), and largest
    /// chunked trailer section.
    pub max_header_bytes: usize,
    /// Most header fields in one head (capped at [`HEADER_CAPACITY`]).
    pub max_headers: usize,
    /// Largest request body, fixed-length or chunked.
    pub max_body: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            max_body: 1024 * 1024,
        }
    }
}

/// Request method. Methods are case-sensitive (RFC 9110 §9.1), so `get` is
/// [`Method::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `CONNECT`: a request to open a tunnel, which only a proxy serves.
    /// [`parse_request`] refuses it ([`HttpError::Connect`]).
    Connect,
    /// Any other method.
    Other,
}

impl Method {
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "CONNECT" => Self::Connect,
            _ => Self::Other,
        }
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body; also used for `Content-Length: 0`.
    None,
    /// Exactly this many bytes follow the head.
    ContentLength(usize),
    /// A chunked body follows; skip or read it with [`ChunkedDecoder`].
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// Where the request target lies in the parsed buffer.
    pub path: Range<usize>,
    /// `10` for HTTP/1.0, `11` for HTTP/1.1 and every later HTTP/1.x,
    /// which is served as HTTP/1.1 (RFC 9112 §2.3).
    pub version: u8,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// How the body that follows the head is framed.
    pub body: BodyKind,
    /// Bytes the head occupied; the body (if any) starts here.
    pub head_len: usize,
    /// The request carries `Expect: 100-continue` (HTTP/1.1 only): the
    /// client may wait for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The request target, read from `buf`, which must be the buffer that
    /// was parsed (another buffer gives a meaningless but safe result).
    pub fn path_in<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.path.clone()).unwrap_or_default()
    }
}

/// Why a request was rejected; every variant maps to a response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HttpError {
    /// The request line or a header is not valid HTTP/1.x.
    #[error("malformed request")]
    Malformed,
    /// No complete head within `max_header_bytes`, or too many headers.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// The request line alone does not fit in `max_header_bytes`.
    #[error("request line too long")]
    UriTooLong,
    /// An HTTP/1.1 request without `Host`, any request with more than one
    /// `Host` field, or a `Host` value that is not `host[:port]`
    /// (RFC 9112 §3.2).
    #[error("missing, repeated or invalid Host")]
    BadHost,
    /// `CONNECT` asks for a tunnel; an origin server has none to offer.
    #[error("CONNECT is not served")]
    Connect,
    /// The body exceeds `max_body`.
    #[error("request body too large")]
    BodyTooLarge,
    /// `Content-Length` is not a number, or has conflicting values.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Both `Transfer-Encoding` and `Content-Length` are present, which is a
    /// request-smuggling risk.
    #[error("both Transfer-Encoding and Content-Length present")]
    ConflictingFraming,
    /// A transfer coding other than `chunked` was used.
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// The chunked body is not well formed.
    #[error("malformed chunked body")]
    BadChunk,
}

impl HttpError {
    /// The response status to send before closing the connection.
    pub fn status(&self) -> u16 {
        match self {
            Self::HeadersTooLarge => 431,
            Self::UriTooLong => 414,
            Self::BodyTooLarge => 413,
            Self::UnsupportedTransferEncoding => 501,
            Self::Malformed
            | Self::BadContentLength
            | Self::ConflictingFraming
            | Self::BadChunk
            | Self::BadHost
            | Self::Connect => 400,
        }
    }

    /// The reason phrase matching [`HttpError::status`].
    pub fn reason(&self) -> &'static str {
        match self.status() {
            431 => "Request Header Fields Too Large",
            414 => "URI Too Long",
            413 => "Content Too Large",
            501 => "Not Implemented",
            _ => "Bad Request",
        }
    }
}

/// Parses the request head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and still within
/// `max_header_bytes`. Only the head is consumed; the caller then handles
/// the body according to [`RequestHead::body`].
pub fn parse_request(buf: &[u8], limits: &HttpLimits) -> Result<Option<RequestHead>, HttpError> {
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    match parse_window(buf, window, limits) {
        // httparse knows HTTP/1.0 and HTTP/1.1 only; a later minor version
        // is served as HTTP/1.1 (RFC 9112 §2.3). Rare, so it may copy.
        Err(HttpError::Malformed) => match later_minor_version(window) {
            LaterMinor::No => Err(HttpError::Malformed),
            LaterMinor::LineIncomplete if window.len() >= limits.max_header_bytes => {
                Err(HttpError::UriTooLong)
            }
            LaterMinor::LineIncomplete => Ok(None),
            LaterMinor::At(digit) => {
                let mut copy = window.to_vec();
                copy[digit] = b'1';
                // The copy has the same offsets as `buf`.
                parse_window(&copy, &copy, limits)
            }
        },
        other => other,
    }
}

/// A request-head parser for one connection that keeps its place between
/// reads, so a head costs time linear in its bytes however it is split.
///
/// [`parse_request`] parses from the start every time it is called. This
/// only calls it when something can have changed its answer: the first line
/// just ended (to refuse a bad request line early), the end of the head
/// arrived, or the head reached its size limit. In between, each new byte is
/// looked at once, for the blank line that ends the head.
///
/// ```
/// use netloop_servers::codec::http::{HeadParser, HttpLimits};
///
/// let limits = HttpLimits::default();
/// let mut parser = HeadParser::default();
/// let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
/// for end in 1..request.len() {
///     assert!(parser.parse(&request[..end], &limits).unwrap().is_none());
/// }
/// assert!(parser.parse(request, &limits).unwrap().is_some());
/// assert!(parser.full_parses() <= 3);
/// ```
#[derive(Clone, Debug, Default)]
pub struct HeadParser {
    /// Bytes of the pending head already searched for its end.
    scanned: usize,
    /// Whether the request line has been checked.
    line_checked: bool,
    /// Times [`parse_request`] ran, for tests.
    full_parses: u64,
}

impl HeadParser {
    /// Parses the head at the start of `buf`, which holds the same bytes
    /// as at the last call plus any that arrived since. After a head is
    /// returned (the caller consumes it) or an error, the parser starts over.
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &HttpLimits,
    ) -> Result<Option<RequestHead>, HttpError> {
        let window = &buf[..buf.len().min(limits.max_header_bytes)];
        let new = &window[self.scanned.saturating_sub(3).min(window.len())..];
        let line_ended = !self.line_checked && new.contains(&b'\n');
        let worth_parsing = line_ended || ends_head(new) || window.len() >= limits.max_header_bytes;
        if !worth_parsing {
            self.scanned = window.len();
            return Ok(None);
        }
        self.full_parses += 1;
        match parse_request(buf, limits) {
            Ok(None) => {
                self.scanned = window.len();
                self.line_checked = true;
                Ok(None)
            }
            done => {
                self.scanned = 0;
                self.line_checked = false;
                done
            }
        }
    }

    /// How many times the head was parsed from its start (for tests of
    /// the linear cost).
    pub fn full_parses(&self) -> u64 {
        self.full_parses
    }
}

/// Whether `bytes` hold a blank line (`\n\n` or `\n\r\n`): the end of a head.
fn ends_head(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .any(|(i, _)| match bytes.get(i + 1) {
            Some(b'\n') => true,
            Some(b'\r') => bytes.get(i + 2) == Some(&b'\n'),
            _ => false,
        })
}

/// Parses the head in `window`, a prefix of `buf` (or a copy of one).
fn parse_window(
    buf: &[u8],
    window: &[u8],
    limits: &HttpLimits,
) -> Result<Option<RequestHead>, HttpError> {
    // Uninitialised slots spare a multi-kilobyte memset on every request;
    // httparse only ever reads back the slots it filled.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_CAPACITY];
    let slot_count = limits.max_headers.min(HEADER_CAPACITY);
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(window, &mut slots[..slot_count]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() >= limits.max_header_bytes => {
            // As nginx: a request line that does not fit is 414, a head
            // whose fields do not fit 431.
            return Err(if window.contains(&b'\n') {
                HttpError::HeadersTooLarge
            } else {
                HttpError::UriTooLong
            });
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    build_head(buf, &request, head_len, limits).map(Some)
}

/// Whether the request line ends in `HTTP/1.2` to `HTTP/1.9`.
enum LaterMinor {
    No,
    /// It may, once the rest of the line arrives.
    LineIncomplete,
    /// It does; the minor digit is at this offset.
    At(usize),
}

fn later_minor_version(window: &[u8]) -> LaterMinor {
    let (line, complete) = match window.iter().position(|&byte| byte == b'\n') {
        Some(end) => (&window[..end], true),
        None => (window, false),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(version_start) = line.len().checked_sub(b" HTTP/1.x".len()) else {
        return LaterMinor::No;
    };
    match (&line[version_start..], complete) {
        ([b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'2'..=b'9'], true) => {
            LaterMinor::At(line.len() - 1)
        }
        ([b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'2'..=b'9'], false) => {
            LaterMinor::LineIncomplete
        }
        _ => LaterMinor::No,
    }
}

fn build_head(
    buf: &[u8],
    request: &httparse::Request<'_, '_>,
    head_len: usize,
    limits: &HttpLimits,
) -> Result<RequestHead, HttpError> {
    let path = request.path.ok_or(HttpError::Malformed)?;
    let version = match request.version {
        Some(0) => 10,
        Some(1) => 11,
        _ => return Err(HttpError::Malformed),
    };
    let fields = RequestFields::scan(request.headers)?;
    let method = Method::from_token(request.method.unwrap_or_default());
    // Framing first: it decides whether the connection could go on.
    let body = fields.body_kind(version, limits)?;
    fields.check_host(version)?;
    if method == Method::Connect {
        return Err(HttpError::Connect);
    }
    Ok(RequestHead {
        method,
        path: subslice_range(buf, path.as_bytes()).ok_or(HttpError::Malformed)?,
        version,
        keep_alive: fields.keep_alive(version),
        body,
        head_len,
        expect_continue: fields.expect_continue && version == 11,
    })
}

/// Where `inner`, a slice borrowed from `outer`, lies within it.
fn subslice_range(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

/// What the headers the server acts on said, merged across repeated fields.
#[derive(Debug, Default)]
struct RequestFields {
    content_length: Option<u64>,
    transfer_encoding: Option<TransferCoding>,
    close: bool,
    keep_alive: bool,
    host: HostField,
    expect_continue: bool,
}

/// The `Host` fields seen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum HostField {
    #[default]
    Missing,
    Valid,
    /// Repeated, or a value that is not `host[:port]`.
    Invalid,
}

/// Summary of the `Transfer-Encoding` list.
#[derive(Debug, Default, Clone, Copy)]
struct TransferCoding {
    chunked_count: usize,
    unsupported: bool,
}

impl RequestFields {
    fn scan(headers: &[httparse::Header<'_>]) -> Result<Self, HttpError> {
        let mut fields = Self::default();
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                fields.add_content_length(header.value)?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                fields.add_transfer_encoding(header.value);
            } else if name.eq_ignore_ascii_case("connection") {
                fields.add_connection(header.value);
            } else if name.eq_ignore_ascii_case("host") {
                fields.host = match (fields.host, valid_host(trim_ows(header.value))) {
                    (HostField::Missing, true) => HostField::Valid,
                    _ => HostField::Invalid,
                };
            } else if name.eq_ignore_ascii_case("expect") {
                fields.expect_continue |=
                    trim_ows(header.value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        Ok(fields)
    }

    /// RFC 9112 §3.2: HTTP/1.1 needs exactly one valid `Host`; no version
    /// may repeat it or send an invalid one.
    fn check_host(&self, version: u8) -> Result<(), HttpError> {
        match (self.host, version) {
            (HostField::Valid, _) | (HostField::Missing, 10) => Ok(()),
            _ => Err(HttpError::BadHost),
        }
    }

    /// Accepts repeated or comma-listed values only when they all agree
    /// (RFC 9112 §6.3), since disagreement means the framing is ambiguous.
    fn add_content_length(&mut self, value: &[u8]) -> Result<(), HttpError> {
        for element in list_elements(value) {
            let length = parse_content_length(element)?;
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err(HttpError::BadContentLength);
            }
            self.content_length = Some(length);
        }
        Ok(())
    }

    fn add_transfer_encoding(&mut self, value: &[u8]) {
        let coding = self.transfer_encoding.get_or_insert_default();
        for element in list_elements(value).filter(|element| !element.is_empty()) {
            if element.eq_ignore_ascii_case(b"chunked") {
                coding.chunked_count += 1;
            } else {
                coding.unsupported = true;
            }
        }
    }

    fn add_connection(&mut self, value: &[u8]) {
        for element in list_elements(value) {
            self.close |= element.eq_ignore_ascii_case(b"close");
            self.keep_alive |= element.eq_ignore_ascii_case(b"keep-alive");
        }
    }

    /// RFC 9112 §9.3: `close` always wins; otherwise HTTP/1.1 persists by
    /// default and HTTP/1.0 only on an explicit `keep-alive`.
    fn keep_alive(&self, version: u8) -> bool {
        !self.close && (version == 11 || self.keep_alive)
    }

    fn body_kind(&self, version: u8, limits: &HttpLimits) -> Result<BodyKind, HttpError> {
        match (self.transfer_encoding, self.content_length) {
            (Some(_), Some(_)) => Err(HttpError::ConflictingFraming),
            (Some(coding), None) => chunked_body(coding, version),
            (None, Some(length)) => fixed_body(length, limits),
            (None, None) => Ok(BodyKind::None),
        }
    }
}

fn chunked_body(coding: TransferCoding, version: u8) -> Result<BodyKind, HttpError> {
    // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means the
    // framing cannot be trusted.
    if version == 10 {
        return Err(HttpError::Malformed);
    }
    if coding.unsupported {
        return Err(HttpError::UnsupportedTransferEncoding);
    }
    // Empty, or chunked applied twice: the length cannot be determined.
    if coding.chunked_count != 1 {
        return Err(HttpError::Malformed);
    }
    Ok(BodyKind::Chunked)
}

fn fixed_body(length: u64, limits: &HttpLimits) -> Result<BodyKind, HttpError> {
    match usize::try_from(length) {
        Ok(0) => Ok(BodyKind::None),
        Ok(length) if length <= limits.max_body => Ok(BodyKind::ContentLength(length)),
        _ => Err(HttpError::BodyTooLarge),
    }
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a
/// registered name of unreserved, percent-encoded and sub-delimiter
/// characters, or an IP literal in brackets, then optional port digits. An
/// empty value is valid (a target without an authority).
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value {
        [b'[', rest @ ..] => match rest.iter().position(|&byte| byte == b']') {
            Some(close) => {
                let literal = &rest[..close];
                let valid_literal = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&byte| byte.is_ascii_hexdigit() || matches!(byte, b':' | b'.'));
                if !valid_literal {
                    return false;
                }
                (&[][..], &rest[close + 1..])
            }
            None => return false,
        },
        _ => match value.iter().position(|&byte| byte == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    port_ok && valid_reg_name(host)
}

fn valid_reg_name(name: &[u8]) -> bool {
    let mut rest = name;
    while let [byte, tail @ ..] = rest {
        rest = match byte {
            b'%' => match tail {
                [high, low, after @ ..] if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                    after
                }
                _ => return false,
            },
            byte if byte.is_ascii_alphanumeric() => tail,
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+'
            | b',' | b';' | b'=' => tail,
            _ => return false,
        };
    }
    true
}

/// Digits only; an absurdly long number saturates so that it is reported as
/// too large rather than as malformed.
fn parse_content_length(text: &[u8]) -> Result<u64, HttpError> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadContentLength);
    }
    Ok(text.iter().fold(0u64, |acc, &digit| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    }))
}

/// Elements of a comma-separated header list, with optional whitespace
/// trimmed.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&byte| byte == b',').map(trim_ows)
}

fn trim_ows(mut text: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = text {
        text = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = text {
        text = rest;
    }
    text
}

/// Progress reported by [`ChunkedDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Bytes of the input that were used; remove them from the buffer.
    pub consumed: usize,
    /// Whether the whole body, trailers included, has been read. Bytes after
    /// it belong to the next request and were not consumed.
    pub done: bool,
}

/// Where the chunked decoder is within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size { size: u64, has_digits: bool },
    Extension { size: u64 },
    SizeLf { size: u64 },
    Data { remaining: u64 },
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
    Failed(HttpError),
}

/// Incremental decoder for a chunked request body (RFC 9112 §7.1).
///
/// Feed it whatever has arrived; it keeps its place between calls, so a
/// server can skip (or read) a body of any size with a bounded buffer and
/// then parse the next pipelined request at exactly the right byte.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    body_len: u64,
    max_body: u64,
    line_len: usize,
    trailer_len: usize,
    max_trailer: usize,
}

impl ChunkedDecoder {
    /// Creates a decoder enforcing `max_body` on the decoded data and
    /// `max_header_bytes` on the trailer section.
    pub fn new(limits: &HttpLimits) -> Self {
        Self {
            state: ChunkState::Size {
                size: 0,
                has_digits: false,
            },
            body_len: 0,
            max_body: u64::try_from(limits.max_body).unwrap_or(u64::MAX),
            line_len: 0,
            trailer_len: 0,
            max_trailer: limits.max_header_bytes,
        }
    }

    /// Whether the body has been read completely.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Body bytes announced by the chunks seen so far.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Consumes body bytes from `buf`, discarding the data.
    pub fn decode(&mut self, buf: &[u8]) -> Result<ChunkProgress, HttpError> {
        self.decode_with(buf, |_| {})
    }

    /// Consumes body bytes from `buf`, passing each piece of chunk data to
    /// `on_data`. Once an error is returned, every later call returns it too.
    pub fn decode_with(
        &mut self,
        buf: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<ChunkProgress, HttpError> {
        if let ChunkState::Failed(err) = self.state {
            return Err(err);
        }
        let mut pos = 0;
        while pos < buf.len() && !self.is_done() {
            match self.step(&buf[pos..], &mut on_data) {
                Ok(used) => pos += used,
                Err(err) => {
                    self.state = ChunkState::Failed(err);
                    return Err(err);
                }
            }
        }
        Ok(ChunkProgress {
            consumed: pos,
            done: self.is_done(),
        })
    }

    /// Consumes at least one byte of the non-empty `buf`.
    fn step(&mut self, buf: &[u8], on_data: &mut impl FnMut(&[u8])) -> Result<usize, HttpError> {
        if let ChunkState::Data { remaining } = self.state {
            let take = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
            on_data(&buf[..take]);
            self.state = match remaining - take as u64 {
                0 => ChunkState::DataCr,
                left => ChunkState::Data { remaining: left },
            };
            return Ok(take);
        }
        let byte = buf.first().copied().ok_or(HttpError::BadChunk)?;
        self.state = self.next_state(byte)?;
        Ok(1)
    }

    fn next_state(&mut self, byte: u8) -> Result<ChunkState, HttpError> {
        use ChunkState::*;
        match (self.state, byte) {
            (Size { size, has_digits }, _) => self.size_byte(size, has_digits, byte),
            (Extension { size }, _) => self.extension_byte(size, byte),
            (SizeLf { size }, b'\n') => self.start_data(size),
            (DataCr, b'\r') => Ok(DataLf),
            (DataLf, b'\n') => Ok(Size {
                size: 0,
                has_digits: false,
            }),
            (TrailerStart, b'\r') => Ok(EndLf),
            (TrailerStart | TrailerLine, _) => self.trailer_byte(byte),
            (TrailerLf, b'\n') => Ok(TrailerStart),
            (EndLf, b'\n') => Ok(Done),
            _ => Err(HttpError::BadChunk),
        }
    }

    fn size_byte(
        &mut self,
        size: u64,
        has_digits: bool,
        byte: u8,
    ) -> Result<ChunkState, HttpError> {
        self.count_line_byte()?;
        if let Some(digit) = char::from(byte).to_digit(16) {
            let size = self.grow_size(size, u64::from(digit))?;
            return Ok(ChunkState::Size {
                size,
                has_digits: true,
            });
        }
        match byte {
            b';' | b' ' | b'\t' if has_digits => Ok(ChunkState::Extension { size }),
            b'\r' if has_digits => Ok(ChunkState::SizeLf { size }),
            _ => Err(HttpError::BadChunk),
        }
    }

    /// Rejects a size beyond the remaining body budget as soon as a digit
    /// pushes it there, so a long hex string can never overflow.
    fn grow_size(&self, size: u64, digit: u64) -> Result<u64, HttpError> {
        let budget = self.max_body - self.body_len;
        size.checked_mul(16)
            .and_then(|shifted| shifted.checked_add(digit))
            .filter(|&grown| grown <= budget)
            .ok_or(HttpError::BodyTooLarge)
    }

    /// Extensions carry nothing this server uses, so their syntax is not
    /// checked beyond staying on one line.
    fn extension_byte(&mut self, size: u64, byte: u8) -> Result<ChunkState, HttpError> {
        self.count_line_byte()?;
        match byte {
            b'\r' => Ok(ChunkState::SizeLf { size }),
            b'\n' => Err(HttpError::BadChunk),
            _ => Ok(ChunkState::Extension { size }),
        }
    }

    fn count_line_byte(&mut self) -> Result<(), HttpError> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(HttpError::BadChunk);
        }
        Ok(())
    }

    fn start_data(&mut self, size: u64) -> Result<ChunkState, HttpError> {
        self.line_len = 0;
        if size == 0 {
            return Ok(ChunkState::TrailerStart);
        }
        self.body_len += size;
        Ok(ChunkState::Data { remaining: size })
    }

    fn trailer_byte(&mut self, byte: u8) -> Result<ChunkState, HttpError> {
        self.trailer_len += 1;
        if self.trailer_len > self.max_trailer {
            return Err(HttpError::HeadersTooLarge);
        }
        match byte {
            b'\r' => Ok(ChunkState::TrailerLf),
            b'\n' => Err(HttpError::BadChunk),
            _ => Ok(ChunkState::TrailerLine),
        }
    }
}

/// The `Connection` header of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// None: HTTP/1.1 keeps the connection open by default.
    Omit,
    /// `Connection: keep-alive`, for an HTTP/1.0 client that asked for it.
    KeepAlive,
    /// `Connection: close`: this is the last response on the connection.
    Close,
}

impl ConnectionHeader {
    /// The header for a request of `version` (10 or 11) that may (or may
    /// not) keep its connection.
    pub fn for_request(version: u8, keep_alive: bool) -> Self {
        match (keep_alive, version) {
            (false, _) => ConnectionHeader::Close,
            (true, 10) => ConnectionHeader::KeepAlive,
            (true, _) => ConnectionHeader::Omit,
        }
    }
}

/// Appends a complete response.
///
/// The head is `HTTP/1.1 <status> <reason>`, `Server`, `Date`,
/// `Content-Type` (omitted when empty), `Content-Length` and the
/// `Connection` header `connection` asks for. With `head_only` (a reply to
/// HEAD) the body is left out but `Content-Length` still describes it.
/// Statuses that must not carry a body (1xx, 204, 304) get neither the body
/// nor `Content-Length`. CR and LF in `reason`, `date` and `content_type`
/// become spaces so no header can be injected.
#[expect(
    clippy::too_many_arguments,
    reason = "the flat signature is the agreed interface with the event loop"
)]
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    date: &[u8],
    content_type: &str,
    body: &[u8],
    connection: ConnectionHeader,
    head_only: bool,
) {
    // Generous enough for the fixed headers, so the head costs at most one
    // reallocation of the output buffer.
    const HEAD_ESTIMATE: usize = 160;
    let bodyless = matches!(status, 100..=199 | 204 | 304);
    out.reserve(HEAD_ESTIMATE + reason.len() + content_type.len() + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    super::push_u64(out, u64::from(status));
    out.push(b' ');
    push_field_value(out, reason.as_bytes());
    out.extend_from_slice(b"\r\nServer: netloop\r\n");
    push_header(out, b"Date: ", date);
    if !content_type.is_empty() {
        push_header(out, b"Content-Type: ", content_type.as_bytes());
    }
    if !bodyless {
        out.extend_from_slice(b"Content-Length: ");
        super::push_u64(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    match connection {
        ConnectionHeader::Omit => {}
        ConnectionHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnectionHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodyless {
        out.extend_from_slice(body);
    }
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    push_field_value(out, value);
    out.extend_from_slice(b"\r\n");
}

fn push_field_value(out: &mut Vec<u8>, value: &[u8]) {
    out.extend(value.iter().map(|&byte| {
        if matches!(byte, b'\r' | b'\n') {
            b' '
        } else {
            byte
        }
    }));
}

/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const IMF_FIXDATE_LEN: usize = 29;

/// Last second an IMF-fixdate's four-digit year can show
/// (9999-12-31T23:59:59Z).
const MAX_FIXDATE_SECS: u64 = 253_402_300_799;

const SECS_PER_DAY: u64 = 86_400;

const DAY_NAMES: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];

const MONTH_NAMES: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// The `Date` header value, re-rendered only when the second changes.
///
/// A busy server writes thousands of responses per second; caching the text
/// keeps calendar arithmetic off the per-response path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateCache {
    second: u64,
    text: [u8; IMF_FIXDATE_LEN],
}

impl Default for DateCache {
    fn default() -> Self {
        Self::new()
    }
}

impl DateCache {
    /// Creates a cache showing the Unix epoch until the first update.
    pub fn new() -> Self {
        Self {
            second: 0,
            text: format_imf_fixdate(0),
        }
    }

    /// Brings the cached text up to `now` and returns it. Times before the
    /// epoch show the epoch; times past year 9999 show its last second.
    pub fn update(&mut self, now: SystemTime) -> &[u8; IMF_FIXDATE_LEN] {
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if second != self.second {
            self.second = second;
            self.text = format_imf_fixdate(second);
        }
        &self.text
    }

    /// The text as of the last update.
    pub fn as_bytes(&self) -> &[u8; IMF_FIXDATE_LEN] {
        &self.text
    }
}

/// Renders seconds since the epoch as an IMF-fixdate (RFC 9110 §5.6.7).
fn format_imf_fixdate(unix_secs: u64) -> [u8; IMF_FIXDATE_LEN] {
    let secs = unix_secs.min(MAX_FIXDATE_SECS);
    let days = secs / SECS_PER_DAY;
    let of_day = secs % SECS_PER_DAY;
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    // 1970-01-01 was a Thursday, index 4 counting from Sunday.
    text[0..3].copy_from_slice(DAY_NAMES[((days + 4) % 7) as usize]);
    put_digits(&mut text[5..7], day);
    text[8..11].copy_from_slice(MONTH_NAMES[(month - 1) as usize]);
    put_digits(&mut text[12..16], year);
    put_digits(&mut text[17..19], of_day / 3600);
    put_digits(&mut text[20..22], of_day / 60 % 60);
    put_digits(&mut text[23..25], of_day % 60);
    text
}

/// Writes `value` zero-padded to exactly `slot.len()` digits.
fn put_digits(slot: &mut [u8], mut value: u64) {
    for place in slot.iter_mut().rev() {
        // `value % 10` is below 10, so the narrowing cannot lose information.
        *place = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date, after
/// Howard Hinnant's `civil_from_days`, restricted to non-negative days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Fuzzing entry point: treats `data` as a pipelined request stream, under
/// default and tiny limits, and also as a bare chunked body. Must never
/// panic.
pub fn fuzz_decode(data: &[u8]) {
    let tiny = HttpLimits {
        max_header_bytes: 64,
        max_headers: 4,
        max_body: 16,
    };
    for limits in [HttpLimits::default(), tiny] {
        fuzz_stream(data, &limits);
        let _ = ChunkedDecoder::new(&limits).decode(data);
    }
}

fn fuzz_stream(data: &[u8], limits: &HttpLimits) {
    let mut rest = data;
    let mut out = Vec::new();
    while let Ok(Some(head)) = parse_request(rest, limits) {
        let body = &rest[head.head_len..];
        let body_len = match head.body {
            BodyKind::None => 0,
            BodyKind::ContentLength(len) if len <= body.len() => len,
            BodyKind::ContentLength(_) => return,
            BodyKind::Chunked => match ChunkedDecoder::new(limits).decode(body) {
                Ok(ChunkProgress {
                    consumed,
                    done: true,
                }) => consumed,
                _ => return,
            },
        };
        let path = head.path_in(rest);
        write_response(
            &mut out,
            200,
            "OK",
            b"",
            "text/plain",
            path,
            ConnectionHeader::for_request(head.version, head.keep_alive),
            false,
        );
        rest = &rest[head.head_len + body_len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::split;
    use proptest::prelude::*;

    fn parse(input: &[u8]) -> Result<Option<RequestHead>, HttpError> {
        parse_request(input, &HttpLimits::default())
    }

    fn head(input: &[u8]) -> RequestHead {
        parse(input).unwrap().unwrap()
    }

    fn with_headers(version: &str, headers: &str) -> Vec<u8> {
        format!("GET / HTTP/{version}\r\nHost: x\r\n{headers}\r\n").into_bytes()
    }

    #[test]
    fn a_head_arriving_a_byte_at_a_time_is_parsed_a_bounded_number_of_times() {
        let limits = HttpLimits::default();
        let mut request = b"GET /some/path HTTP/1.1\r\nHost: example\r\n".to_vec();
        for i in 0..40 {
            request.extend_from_slice(format!("X-Field-{i}: value {i}\r\n").as_bytes());
        }
        request.extend_from_slice(b"\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut parser = HeadParser::default();
        let mut buf = Vec::new();
        let mut heads = 0;
        for &byte in &request {
            buf.push(byte);
            while let Some(head) = parser.parse(&buf, &limits).expect("valid") {
                buf.drain(..head.head_len);
                heads += 1;
            }
        }
        assert_eq!(heads, 2);
        assert!(
            parser.full_parses() <= 4,
            "{} full parses for {} bytes",
            parser.full_parses(),
            request.len()
        );
    }

    #[test]
    fn a_bad_request_line_is_refused_as_soon_as_it_ends() {
        let limits = HttpLimits::default();
        let mut parser = HeadParser::default();
        assert!(matches!(parser.parse(b"GET /\x01 HTTP", &limits), Ok(None)));
        assert!(parser.parse(b"GET /\x01 HTTP/1.1\r\n", &limits).is_err());
    }

    #[test]
    fn parses_simple_get() {
        let input = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example\r\n\r\nNEXT";
        let parsed = head(input);
        assert_eq!(parsed.method, Method::Get);
        assert_eq!(parsed.path_in(input), b"/index.html?q=1");
        assert_eq!(parsed.version, 11);
        assert!(parsed.keep_alive);
        assert_eq!(parsed.body, BodyKind::None);
        assert_eq!(parsed.head_len, input.len() - 4);
    }

    #[test]
    fn recognises_methods() {
        let cases = [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("PATCH", Method::Other),
            ("get", Method::Other),
        ];
        for (token, method) in cases {
            let input = format!("{token} / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(head(input.as_bytes()).method, method, "{token}");
        }
    }

    #[test]
    fn host_is_required_once_and_valid() {
        let get = |version: &str, headers: &str| {
            parse(format!("GET / HTTP/{version}\r\n{headers}\r\n").as_bytes())
        };
        for (version, headers) in [
            ("1.1", ""),
            ("1.1", "Host: a\r\nHost: a\r\n"),
            ("1.0", "Host: a\r\nHost: b\r\n"),
            ("1.1", "Host: a b\r\n"),
            ("1.1", "Host: a/b\r\n"),
            ("1.1", "Host: a@b\r\n"),
            ("1.1", "Host: a:b\r\n"),
            ("1.1", "Host: [::1\r\n"),
            ("1.1", "Host: []\r\n"),
            ("1.1", "Host: a%zz\r\n"),
            ("1.1", "Host: a\\b\r\n"),
            ("1.0", "Host: a\"b\r\n"),
        ] {
            let err = get(version, headers).unwrap_err();
            assert_eq!(err, HttpError::BadHost, "{version} {headers:?}");
            assert_eq!(err.status(), 400);
        }
        for (version, headers) in [
            ("1.0", ""),
            ("1.1", "Host: example.com\r\n"),
            ("1.1", "hOsT: example.com:8080\r\n"),
            ("1.1", "Host: 127.0.0.1:80\r\n"),
            ("1.1", "Host: [::1]:80\r\n"),
            ("1.1", "Host: a%41-b_c~d\r\n"),
            ("1.1", "Host: \r\n"),
            ("1.1", "Host: a:\r\n"),
        ] {
            assert!(
                get(version, headers).unwrap().is_some(),
                "{version} {headers:?}"
            );
        }
    }

    #[test]
    fn connect_is_refused() {
        let err = parse(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(err, Err(HttpError::Connect));
        assert_eq!(HttpError::Connect.status(), 400);
    }

    #[test]
    fn later_http_1_minor_versions_are_served_as_1_1() {
        let input = b"GET /p HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\nNEXT";
        let parsed = head(input);
        assert_eq!(parsed.version, 11);
        assert_eq!(parsed.path_in(input), b"/p");
        assert!(!parsed.keep_alive);
        assert_eq!(parsed.head_len, input.len() - 4);
        for cut in 0..input.len() - 4 {
            assert_eq!(parse(&input[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(head(b"GET / HTTP/1.9\r\nHost: x\r\n\r\n").version, 11);
        for bad in [
            &b"GET / HTTP/2.1\r\n\r\n"[..],
            b"GET / HTTP/1.22\r\n\r\n",
            b"GET / HTTP/1.x\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Err(HttpError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn an_overlong_request_line_is_414_and_overlong_fields_431() {
        let mut line = b"GET /".to_vec();
        line.resize(8 * 1024, b'a');
        let err = parse(&line).unwrap_err();
        assert_eq!(
            (err, err.status(), err.reason()),
            (HttpError::UriTooLong, 414, "URI Too Long")
        );
        let mut fields = b"GET / HTTP/1.1\r\nX: ".to_vec();
        fields.resize(8 * 1024, b'a');
        assert_eq!(parse(&fields), Err(HttpError::HeadersTooLarge));
        let mut later = b"GET / HTTP/1.2\r\nX: ".to_vec();
        later.resize(8 * 1024, b'a');
        assert_eq!(parse(&later), Err(HttpError::HeadersTooLarge));
    }

    #[test]
    fn expect_100_continue_is_reported_for_http_1_1() {
        let with = |version: &str, value: &str| {
            head(&with_headers(
                version,
                &format!("Expect: {value}\r\nContent-Length: 5\r\n"),
            ))
            .expect_continue
        };
        assert!(with("1.1", "100-continue"));
        assert!(with("1.1", "100-Continue "));
        assert!(!with("1.0", "100-continue"));
        assert!(!with("1.1", "something-else"));
        assert!(!head(&with_headers("1.1", "")).expect_continue);
    }

    #[test]
    fn incomplete_head_needs_more() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..input.len() {
            assert_eq!(parse(&input[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn keep_alive_follows_rfc_9112() {
        let cases = [
            ("1.1", "", true),
            ("1.1", "Connection: close\r\n", false),
            ("1.1", "Connection: Upgrade, CLOSE\r\n", false),
            (
                "1.1",
                "Connection: keep-alive\r\nConnection: close\r\n",
                false,
            ),
            ("1.0", "", false),
            ("1.0", "Connection: Keep-Alive\r\n", true),
            ("1.0", "Connection: foo ,\tkeep-alive\r\n", true),
            ("1.0", "Connection: keep-alive, close\r\n", false),
            ("1.0", "Connection: keep-alived\r\n", false),
        ];
        for (version, headers, expected) in cases {
            let parsed = head(&with_headers(version, headers));
            assert_eq!(parsed.keep_alive, expected, "{version} {headers:?}");
            assert_eq!(parsed.version, if version == "1.0" { 10 } else { 11 });
        }
    }

    #[test]
    fn content_length_framing() {
        let cases = [
            ("Content-Length: 5\r\n", BodyKind::ContentLength(5)),
            ("Content-Length: 0\r\n", BodyKind::None),
            ("Content-Length: 5, 5\r\n", BodyKind::ContentLength(5)),
            (
                "Content-Length: 7\r\ncontent-length: 7\r\n",
                BodyKind::ContentLength(7),
            ),
            (
                "Content-Length: 1048576\r\n",
                BodyKind::ContentLength(1_048_576),
            ),
        ];
        for (headers, body) in cases {
            assert_eq!(
                head(&with_headers("1.1", headers)).body,
                body,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_content_length() {
        for headers in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: abc\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 5 5\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length:\r\n",
            "Content-Length: 5,\r\n",
        ] {
            let err = parse(&with_headers("1.1", headers)).unwrap_err();
            assert_eq!(err, HttpError::BadContentLength, "{headers:?}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn rejects_oversized_bodies() {
        for headers in [
            "Content-Length: 1048577\r\n",
            "Content-Length: 99999999999999999999999999\r\n",
        ] {
            let err = parse(&with_headers("1.1", headers)).unwrap_err();
            assert_eq!(err, HttpError::BodyTooLarge, "{headers:?}");
            assert_eq!((err.status(), err.reason()), (413, "Content Too Large"));
        }
    }

    #[test]
    fn chunked_framing() {
        for headers in [
            "Transfer-Encoding: chunked\r\n",
            "Transfer-Encoding: Chunked \r\n",
            "Transfer-Encoding: ,chunked\r\n",
        ] {
            assert_eq!(head(&with_headers("1.1", headers)).body, BodyKind::Chunked);
        }
    }

    #[test]
    fn rejects_conflicting_framing() {
        let input = with_headers("1.1", "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n");
        let err = parse(&input).unwrap_err();
        assert_eq!(err, HttpError::ConflictingFraming);
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn rejects_unsupported_codings() {
        for headers in [
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ] {
            let err = parse(&with_headers("1.1", headers)).unwrap_err();
            assert_eq!(err, HttpError::UnsupportedTransferEncoding, "{headers:?}");
            assert_eq!((err.status(), err.reason()), (501, "Not Implemented"));
        }
    }

    #[test]
    fn rejects_ambiguous_chunking() {
        for (version, headers) in [
            ("1.1", "Transfer-Encoding: chunked, chunked\r\n"),
            ("1.1", "Transfer-Encoding: \r\n"),
            ("1.0", "Transfer-Encoding: chunked\r\n"),
        ] {
            let err = parse(&with_headers(version, headers)).unwrap_err();
            assert_eq!(err, HttpError::Malformed, "{version} {headers:?}");
        }
    }

    #[test]
    fn rejects_malformed_heads() {
        for input in [
            &b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / FTP/1.1\r\n\r\n",
            b"\x00\x01\x02\r\n\r\n",
        ] {
            let err = parse(input).unwrap_err();
            assert_eq!(err, HttpError::Malformed, "{input:?}");
            assert_eq!((err.status(), err.reason()), (400, "Bad Request"));
        }
    }

    #[test]
    fn rejects_head_without_end_within_limit() {
        let mut input = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        input.resize(8 * 1024 - 1, b'a');
        assert_eq!(parse(&input), Ok(None));
        input.push(b'a');
        let err = parse(&input).unwrap_err();
        assert_eq!(err, HttpError::HeadersTooLarge);
        assert_eq!(
            (err.status(), err.reason()),
            (431, "Request Header Fields Too Large")
        );
    }

    #[test]
    fn head_ending_past_limit_is_too_large() {
        let mut input = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        input.resize(9 * 1024, b'a');
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&input), Err(HttpError::HeadersTooLarge));
    }

    #[test]
    fn rejects_too_many_headers() {
        let many = "X: y\r\n".repeat(64);
        assert_eq!(
            parse(&with_headers("1.1", &many)),
            Err(HttpError::HeadersTooLarge)
        );
        let fits = "X: y\r\n".repeat(63);
        assert!(parse(&with_headers("1.1", &fits)).unwrap().is_some());
    }

    #[test]
    fn max_headers_is_capped_at_capacity() {
        let limits = HttpLimits {
            max_headers: usize::MAX,
            max_header_bytes: usize::MAX,
            ..HttpLimits::default()
        };
        let many = "X: y\r\n".repeat(HEADER_CAPACITY + 1);
        let input = with_headers("1.1", &many);
        assert_eq!(
            parse_request(&input, &limits),
            Err(HttpError::HeadersTooLarge)
        );
    }

    fn skip_chunked(input: &[u8]) -> (Result<ChunkProgress, HttpError>, Vec<u8>) {
        let mut decoder = ChunkedDecoder::new(&HttpLimits::default());
        let mut data = Vec::new();
        let result = decoder.decode_with(input, |piece| data.extend_from_slice(piece));
        (result, data)
    }

    #[test]
    fn decodes_chunked_body() {
        let input = b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\n\r\nGET";
        let (result, data) = skip_chunked(input);
        let expected = ChunkProgress {
            consumed: input.len() - 3,
            done: true,
        };
        assert_eq!(result, Ok(expected));
        assert_eq!(data, b"hello world");
    }

    #[test]
    fn tolerates_extensions_and_trailers() {
        let input = b"A ; ext\r\n0123456789\r\n0;last\r\nX-Sum: 1\r\nY: 2\r\n\r\n";
        let (result, data) = skip_chunked(input);
        assert_eq!(
            result.map(|p| (p.consumed, p.done)),
            Ok((input.len(), true))
        );
        assert_eq!(data, b"0123456789");
    }

    #[test]
    fn chunked_byte_at_a_time() {
        let input = b"3\r\nabc\r\n0\r\nT: v\r\n\r\n";
        let mut decoder = ChunkedDecoder::new(&HttpLimits::default());
        for (index, byte) in input.iter().enumerate() {
            assert!(!decoder.is_done());
            let progress = decoder.decode(std::slice::from_ref(byte)).unwrap();
            assert_eq!(progress.consumed, 1);
            assert_eq!(progress.done, index == input.len() - 1);
        }
        assert_eq!(decoder.body_len(), 3);
        let after = decoder.decode(b"more").unwrap();
        assert_eq!((after.consumed, after.done), (0, true));
    }

    #[test]
    fn rejects_bad_chunks() {
        for input in [
            &b"z\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"5\r\nhello\rX",
            b"3;ext\nabc",
            b"0\r\nTrailer\n",
            b"0\r\n\rX",
            b"0\r\n\n",
        ] {
            let (result, _) = skip_chunked(input);
            assert_eq!(result, Err(HttpError::BadChunk), "{input:?}");
        }
    }

    #[test]
    fn rejects_endless_chunk_line() {
        let mut input = b"5;".to_vec();
        input.resize(MAX_CHUNK_LINE + 1, b'x');
        assert_eq!(skip_chunked(&input).0, Err(HttpError::BadChunk));
    }

    #[test]
    fn rejects_oversized_chunked_bodies() {
        let limits = HttpLimits {
            max_body: 10,
            ..HttpLimits::default()
        };
        for input in [
            &b"b\r\n"[..],
            b"5\r\nhello\r\n6\r\n",
            b"ffffffffffffffffffffffff\r\n",
        ] {
            let mut decoder = ChunkedDecoder::new(&limits);
            assert_eq!(
                decoder.decode(input),
                Err(HttpError::BodyTooLarge),
                "{input:?}"
            );
            // The failure sticks, so a caller cannot resume mid-garbage.
            assert_eq!(decoder.decode(b"0\r\n\r\n"), Err(HttpError::BodyTooLarge));
        }
        let mut decoder = ChunkedDecoder::new(&limits);
        assert!(
            decoder
                .decode(b"00000000000a\r\n0123456789\r\n0\r\n\r\n")
                .unwrap()
                .done
        );
    }

    #[test]
    fn rejects_oversized_trailers() {
        let limits = HttpLimits {
            max_header_bytes: 8,
            ..HttpLimits::default()
        };
        let mut decoder = ChunkedDecoder::new(&limits);
        let err = decoder.decode(b"0\r\nX-Trailer: 1\r\n\r\n").unwrap_err();
        assert_eq!(err, HttpError::HeadersTooLarge);
    }

    #[test]
    fn writes_keep_alive_response() {
        let mut out = Vec::new();
        let date = b"Sun, 06 Nov 1994 08:49:37 GMT";
        write_response(
            &mut out,
            200,
            "OK",
            date,
            "text/plain",
            b"hi",
            ConnectionHeader::Omit,
            false,
        );
        let expected: &[u8] = b"HTTP/1.1 200 OK\r\nServer: netloop\r\n\
            Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain\r\n\
            Content-Length: 2\r\n\r\nhi";
        assert_eq!(out, expected);
    }

    #[test]
    fn writes_closing_head_only_response() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            404,
            "Not Found",
            b"D",
            "text/html",
            b"gone",
            ConnectionHeader::Close,
            true,
        );
        let expected: &[u8] = b"HTTP/1.1 404 Not Found\r\nServer: netloop\r\nDate: D\r\n\
            Content-Type: text/html\r\nContent-Length: 4\r\nConnection: close\r\n\r\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn bodyless_statuses_omit_length_and_body() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            204,
            "No Content",
            b"D",
            "",
            b"ignored",
            ConnectionHeader::Omit,
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\nServer: netloop\r\nDate: D\r\n\r\n"
        );
    }

    #[test]
    fn response_fields_cannot_inject_headers() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            200,
            "OK\r\nX: y",
            b"D\n",
            "a\rb",
            b"",
            ConnectionHeader::Omit,
            false,
        );
        let expected: &[u8] = b"HTTP/1.1 200 OK  X: y\r\nServer: netloop\r\nDate: D \r\n\
            Content-Type: a b\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(out, expected);
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    #[test]
    fn formats_known_dates() {
        let cases: [(u64, &[u8]); 8] = [
            (784_111_777, b"Sun, 06 Nov 1994 08:49:37 GMT"),
            (0, b"Thu, 01 Jan 1970 00:00:00 GMT"),
            (951_782_400, b"Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_234_567_890, b"Fri, 13 Feb 2009 23:31:30 GMT"),
            (1_709_164_800, b"Thu, 29 Feb 2024 00:00:00 GMT"),
            (2_147_483_648, b"Tue, 19 Jan 2038 03:14:08 GMT"),
            (4_107_542_400, b"Mon, 01 Mar 2100 00:00:00 GMT"),
            (253_402_300_799, b"Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for (secs, text) in cases {
            assert_eq!(&DateCache::new().update(at(secs))[..], text, "{secs}");
        }
    }

    #[test]
    fn clamps_out_of_range_times() {
        let mut cache = DateCache::new();
        assert_eq!(
            &cache.update(at(u64::MAX / 2))[..],
            b"Fri, 31 Dec 9999 23:59:59 GMT"
        );
        let before_epoch = UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(
            &cache.update(before_epoch)[..],
            b"Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn date_cache_changes_only_with_the_second() {
        let mut cache = DateCache::new();
        let base = at(784_111_777);
        let first = *cache.update(base);
        let later = base + std::time::Duration::from_millis(999);
        assert_eq!(cache.update(later), &first);
        let next = *cache.update(at(784_111_778));
        assert_eq!(&next[..], b"Sun, 06 Nov 1994 08:49:38 GMT");
        assert_eq!(cache.as_bytes(), &next);
    }

    /// Hinnant's inverse, used only to check `civil_from_days`.
    fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
        let year = year - u64::from(month <= 2);
        let era = year / 400;
        let year_of_era = year - era * 400;
        let march_month = if month > 2 { month - 3 } else { month + 9 };
        let day_of_year = (153 * march_month + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    #[test]
    fn fuzz_entry_handles_samples() {
        fuzz_decode(b"");
        fuzz_decode(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n");
        fuzz_decode(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.0\r\n\r\n");
    }

    /// What a server observes on one connection.
    #[derive(Debug, PartialEq)]
    enum Event {
        Head(RequestHead, Vec<u8>),
        Body(Vec<u8>),
        Incomplete(usize),
        Failed(HttpError),
    }

    /// Where the simulated connection is between requests.
    enum Phase {
        Head,
        Fixed(usize, Vec<u8>),
        Chunked(ChunkedDecoder, Vec<u8>),
    }

    /// A connection as an event loop would run it: a growing input buffer
    /// from which heads and bodies are consumed as they complete.
    struct Conn {
        buf: Vec<u8>,
        phase: Phase,
        events: Vec<Event>,
        failed: bool,
    }

    impl Conn {
        fn run(chunks: &[&[u8]], limits: &HttpLimits) -> Vec<Event> {
            let mut conn = Self {
                buf: Vec::new(),
                phase: Phase::Head,
                events: Vec::new(),
                failed: false,
            };
            for chunk in chunks {
                conn.buf.extend_from_slice(chunk);
                while !conn.failed && conn.step(limits) {}
            }
            if !conn.failed {
                conn.events.push(Event::Incomplete(conn.buf.len()));
            }
            conn.events
        }

        /// Makes one unit of progress; false when more bytes are needed.
        fn step(&mut self, limits: &HttpLimits) -> bool {
            match &mut self.phase {
                Phase::Head => match parse_request(&self.buf, limits) {
                    Ok(Some(head)) => {
                        self.phase = match head.body {
                            BodyKind::None => Phase::Head,
                            BodyKind::ContentLength(len) => Phase::Fixed(len, Vec::new()),
                            BodyKind::Chunked => {
                                Phase::Chunked(ChunkedDecoder::new(limits), Vec::new())
                            }
                        };
                        let path = head.path_in(&self.buf).to_vec();
                        self.buf.drain(..head.head_len);
                        self.events.push(Event::Head(head, path));
                        true
                    }
                    Ok(None) => false,
                    Err(err) => self.fail(err),
                },
                Phase::Fixed(remaining, data) => {
                    let take = (*remaining).min(self.buf.len());
                    data.extend(self.buf.drain(..take));
                    *remaining -= take;
                    if *remaining > 0 {
                        return false;
                    }
                    let body = std::mem::take(data);
                    self.finish_body(body)
                }
                Phase::Chunked(decoder, data) => {
                    let result =
                        decoder.decode_with(&self.buf, |piece| data.extend_from_slice(piece));
                    match result {
                        Ok(progress) => {
                            self.buf.drain(..progress.consumed);
                            if !progress.done {
                                return false;
                            }
                            let body = std::mem::take(data);
                            self.finish_body(body)
                        }
                        Err(err) => self.fail(err),
                    }
                }
            }
        }

        fn finish_body(&mut self, body: Vec<u8>) -> bool {
            self.events.push(Event::Body(body));
            self.phase = Phase::Head;
            true
        }

        fn fail(&mut self, err: HttpError) -> bool {
            self.events.push(Event::Failed(err));
            self.failed = true;
            false
        }
    }

    #[derive(Debug, Clone)]
    enum BodySpec {
        Fixed(Vec<u8>),
        Chunked(Vec<Vec<u8>>, bool, bool),
    }

    #[derive(Debug, Clone)]
    struct Req {
        method: &'static str,
        path: String,
        http10: bool,
        connection: Option<&'static str>,
        body: Option<BodySpec>,
    }

    /// The observable meaning of a request, independent of byte offsets.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Head(Method, Vec<u8>, u8, bool, BodyKind),
        Body(Vec<u8>),
        End(usize),
    }

    fn observed(events: &[Event]) -> Vec<Seen> {
        events
            .iter()
            .map(|event| match event {
                Event::Head(h, path) => {
                    Seen::Head(h.method, path.clone(), h.version, h.keep_alive, h.body)
                }
                Event::Body(data) => Seen::Body(data.clone()),
                Event::Incomplete(left) => Seen::End(*left),
                Event::Failed(err) => panic!("valid stream failed: {err}"),
            })
            .collect()
    }

    impl Req {
        fn encode(&self, out: &mut Vec<u8>) {
            let version = if self.http10 { "1.0" } else { "1.1" };
            let head = format!(
                "{} {} HTTP/{version}\r\nHost: h\r\n",
                self.method, self.path
            );
            out.extend_from_slice(head.as_bytes());
            if let Some(value) = self.connection {
                out.extend_from_slice(format!("Connection: {value}\r\n").as_bytes());
            }
            match &self.body {
                None => out.extend_from_slice(b"\r\n"),
                Some(BodySpec::Fixed(data)) => {
                    out.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", data.len()).as_bytes(),
                    );
                    out.extend_from_slice(data);
                }
                Some(BodySpec::Chunked(chunks, ext, trailers)) => {
                    out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    encode_chunked(chunks, *ext, *trailers, out);
                }
            }
        }

        fn expected(&self) -> Vec<Seen> {
            let method = Method::from_token(self.method);
            let version = if self.http10 { 10 } else { 11 };
            let keep_alive = match self.connection {
                Some("close") => false,
                Some(_) => true,
                None => !self.http10,
            };
            let (kind, data) = match &self.body {
                None => (BodyKind::None, None),
                Some(BodySpec::Fixed(data)) if data.is_empty() => (BodyKind::None, None),
                Some(BodySpec::Fixed(data)) => {
                    (BodyKind::ContentLength(data.len()), Some(data.clone()))
                }
                Some(BodySpec::Chunked(chunks, ..)) => (BodyKind::Chunked, Some(chunks.concat())),
            };
            let head = Seen::Head(
                method,
                self.path.clone().into_bytes(),
                version,
                keep_alive,
                kind,
            );
            std::iter::once(head).chain(data.map(Seen::Body)).collect()
        }
    }

    fn encode_chunked(chunks: &[Vec<u8>], ext: bool, trailers: bool, out: &mut Vec<u8>) {
        let ext = if ext { ";name=value" } else { "" };
        // An empty chunk would end the body early, so they are not sent.
        for chunk in chunks.iter().filter(|chunk| !chunk.is_empty()) {
            out.extend_from_slice(format!("{:x}{ext}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("0{ext}\r\n").as_bytes());
        if trailers {
            out.extend_from_slice(b"X-Checksum: 1\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    fn request() -> impl Strategy<Value = Req> {
        let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]);
        let connection = prop::option::of(prop::sample::select(vec![
            "close",
            "keep-alive",
            "Upgrade, Keep-Alive",
        ]));
        let data = prop::collection::vec(any::<u8>(), 0..40);
        let body = prop::option::of(prop_oneof![
            data.clone().prop_map(BodySpec::Fixed),
            (
                prop::collection::vec(data, 0..4),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(chunks, ext, trailers)| BodySpec::Chunked(chunks, ext, trailers)),
        ]);
        (
            method,
            "/[a-z0-9._-]{0,20}",
            any::<bool>(),
            connection,
            body,
        )
            .prop_map(|(method, path, http10, connection, body)| {
                // HTTP/1.0 cannot carry a chunked body, so send it fixed.
                let body = match body {
                    Some(BodySpec::Chunked(chunks, ..)) if http10 => {
                        Some(BodySpec::Fixed(chunks.concat()))
                    }
                    other => other,
                };
                Req {
                    method,
                    path,
                    http10,
                    connection,
                    body,
                }
            })
    }

    /// Fragments that keep random streams close enough to HTTP to reach
    /// deep parser and chunk-decoder states.
    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        let tokens: Vec<&'static [u8]> = vec![
            b"GET / HTTP/1.1\r\n",
            b"POST /x HTTP/1.0\r\n",
            b"Host: h\r\n",
            b"Content-Length: 3\r\n",
            b"Content-Length: 40\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: close\r\n",
            b"\r\n",
            b"\r",
            b"\n",
            b"0\r\n",
            b"5\r\n",
            b"a;x\r\n",
            b"hello",
            b"abc",
            b" ",
            b":",
        ];
        prop_oneof![
            3 => prop::sample::select(tokens).prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 0..4),
        ]
    }

    fn tiny() -> HttpLimits {
        HttpLimits {
            max_header_bytes: 64,
            max_headers: 4,
            max_body: 16,
        }
    }

    proptest! {
        #[test]
        fn any_split_decodes_valid_stream(
            requests in prop::collection::vec(request(), 0..6),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut stream = Vec::new();
            requests.iter().for_each(|request| request.encode(&mut stream));
            let limits = HttpLimits::default();
            let whole = Conn::run(&[&stream], &limits);
            let mut expected: Vec<Seen> = requests.iter().flat_map(Req::expected).collect();
            expected.push(Seen::End(0));
            prop_assert_eq!(observed(&whole), expected);
            prop_assert_eq!(Conn::run(&split(&stream, &cuts), &limits), whole);
        }

        #[test]
        fn any_split_agrees_on_arbitrary_bytes(
            parts in prop::collection::vec(fragment(), 0..40),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let data = parts.concat();
            for limits in [tiny(), HttpLimits::default()] {
                let whole = Conn::run(&[&data], &limits);
                prop_assert_eq!(Conn::run(&split(&data, &cuts), &limits), whole);
            }
        }

        #[test]
        fn civil_from_days_inverts(days in 0u64..2_932_897) {
            let (year, month, day) = civil_from_days(days);
            prop_assert!((1..=12).contains(&month) && (1..=31).contains(&day));
            prop_assert_eq!(days_from_civil(year, month, day), days);
        }

        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
            fuzz_decode(&data);
        }

        #[test]
        fn never_panics_on_http_like_input(parts in prop::collection::vec(fragment(), 0..60)) {
            fuzz_decode(&parts.concat());
        }
    }
}

//! RESP request parsing and reply encoding (RESP2, and the RESP3 types the
//! kv server needs) for a Redis-compatible server.
//!
//! Parsing follows Redis' `processMultibulkBuffer` and `processInlineBuffer`
//! (networking.c), including its error texts, so clients see the same
//! `-ERR Protocol error: ...` replies they would get from Redis. Like Redis,
//! [`RespParser`] keeps its place in a pending request between reads, so a
//! request costs time linear in its bytes however slowly they arrive.

use std::borrow::Cow;
use std::io::Write as _;

use thiserror::Error;

/// Argument slots reserved up front for a multibulk request, no matter how
/// many the peer announces, so a lying count cannot force a big allocation.
const PREALLOC_ARGS: usize = 1024;

/// Size limits applied while parsing requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespLimits {
    /// Most arguments accepted in one multibulk request.
    pub max_multibulk_len: usize,
    /// Largest single bulk argument, in bytes.
    pub max_bulk_len: usize,
    /// Longest inline request line, and longest `*`/`$` count line, in bytes.
    pub max_inline_len: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        Self {
            max_multibulk_len: 1024 * 1024,
            max_bulk_len: 512 * 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A protocol violation; `Display` yields Redis' exact wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RespError {
    /// The `*<count>` line is not a valid integer or exceeds the limit.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$<len>` line is not a valid integer, is negative or exceeds the limit.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// A multibulk argument did not start with `$`.
    #[error("expected '$', got '{}'", char::from(*found))]
    ExpectedDollar {
        /// The byte found where `$` was expected.
        found: u8,
    },
    /// An inline request line exceeds `max_inline_len`.
    #[error("too big inline request")]
    InlineTooBig,
    /// The `*<count>` line exceeds `max_inline_len` without a terminator.
    #[error("too big mbulk count string")]
    MultibulkCountTooBig,
    /// A `$<len>` line exceeds `max_inline_len` without a terminator.
    #[error("too big bulk count string")]
    BulkCountTooBig,
    /// An inline request has an unterminated quote, or a closing quote
    /// directly followed by something other than whitespace.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// Which buffer the ranges in an [`ArgBuf`] index into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ArgSource {
    /// Multibulk arguments are used in place, straight from the input.
    #[default]
    Input,
    /// Inline arguments may contain escapes, so they are unescaped into the
    /// argument buffer's own scratch space.
    Scratch,
}

/// Caller-owned, reusable storage for the arguments of one request.
///
/// Keeping one per connection means a steady stream of requests parses
/// without allocating. Multibulk arguments are stored as ranges into the
/// input buffer; inline arguments are unescaped into internal scratch space.
#[derive(Debug, Clone, Default)]
pub struct ArgBuf {
    ranges: Vec<(usize, usize)>,
    scratch: Vec<u8>,
    source: ArgSource,
}

impl ArgBuf {
    /// Creates an empty argument buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of arguments of the last parsed request.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the last parsed request had no arguments (and so should be
    /// skipped, as Redis does for `*0\r\n` and blank lines).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `index`. `input` must be the buffer that was just parsed;
    /// with any other buffer the result is meaningless (but never a panic).
    pub fn get<'a>(&'a self, input: &'a [u8], index: usize) -> Option<&'a [u8]> {
        let &(start, end) = self.ranges.get(index)?;
        self.backing(input).get(start..end)
    }

    /// All arguments in order. `input` must be the buffer that was parsed.
    pub fn iter<'a>(&'a self, input: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let backing = self.backing(input);
        self.ranges
            .iter()
            .map(move |&(start, end)| backing.get(start..end).unwrap_or_default())
    }

    /// Releases memory beyond `capacity` left behind by an unusually large
    /// request, so one huge command does not pin memory for the connection.
    pub fn shrink_to(&mut self, capacity: usize) {
        self.ranges.shrink_to(capacity);
        self.scratch.shrink_to(capacity);
    }

    fn backing<'a>(&'a self, input: &'a [u8]) -> &'a [u8] {
        match self.source {
            ArgSource::Input => input,
            ArgSource::Scratch => &self.scratch,
        }
    }

    fn reset(&mut self, source: ArgSource) {
        self.ranges.clear();
        self.scratch.clear();
        self.source = source;
    }

    fn to_command<'a>(&self, input: &'a [u8]) -> Command<'a> {
        let args = self
            .ranges
            .iter()
            .map(|&(start, end)| match self.source {
                ArgSource::Input => Cow::Borrowed(input.get(start..end).unwrap_or_default()),
                ArgSource::Scratch => {
                    Cow::Owned(self.scratch.get(start..end).unwrap_or_default().to_vec())
                }
            })
            .collect();
        Command { args }
    }
}

/// A parsed request; the allocating convenience form of [`ArgBuf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    /// The arguments, command name first. Multibulk arguments borrow from
    /// the input; unescaped inline arguments are owned.
    pub args: Vec<Cow<'a, [u8]>>,
}

/// Parses one request from the start of `buf`.
///
/// Returns the command and the bytes it occupied, or `Ok(None)` if the
/// request is incomplete. Allocates per call; servers should prefer
/// [`parse_command_into`].
pub fn parse_command<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
) -> Result<Option<(Command<'a>, usize)>, RespError> {
    let mut args = ArgBuf::new();
    let parsed = parse_command_into(buf, limits, &mut args)?;
    Ok(parsed.map(|consumed| (args.to_command(buf), consumed)))
}

/// Parses one request from the start of `buf` into the reusable `args`.
///
/// Returns the bytes consumed, or `Ok(None)` if the request is incomplete.
/// A request with zero arguments (`*0\r\n`, a blank line) is still consumed
/// and should simply be skipped. After `Ok(None)` or an error the contents of
/// `args` are unspecified.
///
/// This form keeps no state between calls: an incomplete request is read
/// again from its start next time. A server should keep a [`RespParser`]
/// per connection instead, so that a request arriving in pieces costs time
/// linear in its size.
pub fn parse_command_into(
    buf: &[u8],
    limits: &RespLimits,
    args: &mut ArgBuf,
) -> Result<Option<usize>, RespError> {
    let mut parser = RespParser {
        args: std::mem::take(args),
        ..RespParser::default()
    };
    let parsed = parser.parse(buf, limits);
    *args = parser.args;
    parsed
}

/// A request parser that remembers how far it got.
///
/// Redis keeps its parsing position in the client between reads; so does
/// this parser. Feed it the connection's unconsumed input each time more
/// bytes arrive (the pending request stays at the start of that input until
/// it is complete and consumed). Arguments already parsed are not parsed
/// again, and no byte is searched for a line end twice, so a request costs
/// time linear in its bytes however it is split into reads.
#[derive(Debug, Clone, Default)]
pub struct RespParser {
    args: ArgBuf,
    progress: Progress,
    examined: u64,
}

/// Where the pending request stands, as offsets from its first byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Progress {
    /// No request begun.
    #[default]
    Idle,
    /// An inline line whose first `scanned` bytes hold no `\n`.
    Inline { scanned: usize },
    /// The `*<count>` line, whose first `scanned` bytes hold no `\r`.
    Count { scanned: usize },
    /// Multibulk arguments: `left` still to come, the next one at `pos`.
    Args {
        left: usize,
        pos: usize,
        bulk: BulkProgress,
    },
}

/// Where the next multibulk argument stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkProgress {
    /// Its `$<len>` line, whose first `scanned` bytes hold no `\r`.
    Header { scanned: usize },
    /// Its data: `len` bytes from `start`, then CRLF.
    Data { start: usize, len: usize },
}

impl RespParser {
    /// A parser with no request pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the request at the start of `buf`, carrying on from where the
    /// previous call on the same pending request stopped.
    ///
    /// Returns the bytes the request occupies once it is complete (the
    /// caller consumes them before the next call), or `Ok(None)` while more
    /// bytes are needed. `buf` must start with the pending request and hold
    /// at least the bytes it held last time. After an error the parser is
    /// ready for a new request (the connection is normally closed anyway).
    pub fn parse(&mut self, buf: &[u8], limits: &RespLimits) -> Result<Option<usize>, RespError> {
        let result = self.step(buf, limits);
        if !matches!(result, Ok(None)) {
            self.progress = Progress::Idle;
        }
        result
    }

    /// The arguments of the request the last `Ok(Some(_))` completed.
    pub fn args(&self) -> &ArgBuf {
        &self.args
    }

    /// Bytes searched for line terminators so far, over all requests: the
    /// parser's work, which tests hold linear in the bytes received.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Releases memory beyond `capacity` left by an unusually large request.
    pub fn shrink_to(&mut self, capacity: usize) {
        self.args.shrink_to(capacity);
    }

    fn step(&mut self, buf: &[u8], limits: &RespLimits) -> Result<Option<usize>, RespError> {
        if self.progress == Progress::Idle {
            self.progress = match buf.first() {
                None => return Ok(None),
                Some(b'*') => {
                    self.args.reset(ArgSource::Input);
                    Progress::Count { scanned: 0 }
                }
                Some(_) => {
                    self.args.reset(ArgSource::Scratch);
                    Progress::Inline { scanned: 0 }
                }
            };
        }
        match self.progress {
            Progress::Idle => Ok(None),
            Progress::Inline { scanned } => self.inline(buf, scanned, limits),
            Progress::Count { scanned } => self.count(buf, scanned, limits),
            Progress::Args { left, pos, bulk } => self.arguments(buf, left, pos, bulk, limits),
        }
    }

    fn inline(
        &mut self,
        buf: &[u8],
        scanned: usize,
        limits: &RespLimits,
    ) -> Result<Option<usize>, RespError> {
        let newline = match self.find_line(buf, scanned, b'\n', limits.max_inline_len) {
            Line::Found(index) => index,
            Line::Incomplete(scanned) => {
                self.progress = Progress::Inline { scanned };
                return Ok(None);
            }
            Line::TooLong => return Err(RespError::InlineTooBig),
        };
        let line = &buf[..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        split_args(line, &mut self.args)?;
        Ok(Some(newline + 1))
    }

    fn count(
        &mut self,
        buf: &[u8],
        scanned: usize,
        limits: &RespLimits,
    ) -> Result<Option<usize>, RespError> {
        let line = CountLine {
            too_long: RespError::MultibulkCountTooBig,
            invalid: RespError::InvalidMultibulkLength,
        };
        let (announced, line_len) = match self.count_line(buf, scanned, line, limits)? {
            Ok(found) => found,
            Err(scanned) => {
                self.progress = Progress::Count { scanned };
                return Ok(None);
            }
        };
        let left = multibulk_count(announced, limits)?;
        if left == 0 {
            return Ok(Some(line_len));
        }
        self.args.ranges.reserve(left.min(PREALLOC_ARGS));
        let bulk = BulkProgress::Header { scanned: 0 };
        self.arguments(buf, left, line_len, bulk, limits)
    }

    fn arguments(
        &mut self,
        buf: &[u8],
        mut left: usize,
        mut pos: usize,
        mut bulk: BulkProgress,
        limits: &RespLimits,
    ) -> Result<Option<usize>, RespError> {
        while left > 0 {
            match self.bulk(buf, pos, bulk, limits)? {
                Ok(next) => {
                    pos = next;
                    left -= 1;
                    bulk = BulkProgress::Header { scanned: 0 };
                }
                Err(waiting) => {
                    self.progress = Progress::Args {
                        left,
                        pos,
                        bulk: waiting,
                    };
                    return Ok(None);
                }
            }
        }
        Ok(Some(pos))
    }

    /// Advances the argument at `pos`: `Ok(end)` once it is complete (its
    /// range recorded), `Err(progress)` to wait for more bytes.
    fn bulk(
        &mut self,
        buf: &[u8],
        pos: usize,
        bulk: BulkProgress,
        limits: &RespLimits,
    ) -> Result<Result<usize, BulkProgress>, RespError> {
        let (start, len) = match bulk {
            BulkProgress::Data { start, len } => (start, len),
            BulkProgress::Header { scanned } => {
                match self.bulk_header(buf, pos, scanned, limits)? {
                    Ok(found) => found,
                    Err(waiting) => return Ok(Err(waiting)),
                }
            }
        };
        let end = start.checked_add(len).ok_or(RespError::InvalidBulkLength)?;
        let needed = end.checked_add(2).ok_or(RespError::InvalidBulkLength)?;
        // As in Redis, the CRLF after the data is skipped without being checked.
        if needed > buf.len() {
            return Ok(Err(BulkProgress::Data { start, len }));
        }
        self.args.ranges.push((start, end));
        Ok(Ok(needed))
    }

    /// Reads the `$<len>` line at `pos`: the data's start and length, or
    /// the progress to keep while the line is incomplete.
    fn bulk_header(
        &mut self,
        buf: &[u8],
        pos: usize,
        scanned: usize,
        limits: &RespLimits,
    ) -> Result<Result<(usize, usize), BulkProgress>, RespError> {
        let rest = buf.get(pos..).unwrap_or_default();
        // Checked on the first byte, before the length line is complete, so
        // the verdict cannot depend on where the stream was split.
        match rest.first() {
            None => return Ok(Err(BulkProgress::Header { scanned })),
            Some(b'$') => {}
            Some(&found) => return Err(RespError::ExpectedDollar { found }),
        }
        let line = CountLine {
            too_long: RespError::BulkCountTooBig,
            invalid: RespError::InvalidBulkLength,
        };
        match self.count_line(rest, scanned, line, limits)? {
            Ok((announced, header_len)) => Ok(Ok((pos + header_len, bulk_len(announced, limits)?))),
            Err(scanned) => Ok(Err(BulkProgress::Header { scanned })),
        }
    }

    /// Reads a `*<n>\r\n` or `$<n>\r\n` line at the start of `buf`: the
    /// integer and the line's length, or how far the search got.
    fn count_line(
        &mut self,
        buf: &[u8],
        scanned: usize,
        line: CountLine,
        limits: &RespLimits,
    ) -> Result<Result<(i64, usize), usize>, RespError> {
        let cr = match self.find_line(buf, scanned, b'\r', limits.max_inline_len) {
            Line::Found(index) => index,
            Line::Incomplete(scanned) => return Ok(Err(scanned)),
            Line::TooLong => return Err(line.too_long),
        };
        // Like Redis, the byte after '\r' is taken to be '\n' without
        // looking, but it must have arrived. The search resumes at the '\r'.
        let line_len = cr + 2;
        if line_len > buf.len() {
            return Ok(Err(cr));
        }
        let digits = buf.get(1..cr).ok_or(line.invalid)?;
        let value = parse_i64(digits).ok_or(line.invalid)?;
        Ok(Ok((value, line_len)))
    }

    /// Finds `terminator` among the first `max_len + 1` bytes, searching
    /// only from `from` (the bytes before it are known not to hold it).
    ///
    /// Bounding the search (rather than scanning the whole buffer, as Redis
    /// does) makes the verdict depend only on a fixed prefix, so it cannot
    /// change with how the stream happened to be split into reads.
    fn find_line(&mut self, buf: &[u8], from: usize, terminator: u8, max_len: usize) -> Line {
        let end = buf.len().min(max_len.saturating_add(1));
        let window = buf.get(from..end).unwrap_or_default();
        let found = window.iter().position(|&byte| byte == terminator);
        let looked = found.map_or(window.len(), |index| index + 1);
        self.examined = self.examined.saturating_add(looked as u64);
        match found {
            Some(index) => Line::Found(from + index),
            None if buf.len() > max_len => Line::TooLong,
            None => Line::Incomplete(end.max(from)),
        }
    }
}

/// The errors a count line reports, which differ for `*` and `$` lines.
#[derive(Clone, Copy)]
struct CountLine {
    too_long: RespError,
    invalid: RespError,
}

/// Result of looking for a line terminator within the allowed length.
enum Line {
    Found(usize),
    /// Not found among the bytes so far; the search may resume here.
    Incomplete(usize),
    TooLong,
}

/// Validates the announced argument count; Redis treats `<= 0` as empty.
fn multibulk_count(announced: i64, limits: &RespLimits) -> Result<usize, RespError> {
    if announced <= 0 {
        return Ok(0);
    }
    match usize::try_from(announced) {
        Ok(count) if count <= limits.max_multibulk_len => Ok(count),
        _ => Err(RespError::InvalidMultibulkLength),
    }
}

fn bulk_len(announced: i64, limits: &RespLimits) -> Result<usize, RespError> {
    match usize::try_from(announced) {
        Ok(len) if len <= limits.max_bulk_len => Ok(len),
        _ => Err(RespError::InvalidBulkLength),
    }
}

/// Parses an integer the way Redis' `string2ll` does: optional `-`, no `+`,
/// no leading zeros (nor `-0`), no surrounding whitespace, at most 20
/// characters, within `i64`.
///
/// Redis reads every number this way (lengths, values, expiry times,
/// indexes), so every number the servers read goes through here.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    const MAX_CHARS: usize = 20;
    if text.is_empty() || text.len() > MAX_CHARS {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let magnitude = digits.iter().try_fold(0u64, |acc, &byte| {
        let digit = u64::from(byte.checked_sub(b'0').filter(|d| *d <= 9)?);
        acc.checked_mul(10)?.checked_add(digit)
    })?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Splits an inline line into unescaped arguments, like Redis' `sdssplitargs`.
fn split_args(line: &[u8], args: &mut ArgBuf) -> Result<(), RespError> {
    let mut pos = 0;
    loop {
        while line.get(pos).is_some_and(|&byte| is_c_space(byte)) {
            pos += 1;
        }
        if pos >= line.len() {
            return Ok(());
        }
        let start = args.scratch.len();
        pos = read_token(line, pos, &mut args.scratch)?;
        args.ranges.push((start, args.scratch.len()));
    }
}

/// C's `isspace`, which `sdssplitargs` uses between arguments.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Reads one argument starting at `pos`; returns where the argument ended.
fn read_token(line: &[u8], mut pos: usize, out: &mut Vec<u8>) -> Result<usize, RespError> {
    loop {
        match line.get(pos) {
            // sdssplitargs ends bare words on exactly these, not on all of
            // `isspace` (a vertical tab stays inside the word).
            None | Some(b' ' | b'\n' | b'\r' | b'\t') => return Ok(pos),
            Some(b'"') => return read_double_quoted(line, pos + 1, out),
            Some(b'\'') => return read_single_quoted(line, pos + 1, out),
            Some(&byte) => {
                out.push(byte);
                pos += 1;
            }
        }
    }
}

fn read_double_quoted(line: &[u8], mut pos: usize, out: &mut Vec<u8>) -> Result<usize, RespError> {
    loop {
        match line.get(pos) {
            None => return Err(RespError::UnbalancedQuotes),
            Some(b'"') => return close_quote(line, pos),
            Some(b'\\') => pos = read_escape(line, pos, out),
            Some(&byte) => {
                out.push(byte);
                pos += 1;
            }
        }
    }
}

/// Unescapes the sequence whose backslash is at `pos`; returns the position
/// after it.
fn read_escape(line: &[u8], pos: usize, out: &mut Vec<u8>) -> usize {
    let hex_pair = (hex_value(line.get(pos + 2)), hex_value(line.get(pos + 3)));
    match (line.get(pos + 1), hex_pair) {
        (Some(b'x'), (Some(high), Some(low))) => {
            out.push((high << 4) | low);
            pos + 4
        }
        // A trailing backslash is kept; the missing close quote then fails.
        (None, _) => {
            out.push(b'\\');
            pos + 1
        }
        (Some(&escaped), _) => {
            out.push(unescape(escaped));
            pos + 2
        }
    }
}

fn unescape(byte: u8) -> u8 {
    match byte {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

fn hex_value(byte: Option<&u8>) -> Option<u8> {
    let digit = char::from(*byte?).to_digit(16)?;
    u8::try_from(digit).ok()
}

fn read_single_quoted(line: &[u8], mut pos: usize, out: &mut Vec<u8>) -> Result<usize, RespError> {
    loop {
        match (line.get(pos), line.get(pos + 1)) {
            (None, _) => return Err(RespError::UnbalancedQuotes),
            (Some(b'\\'), Some(b'\'')) => {
                out.push(b'\'');
                pos += 2;
            }
            (Some(b'\''), _) => return close_quote(line, pos),
            (Some(&byte), _) => {
                out.push(byte);
                pos += 1;
            }
        }
    }
}

/// Accepts the closing quote at `pos` only if whitespace or the end of the
/// line follows, as `sdssplitargs` requires.
fn close_quote(line: &[u8], pos: usize) -> Result<usize, RespError> {
    match line.get(pos + 1) {
        Some(&next) if !is_c_space(next) => Err(RespError::UnbalancedQuotes),
        _ => Ok(pos + 1),
    }
}

/// Appends `+<text>\r\n`. CR and LF in `text` become spaces so a reply can
/// never be split into two.
pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    push_single_line(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply. Like Redis, `-ERR ` is prepended unless `message`
/// already starts with `-` (e.g. `-WRONGTYPE ...`). CR and LF become spaces.
pub fn error(out: &mut Vec<u8>, message: &str) {
    error_bytes(out, message.as_bytes());
}

/// Appends `-ERR Protocol error: <text>\r\n` for a parse failure, the reply
/// Redis sends before closing the connection.
pub fn protocol_error(out: &mut Vec<u8>, err: &RespError) {
    out.extend_from_slice(b"-ERR Protocol error: ");
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{err}");
    sanitize_line(&mut out[start..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends `:<value>\r\n`.
pub fn integer(out: &mut Vec<u8>, value: i64) {
    out.push(b':');
    super::push_i64(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `$<len>\r\n<data>\r\n`.
pub fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    // Header, up to 20 length digits and two CRLFs.
    out.reserve(data.len() + 25);
    out.push(b'$');
    super::push_u64(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the RESP2 null bulk string, `$-1\r\n`.
pub fn null_bulk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends `*<len>\r\n`; the caller then appends `len` elements.
pub fn array_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    super::push_u64(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the RESP2 null array, `*-1\r\n`.
pub fn null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

/// Appends the RESP3 null, `_\r\n` (what RESP3 has instead of both RESP2
/// nulls).
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"_\r\n");
}

/// Appends the RESP3 map header `%<len>\r\n`; the caller then appends `len`
/// key-value pairs.
pub fn map_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'%');
    super::push_u64(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply built from raw bytes (peer input quoted in the
/// message is copied as it came, as Redis does, not re-encoded). `-ERR ` is
/// prepended unless `message` starts with `-`; CR and LF become spaces.
pub fn error_bytes(out: &mut Vec<u8>, message: &[u8]) {
    if !message.starts_with(b"-") {
        out.extend_from_slice(b"-ERR ");
    }
    push_single_line(out, message);
    out.extend_from_slice(b"\r\n");
}

fn push_single_line(out: &mut Vec<u8>, text: &[u8]) {
    let start = out.len();
    out.extend_from_slice(text);
    sanitize_line(&mut out[start..]);
}

fn sanitize_line(text: &mut [u8]) {
    for byte in text {
        if matches!(*byte, b'\r' | b'\n') {
            *byte = b' ';
        }
    }
}

/// Fuzzing entry point: parses `data` as a request stream with default and
/// with tiny limits, encoding a reply for each outcome. Must never panic.
pub fn fuzz_decode(data: &[u8]) {
    let tiny = RespLimits {
        max_multibulk_len: 4,
        max_bulk_len: 16,
        max_inline_len: 32,
    };
    for limits in [RespLimits::default(), tiny] {
        fuzz_stream(data, &limits);
    }
}

fn fuzz_stream(data: &[u8], limits: &RespLimits) {
    let mut args = ArgBuf::new();
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        match parse_command_into(rest, limits, &mut args) {
            Ok(Some(consumed)) => {
                array_header(&mut out, args.len());
                args.iter(rest).for_each(|arg| bulk(&mut out, arg));
                rest = &rest[consumed..];
            }
            Ok(None) => return,
            Err(err) => return protocol_error(&mut out, &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::split;
    use proptest::prelude::*;

    type Args = Vec<Vec<u8>>;

    fn parse(input: &[u8]) -> Result<Option<(Args, usize)>, RespError> {
        parse_with(input, &RespLimits::default())
    }

    fn parse_with(input: &[u8], limits: &RespLimits) -> Result<Option<(Args, usize)>, RespError> {
        let mut args = ArgBuf::new();
        let consumed = parse_command_into(input, limits, &mut args)?;
        Ok(consumed.map(|n| (args.iter(input).map(<[u8]>::to_vec).collect(), n)))
    }

    fn args(items: &[&[u8]]) -> Args {
        items.iter().map(|item| item.to_vec()).collect()
    }

    fn tiny() -> RespLimits {
        RespLimits {
            max_multibulk_len: 3,
            max_bulk_len: 5,
            max_inline_len: 16,
        }
    }

    #[test]
    fn parses_multibulk() {
        let input = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nextra";
        assert_eq!(parse(input), Ok(Some((args(&[b"GET", b"key"]), 22))));
    }

    #[test]
    fn multibulk_args_are_binary_safe() {
        let input = b"*1\r\n$4\r\n\r\n\0\xff\r\n";
        assert_eq!(
            parse(input),
            Ok(Some((args(&[b"\r\n\0\xff"]), input.len())))
        );
    }

    #[test]
    fn empty_and_negative_multibulk_are_skipped() {
        assert_eq!(parse(b"*0\r\n"), Ok(Some((vec![], 4))));
        assert_eq!(parse(b"*-1\r\n"), Ok(Some((vec![], 5))));
    }

    #[test]
    fn incomplete_multibulk_needs_more() {
        let input = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
        for cut in 0..input.len() {
            assert_eq!(parse(&input[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn parse_command_borrows_multibulk_args() {
        let input = b"*1\r\n$4\r\nPING\r\n";
        let (command, consumed) = parse_command(input, &RespLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(consumed, input.len());
        assert!(matches!(&command.args[0], Cow::Borrowed(b"PING")));
    }

    #[test]
    fn parse_command_owns_inline_args() {
        let (command, consumed) = parse_command(b"SET \"a\\nb\" 1\r\n", &RespLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(consumed, 14);
        let expected: Vec<Cow<'_, [u8]>> = vec![
            Cow::Owned(b"SET".to_vec()),
            Cow::Owned(b"a\nb".to_vec()),
            Cow::Owned(b"1".to_vec()),
        ];
        assert_eq!(command.args, expected);
    }

    #[test]
    fn rejects_bad_multibulk_counts() {
        for input in [
            &b"*abc\r\n"[..],
            b"*\r\n",
            b"*01\r\n",
            b"*+1\r\n",
            b"*1 \r\n",
        ] {
            assert_eq!(
                parse(input),
                Err(RespError::InvalidMultibulkLength),
                "{input:?}"
            );
        }
        assert_eq!(
            parse_with(b"*4\r\n", &tiny()),
            Err(RespError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse(b"*99999999999999999999\r\n"),
            Err(RespError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn rejects_bad_bulk_lengths() {
        for input in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$x\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$-0\r\n",
        ] {
            assert_eq!(parse(input), Err(RespError::InvalidBulkLength), "{input:?}");
        }
        assert_eq!(
            parse_with(b"*1\r\n$6\r\n", &tiny()),
            Err(RespError::InvalidBulkLength)
        );
    }

    #[test]
    fn huge_bulk_length_is_rejected_without_allocating() {
        let limits = RespLimits {
            max_bulk_len: usize::MAX,
            ..RespLimits::default()
        };
        let input = b"*1\r\n$9223372036854775807\r\n";
        assert_eq!(parse_with(input, &limits), Ok(None));
        assert_eq!(parse(input), Err(RespError::InvalidBulkLength));
    }

    #[test]
    fn rejects_missing_dollar_on_first_byte() {
        let err = parse(b"*1\r\n:").unwrap_err();
        assert_eq!(err, RespError::ExpectedDollar { found: b':' });
        assert_eq!(err.to_string(), "expected '$', got ':'");
    }

    #[test]
    fn rejects_overlong_count_lines() {
        let limits = tiny();
        let mbulk = [b"*".as_slice(), &[b'1'; 16]].concat();
        assert_eq!(
            parse_with(&mbulk, &limits),
            Err(RespError::MultibulkCountTooBig)
        );
        assert_eq!(parse_with(&mbulk[..16], &limits), Ok(None));
        let bulk_line = [b"*1\r\n$".as_slice(), &[b'1'; 16]].concat();
        assert_eq!(
            parse_with(&bulk_line, &limits),
            Err(RespError::BulkCountTooBig)
        );
    }

    #[test]
    fn rejects_overlong_inline_line() {
        let limits = tiny();
        assert_eq!(
            parse_with(&[b'a'; 17], &limits),
            Err(RespError::InlineTooBig)
        );
        assert_eq!(parse_with(&[b'a'; 16], &limits), Ok(None));
        let longest = [[b'a'; 16].as_slice(), b"\n"].concat();
        assert_eq!(
            parse_with(&longest, &limits),
            Ok(Some((args(&[&[b'a'; 16]]), 17)))
        );
    }

    #[test]
    fn default_inline_limit_is_64k() {
        let input = vec![b'a'; 64 * 1024 + 1];
        assert_eq!(parse(&input), Err(RespError::InlineTooBig));
    }

    #[test]
    fn parses_inline_words() {
        assert_eq!(
            parse(b"  SET\tkey  value\r\nPING"),
            Ok(Some((args(&[b"SET", b"key", b"value"]), 18)))
        );
        assert_eq!(parse(b"PING\n"), Ok(Some((args(&[b"PING"]), 5))));
    }

    #[test]
    fn blank_inline_line_has_no_args() {
        assert_eq!(parse(b"\r\n"), Ok(Some((vec![], 2))));
        assert_eq!(parse(b"   \n"), Ok(Some((vec![], 4))));
    }

    #[test]
    fn inline_quotes_and_escapes() {
        let input = b"SET \"a b\" \"q\\\"t\\n\\x41\\xzz\\\\\" 'it\\'s' x\"y z\"\r\n";
        let expected = args(&[b"SET", b"a b", b"q\"t\nAxzz\\", b"it's", b"xy z"]);
        assert_eq!(parse(input), Ok(Some((expected, input.len()))));
    }

    #[test]
    fn single_quotes_keep_other_backslashes() {
        assert_eq!(parse(b"'a\\nb'\n"), Ok(Some((args(&[b"a\\nb"]), 7))));
    }

    #[test]
    fn rejects_unbalanced_quotes() {
        for input in [
            &b"GET \"abc\r\n"[..],
            b"GET 'abc\r\n",
            b"GET \"a\"b\r\n",
            b"GET 'a'b\r\n",
            b"GET \"abc\\\"\n",
        ] {
            assert_eq!(parse(input), Err(RespError::UnbalancedQuotes), "{input:?}");
        }
    }

    #[test]
    fn errors_display_redis_text() {
        let cases = [
            (
                RespError::InvalidMultibulkLength,
                "invalid multibulk length",
            ),
            (RespError::InvalidBulkLength, "invalid bulk length"),
            (RespError::InlineTooBig, "too big inline request"),
            (
                RespError::MultibulkCountTooBig,
                "too big mbulk count string",
            ),
            (RespError::BulkCountTooBig, "too big bulk count string"),
            (RespError::UnbalancedQuotes, "unbalanced quotes in request"),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn protocol_error_reply_is_one_line() {
        let mut out = Vec::new();
        protocol_error(&mut out, &RespError::ExpectedDollar { found: b'\r' });
        assert_eq!(out, b"-ERR Protocol error: expected '$', got ' '\r\n");
    }

    #[test]
    fn arg_buf_is_reusable() {
        let mut buf = ArgBuf::new();
        let limits = RespLimits::default();
        assert_eq!(
            parse_command_into(b"a \"b\"\n", &limits, &mut buf),
            Ok(Some(6))
        );
        assert_eq!(buf.get(b"", 1), Some(&b"b"[..]));
        let input = b"*1\r\n$1\r\nz\r\n";
        assert_eq!(parse_command_into(input, &limits, &mut buf), Ok(Some(11)));
        assert_eq!(buf.len(), 1);
        assert_eq!(buf.get(input, 0), Some(&b"z"[..]));
        assert_eq!(buf.get(input, 1), None);
        buf.shrink_to(0);
    }

    #[test]
    fn encodes_replies() {
        let mut out = Vec::new();
        simple(&mut out, "OK");
        error(&mut out, "unknown command");
        error(&mut out, "-WRONGTYPE bad\r\nx");
        integer(&mut out, -42);
        bulk(&mut out, b"hi");
        bulk(&mut out, b"");
        null_bulk(&mut out);
        array_header(&mut out, 3);
        null_array(&mut out);
        let expected: &[u8] = b"+OK\r\n-ERR unknown command\r\n-WRONGTYPE bad  x\r\n:-42\r\n\
            $2\r\nhi\r\n$0\r\n\r\n$-1\r\n*3\r\n*-1\r\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn simple_strips_line_breaks() {
        let mut out = Vec::new();
        simple(&mut out, "a\r\nb");
        assert_eq!(out, b"+a  b\r\n");
    }

    #[test]
    fn redis_int_rules() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b"9223372036854775808"[..],
            b"-",
            b"00",
            b"-0",
            b"+5",
            b" 5",
            b"5 ",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fuzz_entry_handles_samples() {
        fuzz_decode(b"");
        fuzz_decode(b"*2\r\n$1\r\na\r\n$1\r\nb\r\nPING\r\n\"x");
        fuzz_decode(b"*1\r\n$-5\r\n");
    }

    #[derive(Debug, PartialEq)]
    struct Outcome {
        commands: Vec<Args>,
        end: End,
    }

    #[derive(Debug, PartialEq)]
    enum End {
        Incomplete(usize),
        Failed(RespError),
    }

    /// Feeds `chunks` into a growing buffer the way an event loop would,
    /// through one [`RespParser`] that keeps its place between chunks.
    fn drive(chunks: &[&[u8]], limits: &RespLimits) -> Outcome {
        let mut buf = Vec::new();
        let mut parser = RespParser::new();
        let mut commands = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match parser.parse(&buf, limits) {
                    Ok(Some(consumed)) => {
                        commands.push(parser.args().iter(&buf).map(<[u8]>::to_vec).collect());
                        buf.drain(..consumed);
                    }
                    Ok(None) => break,
                    Err(err) => {
                        let end = End::Failed(err);
                        return Outcome { commands, end };
                    }
                }
            }
        }
        let end = End::Incomplete(buf.len());
        Outcome { commands, end }
    }

    /// The stateless [`parse_command_into`] over the whole stream at once.
    fn drive_stateless(data: &[u8], limits: &RespLimits) -> Outcome {
        let mut rest = data;
        let mut args = ArgBuf::new();
        let mut commands = Vec::new();
        loop {
            match parse_command_into(rest, limits, &mut args) {
                Ok(Some(consumed)) => {
                    commands.push(args.iter(rest).map(<[u8]>::to_vec).collect());
                    rest = &rest[consumed..];
                }
                Ok(None) => {
                    let end = End::Incomplete(rest.len());
                    return Outcome { commands, end };
                }
                Err(err) => {
                    let end = End::Failed(err);
                    return Outcome { commands, end };
                }
            }
        }
    }

    #[test]
    fn a_slowly_arriving_request_is_searched_once() {
        // About a million arguments (7 MB); the last 700 bytes arrive one
        // at a time, as a slow or hostile client would send them.
        let count = 1_000_000;
        let mut request = format!("*{count}\r\n").into_bytes();
        for _ in 0..count {
            request.extend_from_slice(b"$1\r\na\r\n");
        }
        let limits = RespLimits::default();
        let mut parser = RespParser::new();
        let head = request.len() - 700;
        assert_eq!(parser.parse(&request[..head], &limits), Ok(None));
        let after_head = parser.examined();
        for end in head + 1..request.len() {
            assert_eq!(parser.parse(&request[..end], &limits), Ok(None));
        }
        assert_eq!(parser.parse(&request, &limits), Ok(Some(request.len())));
        assert_eq!(parser.args().len(), count);
        assert_eq!(parser.args().get(&request, count - 1), Some(&b"a"[..]));
        // Line ends are searched for once per byte (plus a '\r' seen again
        // while its '\n' is late); argument data is not searched at all.
        let tail_work = parser.examined() - after_head;
        assert!(
            tail_work <= 2 * 700,
            "the tail cost {tail_work} bytes of search"
        );
        assert!(parser.examined() <= request.len() as u64);
    }

    #[test]
    fn a_slow_inline_line_is_searched_once() {
        let limits = RespLimits::default();
        let mut parser = RespParser::new();
        let line = [vec![b'a'; 60_000], b"\r\n".to_vec()].concat();
        for end in 1..line.len() {
            assert_eq!(parser.parse(&line[..end], &limits), Ok(None));
        }
        assert_eq!(parser.parse(&line, &limits), Ok(Some(line.len())));
        assert!(parser.examined() <= line.len() as u64);
    }

    /// Quotes `arg` so that `sdssplitargs` yields it back unchanged.
    fn quote(arg: &[u8]) -> Vec<u8> {
        let mut out = vec![b'"'];
        for &byte in arg {
            match byte {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b' '..=b'~' => out.push(byte),
                _ => out.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
            }
        }
        out.push(b'"');
        out
    }

    #[derive(Debug, Clone)]
    enum Request {
        Multibulk(Args),
        Inline(Args, bool, Vec<bool>),
    }

    fn encode(request: &Request, out: &mut Vec<u8>) {
        match request {
            Request::Multibulk(items) => {
                array_header(out, items.len());
                items.iter().for_each(|item| bulk(out, item));
            }
            Request::Inline(items, crlf, quoted) => {
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.extend_from_slice(if index % 2 == 0 { b" " } else { b" \t " });
                    }
                    if quoted.get(index).copied().unwrap_or(true) {
                        out.extend_from_slice(&quote(item));
                    } else {
                        out.extend_from_slice(item);
                    }
                }
                out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            }
        }
    }

    fn request() -> impl Strategy<Value = Request> {
        let binary = prop::collection::vec(any::<u8>(), 0..40);
        let multibulk = prop::collection::vec(binary.clone(), 0..5).prop_map(Request::Multibulk);
        // Bare words come from a letters-only alphabet; quoted ones may hold
        // anything, so both escaping paths get exercised.
        let word = "[a-z]{1,8}".prop_map(String::into_bytes);
        let inline_arg = prop_oneof![
            word.prop_map(|w| (w, false)),
            binary.prop_map(|b| (b, true))
        ];
        let inline =
            (prop::collection::vec(inline_arg, 0..5), any::<bool>()).prop_map(|(items, crlf)| {
                let (args, quoted) = items.into_iter().unzip();
                Request::Inline(args, crlf, quoted)
            });
        prop_oneof![multibulk, inline]
    }

    fn expected_args(request: &Request) -> Args {
        match request {
            Request::Multibulk(items) | Request::Inline(items, _, _) => items.clone(),
        }
    }

    /// Fragments that keep random streams close enough to RESP to reach
    /// deep parser states.
    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        let tokens: Vec<&'static [u8]> = vec![
            b"*", b"$", b"\r\n", b"\r", b"\n", b"1", b"2", b"0", b"-1", b"12", b"\"", b"'", b"\\",
            b"\\x4", b" ", b"\t", b"a", b"*2\r\n", b"$3\r\n", b"abc",
        ];
        prop_oneof![
            prop::sample::select(tokens).prop_map(<[u8]>::to_vec),
            prop::collection::vec(any::<u8>(), 0..4),
        ]
    }

    proptest! {
        #[test]
        fn any_split_decodes_valid_stream(
            requests in prop::collection::vec(request(), 0..8),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut stream = Vec::new();
            requests.iter().for_each(|request| encode(request, &mut stream));
            let limits = RespLimits::default();
            let whole = drive_stateless(&stream, &limits);
            let commands = requests.iter().map(expected_args).collect();
            prop_assert_eq!(&whole, &Outcome { commands, end: End::Incomplete(0) });
            prop_assert_eq!(drive(&split(&stream, &cuts), &limits), whole);
        }

        #[test]
        fn any_split_agrees_on_arbitrary_bytes(
            parts in prop::collection::vec(fragment(), 0..60),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let data = parts.concat();
            let limits = tiny();
            let whole = drive_stateless(&data, &limits);
            prop_assert_eq!(drive(&split(&data, &cuts), &limits), whole);
        }

        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
            fuzz_decode(&data);
        }

        #[test]
        fn never_panics_on_resp_like_input(parts in prop::collection::vec(fragment(), 0..80)) {
            fuzz_decode(&parts.concat());
        }
    }
}

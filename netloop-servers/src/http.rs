//! An HTTP/1.1 server that answers every request with `200 Hello, World!`
//! (`netloop http`).
//!
//! Keep-alive by HTTP/1.1 rules, HTTP/1.0 closed unless it asks to stay,
//! HEAD without a body, request bodies (`Content-Length` or chunked) read
//! and discarded so the next pipelined request is framed right, pipelined
//! requests answered in order with every response of a turn in one write,
//! and bad input answered (400, 413, 414, 431, 501) and then closed
//! (`CloseReason::Protocol("http_bad_request")`).
//!
//! Guards, as nginx has them:
//! - the *header timeout* runs from accept (nginx's `client_header_timeout`)
//!   and again whenever part of a later head has arrived: a head not
//!   complete in time gets `408` and the connection closes; a connection
//!   that has sent nothing at all is closed without a response, as nginx
//!   closes it;
//! - the *body timeout* runs between two reads of a request body (nginx's
//!   `client_body_timeout`): `408`, then close;
//! - `Expect: 100-continue` is answered `100 Continue` when a body is
//!   announced and none of it has arrived yet;
//! - a client that pipelines requests without reading the responses gets
//!   no more answers parsed while more than [`Hello::with_max_unsent`] bytes
//!   of its responses wait to be sent; parsing resumes once they drain
//!   (the connection's own water marks, so reading stops too).
//!
//! A slow reader is the core's business: `Config::send_timeout`.

use std::time::{Duration, Instant, SystemTime};

use netloop::Buffer;
use netloop::{CloseReason, Conn, Handler, TimerId};

use crate::codec::http::{
    BodyKind, ChunkedDecoder, ConnectionHeader, DateCache, HeadParser, HttpError, HttpLimits,
    Method, write_response,
};

const BODY: &[u8] = b"Hello, World!";

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Unsent response bytes above which no further pipelined request is
/// parsed, by default (nginx grows by 0–12 KiB per such connection).
pub const DEFAULT_MAX_UNSENT: usize = 32 * 1024;

/// The hello-world handler.
pub struct Hello {
    limits: HttpLimits,
    date: DateCache,
    header_timeout: Duration,
    body_timeout: Duration,
    max_unsent: usize,
    /// A path answered with a large body instead of the greeting.
    large: Option<LargeBody>,
}

/// A large response body served at one path ([`Hello::with_large_body`]).
struct LargeBody {
    path: Vec<u8>,
    body: Vec<u8>,
}

/// Where one connection is between requests.
#[derive(Default)]
pub struct HttpConn {
    /// The body of the request being read, still to be skipped.
    body: BodyLeft,
    /// The request whose body is being skipped, answered once it is done.
    pending: Option<Pending>,
    /// The timer guarding what the connection waits for.
    guard: Guard,
    /// The head being received, parsed linearly however it is split.
    head: HeadParser,
}

#[derive(Default)]
enum BodyLeft {
    #[default]
    None,
    Length(usize),
    Chunked(ChunkedDecoder),
}

#[derive(Clone, Copy)]
struct Pending {
    connection: ConnectionHeader,
    head_only: bool,
    /// The request asked for the large body.
    large: bool,
}

/// What the connection is timed for.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Guard {
    /// Nothing: idle between requests (the loop's idle timeout applies), or
    /// waiting for its responses to drain (the loop's send timeout applies).
    #[default]
    None,
    /// A head: from accept, or since part of a later head arrived.
    Head(TimerId),
    /// A body: the timer checks the time since the last read.
    Body { timer: TimerId, last_read: Instant },
}

/// Where answering stopped.
enum Answered {
    /// Every complete request is answered; the rest needs more input.
    NeedInput,
    /// Too many unsent responses: the rest waits for them to drain.
    OutputFull,
    /// The connection must close once the output is written.
    Close(CloseReason),
}

impl Hello {
    /// A handler with these limits; the body timeout starts equal to the
    /// header timeout.
    pub fn new(limits: HttpLimits, header_timeout: Duration) -> Self {
        Self {
            limits,
            date: DateCache::new(),
            header_timeout,
            body_timeout: header_timeout,
            max_unsent: DEFAULT_MAX_UNSENT,
            large: None,
        }
    }

    /// Answers requests for exactly `path` (e.g. `/large`) with `size`
    /// bytes of `text/plain` instead of the greeting: the heavy flow beside
    /// light ones when measuring fairness, as a large static file is for
    /// nginx.
    pub fn with_large_body(mut self, path: &str, size: usize) -> Self {
        let body = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        self.large = Some(LargeBody {
            path: path.as_bytes().to_vec(),
            body,
        });
        self
    }

    /// Whether `path` is the large body's.
    fn is_large(&self, path: &[u8]) -> bool {
        self.large.as_ref().is_some_and(|large| large.path == path)
    }

    /// Sets the longest wait between two reads of a request body.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Sets how many bytes of unsent responses a connection may have before
    /// its further pipelined requests wait ([`DEFAULT_MAX_UNSENT`]).
    pub fn with_max_unsent(mut self, bytes: usize) -> Self {
        self.max_unsent = bytes.max(1);
        self
    }

    /// Answers every complete request in `input`, until the output holds
    /// more than `max_unsent` bytes. `heads` counts the heads parsed.
    fn answer(
        &mut self,
        input: &mut Buffer,
        output: &mut Vec<u8>,
        state: &mut HttpConn,
        heads: &mut usize,
    ) -> Answered {
        let date = *self.date.update(SystemTime::now());
        loop {
            match skip_body(input, &mut state.body) {
                Ok(true) => {}
                Ok(false) => return Answered::NeedInput,
                Err(e) => return refuse(output, &date, &e),
            }
            if let Some(pending) = state.pending.take() {
                let body = match &self.large {
                    Some(large) if pending.large => &large.body[..],
                    _ => BODY,
                };
                write_response(
                    output,
                    200,
                    "OK",
                    &date,
                    "text/plain",
                    body,
                    pending.connection,
                    pending.head_only,
                );
                if pending.connection == ConnectionHeader::Close {
                    return Answered::Close(CloseReason::Closed);
                }
            }
            if input.is_empty() {
                return Answered::NeedInput;
            }
            if output.len() > self.max_unsent {
                return Answered::OutputFull;
            }
            match state.head.parse(input.as_slice(), &self.limits) {
                Ok(None) => return Answered::NeedInput,
                Ok(Some(head)) => {
                    *heads += 1;
                    let large = self.is_large(head.path_in(input.as_slice()));
                    input.consume(head.head_len);
                    state.body = match head.body {
                        BodyKind::None => BodyLeft::None,
                        BodyKind::ContentLength(n) => BodyLeft::Length(n),
                        BodyKind::Chunked => BodyLeft::Chunked(ChunkedDecoder::new(&self.limits)),
                    };
                    // The client may wait for this before it sends the body.
                    if head.expect_continue && head.body != BodyKind::None && input.is_empty() {
                        output.extend_from_slice(CONTINUE);
                    }
                    state.pending = Some(Pending {
                        connection: ConnectionHeader::for_request(head.version, head.keep_alive),
                        head_only: head.method == Method::Head,
                        large,
                    });
                }
                Err(e) => return refuse(output, &date, &e),
            }
        }
    }

    /// Answers what can be answered now, then closes or re-times the
    /// connection.
    fn serve(&mut self, conn: &mut Conn<'_, HttpConn>) {
        let parts = conn.parts();
        let mut output = parts.output;
        let mut heads = 0;
        let answered = self.answer(parts.input, output.vec(), parts.state, &mut heads);
        let wanted = match answered {
            Answered::Close(reason) => {
                self.set_guard(conn, Wanted::None);
                conn.close_with(reason);
                return;
            }
            Answered::OutputFull => Wanted::None,
            Answered::NeedInput if conn.state().pending.is_some() => Wanted::Body,
            // A head completed: the next one has a timeout of its own.
            Answered::NeedInput if !conn.input().is_empty() && heads > 0 => Wanted::NewHead,
            Answered::NeedInput if !conn.input().is_empty() => Wanted::Head,
            Answered::NeedInput => Wanted::None,
        };
        self.set_guard(conn, wanted);
    }

    /// Arms, keeps or cancels the guard timer so that it times `wanted`.
    fn set_guard(&self, conn: &mut Conn<'_, HttpConn>, wanted: Wanted) {
        let now = conn.now();
        let guard = conn.state().guard;
        let next = match (guard, wanted) {
            (Guard::Head(_), Wanted::Head) => guard,
            (Guard::Body { timer, .. }, Wanted::Body) => Guard::Body {
                timer,
                last_read: now,
            },
            (_, wanted) => {
                if let Guard::Head(timer) | Guard::Body { timer, .. } = guard {
                    conn.cancel_timer(timer);
                }
                match wanted {
                    Wanted::None => Guard::None,
                    Wanted::Head | Wanted::NewHead => {
                        Guard::Head(conn.set_timer(self.header_timeout, 0))
                    }
                    Wanted::Body => Guard::Body {
                        timer: conn.set_timer(self.body_timeout, 0),
                        last_read: now,
                    },
                }
            }
        };
        conn.state().guard = next;
    }

    /// Answers `408` and closes.
    fn time_out(&mut self, conn: &mut Conn<'_, HttpConn>) {
        let date = *self.date.update(SystemTime::now());
        let parts = conn.parts();
        let mut output = parts.output;
        write_response(
            output.vec(),
            408,
            "Request Timeout",
            &date,
            "text/plain",
            b"Request Timeout",
            ConnectionHeader::Close,
            false,
        );
        conn.close_with(CloseReason::IdleTimeout);
    }
}

/// What the guard should time.
#[derive(Clone, Copy)]
enum Wanted {
    None,
    /// The head under way (the timer keeps running).
    Head,
    /// A head begun after another completed (the timer starts again).
    NewHead,
    Body,
}

/// Discards body bytes; `Ok(true)` once the body is complete.
fn skip_body(input: &mut Buffer, body: &mut BodyLeft) -> Result<bool, HttpError> {
    match body {
        BodyLeft::None => Ok(true),
        BodyLeft::Length(left) => {
            let taken = (*left).min(input.len());
            input.consume(taken);
            *left -= taken;
            if *left > 0 {
                return Ok(false);
            }
            *body = BodyLeft::None;
            Ok(true)
        }
        BodyLeft::Chunked(decoder) => {
            let progress = decoder.decode(input.as_slice())?;
            input.consume(progress.consumed);
            if !progress.done {
                return Ok(false);
            }
            *body = BodyLeft::None;
            Ok(true)
        }
    }
}

/// Answers bad input with its status and `Connection: close`.
fn refuse(output: &mut Vec<u8>, date: &[u8], error: &HttpError) -> Answered {
    tracing::debug!(%error, "bad request");
    write_response(
        output,
        error.status(),
        error.reason(),
        date,
        "text/plain",
        error.reason().as_bytes(),
        ConnectionHeader::Close,
        false,
    );
    Answered::Close(CloseReason::Protocol("http_bad_request"))
}

impl Handler for Hello {
    type State = HttpConn;

    fn on_open(&mut self, conn: &mut Conn<'_, HttpConn>) {
        // Unanswered pipelined requests stay in the input; their responses
        // may take this much room before reading stops.
        conn.set_water_marks(self.max_unsent, self.max_unsent / 4);
        // The first head is timed from accept, as nginx's client_header_timeout.
        self.set_guard(conn, Wanted::Head);
    }

    fn on_data(&mut self, conn: &mut Conn<'_, HttpConn>) {
        self.serve(conn);
    }

    fn on_drained(&mut self, conn: &mut Conn<'_, HttpConn>) {
        self.serve(conn);
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, HttpConn>, timer: TimerId, _: u64) {
        let now = conn.now();
        match conn.state().guard {
            Guard::Head(armed) if armed == timer => {
                conn.state().guard = Guard::None;
                if conn.input().is_empty() {
                    // Nothing was sent: close without a word, as nginx does.
                    conn.close_with(CloseReason::IdleTimeout);
                } else {
                    self.time_out(conn);
                }
            }
            Guard::Body {
                timer: armed,
                last_read,
            } if armed == timer => {
                let deadline = last_read + self.body_timeout;
                if deadline <= now {
                    conn.state().guard = Guard::None;
                    self.time_out(conn);
                } else {
                    // Reads moved the deadline: re-armed lazily, not on every read.
                    let timer = conn.set_timer(deadline - now, 0);
                    conn.state().guard = Guard::Body { timer, last_read };
                }
            }
            _ => {}
        }
    }
}

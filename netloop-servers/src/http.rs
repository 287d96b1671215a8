//! An HTTP/1.1 server that answers every request with `200 Hello, World!`
//! (`netloop http`).
//!
//! Keep-alive by HTTP/1.1 rules, HTTP/1.0 closed unless it asks to stay,
//! HEAD without a body, request bodies (`Content-Length` or chunked) read
//! and discarded so the next pipelined request is framed right, pipelined
//! requests answered in order with every response of a turn in one write,
//! and bad input answered (400, 413, 431, 501) and then closed
//! (`CloseReason::Protocol("http_bad_request")`).

use std::time::{Duration, SystemTime};

use netloop::Buffer;
use netloop::{CloseReason, Conn, Handler, TimerId};

use crate::codec::http::{
    BodyKind, ChunkedDecoder, ConnectionHeader, DateCache, HttpError, HttpLimits, Method,
    parse_request, write_response,
};

const BODY: &[u8] = b"Hello, World!";

/// The hello-world handler.
pub struct Hello {
    limits: HttpLimits,
    date: DateCache,
    header_timeout: Duration,
}

/// Where one connection is between requests.
#[derive(Default)]
pub struct HttpConn {
    /// The body of the request being read, still to be skipped.
    body: BodyLeft,
    /// The request whose body is being skipped, answered once it is done.
    pending: Option<Pending>,
    /// The slowloris guard, armed while a head is incomplete.
    header_timer: Option<TimerId>,
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
}

impl Hello {
    /// A handler with these limits.
    pub fn new(limits: HttpLimits, header_timeout: Duration) -> Self {
        Self {
            limits,
            date: DateCache::new(),
            header_timeout,
        }
    }

    /// Answers every complete request in `input`; says whether, and why,
    /// the connection must close once `output` is written.
    fn answer(
        &mut self,
        input: &mut Buffer,
        output: &mut Vec<u8>,
        state: &mut HttpConn,
    ) -> Option<CloseReason> {
        let date = *self.date.update(SystemTime::now());
        loop {
            match skip_body(input, &mut state.body) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return refuse(output, &date, &e),
            }
            if let Some(pending) = state.pending.take() {
                let content_type = "text/plain";
                write_response(
                    output,
                    200,
                    "OK",
                    &date,
                    content_type,
                    BODY,
                    pending.connection,
                    pending.head_only,
                );
                if pending.connection == ConnectionHeader::Close {
                    return Some(CloseReason::Closed);
                }
            }
            if input.is_empty() {
                return None;
            }
            match parse_request(input.as_slice(), &self.limits) {
                Ok(None) => return None,
                Ok(Some(head)) => {
                    input.consume(head.head_len);
                    state.body = match head.body {
                        BodyKind::None => BodyLeft::None,
                        BodyKind::ContentLength(n) => BodyLeft::Length(n),
                        BodyKind::Chunked => BodyLeft::Chunked(ChunkedDecoder::new(&self.limits)),
                    };
                    state.pending = Some(Pending {
                        connection: ConnectionHeader::for_request(head.version, head.keep_alive),
                        head_only: head.method == Method::Head,
                    });
                }
                Err(e) => return refuse(output, &date, &e),
            }
        }
    }
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
fn refuse(output: &mut Vec<u8>, date: &[u8], error: &HttpError) -> Option<CloseReason> {
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
    Some(CloseReason::Protocol("http_bad_request"))
}

impl Handler for Hello {
    type State = HttpConn;

    fn on_data(&mut self, conn: &mut Conn<'_, HttpConn>) {
        let parts = conn.parts();
        let mut output = parts.output;
        let close = self.answer(parts.input, output.vec(), parts.state);
        let waiting_for_head = !parts.input.is_empty() && parts.state.pending.is_none();
        let armed = parts.state.header_timer;
        if let Some(reason) = close {
            conn.close_with(reason);
            return;
        }
        match (waiting_for_head, armed) {
            (true, None) => {
                let timer = conn.set_timer(self.header_timeout, 0);
                conn.state().header_timer = Some(timer);
            }
            (false, Some(timer)) => {
                conn.cancel_timer(timer);
                conn.state().header_timer = None;
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, conn: &mut Conn<'_, HttpConn>, timer: TimerId, _: u64) {
        if conn.state().header_timer != Some(timer) {
            return;
        }
        conn.state().header_timer = None;
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

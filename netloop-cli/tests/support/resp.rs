//! A minimal RESP2/RESP3 client for the kv tests: requests encoded as
//! multibulk, replies read whole as raw bytes and parsed into values.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// `+`, `-`, `:`, `_` and the other one-line types: the type byte and the line.
    Line(u8, Vec<u8>),
    /// `$`: the data, or `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*`, `%`, `~`: the type byte and the items (a map's keys and values
    /// alternate), or `None` for `*-1`.
    Many(u8, Option<Vec<Value>>),
}

/// A connection to a RESP server.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects to `127.0.0.1:port`.
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Self {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    /// Sends one command and reads its reply as raw bytes.
    pub fn call(&mut self, args: &[Vec<u8>]) -> Vec<u8> {
        self.writer.write_all(&encode(args)).expect("write");
        read_raw(&mut self.reader)
    }

    /// Sends one command and parses its reply.
    pub fn call_value(&mut self, args: &[&[u8]]) -> Value {
        let owned: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        parse(&self.call(&owned))
    }
}

/// Encodes a multibulk request.
pub fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_line(reader: &mut impl BufRead, raw: &mut Vec<u8>) -> Vec<u8> {
    let start = raw.len();
    reader.read_until(b'\n', raw).expect("read reply");
    assert!(raw.ends_with(b"\r\n"), "truncated reply {raw:?}");
    raw[start..raw.len() - 2].to_vec()
}

fn read_into(reader: &mut impl BufRead, raw: &mut Vec<u8>) {
    let line = read_line(reader, raw);
    let (kind, rest) = line.split_first().expect("empty reply line");
    let count = || -> i64 {
        std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("count")
    };
    match kind {
        b'$' => {
            if let Ok(len) = usize::try_from(count()) {
                let mut data = vec![0; len + 2];
                reader.read_exact(&mut data).expect("bulk");
                raw.extend_from_slice(&data);
            }
        }
        b'*' | b'~' | b'>' => (0..count().max(0)).for_each(|_| read_into(reader, raw)),
        b'%' => (0..count().max(0) * 2).for_each(|_| read_into(reader, raw)),
        _ => {}
    }
}

/// Reads one whole reply, returning its bytes.
pub fn read_raw(reader: &mut impl BufRead) -> Vec<u8> {
    let mut raw = Vec::new();
    read_into(reader, &mut raw);
    raw
}

/// Parses one reply (which must be complete).
pub fn parse(mut raw: &[u8]) -> Value {
    parse_from(&mut raw)
}

fn parse_from(raw: &mut &[u8]) -> Value {
    let end = raw.windows(2).position(|w| w == b"\r\n").expect("line");
    let (kind, rest) = (raw[0], raw[1..end].to_vec());
    *raw = &raw[end + 2..];
    let count: i64 = std::str::from_utf8(&rest)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match kind {
        b'$' if count < 0 => Value::Bulk(None),
        b'$' => {
            let len = usize::try_from(count).expect("len");
            let data = raw[..len].to_vec();
            *raw = &raw[len + 2..];
            Value::Bulk(Some(data))
        }
        b'*' | b'~' | b'>' | b'%' if count < 0 => Value::Many(kind, None),
        b'*' | b'~' | b'>' | b'%' => {
            let items = if kind == b'%' { count * 2 } else { count };
            Value::Many(kind, Some((0..items).map(|_| parse_from(raw)).collect()))
        }
        _ => Value::Line(kind, rest),
    }
}

//! Ready-made protocol handlers on the event core: the servers behind
//! `netloop echo`, `chat`, `http` and `kv`, usable from any program.

pub mod chat;
pub mod http;
pub mod kv;

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| netloop_servers::codec::proxy_protocol::fuzz_decode(data));

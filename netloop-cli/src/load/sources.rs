//! `--sources`: the local addresses a load run connects from.
//!
//! One source address has about 28,000 ephemeral ports towards one server
//! port; a run of 100,000 connections spreads them over several loopback
//! addresses (all of 127.0.0.0/8 reaches the local host on Linux).

use std::net::{IpAddr, Ipv4Addr};

/// The most addresses one `--sources` may name.
const MOST: u32 = 256;

/// The addresses of one `--sources`, in the order connections use them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources(pub Vec<IpAddr>);

/// Parses `A`, `A-B` (an inclusive range) or a comma-separated list of
/// those, all IPv4 loopback addresses; the run only ever talks to its own
/// host.
pub fn parse_sources(text: &str) -> Result<Sources, String> {
    let mut sources = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (loopback(a)?, loopback(b)?),
            None => {
                let a = loopback(part)?;
                (a, a)
            }
        };
        let (first, last) = (u32::from(first), u32::from(last));
        if last < first {
            return Err(format!("{part}: the range runs backwards"));
        }
        if last - first >= MOST || sources.len() as u32 + (last - first) >= MOST {
            return Err(format!("at most {MOST} source addresses"));
        }
        sources.extend((first..=last).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
    }
    if sources.is_empty() {
        return Err("no source address given".into());
    }
    Ok(Sources(sources))
}

fn loopback(text: &str) -> Result<Ipv4Addr, String> {
    let addr: Ipv4Addr = text
        .trim()
        .parse()
        .map_err(|_| format!("{text}: not an IPv4 address"))?;
    if !addr.is_loopback() {
        return Err(format!("{addr}: only 127.0.0.0/8 addresses may be sources"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists_expand_and_non_loopback_is_refused() {
        let got = parse_sources("127.0.0.2-127.0.0.4,127.0.1.1").unwrap();
        let want: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.1.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(got, Sources(want));
        assert!(parse_sources("10.0.0.1").is_err());
        assert!(parse_sources("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_sources("127.0.0.0-127.0.255.255").is_err());
        assert!(parse_sources("").is_err());
    }
}

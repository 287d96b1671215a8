//! The fuzz targets' entry points under `cargo test`: every seed of
//! `fuzz/corpus/<target>/`, then proptest mutations of those seeds (bytes
//! flipped, inserted, removed, seeds spliced together), through each
//! decoder's `fuzz_decode`, which must never panic.
//!
//! libFuzzer itself (`fuzz/run.sh`) needs cargo-fuzz and an optimised build
//! of every target, minutes more than CI can spend; this runs in the normal
//! test pass and keeps the entry points and seeds exercised.

use std::fs;
use std::path::PathBuf;

use netloop_servers::codec::{frame, http, resp};
use proptest::prelude::*;

type Decode = fn(&[u8]);

const TARGETS: [(&str, Decode); 3] = [
    ("frame", frame::fuzz_decode),
    ("http", http::fuzz_decode),
    ("resp", resp::fuzz_decode),
];

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| fs::read(entry.expect("entry").path()).expect("seed"))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn every_seed_decodes_without_panicking() {
    for (target, decode) in TARGETS {
        for seed in seeds(target) {
            decode(&seed);
        }
    }
}

/// One edit of a byte string.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    /// Append another seed (pipelining, and splicing mid-message).
    Splice(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| Edit::Flip(at, 1 << (bit % 8))),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), any::<usize>()).prop_map(|(seed, at)| Edit::Splice(seed, at)),
    ]
}

fn mutate(seeds: &[Vec<u8>], start: usize, edits: &[Edit]) -> Vec<u8> {
    let mut data = seeds[start % seeds.len()].clone();
    for edit in edits {
        let len = data.len();
        match *edit {
            Edit::Flip(at, mask) if len > 0 => data[at % len] ^= mask,
            Edit::Insert(at, byte) => data.insert(at % (len + 1), byte),
            Edit::Remove(at) if len > 0 => {
                data.remove(at % len);
            }
            Edit::Splice(seed, at) => {
                let other = &seeds[seed % seeds.len()];
                let cut = at % (len + 1);
                data.truncate(cut);
                data.extend_from_slice(other);
            }
            _ => {}
        }
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn mutated_seeds_decode_without_panicking(
        start in any::<usize>(),
        edits in prop::collection::vec(edit(), 0..12),
    ) {
        for (target, decode) in TARGETS {
            decode(&mutate(&seeds(target), start, &edits));
        }
    }
}

//! Glob patterns for KEYS and SCAN MATCH, by the rules of Redis'
//! `stringmatchlen` (util.c): `*`, `?`, `[...]` with `^` and ranges, `\`
//! escapes, case-sensitive, and its quirks (an unclosed `[` class, ranges
//! compared as C's signed `char`).
//!
//! The work is bounded: after a `*` fails to place the rest of the pattern
//! anywhere in the string, no earlier `*` tries longer matches (Redis'
//! `skipLongerMatches`), so a match costs at most pattern × string steps;
//! and nesting stops at 1000 stars, so a hostile pattern cannot exhaust the
//! stack.

/// Deepest `*` recursion tried; Redis' own guard against abusive patterns.
const MAX_NESTING: u32 = 1000;

/// Whether `string` matches the glob `pattern`.
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, string, &mut skip_longer, 0)
}

fn match_from(pat: &[u8], string: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    let (mut p, mut s) = (0, 0);
    while let (Some(&token), Some(&byte)) = (pat.get(p), string.get(s)) {
        match token {
            b'*' => return match_star(pat, p, &string[s..], skip_longer, nesting),
            b'?' => {}
            b'[' => {
                let (matched, end) = match_class(pat, p, byte);
                if !matched {
                    return false;
                }
                p = end;
            }
            // An escape at the very end of the pattern stands for itself.
            b'\\' if p + 1 < pat.len() => {
                p += 1;
                if pat[p] != byte {
                    return false;
                }
            }
            literal if literal != byte => return false,
            _ => {}
        }
        s += 1;
        p += 1;
        if s == string.len() {
            // Trailing stars match the empty rest.
            while pat.get(p) == Some(&b'*') {
                p += 1;
            }
        }
    }
    p >= pat.len() && s >= string.len()
}

/// Matches from the `*` at `star`: the rest of the pattern is tried at every
/// position of `rest`.
fn match_star(
    pat: &[u8],
    mut star: usize,
    rest: &[u8],
    skip_longer: &mut bool,
    nesting: u32,
) -> bool {
    while pat.get(star + 1) == Some(&b'*') {
        star += 1;
    }
    let after = &pat[star + 1..];
    if after.is_empty() {
        return true;
    }
    for start in 0..rest.len() {
        if match_from(after, &rest[start..], skip_longer, nesting + 1) {
            return true;
        }
        if *skip_longer {
            return false;
        }
    }
    // The rest of the pattern fits nowhere in the rest of the string, so
    // no earlier star can help by matching more: stop them all.
    *skip_longer = true;
    false
}

/// Matches `byte` against the class opening at `open`; returns the verdict
/// and the index of the class's last pattern byte.
fn match_class(pat: &[u8], open: usize, byte: u8) -> (bool, usize) {
    let mut p = open + 1;
    let negated = pat.get(p) == Some(&b'^');
    if negated {
        p += 1;
    }
    let mut matched = false;
    loop {
        let left = pat.len().saturating_sub(p);
        match pat.get(p) {
            Some(b'\\') if left >= 2 => {
                p += 1;
                matched |= pat[p] == byte;
            }
            Some(b']') => break,
            // Unclosed: the class ends with the pattern.
            None => {
                p -= 1;
                break;
            }
            Some(&low) if left >= 3 && pat[p + 1] == b'-' => {
                matched |= in_range(low, pat[p + 2], byte);
                p += 2;
            }
            Some(&other) => matched |= other == byte,
        }
        p += 1;
    }
    (matched != negated, p)
}

/// Redis compares range bounds as C's (signed) `char`, so bytes above 0x7f
/// sort below ASCII; kept so that patterns match what they match in Redis.
fn in_range(low: u8, high: u8, byte: u8) -> bool {
    let signed = |b: u8| i8::from_ne_bytes([b]);
    let (mut low, mut high) = (signed(low), signed(high));
    if low > high {
        std::mem::swap(&mut low, &mut high);
    }
    (low..=high).contains(&signed(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_glob_cases() {
        let yes: &[(&[u8], &[u8])] = &[
            (b"*", b"anything"),
            (b"h?llo", b"hello"),
            (b"h*llo", b"heeeello"),
            (b"h[ae]llo", b"hallo"),
            (b"h[^e]llo", b"hallo"),
            (b"h[a-b]llo", b"hbllo"),
            (b"h[b-a]llo", b"hallo"),
            (b"h\\*llo", b"h*llo"),
            (b"a*", b"a"),
            (b"a**", b"a"),
            (b"[abc", b"a"),
            (b"\\", b"\\"),
            (b"[\\]]", b"]"),
        ];
        for (pattern, string) in yes {
            assert!(matches(pattern, string), "{pattern:?} {string:?}");
        }
        let no: &[(&[u8], &[u8])] = &[
            (b"", b"a"),
            // As in Redis; KEYS and SCAN treat a lone `*` as "everything".
            (b"*", b""),
            (b"a", b""),
            (b"h[^e]llo", b"hello"),
            (b"h[a-b]llo", b"hcllo"),
            (b"h?llo", b"hllo"),
            (b"a*b", b"acbd"),
            (b"[a-\xff]", b"b"),
        ];
        for (pattern, string) in no {
            assert!(!matches(pattern, string), "{pattern:?} {string:?}");
        }
    }

    #[test]
    fn abusive_patterns_finish() {
        let string = vec![b'a'; 4096];
        let pattern = [b"a*".repeat(2000), b"b".to_vec()].concat();
        assert!(!matches(&pattern, &string));
        let stars = b"*a".repeat(5000);
        assert!(!matches(&stars, &string), "nesting is bounded");
    }
}

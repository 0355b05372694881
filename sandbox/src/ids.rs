//! Deterministic randomness: cuid-like ids and a small PRNG, both derived from the seed.
//!
//! Everything the sandbox invents (ids, seeded contacts, which requests fail under an
//! `error_rate`) comes from here, so two runs with the same seed and the same calls agree
//! byte for byte — which is what makes a failing integration test reproducible.

/// SplitMix64's finaliser: a bijection on `u64`, so distinct inputs never collide.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A SplitMix64 generator: tiny, fast and good enough for picking names and faults.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A value in `0..n` (`n > 0`); the modulo bias is irrelevant for picking names.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// True with probability `p` (clamped to 0..=1).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // 53 random bits give a uniform float in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

/// What an id names; the digit after "cm" tells them apart, as the vendor docs' examples do
/// ("cm1…" agents, "cm2…" conversations, "cm3…" briefs, "cm4…" meetings).
#[derive(Clone, Copy, Debug)]
pub(crate) enum IdKind {
    Agent = 1,
    Conversation = 2,
    Brief = 3,
    Meeting = 4,
}

/// Hands out ids: "cm" + kind digit + 22 base-36 characters (25 in all, like a cuid).
#[derive(Clone, Debug)]
pub(crate) struct IdGen {
    seed: u64,
    counters: [u64; 5],
}

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

impl IdGen {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            counters: [0; 5],
        }
    }

    pub(crate) fn next(&mut self, kind: IdKind) -> String {
        let k = kind as usize;
        let n = self.counters[k];
        self.counters[k] += 1;
        // `mix` is a bijection, so for a fixed seed and kind each counter value gives a
        // distinct body: uniqueness without a "seen" set.
        let salt = mix(self.seed ^ (k as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let body = mix(salt ^ n);
        let tail = mix(body ^ salt);
        let mut id = String::with_capacity(25);
        id.push_str("cm");
        id.push(char::from(b'0' + k as u8));
        push_base36(&mut id, body, 13); // 36^13 > 2^64: the whole of `body` fits
        push_base36(&mut id, tail, 9);
        id
    }
}

fn push_base36(out: &mut String, mut value: u64, width: usize) {
    let mut digits = [b'0'; 13];
    for slot in digits[..width].iter_mut().rev() {
        *slot = BASE36[(value % 36) as usize];
        value /= 36;
    }
    out.extend(digits[..width].iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_distinct_deterministic_and_cuid_shaped() {
        let mut a = IdGen::new(42);
        let mut b = IdGen::new(42);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = a.next(IdKind::Brief);
            assert_eq!(id, b.next(IdKind::Brief));
            assert_eq!(id.len(), 25);
            assert!(id.starts_with("cm3"));
            assert!(seen.insert(id));
        }
        assert_ne!(
            IdGen::new(1).next(IdKind::Agent),
            IdGen::new(2).next(IdKind::Agent)
        );
    }

    #[test]
    fn chance_tracks_the_probability() {
        let mut rng = Rng::new(7);
        let hits = (0..10_000).filter(|_| rng.chance(0.25)).count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(1.0)));
    }
}

//! Deterministic randomness: independent, reproducible random streams keyed by (seed, purpose,
//! index), so any event of any dataset can be regenerated on its own (the basis of cross-agency
//! links without holding rows in memory), and weighted samplers over the population.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// SplitMix64 finaliser: a good 64-bit mixer.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit tag for a name (FNV-1a), for naming streams.
pub const fn tag(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h = (h ^ b[i] as u64).wrapping_mul(0x100_0000_01b3);
        i += 1;
    }
    h
}

/// The random stream for item `index` of purpose `purpose` under `seed`.
pub fn stream(seed: u64, purpose: u64, index: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(seed ^ purpose.rotate_left(23)) ^ index))
}

/// Draws indices in proportion to weights (cumulative sums, binary search).
#[derive(Debug, Clone, Default)]
pub struct Sampler {
    items: Vec<u32>,
    cum: Vec<f64>,
}

impl Sampler {
    /// A sampler over `(item, weight)`; items with weight ≤ 0 are left out.
    pub fn new(weights: impl IntoIterator<Item = (u32, f64)>) -> Self {
        let mut items = Vec::new();
        let mut cum = Vec::new();
        let mut total = 0.0;
        for (i, w) in weights {
            if w > 0.0 && w.is_finite() {
                total += w;
                items.push(i);
                cum.push(total);
            }
        }
        Self { items, cum }
    }

    /// One item, or `None` when the sampler is empty.
    pub fn pick(&self, rng: &mut StdRng) -> Option<u32> {
        let total = *self.cum.last()?;
        let x = rng.random::<f64>() * total;
        let i = self
            .cum
            .partition_point(|c| *c <= x)
            .min(self.items.len() - 1);
        Some(self.items[i])
    }

    /// Whether no item has a positive weight.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: u64 = stream(1, tag("x"), 5).random();
        assert_eq!(a, stream(1, tag("x"), 5).random::<u64>());
        assert_ne!(a, stream(1, tag("x"), 6).random::<u64>());
        assert_ne!(a, stream(2, tag("x"), 5).random::<u64>());
        assert_ne!(a, stream(1, tag("y"), 5).random::<u64>());
    }

    #[test]
    fn sampler_follows_weights() {
        let s = Sampler::new([(7, 1.0), (8, 0.0), (9, 3.0)]);
        assert_eq!(s.items.len(), 2);
        let mut rng = stream(0, 0, 0);
        let nines = (0..10_000).filter(|_| s.pick(&mut rng) == Some(9)).count();
        assert!((7000..8000).contains(&nines), "{nines}");
        assert_eq!(Sampler::new([]).pick(&mut rng), None);
    }
}

//! A log-linear latency histogram in nanoseconds (≤ 1.6% error), shared by
//! `examples/loadgen` and `examples/fio` (`#[path]`-included).

/// A log-linear latency histogram in nanoseconds: 64 sub-buckets per
/// power of two.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

pub const SUB: u32 = 6;

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; (64 << SUB) as usize],
            total: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < (1 << SUB) {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros();
        let shift = exp - SUB;
        let mantissa = (v >> shift) & ((1 << SUB) - 1);
        (((shift + 1) << SUB) as u64 + mantissa) as usize
    }

    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < (1 << SUB) {
            return i;
        }
        let shift = (i >> SUB) - 1;
        let mantissa = i & ((1 << SUB) - 1);
        // The middle of the bucket.
        (((1 << SUB) | mantissa) << shift) + (1 << shift) / 2
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
    }

    pub fn quantile(&self, q: f64) -> u64 {
        let want = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Self::value(i);
            }
        }
        0
    }
}

//! Per-item work spread over every CPU, for large requests only.

use rayon::prelude::*;

/// `f` over `items` in order: on rayon's pool when `large`, on this thread otherwise. A parallel
/// iterator always runs in the pool, a cross-thread wake-up away (tens of microseconds), which a
/// one-fault request should not pay; a 100k-prefix one gains a core's worth.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    large: bool,
    f: impl Fn(usize, &T) -> R + Sync,
) -> Vec<R> {
    if large {
        items.par_iter().enumerate().map(|(i, t)| f(i, t)).collect()
    } else {
        items.iter().enumerate().map(|(i, t)| f(i, t)).collect()
    }
}

/// As [`map`], taking the items.
pub fn map_vec<T: Send, R: Send>(
    items: Vec<T>,
    large: bool,
    f: impl Fn(usize, T) -> R + Sync + Send,
) -> Vec<R> {
    if large {
        items
            .into_par_iter()
            .enumerate()
            .map(|(i, t)| f(i, t))
            .collect()
    } else {
        items
            .into_iter()
            .enumerate()
            .map(|(i, t)| f(i, t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_ways_keep_the_order() {
        let v: Vec<u32> = (0..10_000).collect();
        for large in [false, true] {
            let out = super::map(&v, large, |i, x| (i as u32) * 2 + x);
            assert!(out.iter().enumerate().all(|(i, &y)| y == 3 * i as u32));
            let out = super::map_vec(v.clone(), large, |i, x| (i as u32) * 2 + x);
            assert!(out.iter().enumerate().all(|(i, &y)| y == 3 * i as u32));
        }
    }
}

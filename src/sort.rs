//! Stable sorting with one instantiation of std's sort on wasm32.
//!
//! std's `slice::sort*` is generic over the element and the comparator, and
//! each call site instantiates its whole driftsort/ipnsort (a few KB each,
//! 161 KB of the wasm component's core module over the ~30 call sites of the
//! core; issue 8, the component at most 1 MiB). On `wasm32` these functions
//! sort a vector of indices instead, with the comparator behind a `&mut dyn
//! FnMut` (one instantiation for the whole program), then move the elements
//! into that order in place (a small generic loop of swaps). Elsewhere they
//! call std's stable sort directly, unchanged.
//!
//! The result is that of std's stable sort (`slice::sort_by`): elements
//! ordered by the comparator, equal ones in their original order; the
//! `sort_unstable*` ones give std's unstable sort off wasm32 and the stable
//! order (one of those it allows) on wasm32. The comparator must be a total order, as std's asks;
//! an inconsistent one leaves the elements in some order (no panic).

use core::cmp::Ordering;

/// Sorts `v` stably by `compare` (std's `slice::sort_by`).
pub fn sort_by<T>(v: &mut [T], mut compare: impl FnMut(&T, &T) -> Ordering) {
    #[cfg(target_arch = "wasm32")]
    {
        let order = order_by(v.len(), &mut |a, b| compare(&v[a], &v[b]));
        permute(v, order);
    }
    #[cfg(not(target_arch = "wasm32"))]
    v.sort_by(&mut compare);
}

/// Sorts `v` stably in ascending order (std's `slice::sort`).
pub fn sort<T: Ord>(v: &mut [T]) {
    sort_by(v, T::cmp);
}

/// Sorts `v` in ascending order, equal elements in any order (std's
/// `slice::sort_unstable`; on wasm32 the stable order).
pub fn sort_unstable<T: Ord>(v: &mut [T]) {
    #[cfg(target_arch = "wasm32")]
    sort_by(v, T::cmp);
    #[cfg(not(target_arch = "wasm32"))]
    v.sort_unstable();
}

/// Sorts `v` by `compare`, equal elements in any order (std's
/// `slice::sort_unstable_by`; on wasm32 the stable order).
pub fn sort_unstable_by<T>(v: &mut [T], compare: impl FnMut(&T, &T) -> Ordering) {
    #[cfg(target_arch = "wasm32")]
    sort_by(v, compare);
    #[cfg(not(target_arch = "wasm32"))]
    v.sort_unstable_by(compare);
}

/// Sorts `v` stably by the key `f` gives each element (std's
/// `slice::sort_by_key`; `f` is called for each comparison).
pub fn sort_by_key<T, K: Ord>(v: &mut [T], mut f: impl FnMut(&T) -> K) {
    sort_by(v, |a, b| f(a).cmp(&f(b)));
}

/// Sorts `v` stably by the key `f` gives each element, `f` called once per
/// element (std's `slice::sort_by_cached_key`).
pub fn sort_by_cached_key<T, K: Ord>(v: &mut [T], f: impl FnMut(&T) -> K) {
    #[cfg(target_arch = "wasm32")]
    {
        let keys: Vec<K> = v.iter().map(f).collect();
        let order = order_by(v.len(), &mut |a, b| keys[a].cmp(&keys[b]));
        permute(v, order);
    }
    #[cfg(not(target_arch = "wasm32"))]
    v.sort_by_cached_key(f);
}

/// The indices `0..len` in the order `compare` (of two indices) puts them,
/// equal ones ascending: the program's one instantiation of std's sort.
#[cfg(any(target_arch = "wasm32", test))]
#[inline(never)]
fn order_by(len: usize, compare: &mut dyn FnMut(usize, usize) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|&a, &b| compare(a, b));
    order
}

/// Rearranges `v` so that `v[i]` is what was at `v[order[i]]`, in place, by
/// following each cycle of the permutation once (O(len) swaps). `order` is a
/// permutation of `0..v.len()` (as `order_by` returns).
#[cfg(any(target_arch = "wasm32", test))]
fn permute<T>(v: &mut [T], mut order: Vec<usize>) {
    for start in 0..order.len() {
        let mut i = start;
        // A position already in place (or done) holds its own index.
        while order[i] != i {
            let j = order[i];
            order[i] = i;
            if j == start {
                break;
            }
            v.swap(i, j);
            i = j;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index sort and the permutation give std's stable order, equal
    /// keys included (pairs compared on their first half only).
    #[test]
    fn index_sort_matches_std_stable_sort() {
        let mut rng = fastrand::Rng::with_seed(8);
        for len in [0usize, 1, 2, 3, 7, 20, 33, 100, 1000] {
            for range in [2u32, 10, 1_000_000] {
                let v: Vec<(u32, usize)> = (0..len).map(|i| (rng.u32(0..range), i)).collect();
                let mut want = v.clone();
                want.sort_by_key(|a| a.0);
                let mut got = v.clone();
                let order = order_by(got.len(), &mut |a, b| v[a].0.cmp(&v[b].0));
                permute(&mut got, order);
                assert_eq!(got, want, "len {len}, keys below {range}");
            }
        }
    }

    /// The public functions (std's sort on this target) order as documented.
    #[test]
    fn sorts_ascending_and_stably() {
        let mut v = vec!["b", "a", "c", "a"];
        sort(&mut v);
        assert_eq!(v, ["a", "a", "b", "c"]);
        let mut p = vec![(2, 'x'), (1, 'y'), (2, 'z'), (1, 'w')];
        sort_by_key(&mut p, |&(k, _)| k);
        assert_eq!(p, [(1, 'y'), (1, 'w'), (2, 'x'), (2, 'z')]);
        let mut q = vec![(2, 'x'), (1, 'y'), (2, 'z'), (1, 'w')];
        sort_by_cached_key(&mut q, |&(k, _)| std::cmp::Reverse(k));
        assert_eq!(q, [(2, 'x'), (2, 'z'), (1, 'y'), (1, 'w')]);
    }
}

//! Reference clustering of matched pairs: union-find, strongest evidence first, never putting
//! two person roles of one record in one cluster.

/// A cluster label per node (`groups.len()` nodes, ids `0..groups.len()`): the smallest node
/// of its cluster. `groups[i]` is node `i`'s record; two nodes of one group (two person roles
/// of one record) never end up in one cluster, while nodes of different groups may (duplicate
/// records within an agency are allowed).
///
/// Pairs are merged in descending weight (ties by node ids), so when a merge is refused
/// because it would join two roles of one record, the stronger evidence has already been
/// kept. Pairs naming a node outside `0..groups.len()`, a node with itself, or a NaN weight
/// are ignored; at most `u32::MAX` nodes are labelled. The result depends only on the set of pairs, not their order.
pub fn cluster(groups: &[u64], pairs: impl IntoIterator<Item = (u32, u32, f64)>) -> Vec<u32> {
    // Node ids are u32: nodes beyond are left out of the result.
    let n = groups.len().min(u32::MAX as usize);
    let groups = &groups[..n];
    let mut pairs: Vec<(u32, u32, f64)> = pairs
        .into_iter()
        .filter(|(a, b, w)| a != b && (*a as usize) < n && (*b as usize) < n && !w.is_nan())
        .map(|(a, b, w)| (a.min(b), a.max(b), w))
        .collect();
    pairs.sort_unstable_by(|x, y| y.2.total_cmp(&x.2).then(x.0.cmp(&y.0)).then(x.1.cmp(&y.1)));

    // Only groups with two or more nodes can ever conflict: track those per cluster root.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by_key(|&i| groups[i as usize]);
    let mut shared = vec![false; n];
    for run in order.chunk_by(|a, b| groups[*a as usize] == groups[*b as usize]) {
        if run.len() > 1 {
            for &i in run {
                shared[i as usize] = true;
            }
        }
    }
    let mut members: Vec<Vec<u64>> = (0..n)
        .map(|i| {
            if shared[i] {
                vec![groups[i]]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    let mut size: Vec<u32> = vec![1; n];

    for (a, b, _) in pairs {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra == rb || !disjoint(&members[ra as usize], &members[rb as usize]) {
            continue;
        }
        let (big, small) = if size[ra as usize] >= size[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        parent[small as usize] = big;
        size[big as usize] += size[small as usize];
        let moved = std::mem::take(&mut members[small as usize]);
        if !moved.is_empty() {
            let kept = std::mem::take(&mut members[big as usize]);
            members[big as usize] = merge(kept, moved);
        }
    }

    let mut least: Vec<u32> = (0..n as u32).collect();
    for i in 0..n as u32 {
        let r = find(&mut parent, i) as usize;
        least[r] = least[r].min(i);
    }
    (0..n as u32)
        .map(|i| least[find(&mut parent, i) as usize])
        .collect()
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let up = parent[parent[x as usize] as usize];
        parent[x as usize] = up;
        x = up;
    }
    x
}

/// Whether two sorted lists share no element.
fn disjoint(a: &[u64], b: &[u64]) -> bool {
    let (small, big) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small.iter().all(|x| big.binary_search(x).is_err())
}

/// Two sorted, disjoint lists as one sorted list.
fn merge(a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

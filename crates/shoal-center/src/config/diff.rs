//! diff.rs: a unified line diff of two versions' contents (`shoal config diff`), from a
//! longest common subsequence of their lines after the common head and tail are set aside.

use std::fmt::Write as _;

/// Lines of context around each change.
const CONTEXT: usize = 3;
/// The largest table the subsequence is computed in (cells); past it the differing middle is
/// shown as removed whole and added whole: still a correct diff, only not the shortest.
const MAX_CELLS: usize = 16 << 20;

/// One step from the old lines to the new: a line both keep, one removed, one added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Keep(usize, usize),
    Remove(usize),
    Add(usize),
}

/// The unified diff from `old` to `new`, headed `--- {old_name}` and `+++ {new_name}`; empty
/// when both have the same lines.
pub fn unified(old_name: &str, old: &str, new_name: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = ops(&a, &b);
    if ops.iter().all(|op| matches!(op, Op::Keep(..))) {
        return String::new();
    }
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    for (start, end) in hunks(&ops) {
        write_hunk(&mut out, &ops[start..end], &a, &b);
    }
    out
}

fn ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a_mid, b_mid) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut ops: Vec<Op> = (0..head).map(|i| Op::Keep(i, i)).collect();
    ops.extend(middle(a_mid, b_mid).into_iter().map(|op| match op {
        Op::Keep(i, j) => Op::Keep(i + head, j + head),
        Op::Remove(i) => Op::Remove(i + head),
        Op::Add(j) => Op::Add(j + head),
    }));
    let (a_end, b_end) = (a.len() - tail, b.len() - tail);
    ops.extend((0..tail).map(|k| Op::Keep(a_end + k, b_end + k)));
    ops
}

/// The steps between two runs of lines that share no head or tail.
fn middle(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    if (n + 1).saturating_mul(m + 1) > MAX_CELLS {
        return (0..n).map(Op::Remove).chain((0..m).map(Op::Add)).collect();
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let width = m + 1;
    let mut lcs = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * width + j] = if a[i] == b[j] {
                lcs[(i + 1) * width + j + 1] + 1
            } else {
                lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j, mut ops) = (0, 0, Vec::with_capacity(n + m));
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Keep(i, j));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1]) {
            // Removals before additions, as diff(1) writes them.
            ops.push(Op::Remove(i));
            i += 1;
        } else {
            ops.push(Op::Add(j));
            j += 1;
        }
    }
    ops
}

/// The ranges of `ops` each hunk covers: every change with up to [`CONTEXT`] kept lines on
/// each side, hunks closer than twice that merged.
fn hunks(ops: &[Op]) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (at, op) in ops.iter().enumerate() {
        if matches!(op, Op::Keep(..)) {
            continue;
        }
        let start = at.saturating_sub(CONTEXT);
        let end = (at + 1 + CONTEXT).min(ops.len());
        match ranges.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => ranges.push((start, end)),
        }
    }
    ranges
}

fn write_hunk(out: &mut String, ops: &[Op], a: &[&str], b: &[&str]) {
    let old_start = ops.iter().find_map(|op| match op {
        Op::Keep(i, _) | Op::Remove(i) => Some(*i),
        Op::Add(_) => None,
    });
    let new_start = ops.iter().find_map(|op| match op {
        Op::Keep(_, j) | Op::Add(j) => Some(*j),
        Op::Remove(_) => None,
    });
    let old_len = ops.iter().filter(|op| !matches!(op, Op::Add(_))).count();
    let new_len = ops.iter().filter(|op| !matches!(op, Op::Remove(_))).count();
    // A hunk holds no line of one side only when that side is empty (any other line would be
    // its context): numbered 0, as diff(1) does.
    let old_from = old_start.map_or(0, |i| i + 1);
    let new_from = new_start.map_or(0, |j| j + 1);
    let _ = writeln!(out, "@@ -{old_from},{old_len} +{new_from},{new_len} @@");
    for op in ops {
        let _ = match op {
            Op::Keep(i, _) => writeln!(out, " {}", a[*i]),
            Op::Remove(i) => writeln!(out, "-{}", a[*i]),
            Op::Add(j) => writeln!(out, "+{}", b[*j]),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::unified;

    fn check(old: &str, new: &str, expected: &str) {
        assert_eq!(
            unified("a v1", old, "a v2", new),
            expected,
            "{old:?} -> {new:?}"
        );
    }

    #[test]
    fn unified_diffs() {
        check("x\ny\n", "x\ny\n", "");
        check(
            "a\nb\nc\n",
            "a\nB\nc\n",
            "--- a v1\n+++ a v2\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n",
        );
        check(
            "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n",
            "1\n2\n3\n4\n5\n6\n7\n8\n9\nten\n",
            "--- a v1\n+++ a v2\n@@ -7,4 +7,4 @@\n 7\n 8\n 9\n-10\n+ten\n",
        );
        check(
            "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n",
            "one\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\ntwelve\n",
            "--- a v1\n+++ a v2\n@@ -1,4 +1,4 @@\n-1\n+one\n 2\n 3\n 4\n@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+twelve\n",
        );
        check(
            "a\n",
            "a\nb\n",
            "--- a v1\n+++ a v2\n@@ -1,1 +1,2 @@\n a\n+b\n",
        );
        check("", "new\n", "--- a v1\n+++ a v2\n@@ -0,0 +1,1 @@\n+new\n");
    }
}

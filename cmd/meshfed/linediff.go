package main

import (
	"bytes"
	"fmt"
	"strings"
)

// diffContext is how many unchanged lines a hunk shows around a change.
const diffContext = 3

// maxDiffCells bounds the table of the longest common subsequence (lines
// of the changed middle of a times b); past it the middle is shown as
// all removed, then all added.
const maxDiffCells = 4 << 20

// splitLines splits b into lines without their '\n'.
func splitLines(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// diffOp is one line of a line diff: ' ' kept, '-' only in a, '+' only in b.
type diffOp struct {
	kind byte
	line string
}

// lineDiff returns an edit script from a to b built on their longest common
// subsequence of lines (common prefix and suffix first).
func lineDiff(a, b []string) []diffOp {
	var ops []diffOp
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		ops = append(ops, diffOp{' ', a[p]})
		p++
	}
	s := 0
	for s < len(a)-p && s < len(b)-p && a[len(a)-1-s] == b[len(b)-1-s] {
		s++
	}
	ma, mb := a[p:len(a)-s], b[p:len(b)-s]
	if len(ma)*len(mb) > maxDiffCells {
		for _, l := range ma {
			ops = append(ops, diffOp{'-', l})
		}
		for _, l := range mb {
			ops = append(ops, diffOp{'+', l})
		}
	} else {
		ops = append(ops, lcsDiff(ma, mb)...)
	}
	for _, l := range a[len(a)-s:] {
		ops = append(ops, diffOp{' ', l})
	}
	return ops
}

// lcsDiff is the edit script of a longest common subsequence table.
func lcsDiff(a, b []string) []diffOp {
	n, m := len(a), len(b)
	// l[i*(m+1)+j]: length of the LCS of a[i:] and b[j:].
	l := make([]int32, (n+1)*(m+1))
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				l[i*(m+1)+j] = l[(i+1)*(m+1)+j+1] + 1
			} else {
				l[i*(m+1)+j] = max(l[(i+1)*(m+1)+j], l[i*(m+1)+j+1])
			}
		}
	}
	var ops []diffOp
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case a[i] == b[j]:
			ops = append(ops, diffOp{' ', a[i]})
			i, j = i+1, j+1
		case l[(i+1)*(m+1)+j] >= l[i*(m+1)+j+1]:
			ops = append(ops, diffOp{'-', a[i]})
			i++
		default:
			ops = append(ops, diffOp{'+', b[j]})
			j++
		}
	}
	for ; i < n; i++ {
		ops = append(ops, diffOp{'-', a[i]})
	}
	for ; j < m; j++ {
		ops = append(ops, diffOp{'+', b[j]})
	}
	return ops
}

// writeUnifiedDiff writes the diff of a and b as unified-diff hunks
// ("@@ -from,count +from,count @@", diffContext lines of context).
func writeUnifiedDiff(w *bytes.Buffer, a, b []string) {
	ops := lineDiff(a, b)
	for start := 0; start < len(ops); {
		// The next change, and the hunk around it: changes closer than
		// twice the context join one hunk.
		c := start
		for c < len(ops) && ops[c].kind == ' ' {
			c++
		}
		if c == len(ops) {
			return
		}
		lo, hi := max(c-diffContext, start), c
		for k := c; k < len(ops); k++ {
			if ops[k].kind != ' ' {
				hi = k + 1
			} else if k-hi >= 2*diffContext {
				break
			}
		}
		hi = min(hi+diffContext, len(ops))
		// Line numbers (from 1) of the hunk's first line in a and b.
		na, nb := 1, 1
		for _, op := range ops[:lo] {
			if op.kind != '+' {
				na++
			}
			if op.kind != '-' {
				nb++
			}
		}
		ca, cb := 0, 0
		for _, op := range ops[lo:hi] {
			if op.kind != '+' {
				ca++
			}
			if op.kind != '-' {
				cb++
			}
		}
		if ca == 0 {
			na--
		}
		if cb == 0 {
			nb--
		}
		fmt.Fprintf(w, "@@ -%d,%d +%d,%d @@\n", na, ca, nb, cb)
		for _, op := range ops[lo:hi] {
			w.WriteByte(op.kind)
			w.WriteString(op.line)
			w.WriteByte('\n')
		}
		start = hi
	}
}

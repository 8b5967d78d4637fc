package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func numbered(n int, change map[int]string) []string {
	var out []string
	for i := 1; i <= n; i++ {
		if c, ok := change[i]; ok {
			if c != "" {
				out = append(out, c)
			}
			continue
		}
		out = append(out, fmt.Sprintf("l%d", i))
	}
	return out
}

// The diff is unified: hunks with 3 lines of context, changes further
// apart than 6 lines in separate hunks, line numbers from 1 (0 for an
// empty side).
func TestUnifiedDiffHunks(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []string
		want string
	}{
		{"same", numbered(5, nil), numbered(5, nil), ""},
		{"created", nil, []string{"x", "y"}, "@@ -0,0 +1,2 @@\n+x\n+y\n"},
		{"deleted", []string{"x"}, nil, "@@ -1,1 +0,0 @@\n-x\n"},
		{"first line", numbered(6, nil), numbered(6, map[int]string{1: "L1"}), "@@ -1,4 +1,4 @@\n-l1\n+L1\n l2\n l3\n l4\n"},
		{"two hunks", numbered(20, nil), numbered(20, map[int]string{3: "X", 17: ""}),
			"@@ -1,6 +1,6 @@\n l1\n l2\n-l3\n+X\n l4\n l5\n l6\n@@ -14,7 +14,6 @@\n l14\n l15\n l16\n-l17\n l18\n l19\n l20\n"},
		{"one hunk for near changes", numbered(12, nil), numbered(12, map[int]string{3: "X", 8: "Y"}),
			"@@ -1,11 +1,11 @@\n l1\n l2\n-l3\n+X\n l4\n l5\n l6\n l7\n-l8\n+Y\n l9\n l10\n l11\n"},
		{"insertion", []string{"a", "c"}, []string{"a", "b", "c"}, "@@ -1,2 +1,3 @@\n a\n+b\n c\n"},
	} {
		var buf bytes.Buffer
		writeUnifiedDiff(&buf, tc.a, tc.b)
		if buf.String() != tc.want {
			t.Errorf("%s:\n%s\nwant\n%s", tc.name, buf.String(), tc.want)
		}
	}
}

// Past maxDiffCells the changed middle is shown removed, then added: the
// diff stays correct, only less minimal.
func TestUnifiedDiffOfLargeInputsStaysCorrect(t *testing.T) {
	n := 3000
	a, b := make([]string, n), make([]string, n)
	for i := range n {
		a[i], b[i] = fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
	}
	ops := lineDiff(a, b)
	var gotA, gotB []string
	for _, op := range ops {
		if op.kind != '+' {
			gotA = append(gotA, op.line)
		}
		if op.kind != '-' {
			gotB = append(gotB, op.line)
		}
	}
	if strings.Join(gotA, ",") != strings.Join(a, ",") || strings.Join(gotB, ",") != strings.Join(b, ",") {
		t.Error("the edit script does not rebuild both sides")
	}
}

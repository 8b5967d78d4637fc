package kind

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/exec"
)

// fakeNode is a kind node whose commands are answered by a function and
// recorded, for testing what the backend runs in node containers without
// Docker.
type fakeNode struct {
	name   string
	answer func(argv []string) (stdout string, err error)

	mu   sync.Mutex
	runs []fakeRun
}

// fakeRun is one command run on a fakeNode.
type fakeRun struct {
	argv  []string
	stdin string
}

var _ nodes.Node = (*fakeNode)(nil)

// newFakeNode returns a node called name whose commands answer calls; a nil
// answer succeeds with no output.
func newFakeNode(t testing.TB, name string, answer func(argv []string) (string, error)) *fakeNode {
	t.Helper()
	if answer == nil {
		answer = func([]string) (string, error) { return "", nil }
	}
	return &fakeNode{name: name, answer: answer}
}

func (n *fakeNode) String() string               { return n.name }
func (n *fakeNode) Role() (string, error)        { return "worker", nil }
func (n *fakeNode) IP() (string, string, error)  { return "", "", errors.New("fake node: no IP") }
func (n *fakeNode) SerialLogs(w io.Writer) error { return nil }
func (n *fakeNode) Command(name string, args ...string) exec.Cmd {
	return &fakeCmd{node: n, argv: append([]string{name}, args...)}
}
func (n *fakeNode) CommandContext(_ context.Context, name string, args ...string) exec.Cmd {
	return n.Command(name, args...)
}

// commands returns the command lines run so far, space-joined.
func (n *fakeNode) commands() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, r := range n.runs {
		out = append(out, strings.Join(r.argv, " "))
	}
	return out
}

type fakeCmd struct {
	node   *fakeNode
	argv   []string
	stdin  io.Reader
	stdout io.Writer
}

func (c *fakeCmd) Run() error {
	run := fakeRun{argv: c.argv}
	if c.stdin != nil {
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return err
		}
		run.stdin = string(b)
	}
	c.node.mu.Lock()
	c.node.runs = append(c.node.runs, run)
	c.node.mu.Unlock()
	out, err := c.node.answer(c.argv)
	if c.stdout != nil {
		if _, werr := io.WriteString(c.stdout, out); werr != nil {
			return werr
		}
	}
	return err
}

func (c *fakeCmd) SetEnv(...string) exec.Cmd      { return c }
func (c *fakeCmd) SetStdin(r io.Reader) exec.Cmd  { c.stdin = r; return c }
func (c *fakeCmd) SetStdout(w io.Writer) exec.Cmd { c.stdout = w; return c }
func (c *fakeCmd) SetStderr(io.Writer) exec.Cmd   { return c }

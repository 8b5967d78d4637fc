package devenv

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// console is meshfed dev's terminal (Config.Out): event lines, and the live
// view's status line. On a terminal (inPlace) the status line is redrawn
// in place, below the events; elsewhere every status is a line of its own.
// Its methods are safe for concurrent use.
type console struct {
	mu      sync.Mutex
	w       io.Writer
	inPlace bool
	status  string // the status line on screen (inPlace)
}

// clear erases the status line on screen; the caller holds mu.
func (c *console) clear() {
	if c.inPlace && c.status != "" {
		fmt.Fprint(c.w, "\r\x1b[K")
	}
}

// redraw shows the status line again after clear; the caller holds mu.
func (c *console) redraw() {
	if c.inPlace && c.status != "" {
		fmt.Fprint(c.w, c.status)
	}
}

// Print writes text as is (the summary), above the status line.
func (c *console) Print(text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clear()
	fmt.Fprint(c.w, text)
	c.redraw()
}

// Eventf writes one line, above the status line.
func (c *console) Eventf(format string, args ...any) {
	c.Print(strings.TrimRight(fmt.Sprintf(format, args...), "\n") + "\n")
}

// Status shows line as the status: redrawn in place on a terminal, where
// keep also leaves it in the scrollback (a change worth remembering), and
// a line of its own elsewhere.
func (c *console) Status(line string, keep bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.inPlace {
		fmt.Fprintln(c.w, line)
		return
	}
	c.clear()
	if keep {
		fmt.Fprintln(c.w, line)
		c.status = ""
		return
	}
	c.status = line
	fmt.Fprint(c.w, line)
}

// End leaves the status line in the scrollback and stops drawing it.
func (c *console) End() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inPlace && c.status != "" {
		fmt.Fprintln(c.w)
	}
	c.status = ""
}

// logWriter returns a writer to w (the log, on the same terminal) that
// takes the status line out of the way of what it writes.
func (c *console) logWriter(w io.Writer) io.Writer {
	return writerFunc(func(b []byte) (int, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.clear()
		n, err := w.Write(b)
		c.redraw()
		return n, err
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

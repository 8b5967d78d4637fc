package testenv

import (
	"fmt"
	"path/filepath"
	"strings"
)

// MeshfedProcess returns a process, not yet started, that runs the
// federation's meshfed binary with args, its output appended to
// <Dir>/<name>.log: for a test that runs a meshfed command the way an
// operator would (`meshfed join` for a cluster of a federation started
// with [Options.NoAgents], say). [Process.Start] returns once it runs;
// the test waits for what it needs and kills it (the federation does not
// know of it). It panics without a hub: that is a mistake in the test.
func (f *Federation) MeshfedProcess(name string, args ...string) *Process {
	if f.hub == nil {
		panic(fmt.Sprintf("testenv: MeshfedProcess(%q): the federation has no hub, so no meshfed binary", name))
	}
	return newProcess(processSpec{
		name:    name,
		path:    f.hub.Binary(),
		args:    append([]string(nil), args...),
		logPath: filepath.Join(f.dir, strings.ReplaceAll(name, "/", "-")+".log"),
	})
}

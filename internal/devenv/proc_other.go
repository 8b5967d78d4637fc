//go:build !linux

package devenv

import (
	"os"
	"os/exec"
	"syscall"
)

// start starts cmd. Outside Linux there is no Pdeathsig: children of a
// supervisor that was killed outright keep running.
func start(cmd *exec.Cmd) error { return cmd.Start() }

// signalChild sends sig to the child.
func signalChild(pid int, sig syscall.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

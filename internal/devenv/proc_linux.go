package devenv

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Children run in their own process group (so that a Ctrl-C at the
// terminal reaches the supervisor only, which stops them in order) and get
// SIGKILL when the supervisor dies (Pdeathsig), so none is orphaned.
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process: every child is therefore started from one goroutine locked to
// its thread for the life of the process (the spawner).

var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// start starts cmd from the spawner thread.
func start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawnReqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnReqs <- spawnReq{cmd, done}
	return <-done
}

// signalChild sends sig to the child's process group.
func signalChild(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}

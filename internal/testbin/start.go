//go:build linux

package testbin

import (
	"bytes"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// A process a test starts must not outlive it (go test's -timeout, the
// OOM killer, a developer's kill -9 end a test with its cleanups never
// run): it gets the parent-death signal, SIGKILL (Pdeathsig,
// prctl(PR_SET_PDEATHSIG)). But the parent the kernel watches is the
// thread that forked the child, not the process (go.dev/issue/27505), and
// a Go program ends a thread whenever a goroutine locked to it
// (runtime.LockOSThread) returns without unlocking it, as netlab's
// netlinkIn does when it cannot go back to the namespace it left: every
// child that any goroutine had happened to fork from that thread, at any
// time before, was SIGKILLed then, and its test went on counting it as
// running. (TestStartOutlivesItsThread shows it: a goroutine locked to its
// thread starts a child and returns.)
//
// So Start forks every child from one thread, which lives as long as the
// tests do: a goroutine locked to it for good, which never returns while
// they run. Main's Run ends it once the tests have run (goleak looks for
// goroutines then), and with its thread go any children still running.
var forker struct {
	mu   sync.Mutex
	cmds chan *exec.Cmd // nil until the first Start
	errs chan error
	done chan struct{} // closed when the goroutine has ended
}

// Start starts cmd as cmd.Start does, from the one thread that lives as
// long as the tests, with SIGKILL as its parent-death signal: the process
// dies with this one, however that ends, and not before. Every test that
// starts a process that must not outlive it starts it with Start (or Run,
// CombinedOutput), never with a Pdeathsig of its own.
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	forker.mu.Lock()
	defer forker.mu.Unlock()
	if forker.cmds == nil {
		forker.cmds, forker.errs, forker.done = make(chan *exec.Cmd), make(chan error), make(chan struct{})
		go fork(forker.cmds, forker.errs, forker.done)
	}
	forker.cmds <- cmd
	return <-forker.errs
}

// Run runs cmd, started by Start, and waits for it, as cmd.Run does.
func Run(cmd *exec.Cmd) error {
	if err := Start(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// CombinedOutput runs cmd, started by Start, and returns its combined
// standard output and standard error, as cmd.CombinedOutput does.
func CombinedOutput(cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := Run(cmd)
	return out.Bytes(), err
}

// fork is the goroutine that starts the commands Start is given, locked to
// its thread for good: no other goroutine runs on that thread, so none can
// end it, and it ends when this returns (cmds closed, by stopForker).
func fork(cmds <-chan *exec.Cmd, errs chan<- error, done chan<- struct{}) {
	runtime.LockOSThread() // never unlocked: see forker
	defer close(done)
	for cmd := range cmds {
		errs <- cmd.Start()
	}
}

// stopForker ends Start's goroutine and its thread, if it runs (the next
// Start makes another).
func stopForker() {
	forker.mu.Lock()
	defer forker.mu.Unlock()
	if forker.cmds == nil {
		return
	}
	close(forker.cmds)
	<-forker.done
	forker.cmds = nil
}

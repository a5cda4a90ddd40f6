package loadgen

import "syscall"

// daemonProcAttr makes a started daemon die with the load generator, so an
// interrupted run leaves no daemon behind. Linux sends the parent-death
// signal when the thread that forked the daemon ends, not the process
// (internal/testbin's TestStartOutlivesItsThread): that is the process's
// end here only because no goroutine of the huddle binary locks itself to
// a thread (runtime.LockOSThread), the one way a Go program ends a thread
// before it exits. TestBinaryEndsNoThread (deps_test.go) keeps it so.
func daemonProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

package loadgen

import "syscall"

// daemonProcAttr makes a started daemon die with the load generator, so an
// interrupted run leaves no daemon behind.
func daemonProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

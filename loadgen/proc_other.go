//go:build !linux

package loadgen

import "syscall"

func daemonProcAttr() *syscall.SysProcAttr { return nil }

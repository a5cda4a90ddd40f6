package store

import (
	"fmt"
	"runtime/debug"
)

// Read faults. A disk log's history read back at Open is its files,
// mapped (mapped.go); a page of them the kernel has evicted is read from
// the disk again when it is next touched, and if the disk answers an I/O
// error (or the file was cut shorter since it was mapped), the read is a
// fault, SIGBUS, which the Go runtime makes a crash of the whole process:
// every group of the daemon gone for one bad sector of one. Where the log
// itself reads a mapping (reading it back at Open, copying it for room on
// a full disk) it makes such a fault a panic of its goroutine
// (debug.SetPanicOnFault) and the panic ErrReadFault (catchFault):
//
//	defer catchFault(&err)
//	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
//
// Bodies returned by queries alias the mapping, and are read by the
// caller: a caller that may meet a failing disk reads them likewise (the
// daemon's handlers do: daemon/server).

// catchFault, deferred after SetPanicOnFault(true) by a function that
// reads a mapping, makes a fault of its reads *err, wrapping ErrReadFault;
// any other panic goes on.
func catchFault(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if f, ok := r.(interface{ Addr() uintptr }); ok {
		*err = fmt.Errorf("%w (a fault reading address %#x)", ErrReadFault, f.Addr())
		return
	}
	panic(r)
}

// readsFaulting runs read with the faults of its reads made an error,
// ErrReadFault.
func readsFaulting(read func()) (err error) {
	defer catchFault(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	read()
	return nil
}

//go:build !linux

package cli

import "io"

// readerGone never reports a reader gone where poll's marks for a pipe
// without a reader are not known: a watch learns it at its next write.
func readerGone(w io.Writer) (gone <-chan struct{}, stop func()) { return nil, func() {} }

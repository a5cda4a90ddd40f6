//go:build !unix

package cli

// followResize does nothing where there is no SIGWINCH: the line editor
// keeps the width the terminal had when the chat started.
func followResize(resized func()) (stop func()) { return func() {} }

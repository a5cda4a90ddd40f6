//go:build linux

package jepsen

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(cleanup{m}) }

// cleanup removes the binary the tests built once they have run.
type cleanup struct{ m *testing.M }

func (c cleanup) Run() int {
	code := c.m.Run()
	if binary != "" {
		os.RemoveAll(filepath.Dir(binary))
	}
	return code
}

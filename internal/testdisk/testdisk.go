// Package testdisk gives fault tests a small disk that they can fill up:
// a tmpfs mounted for one test.
package testdisk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// RequireRoot skips a test that needs root (to mount a file system), or,
// under CI=true, fails it: CI runs as root, so a skip there hides a test
// that never ran.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test mounts a file system and needs root (CI=true, so this is a failure, not a skip)")
	}
	t.Skip("this test mounts a file system and needs root")
}

// Small mounts a tmpfs of size (as mount(8) reads it: "256k", "64m") on a
// new directory, in the test's mount namespace (which namespaces made after
// copy), unmounted when the test ends. It returns the directory and a
// function that fills it to the last byte with a ballast file and returns
// the function that removes the ballast. It needs root (RequireRoot).
func Small(t testing.TB, size string) (dir string, fill func() (free func())) {
	t.Helper()
	dir = t.TempDir()
	return dir, SmallAt(t, dir, size)
}

// SmallAt is Small on the directory dir, which must exist: a second small
// disk under the first (a daemon's group logs on a volume of their own,
// under its state directory). It is unmounted when the test ends, before
// a disk mounted earlier under which it lies. The ballast is the file
// "ballast"; fill called again while the disk is full takes what room was
// freed since in another (ballast.1, ...), which its free removes.
func SmallAt(t testing.TB, dir, size string) (fill func() (free func())) {
	t.Helper()
	RequireRoot(t)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	fill = func() func() {
		t.Helper()
		ballast := filepath.Join(dir, "ballast")
		for i := 1; ; i++ {
			if _, err := os.Lstat(ballast); errors.Is(err, os.ErrNotExist) {
				break
			}
			ballast = filepath.Join(dir, fmt.Sprint("ballast.", i))
		}
		f, err := os.OpenFile(ballast, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		block := make([]byte, 64<<10)
		for {
			if _, err := f.Write(block); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill the disk: %v", err)
				}
				break
			}
		}
		for small := block[:512]; ; {
			if _, err := f.Write(small); err != nil {
				break
			}
		}
		f.Close()
		return func() {
			if err := os.Remove(ballast); err != nil {
				t.Fatal(err)
			}
		}
	}
	return fill
}

package testdisk

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"
)

// Ext4 is an ext4 file system on a loop device, mounted for one test,
// that the test can break as a failing disk would: Error makes ext4 find
// an error, and remount itself read-only, under the writers' feet;
// Shutdown makes every I/O on it fail with EIO, as a device gone does.
// Remount unmounts it and mounts it again, as a restart after the fault
// would find it (the journal replayed).
type Ext4 struct {
	// Dir is where it is mounted.
	Dir  string
	t    testing.TB
	img  string // the image file
	dev  string // the loop device it is on: /dev/loopN
	opts string
}

// NewExt4 makes an ext4 file system of size (as truncate(1) reads it:
// "32M") in an image file, attaches it to a loop device and mounts it,
// with errors=remount-ro, on a new directory; all undone when the test
// ends. It needs root (RequireRoot).
func NewExt4(t testing.TB, size string) *Ext4 {
	t.Helper()
	RequireRoot(t)
	for _, prog := range []string{"truncate", "mkfs.ext4", "losetup", "e2fsck", "mount", "umount"} {
		if _, err := exec.LookPath(prog); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not on PATH (CI=true, so this is a failure, not a skip)", prog)
			}
			t.Skipf("this test needs %s", prog)
		}
	}
	tmp := t.TempDir()
	img := filepath.Join(tmp, "disk.img")
	e := &Ext4{Dir: filepath.Join(tmp, "mnt"), t: t, img: img, opts: "errors=remount-ro"}
	if err := os.Mkdir(e.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	e.run("truncate", "-s", size, img)
	e.run("mkfs.ext4", "-q", "-F", img)
	e.attach()
	t.Cleanup(func() {
		exec.Command("umount", "-l", e.Dir).Run()
		if out, err := exec.Command("losetup", "-d", e.dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", e.dev, err, out)
		}
	})
	e.mount()
	return e
}

// attach puts the image on a loop device of its own.
func (e *Ext4) attach() {
	e.t.Helper()
	e.dev = strings.TrimSpace(e.run("losetup", "--find", "--show", e.img))
}

func (e *Ext4) run(name string, args ...string) string {
	e.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (e *Ext4) mount() {
	e.t.Helper()
	e.run("mount", "-t", "ext4", "-o", e.opts, e.dev, e.Dir)
}

// Error makes ext4 report an error on the file system (its
// trigger_fs_error knob), as it does when it finds its metadata damaged:
// with errors=remount-ro it turns read-only at once, every write and
// fsync failing with EROFS, the files open for writing kept open.
func (e *Ext4) Error() {
	e.t.Helper()
	knob := filepath.Join("/sys/fs/ext4", filepath.Base(e.dev), "trigger_fs_error")
	if err := os.WriteFile(knob, []byte("testdisk: a disk error\n"), 0); err != nil {
		e.t.Fatalf("make ext4 find an error: %v", err)
	}
}

// ext4IOCShutdown is EXT4_IOC_SHUTDOWN (_IOR('X', 125, __u32)), and
// ext4GoingLogFlush its flag that writes the journal's committed
// transactions out first. (ext4GoingNoLogFlush drops them: in a loop of
// write and fsync, one round in three lost a write whose fsync had
// returned success, which no program can defend against.)
const (
	ext4IOCShutdown   = 0x8004587d
	ext4GoingLogFlush = 1
)

// Shutdown shuts the file system down as if its device had gone: every
// read, write and fsync on it fails with EIO from then on; what the
// journal had committed (every fsync that returned) is kept.
func (e *Ext4) Shutdown() {
	e.t.Helper()
	f, err := os.Open(e.Dir)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	flag := uint32(ext4GoingLogFlush)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), ext4IOCShutdown, uintptr(unsafe.Pointer(&flag))); errno != 0 {
		e.t.Fatalf("shut ext4 down: %v", errno)
	}
}

// Vanish takes the device's blocks away under the file system: its image
// is cut to its first 64 KiB and the loop device made that size, so that
// reading almost any block is an I/O error from the device (EIO: "access
// beyond end of device"), as a disk gone bad would answer, read as well
// as written; what is in the page cache still reads. (Shutdown fails the
// file system's own calls, but a page of a mapped file read back from
// the device after its shutdown reads fine.)
func (e *Ext4) Vanish() {
	e.t.Helper()
	e.run("truncate", "-s", "64K", e.img)
	e.run("losetup", "-c", e.dev)
}

// Remount unmounts the file system, checks it (e2fsck, as its error asks)
// and mounts it again from a loop device of its own: what a restart after
// the fault finds on the device, never the kernel's memory of the
// file system before. (On the same device, a mount raced the old file
// system's teardown and was given it back, read-only.) The files on it
// must be closed.
func (e *Ext4) Remount() {
	e.t.Helper()
	e.run("umount", e.Dir)
	e.run("losetup", "-d", e.dev)
	e.attach()
	// 1: errors corrected.
	if out, err := exec.Command("e2fsck", "-fy", e.dev).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			e.t.Fatalf("e2fsck %s: %v: %s", e.dev, err, out)
		}
	}
	e.mount()
}

// Freeze freezes the file system (fsfreeze(8)), as a disk that stops
// answering would stand for writers: every write, create or open for
// writing on it waits, in uninterruptible sleep (a thread in state D that
// not even SIGKILL ends), until thaw, which the test's end calls too;
// reads of what is cached go on. It returns thaw.
func (e *Ext4) Freeze() (thaw func()) {
	e.t.Helper()
	if _, err := exec.LookPath("fsfreeze"); err != nil {
		if os.Getenv("CI") == "true" {
			e.t.Fatal("fsfreeze is not on PATH (CI=true, so this is a failure, not a skip)")
		}
		e.t.Skip("this test needs fsfreeze")
	}
	e.run("fsfreeze", "--freeze", e.Dir)
	var once sync.Once
	thaw = func() { once.Do(func() { exec.Command("fsfreeze", "--unfreeze", e.Dir).Run() }) }
	e.t.Cleanup(thaw) // before the unmount, registered earlier
	return thaw
}

// InDiskSleep reports whether a thread of this process is in
// uninterruptible sleep (state D in /proc/self/task/*/stat): one waits on
// a disk, a frozen file system's say.
func InDiskSleep() bool {
	stats, _ := filepath.Glob("/proc/self/task/*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'D' {
			return true
		}
	}
	return false
}

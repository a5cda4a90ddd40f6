package raftlog

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv names the directory a child process of TestCrash appends
// to until it is killed.
const crashChildEnv = "RAFTLOG_CRASH_CHILD"

// crashChild appends batches of entries to the store in $RAFTLOG_CRASH_CHILD,
// compacting its head now and then, and prints each batch's last index once
// StoreLogs returned it (so stored: written to the operating system).
func crashChild() {
	dir := os.Getenv(crashChildEnv)
	s, err := Open(dir, Options{SegmentBytes: 32 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	last, _ := s.LastIndex()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	for range 100_000 {
		n := 1 + uint64(rng.IntN(16))
		if err := s.StoreLogs(entries(last+1, last+n, 1)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		last += n
		if rng.IntN(50) == 0 {
			first, _ := s.FirstIndex()
			if last > first+300 {
				if err := s.DeleteRange(first, last-200); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
			}
		}
		os.Stdout.WriteString(strconv.FormatUint(last, 10) + "\n")
	}
	os.Exit(3) // never killed: the parent fails
}

// TestCrash kills a process appending to a store (SIGKILL) at random
// moments, five times over the same store, and reopens it each time: every
// entry the process reported stored is there, and every entry there is the
// one written (nothing invented, no hole).
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var acked uint64
		lines := bufio.NewScanner(out)
		for k := 200 + rng.IntN(2000); k > 0 && lines.Scan(); k-- {
			acked, _ = strconv.ParseUint(lines.Text(), 10, 64)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for lines.Scan() { // what it printed before the kill landed
			acked, _ = strconv.ParseUint(lines.Text(), 10, 64)
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child ended with %v, not killed", round, err)
		}
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if last < acked || first == 0 || first > acked {
			t.Fatalf("round %d: log %d to %d after the child stored up to %d", round, first, last, acked)
		}
		checkLog(t, s, first, last, term1)
		s.Close()
		t.Logf("round %d: killed after storing %d; log %d to %d, %d segments", round, acked, first, last, segments(t, dir))
	}
}

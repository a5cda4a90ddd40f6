package cli

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/loadgen"
)

func TestBenchProfile(t *testing.T) {
	// bench starts its own daemon from os.Executable: this test binary,
	// which TestMain turns into huddle.
	t.Setenv(runAsHuddle, "1")
	for _, c := range []struct {
		name     string
		registry bool
		want     map[string]string // file: a sample type it must hold
	}{
		{"own daemon", false, map[string]string{
			loadgen.LoadCPUProfile:    "cpu",
			loadgen.DaemonCPUProfile:  "cpu",
			loadgen.DaemonHeapProfile: "inuse_space",
		}},
		{"--registry: the load only", true, map[string]string{loadgen.LoadCPUProfile: "cpu"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "prof") // bench makes it
			args := []string{"send", "--conns", "2", "--inflight", "2", "--warmup", "200ms", "--duration", "1s", "--profile", dir, "--json"}
			if c.registry {
				up := startVerb(t, nil, "up", "--no-mdns", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(),
					"--log-level", "warn", "--group", "bench", "--send-rate", "0")
				args = append(args, "--registry", up.waitLine(t, regexp.MustCompile(`try: huddle groups --registry (\S+)`)))
			}
			// The daemon's log comes to stderr from a goroutine of os/exec.
			var stdout bytes.Buffer
			var stderr syncBuffer
			env := Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
			if code := runBench(context.Background(), env, args); code != ExitOK {
				t.Fatalf("huddle bench %s: exit code %d\nstderr:\n%s", strings.Join(args, " "), code, &stderr)
			}
			var res loadgen.Result
			dec := json.NewDecoder(&stdout)
			if err := dec.Decode(&res); err != nil || dec.More() {
				t.Fatalf("stdout is not one JSON object (%v): %s", err, stdout.String())
			}
			if res.Ops == 0 || res.Errors != 0 {
				t.Errorf("%+v", res)
			}
			var names []string
			for file, sampleType := range c.want {
				names = append(names, file)
				path := filepath.Join(dir, file)
				if !strings.Contains(stderr.String(), "profile written: "+path+"\n") {
					t.Errorf("stderr does not say %s was written:\n%s", path, &stderr)
				}
				types, err := sampleTypes(path)
				if err != nil {
					t.Errorf("%s: %v", file, err)
				} else if !slices.Contains(types, sampleType) {
					t.Errorf("%s holds samples of %q, want %q", file, types, sampleType)
				}
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != len(names) {
				t.Errorf("%s holds %d files, want %v", dir, len(entries), names)
			}
		})
	}
}

// sampleTypes reads the pprof profile at path (a gzipped profile.proto
// message) and returns the types of its samples, e.g. [samples cpu]. It
// checks the encoding as far as it reads it: the file is not empty, the
// protobuf's fields are well formed, and the sample types name strings of
// its string table.
func sampleTypes(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("empty profile")
	}
	// profile.proto: 1 sample_type (ValueType{1 type, 2 unit}), 6 string_table.
	var strs []string
	var typeIdx []uint64
	err = protoFields(b, func(num int, v uint64, msg []byte) error {
		switch num {
		case 6:
			strs = append(strs, string(msg))
		case 1:
			return protoFields(msg, func(num int, v uint64, _ []byte) error {
				if num == 1 {
					typeIdx = append(typeIdx, v)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var types []string
	for _, i := range typeIdx {
		if i >= uint64(len(strs)) {
			return nil, fmt.Errorf("sample type names string %d of %d", i, len(strs))
		}
		types = append(types, strs[i])
	}
	return types, nil
}

// protoFields calls fn with each field of the protobuf message b: its
// number, and its value (varint and fixed-size fields) or bytes
// (length-delimited ones).
func protoFields(b []byte, fn func(num int, v uint64, msg []byte) error) error {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("malformed protobuf: bad field key")
		}
		b = b[n:]
		num, v, msg := int(key>>3), uint64(0), []byte(nil)
		switch key & 7 {
		case 0:
			if v, n = binary.Uvarint(b); n <= 0 {
				return errors.New("malformed protobuf: bad varint")
			}
			b = b[n:]
		case 1, 5:
			size := 8
			if key&7 == 5 {
				size = 4
			}
			if len(b) < size {
				return errors.New("malformed protobuf: truncated fixed-size field")
			}
			b = b[size:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return errors.New("malformed protobuf: bad length")
			}
			msg, b = b[n:n+int(l)], b[n+int(l):]
		default:
			return fmt.Errorf("malformed protobuf: wire type %d", key&7)
		}
		if err := fn(num, v, msg); err != nil {
			return err
		}
	}
	return nil
}

// TestBenchRecovery: the recovery scenario kills bench's own daemon and
// times its restart to the first fetch of the last 1%; on a daemon that
// keeps its log in memory, that fetch finds nothing, and bench says so.
func TestBenchRecovery(t *testing.T) {
	t.Setenv(runAsHuddle, "1")
	run := func(args ...string) (int, string, string) {
		var stdout bytes.Buffer
		var stderr syncBuffer
		env := Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
		code := runBench(context.Background(), env, args)
		return code, stdout.String(), stderr.String()
	}
	for _, fsync := range []string{"interval", "always"} {
		t.Run(fsync, func(t *testing.T) {
			code, out, errs := run("recovery", "--messages", "3000", "--fsync", fsync, "--json")
			if code != ExitOK {
				t.Fatalf("exit code %d\nstderr:\n%s", code, errs)
			}
			var res loadgen.Result
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("stdout is not one JSON object (%v): %s", err, out)
			}
			if res.Scenario != "recovery" || res.Ops != 1 || res.Errors != 0 || res.Messages != 3000 || res.P50us <= 0 {
				t.Fatalf("%+v, want one restart of a log of 3000 messages", res)
			}
		})
	}
	t.Run("memory", func(t *testing.T) {
		code, _, errs := run("recovery", "--messages", "3000", "--storage", "memory")
		if code == ExitOK || !strings.Contains(errs, "the first fetch after the restart returned 0 messages, want 30") {
			t.Fatalf("exit code %d, want a failure: the restarted daemon lost its log\nstderr:\n%s", code, errs)
		}
	})
	t.Run("with --registry", func(t *testing.T) {
		code, _, errs := run("recovery", "--registry", "127.0.0.1:1")
		if code != ExitUsage || !strings.Contains(errs, "recovery kills and restarts the daemon") {
			t.Fatalf("exit code %d, want a usage error\nstderr:\n%s", code, errs)
		}
	})
}

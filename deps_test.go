package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImportDirection keeps the layering of STYLE.md: imports flow one way,
// from the command down to the protocol. Each package may import only the
// listed packages of this module (directly or not).
func TestImportDirection(t *testing.T) {
	const mod = "github.com/huddle-chat/huddle/"
	allowed := map[string][]string{
		"wire":      nil,
		"store":     nil,
		"metrics":   nil,
		"identity":  {"wire"},
		"discovery": {"wire"},
		"client":    {"wire", "identity"},
		"daemon":    {"wire", "identity", "store", "client", "discovery", "metrics"},
		"loadgen":   {"wire", "identity", "client"},
		"web":       {"wire", "identity", "client"},
	}
	for pkg, ok := range allowed {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "./"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			own, found := strings.CutPrefix(dep, mod)
			if !found || own == pkg {
				continue
			}
			if !slices.Contains(ok, own) {
				t.Errorf("%s imports %s; it may import only %v of this module", pkg, own, ok)
			}
		}
	}
}

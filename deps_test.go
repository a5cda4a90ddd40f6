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
		"cell":      {"wire", "identity", "store"},
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

// TestBinaryDoesNotLinkTesting keeps the package testing (its flags, its
// init) out of the huddle binary. It came in once through a dependency's
// dependency: prometheus/common's expfmt parses OpenMetrics with go-abnf,
// whose releases before v0.5.4 had fuzz helpers importing testing in
// non-test files.
func TestBinaryDoesNotLinkTesting(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "testing" {
			why, _ := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}: {{join .Imports " "}}`, ".").Output()
			var importers []string
			for _, line := range strings.Split(string(why), "\n") {
				pkg, imports, _ := strings.Cut(line, ": ")
				if slices.Contains(strings.Fields(imports), "testing") {
					importers = append(importers, pkg)
				}
			}
			t.Fatalf("the huddle binary links the package testing, imported by %v", importers)
		}
	}
}

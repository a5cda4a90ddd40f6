package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/huddle-chat/huddle"

// importRules says, for every package of the module (by its path inside
// it; "" is the huddle command), which packages of the module it may
// import, directly or not, outside its tests. A package missing from the
// table fails the test: a new package gets a rule the day it is added.
//
// The layering of STYLE.md: store and wire import nothing of ours;
// discovery at most wire; the client API only wire and identity; the
// group daemon and the registry never import each other (they share the
// QUIC server machinery); only the command, the CLI and the load tools
// start daemons (and TestCLIUsesDaemonsThroughConfigs says how).
var importRules = map[string][]string{
	"wire":    nil,
	"store":   nil,
	"metrics": nil,
	// The lock and link rule of the user's own files that several
	// processes write at once (known_registries, the joined file).
	"internal/lockfile": nil,
	"identity":          {"wire", "internal/lockfile"},
	// discovery speaks mDNS only; it learns nothing of huddle's frames.
	"discovery": {"wire"},
	"client":    {"wire", "identity", "internal/lockfile"},
	"cell":      {"wire", "identity", "store", "cell/raftlog", "internal/lockfile"},
	// raft's log and votes on disk: nothing of ours.
	"cell/raftlog": nil,
	// The QUIC server machinery the daemons share: it knows nothing of
	// either daemon (cell only for the ALPN of a cell's members).
	"daemon/server": {"wire", "identity", "store", "cell", "cell/raftlog", "metrics", "daemon/internal/sparse", "internal/lockfile"},
	// What the daemons share besides their server: their lifecycle, the
	// state directory's lock, pacing of like log lines, and the raw
	// protocol peer of their tests.
	"daemon/internal/lifecycle": {"wire", "identity", "store", "cell", "cell/raftlog", "metrics", "daemon/server", "daemon/internal/sparse", "internal/lockfile"},
	"daemon/internal/statedir":  nil,
	"daemon/internal/sparse":    nil,
	"daemon/internal/peertest":  {"wire", "identity", "internal/lockfile", "internal/testlog"},
	// The registry daemon: never the group daemon.
	"daemon/registry": {"wire", "identity", "store", "cell", "cell/raftlog", "metrics", "discovery",
		"daemon/server", "daemon/internal/sparse", "daemon/internal/lifecycle", "daemon/internal/statedir", "internal/lockfile"},
	// The group daemon: never the registry.
	"daemon/groupd": {"wire", "identity", "store", "cell", "cell/raftlog", "client", "discovery", "metrics",
		"daemon/server", "daemon/internal/sparse", "daemon/internal/lifecycle", "daemon/internal/statedir", "internal/lockfile"},
	"loadgen": {"wire", "identity", "client", "internal/lockfile"},
	"web":     {"wire", "identity", "client", "internal/lockfile"},
	"cli": {"wire", "identity", "store", "cell", "cell/raftlog", "client", "discovery", "metrics",
		"daemon/groupd", "daemon/registry", "daemon/server", "daemon/internal/sparse", "daemon/internal/lifecycle", "daemon/internal/statedir", "loadgen", "web", "internal/lockfile"},
	"": {"cli", "wire", "identity", "store", "cell", "cell/raftlog", "client", "discovery", "metrics",
		"daemon/groupd", "daemon/registry", "daemon/server", "daemon/internal/sparse", "daemon/internal/lifecycle", "daemon/internal/statedir", "loadgen", "web", "internal/lockfile"},
	// Test support: packages of helpers (or of tests only) that use what
	// they test, never imported by the code the binary is built from.
	"internal/udpproxy": nil,
	"internal/netlab":   {"internal/testbin"},
	"internal/history":  {"wire"},
	"internal/soak": {"wire", "identity", "store", "cell", "cell/raftlog", "client", "discovery", "metrics",
		"daemon/groupd", "daemon/registry", "daemon/server", "daemon/internal/sparse", "daemon/internal/lifecycle", "daemon/internal/statedir", "internal/lockfile"},
	"internal/testbin":     nil,
	"internal/testdisk":    nil,
	"internal/testlog":     nil,
	"internal/testport":    nil,
	"internal/testfixture": {"wire"},
	"internal/faults":      nil,
	"internal/jepsen":      nil,
	"e2e":                  nil,
	// An independent client, tests only: see TestConformanceIsIndependent.
	"internal/conformance": nil,
}

// neverImports are pairs that must stay apart whatever the table above
// grows into: the first may not depend on the second, even through a third.
var neverImports = [][2]string{
	{"store", "wire"},
	{"wire", "store"},
	{"client", "daemon/groupd"},
	{"client", "daemon/registry"},
	{"client", "daemon/server"},
	{"daemon/server", "daemon/groupd"},
	{"daemon/server", "daemon/registry"},
	{"daemon/registry", "daemon/groupd"},
	{"daemon/groupd", "daemon/registry"},
	{"", "daemon/internal/peertest"},
	{"cli", "internal/soak"},
	{"", "internal/udpproxy"},
	{"", "internal/netlab"},
	{"", "internal/history"},
	{"", "internal/jepsen"},
	{"", "internal/testbin"},
	{"", "internal/testdisk"},
	{"", "internal/testlog"},
	{"", "internal/testport"},
	{"", "internal/testfixture"},
}

// TestImportRules checks every package of the module against importRules
// and neverImports, with go list -deps (imports outside tests).
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := make(map[string][]string)
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		pkg := own(f[0])
		for _, d := range f[1:] {
			if o := own(d); o != d && o != pkg {
				deps[pkg] = append(deps[pkg], o)
			}
		}
		if _, ok := deps[pkg]; !ok {
			deps[pkg] = nil // listed, even with no deps of ours
		}
	}
	for pkg, ds := range deps {
		allowed, ok := importRules[pkg]
		if !ok {
			t.Errorf("package %q has no import rule: add it to importRules", name(pkg))
			continue
		}
		for _, d := range ds {
			if !slices.Contains(allowed, d) {
				t.Errorf("%s imports %s; it may import only %v of this module", name(pkg), name(d), allowed)
			}
		}
	}
	for pkg := range importRules {
		if _, ok := deps[pkg]; !ok {
			t.Errorf("importRules names %q, which is not a package of the module (any more)", name(pkg))
		}
	}
	for _, p := range neverImports {
		if slices.Contains(deps[p[0]], p[1]) {
			t.Errorf("%s depends on %s, which it must never do", name(p[0]), name(p[1]))
		}
	}
}

// TestConformanceIsIndependent keeps internal/conformance's client what
// it claims to be, a second implementation of PROTOCOL.md: its tests may
// use of this module only the packages that build the binary and pick
// ports, and neither of the libraries huddle speaks the protocol with
// (quic-go, fxamacker/cbor). importRules sees only imports outside tests,
// and this package has nothing else.
func TestConformanceIsIndependent(t *testing.T) {
	allowed := []string{"internal/conformance", "internal/testbin", "internal/testport"}
	foreign := []string{"github.com/quic-go/", "github.com/fxamacker/cbor"}
	out, err := exec.Command("go", "list", "-test", "-deps", "-f", "{{.ImportPath}}", "./internal/conformance").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := false
	for _, dep := range strings.Fields(string(out)) {
		dep, _, _ = strings.Cut(dep, " ") // "pkg [pkg.test]": a package built for the tests
		if dep == "golang.org/x/net/quic" {
			seen = true
		}
		if o := own(dep); o != dep && o != "internal/conformance.test" && !slices.Contains(allowed, o) {
			t.Errorf("internal/conformance's tests import %s: they may use only %v of this module", name(o), allowed)
		}
		for _, f := range foreign {
			if strings.HasPrefix(dep, f) {
				t.Errorf("internal/conformance's tests import %s, which huddle's own peers use", dep)
			}
		}
	}
	if !seen {
		t.Error("internal/conformance's tests do not use golang.org/x/net/quic: is this still the test of another QUIC stack?")
	}
}

// own returns an import path inside the module relative to it ("" for the
// module's root), and any other path as it is.
func own(path string) string {
	if path == module {
		return ""
	}
	if rel, ok := strings.CutPrefix(path, module+"/"); ok {
		return rel
	}
	return path
}

func name(pkg string) string {
	if pkg == "" {
		return "the huddle command"
	}
	return pkg
}

// daemonPackages are the packages whose daemons the CLI starts.
var daemonPackages = []string{"daemon/groupd", "daemon/registry", "daemon/server"}

// daemonAPI is what code outside the daemons may name in their packages:
// constructors, their configurations (and the types inside them), the
// daemons' own types (to hold one and call its methods: each package's
// Daemon), the memory budget
// a configuration adds up to (Memory, which the CLI turns into the process's
// soft memory limit), and the constants and errors configurations are
// documented with.
var daemonAPI = regexp.MustCompile(`^(New|New[A-Z]\w*|\w*Config|\w*Spec|Daemon|Memory|Default\w+|Max\w+|Min\w+|Err\w+)$`)

// TestCLIUsesDaemonsThroughConfigs: the CLI starts daemons and does not
// reach into them: every name it uses from a daemon package is a
// constructor, a configuration, a daemon's type, or a documented constant
// or error (daemonAPI).
func TestCLIUsesDaemonsThroughConfigs(t *testing.T) {
	files, err := filepath.Glob("cli/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no CLI sources: %v", err)
	}
	used := 0
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		names := make(map[string]bool) // local names of the daemon packages
		for _, imp := range f.Imports {
			path := strings.Trim(imp.Path.Value, `"`)
			if !slices.Contains(daemonPackages, own(path)) {
				continue
			}
			local := filepath.Base(path)
			if imp.Name != nil {
				local = imp.Name.Name
			}
			names[local] = true
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); ok && names[x.Name] {
				used++
				if !daemonAPI.MatchString(sel.Sel.Name) {
					t.Errorf("%s: the CLI uses %s.%s: it may use a daemon only through its constructor and configuration", fset.Position(sel.Pos()), x.Name, sel.Sel.Name)
				}
			}
			return true
		})
	}
	if used == 0 {
		t.Fatal("the CLI names nothing of the daemon packages: is daemonPackages out of date?")
	}
}

// TestBinaryDoesNotLinkTesting keeps the package testing (its flags, its
// init) out of the huddle binary. It came in once through a dependency's
// dependency: prometheus/common's expfmt parses OpenMetrics with go-abnf,
// whose releases before v0.5.4 had fuzz helpers importing testing in
// non-test files.
//
// One importer is tolerated, and only it: hashicorp/raft, which issue 20
// requires, has helpers in a non-test file (testing.go, v1.7.2) that
// import testing. Since Go 1.13 the package's flags are registered by
// testing.Init, which only a test binary's main calls (and huddle parses
// its own flag sets, never flag.CommandLine): what is linked is code, not
// flags.
func TestBinaryDoesNotLinkTesting(t *testing.T) {
	tolerated := []string{"github.com/hashicorp/raft"}
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
			if slices.Equal(importers, tolerated) {
				t.Logf("the package testing is linked, imported by %v only (tolerated: see the comment)", importers)
				return
			}
			t.Fatalf("the huddle binary links the package testing, imported by %v", importers)
		}
	}
}

// TestBinaryEndsNoThread: no package the huddle binary links (the
// standard library aside) locks a goroutine to its thread
// (runtime.LockOSThread). huddle bench starts its daemons with a
// parent-death signal (loadgen's daemonProcAttr), which Linux sends when
// the thread that forked the child ends, not the process
// (go.dev/issue/27505; internal/testbin's TestStartOutlivesItsThread
// shows it), and a Go program ends a thread only when a goroutine locked
// to it returns without unlocking it. With no such lock in the binary, no
// thread of the bench ends while it runs, and its daemons die with it
// only. A package that needs one must keep bench's forks off the threads
// it may end (as testbin.Start forks from one thread locked for good).
func TestBinaryEndsNoThread(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f",
		`{{if not .Standard}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .CgoFiles}} {{.}}{{end}}{{end}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var found []string
	fset := token.NewFileSet()
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		for _, name := range fields[1:] {
			path := filepath.Join(fields[0], name)
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatalf("parse %s: %v", path, err)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "LockOSThread" {
					found = append(found, fset.Position(sel.Pos()).String())
				}
				return true
			})
		}
	}
	if len(found) > 0 {
		t.Errorf("the huddle binary locks goroutines to threads, which end when they return, and with them the parent-death signal of every daemon huddle bench forked from them (loadgen's daemonProcAttr):\n%s", strings.Join(found, "\n"))
	}
}

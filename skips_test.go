package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestSkipsFailUnderCI keeps the rule of the brief: a test that skips
// because the machine lacks something (root, a namespace, a program) must
// fail instead when CI=true, since CI has everything and a skip there
// hides a test that never ran. Every function of a test file that calls
// Skip, Skipf or SkipNow must also read the CI variable (os.Getenv("CI")),
// or the skip must be a helper process's (a condition on netlab.InHost:
// the test is another test's child, not a test of its own). Helpers such
// as netlab.Require are checked here like any other function.
func TestSkipsFailUnderCI(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != "." {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, ".go") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, path := range files {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			var skips []token.Pos
			readsCI, helper := false, false
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
						switch sel.Sel.Name {
						case "Skip", "Skipf", "SkipNow":
							skips = append(skips, n.Pos())
						case "Getenv":
							if len(n.Args) == 1 {
								if lit, ok := n.Args[0].(*ast.BasicLit); ok && lit.Value == `"CI"` {
									readsCI = true
								}
							}
						case "InHost":
							helper = true
						}
					}
				}
				return true
			})
			if len(skips) == 0 {
				continue
			}
			checked++
			if !readsCI && !helper {
				for _, p := range skips {
					t.Errorf("%s: %s skips without failing under CI=true", fset.Position(p), fn.Name.Name)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no function that skips: the walk looked in the wrong place")
	}
}

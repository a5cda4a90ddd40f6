package client_test

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
)

// packageDocSnippet is the package doc's snippet (doc.go, "Connect, join,
// send, fetch, watch"), between the markers: it compiles with the package,
// and TestPackageDocSnippet checks that doc.go shows it as it is here, so
// the snippet cannot drift from the API (until session 22 nothing compiled
// it). The examples, which run, show each call at length.
func packageDocSnippet(ctx context.Context, dir string) {
	// doc begins
	id, err := identity.LoadOrCreate(dir)
	c, err := client.New(client.Config{Identity: id, KnownHosts: identity.OpenKnownHosts(filepath.Join(dir, identity.KnownHostsFile))})
	defer c.Close()
	reg, err := c.Registry(ctx, "192.168.1.20:7373", client.Fingerprint{}) // pinned on first use
	list, err := reg.List(ctx)                                             // list.Groups: each a GroupEntry, e.Name, e.Group (its UUID)
	g, err := reg.Group(list.Groups[0])                                    // no I/O yet; g.Close() when done
	_, err = g.Join(ctx, "buildbot", nil)                                  // the secret, for a private group
	ack, err := g.Send(ctx, []byte("build 1234 passed"))                   // ack.Seq: its place in the group's log
	cur, err := g.Fetch(ctx, client.Query{Since: time.Now().Add(-time.Hour)}, func(m client.Message) bool { return true })
	for ev, err := range g.Watch(ctx, client.Query{After: cur.Next, Epoch: cur.Epoch}) { // live, reconnecting by itself
		if err != nil {
			break // an end for good: not a member... (ctx ending ends the loop with no error)
		}
		fmt.Println(ev.Message.Seq, string(ev.Message.Body))
	}
	// doc ends
	_, _ = ack, err // the snippet leaves its errors unchecked, and the ack unread
}

var _ = packageDocSnippet

// TestPackageDocSnippet checks that the package doc's snippet (doc.go) is
// packageDocSnippet's body, laid out apart (spaces, tabs, line breaks and
// semicolons aside).
func TestPackageDocSnippet(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(f.Doc.Text(), "uses it:\n\n")
	block, _, ok2 := strings.Cut(block, "\n\n")
	if !ok || !ok2 {
		t.Fatal(`doc.go's package comment has no snippet after "uses it:"`)
	}
	if body, same := sameCode(t, block, "doc_test.go", "doc"); !same {
		t.Errorf("doc.go's snippet is not packageDocSnippet's body (client/doc_test.go): make them one\ndoc.go:\n%s\ndoc_test.go:\n%s", block, body)
	}
}

// TestEveryExportedNameDocumented: a program author reads this package
// through go doc, so every exported name (function, method, type, constant,
// variable, and field of an exported struct) says what it is, in its own
// comment or its group's.
func TestEveryExportedNameDocumented(t *testing.T) {
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		t.Fatal("no source file of the package found")
	}
	missing := func(pos token.Pos, what string) { t.Errorf("%s: %s has no doc comment", fset.Position(pos), what) }
	for _, f := range files {
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() || d.Doc != nil {
					continue
				}
				if d.Recv != nil {
					recv := d.Recv.List[0].Type
					if s, ok := recv.(*ast.StarExpr); ok {
						recv = s.X
					}
					if id, ok := recv.(*ast.Ident); !ok || !id.IsExported() || d.Name.Name == "Error" {
						continue // unexported receiver, or the error interface's method
					}
				}
				missing(d.Pos(), d.Name.Name)
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						if !s.Name.IsExported() {
							continue
						}
						if s.Doc == nil && d.Doc == nil {
							missing(s.Pos(), s.Name.Name)
						}
						// A field is documented by its own comment, or
						// named in the type's comment or in the comment
						// over the fields it follows ("First, Last ...").
						typeDoc := s.Doc.Text() + d.Doc.Text()
						if st, ok := s.Type.(*ast.StructType); ok {
							above := ""
							for _, field := range st.Fields.List {
								if field.Doc != nil {
									above = field.Doc.Text()
								}
								for _, n := range field.Names {
									if n.IsExported() && field.Doc == nil && field.Comment == nil &&
										!mentions(typeDoc, n.Name) && !mentions(above, n.Name) {
										missing(n.Pos(), s.Name.Name+"."+n.Name)
									}
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() && s.Doc == nil && s.Comment == nil && d.Doc == nil {
								missing(n.Pos(), n.Name)
							}
						}
					}
				}
			}
		}
	}
}

// mentions reports whether doc names the identifier name as a word.
func mentions(doc, name string) bool {
	for _, w := range strings.FieldsFunc(doc, func(r rune) bool {
		return !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		if w == name {
			return true
		}
	}
	return false
}

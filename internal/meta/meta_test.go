// Package meta checks repository-wide conventions that no single package
// can check for itself.
package meta

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// Every package has a doc comment saying what it is for (STYLE: small,
// named packages, each with a package doc).
func TestEveryPackageHasADocComment(t *testing.T) {
	root := repoRoot(t)
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if strings.HasPrefix(name, ".") || name == "testdata" || name == "bin" || name == "node_modules" {
			return filepath.SkipDir
		}
		ents, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		var files, documented int
		pkg := ""
		for _, e := range ents {
			n := e.Name()
			if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(path, n), nil,
				parser.ParseComments|parser.PackageClauseOnly)
			if err != nil {
				return err
			}
			files++
			pkg = f.Name.Name
			if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
				documented++
			}
		}
		if files > 0 && documented == 0 {
			rel, _ := filepath.Rel(root, path)
			t.Errorf("package %s (%s) has no doc comment", pkg, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

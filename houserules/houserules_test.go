package houserules

import (
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "zrepl.dev/zrepl"

// root is the module's directory (this package is one below it).
func root(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	r := filepath.Dir(wd)
	if _, err := os.Stat(filepath.Join(r, "go.mod")); err != nil {
		t.Fatalf("no go.mod above %s: %v", wd, err)
	}
	return r
}

// pkgDirs lists every directory of the module that holds Go files, as
// module-relative slash paths ("" for the root), skipping testdata and
// hidden directories as the go tool does.
func pkgDirs(t *testing.T) []string {
	r := root(t)
	var dirs []string
	err := filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			n := d.Name()
			if p != r && (n == "testdata" || strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") {
			rel, _ := filepath.Rel(r, filepath.Dir(p))
			rel = filepath.ToSlash(rel)
			if rel == "." {
				rel = ""
			}
			if len(dirs) == 0 || dirs[len(dirs)-1] != rel {
				dirs = append(dirs, rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

// TestEveryPackageHasADocComment: a package says what it is for, in a
// doc comment on its package clause (in any of its files, test files too
// for a package of tests only).
func TestEveryPackageHasADocComment(t *testing.T) {
	r := root(t)
	for _, dir := range pkgDirs(t) {
		files, err := filepath.Glob(filepath.Join(r, dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		documented := false
		for _, f := range files {
			pf, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if pf.Doc != nil && !strings.HasSuffix(pf.Name.Name, "_test") && strings.TrimSpace(pf.Doc.Text()) != "" {
				documented = true
				break
			}
		}
		if !documented {
			t.Errorf("package %s has no doc comment (// Package ... before its package clause, e.g. in a doc.go)", path.Join(module, dir))
		}
	}
}

// imports is the non-test imports of the module's package in dir under
// the default build context.
func imports(t *testing.T, dir string) []string {
	p, err := build.Default.ImportDir(filepath.Join(root(t), dir), 0)
	if _, ok := err.(*build.NoGoError); ok {
		return nil // test files only
	}
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return p.Imports
}

// TestEngineImportsNoBackendOrSimulator: the engine works against the
// zfs.ZFS interface and net.Conn; the model backend, the real backend and
// the network simulator are plugged in by cmd/ and the tests. An import
// of one of them in engine/ outside tests ties the engine to it.
func TestEngineImportsNoBackendOrSimulator(t *testing.T) {
	forbidden := []string{module + "/zfsmodel", module + "/zfsreal", module + "/netsim"}
	for _, dir := range pkgDirs(t) {
		if dir != "engine" && !strings.HasPrefix(dir, "engine/") {
			continue
		}
		for _, imp := range imports(t, dir) {
			for _, f := range forbidden {
				if imp == f || strings.HasPrefix(imp, f+"/") {
					t.Errorf("%s imports %s outside its tests", path.Join(module, dir), imp)
				}
			}
		}
	}
}

// TestZFSInterfaceImportsNothingOfOurs: engine/zfs is the vocabulary
// everything else shares (names, versions, errors, the interface); it
// depends on nothing of the module, so every other package can use it.
func TestZFSInterfaceImportsNothingOfOurs(t *testing.T) {
	for _, imp := range imports(t, "engine/zfs") {
		if imp == module || strings.HasPrefix(imp, module+"/") {
			t.Errorf("%s/engine/zfs imports %s", module, imp)
		}
	}
}

// TestDaemonBinaryHasNoTestMachinery: the zrepl binary links neither the
// testing package (whose flags and helpers a product has no use for) nor
// the means to plant bugs: engine/internal/plantedbugs, in a normal build,
// is constants only and reads no environment.
func TestDaemonBinaryHasNoTestMachinery(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", "./cmd/zrepl")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/zrepl: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, module+"/cmd/zrepl") {
		t.Fatalf("go list -deps ./cmd/zrepl does not list the command itself: %q", out)
	}
	for _, d := range deps {
		if d == "testing" || strings.HasPrefix(d, "testing/") {
			t.Errorf("the zrepl binary links %s (go list -deps ./cmd/zrepl; go mod why -m or go list -f '{{.Imports}}' finds the importer)", d)
		}
	}
	for _, imp := range imports(t, "engine/internal/plantedbugs") {
		if imp == "os" || imp == "syscall" {
			t.Errorf("engine/internal/plantedbugs imports %s in a normal build: it must not read its switches there", imp)
		}
	}
}

// TestDaemonReadsNoEnvironment: a test switch is a build tag or lives in
// a _test.go file, never an environment variable the daemon reads; the
// zrepl binary's own packages call neither os.Getenv nor os.LookupEnv
// (handing the environment on to a child, os.Environ, is fine).
func TestDaemonReadsNoEnvironment(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}\t{{.Dir}}\t{{join .GoFiles \" \"}}{{end}}", "./cmd/zrepl")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/zrepl: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 || (f[0] != module && !strings.HasPrefix(f[0], module+"/")) {
			continue
		}
		for _, name := range strings.Fields(f[2]) {
			file := filepath.Join(f[1], name)
			fset := token.NewFileSet()
			pf, err := parser.ParseFile(fset, file, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			ast.Inspect(pf, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "os" && (sel.Sel.Name == "Getenv" || sel.Sel.Name == "LookupEnv") {
					t.Errorf("%s: os.%s in the zrepl binary: a setting is a config key or a flag, a test switch a build tag", fset.Position(sel.Pos()), sel.Sel.Name)
				}
				return true
			})
		}
	}
	if checked == 0 {
		t.Fatalf("no files of ours among cmd/zrepl's dependencies: %q", out)
	}
}

package main_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/millrace/millrace/"

type goPackage struct {
	ImportPath string
	Deps       []string
	Standard   bool
}

// TestImportRules keeps the architecture of docs/adr/0002-import-rules.md:
// imports flow one way, and the domain reaches I/O adapters only through
// interfaces it declares.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps=false", "-json", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}

	domain := []string{module + "events", module + "handlers", module + "projections", module + "gateway"}
	adapters := []string{
		module + "platform/kafka", module + "platform/sqlite", module + "platform/commandstore", module + "platform/router",
		module + "platform/poison", module + "platform/consul", module + "platform/config", module + "platform/telemetry", module + "platform/scheduler",
	}
	under := func(path string, roots []string) bool {
		for _, r := range roots {
			if path == r || strings.HasPrefix(path, r+"/") {
				return true
			}
		}
		return false
	}

	for _, p := range pkgs {
		rel := strings.TrimPrefix(p.ImportPath, module)
		for _, dep := range p.Deps {
			switch {
			case strings.HasPrefix(rel, "platform/") && under(dep, domain):
				t.Errorf("%s imports domain package %s: platform must not know the domain", rel, dep)
			case (strings.HasPrefix(rel, "handlers") || strings.HasPrefix(rel, "projections") || strings.HasPrefix(rel, "gateway")) && under(dep, adapters):
				t.Errorf("%s imports I/O adapter %s: declare an interface and wire it in cmd/", rel, dep)
			case rel == "events" && !isStdlib(dep):
				t.Errorf("events imports %s: events may import the standard library only", dep)
			}
		}
	}
}

// isStdlib tells standard library import paths by their first element,
// which has no dot.
func isStdlib(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

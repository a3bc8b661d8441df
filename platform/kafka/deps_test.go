package kafka_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoDomainImports keeps the platform free of millrace's domain packages.
func TestNoDomainImports(t *testing.T) {
	const module = "github.com/millrace/millrace/"
	out, err := exec.Command("go", "list", "-deps", module+"platform/kafka").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for dep := range strings.Lines(string(out)) {
		dep = strings.TrimSpace(dep)
		rest, ok := strings.CutPrefix(dep, module)
		if !ok {
			continue
		}
		for _, domain := range []string{"events", "handlers", "projections", "gateway", "cmd"} {
			if rest == domain || strings.HasPrefix(rest, domain+"/") {
				t.Errorf("platform/kafka depends on domain package %s", dep)
			}
		}
	}
}

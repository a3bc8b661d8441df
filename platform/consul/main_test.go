package consul_test

import (
	"testing"

	"github.com/millrace/millrace/platform/discovery/discoverytest"
)

func TestMain(m *testing.M) {
	if discoverytest.ServeChild() || serveLeaderChild() {
		return
	}
	m.Run()
}

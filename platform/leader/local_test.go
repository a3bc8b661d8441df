package leader_test

import (
	"testing"

	"github.com/millrace/millrace/platform/leader"
	"github.com/millrace/millrace/platform/leader/leadertest"
)

func TestLocal(t *testing.T) {
	leadertest.Run(t, func(t *testing.T) leadertest.Harness {
		set := leader.NewLocal(nil)
		return leadertest.Harness{
			New: func(_ *testing.T, key string) leader.Runner { return set.Lock(key) },
			Break: func(t *testing.T, key string) {
				if !set.Revoke(key) {
					t.Fatalf("revoke %s: no leader", key)
				}
			},
		}
	})
}

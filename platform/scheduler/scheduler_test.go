package scheduler_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/consul/consultest"
	"github.com/millrace/millrace/platform/leader"
	"github.com/millrace/millrace/platform/scheduler"
	"github.com/millrace/millrace/platform/scheduler/schedulertest"
	"github.com/millrace/millrace/platform/sqlite"
)

// TestInProcess runs the suite with the in-process leader lock and the
// SQLite store, as millrace dev does.
func TestInProcess(t *testing.T) {
	schedulertest.Run(t, func(t *testing.T) schedulertest.Harness {
		locks := leader.NewLocal(nil)
		return schedulertest.Harness{
			NewLeader: func(_ *testing.T, key string) leader.Runner { return locks.Lock(key) },
			Kill: func(t *testing.T, key string) {
				if !locks.Revoke(key) {
					t.Fatalf("kill the leader of %s: no leader", key)
				}
			},
			NewStore: func(t *testing.T) scheduler.Store { return newSQLiteStore(t) },
		}
	})
}

// TestConsul runs the suite with a real Consul agent: its sessions for the
// leader lock and its KV for the store, as scheduler instances on many
// machines do. It fails when the agent's binary is missing.
func TestConsul(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	client := agent.Client(t)
	schedulertest.Run(t, func(t *testing.T) schedulertest.Harness {
		return schedulertest.Harness{
			NewLeader: func(t *testing.T, key string) leader.Runner {
				l, err := consul.NewLeaderLock(client, consul.LeaderConfig{
					Key: key, SessionTTL: 5 * time.Second, LockDelay: 500 * time.Millisecond,
					RetryInterval: 50 * time.Millisecond, Logger: schedulertest.Logger(t),
				})
				if err != nil {
					t.Fatal(err)
				}
				return l
			},
			Kill:     func(t *testing.T, key string) { destroyHolder(t, client, key) },
			NewStore: func(t *testing.T) scheduler.Store { return newConsulStore(t, client) },
		}
	})
}

func newSQLiteStore(t *testing.T) *scheduler.SQLiteStore {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "scheduler.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s, err := scheduler.NewSQLiteStore(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newConsulStore(t *testing.T, client *api.Client) *scheduler.ConsulStore {
	t.Helper()
	s, err := scheduler.NewConsulStore(client, "millrace/test/scheduler/"+t.Name()+"/"+time.Now().Format("150405.000000000"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// destroyHolder destroys the session holding key, as Consul does when the
// holder's process dies and its session expires.
func destroyHolder(t *testing.T, client *api.Client, key string) {
	t.Helper()
	pair, _, err := client.KV().Get(key, nil)
	if err != nil || pair == nil || pair.Session == "" {
		t.Fatalf("lock %s has no holder to kill: %v %v", key, pair, err)
	}
	if _, err := client.Session().Destroy(pair.Session, nil); err != nil {
		t.Fatalf("destroy session %s: %v", pair.Session, err)
	}
}

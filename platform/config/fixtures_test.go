package config_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/hashicorp/consul/api"
	"gopkg.in/yaml.v3"

	"github.com/millrace/millrace/platform/auth/secret"
	"github.com/millrace/millrace/platform/config"
	"github.com/millrace/millrace/platform/consul/consultest"
)

// rules is a document with the parts millrace's rules have: sections, a
// map of feature flags, a secret.
type rules struct {
	Name     string          `yaml:"name" json:"name"`
	Limits   limits          `yaml:"limits" json:"limits"`
	Features map[string]bool `yaml:"features" json:"features"`
	Admin    adminRules      `yaml:"admin" json:"admin"`
}

// adminRules holds a secret of each kind: by type and by tag.
type adminRules struct {
	Token    secret.String `yaml:"token" json:"token"`
	Password string        `yaml:"password" json:"password" secret:"true"`
}

func defaultRules() rules {
	return rules{Limits: limits{Rate: 1, Window: time.Second}, Features: map[string]bool{"fast_path": true}}
}

func (r rules) validate() error {
	var errs []error
	if r.Limits.Rate <= 0 {
		errs = append(errs, &pathError{[]string{"limits", "rate"}, "must be above 0"})
	}
	if r.Limits.Window < 0 {
		errs = append(errs, &pathError{[]string{"limits", "window"}, "must not be negative"})
	}
	if r.Name == "forbidden" {
		errs = append(errs, errors.New("this name is reserved"))
	}
	for k := range r.Features {
		if k != "fast_path" && k != "slow_path" {
			errs = append(errs, &pathError{[]string{"features", k}, "unknown feature flag"})
		}
	}
	return errors.Join(errs...)
}

// running is a Live[rules] being run until the test ends, with a history
// recorded through a Watermill gochannel, and read back from it in order
// by a second History, as another process reads the topic.
type running struct {
	live    *config.Live[rules]
	history *config.History
	// fromTopic is the history a reader of the topic builds.
	fromTopic *config.History

	mu       sync.Mutex
	payloads []string // every record of the topic, in order
}

// run loads live, then runs it and, when history is wanted, a recorder.
func run(t *testing.T, live *config.Live[rules], withHistory bool) *running {
	t.Helper()
	if _, err := live.Load(t.Context()); err != nil {
		t.Fatalf("load: %v", err)
	}
	r := &running{live: live}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := live.Run(ctx, func(rules) error { return nil }); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	var pubsub *gochannel.GoChannel
	if withHistory {
		// Publishing waits for the reader's ack: the reader sees the
		// records in the order they were published, as on a partition.
		pubsub = gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
		msgs, err := pubsub.Subscribe(ctx, config.HistoryTopic)
		if err != nil {
			t.Fatal(err)
		}
		r.history, r.fromTopic = config.NewHistory(), config.NewHistory()
		r.history.MarkCaughtUp() // the topic is new
		wg.Go(func() {
			for m := range msgs {
				r.mu.Lock()
				r.payloads = append(r.payloads, string(m.Payload))
				r.mu.Unlock()
				c, err := config.ChangeFromMessage(m)
				if err != nil {
					t.Errorf("read the history topic: %v", err)
				} else {
					r.fromTopic.Add(c)
				}
				m.Ack()
			}
		})
		rec, err := config.NewRecorder(live, config.RecorderConfig{Publisher: pubsub, History: r.history, Instance: "test"})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := rec.Run(ctx); err != nil {
				t.Errorf("recorder: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		if pubsub != nil {
			_ = pubsub.Close() // ends the reader
		}
		wg.Wait()
	})
	return r
}

// topicPayloads returns the records of the history topic so far.
func (r *running) topicPayloads() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.payloads)
}

// waitName waits until the configuration in force has the name.
func (r *running) waitName(t *testing.T, name string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("name %q in force", name), func() bool { return r.live.Current().Name == name })
}

// waitVersions waits until the history of doc holds n versions.
func (r *running) waitVersions(t *testing.T, doc string, n int) []config.Change {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d versions of %s in the history", n, doc), func() bool { return len(r.history.List(doc)) >= n })
	return r.history.List(doc)
}

// sharedAgent is one Consul agent for the tests of this package that do not
// stop it, started on first use and stopped by TestMain.
var sharedAgent = struct {
	once  sync.Once
	agent *consultest.Agent
	dir   string
	err   error
}{}

func consulAgent(t *testing.T) *consultest.Agent {
	t.Helper()
	sharedAgent.once.Do(func() {
		sharedAgent.dir, sharedAgent.err = os.MkdirTemp("", "millrace-config-consul-")
		if sharedAgent.err == nil {
			sharedAgent.agent, sharedAgent.err = consultest.StartAgent(sharedAgent.dir, consultest.Options{})
		}
	})
	if sharedAgent.err != nil {
		t.Fatalf("start a consul agent: %v", sharedAgent.err)
	}
	return sharedAgent.agent
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedAgent.agent != nil {
		if err := sharedAgent.agent.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop consul agent:", err)
		}
	}
	if sharedAgent.dir != "" {
		_ = os.RemoveAll(sharedAgent.dir)
	}
	os.Exit(code)
}

// kvKey is a key of its own for a test, in the shared agent, with nothing
// under it yet.
func kvKey(t *testing.T) string {
	t.Helper()
	dir := "millrace/test/" + strings.NewReplacer("/", "-", " ", "-", ",", "", ":", "").Replace(strings.ToLower(t.Name())) + "/"
	if _, err := consulAgent(t).Client(t).KV().DeleteTree(dir, nil); err != nil {
		t.Fatal(err)
	}
	return dir + "rules"
}

// kvPut writes a key directly, as `consul kv put` does.
func kvPut(t *testing.T, client *api.Client, key, doc string) {
	t.Helper()
	if _, err := client.KV().Put(&api.KVPair{Key: key, Value: []byte(doc)}, nil); err != nil {
		t.Fatalf("consul kv put %s: %v", key, err)
	}
}

// effectiveText writes a YAML tree as text.
func effectiveText(n *yaml.Node) (string, error) {
	b, err := yaml.Marshal(n)
	return string(b), err
}

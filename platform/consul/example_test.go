package consul_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/consul/consultest"
	"github.com/millrace/millrace/platform/discovery"
)

// Three instances of a query edge on one machine, registered with a real
// Consul agent with weights 1, 1 and 2; a watcher follows them with
// blocking queries while one is killed and one stops gracefully.
func Example_threeInstances() {
	dir, err := os.MkdirTemp("", "consul-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	agent, err := consultest.StartAgent(dir, consultest.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer agent.Stop()

	// Like every process: the CONSUL_* variables make the client.
	cfg, err := consul.ConfigFromEnv(func(k string) string {
		return map[string]string{"CONSUL_HTTP_ADDR": agent.Addr()}[k]
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	client, err := consul.NewClient(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	reg := consul.NewRegistry(client, consul.RegistryConfig{})
	defer reg.Close()
	res := consul.NewResolver(client, consul.ResolverConfig{})
	ctx := context.Background()

	// Three HTTP edges, each with /healthz, registered as "query".
	servers := map[string]*http.Server{}
	for i, name := range []string{"query-a", "query-b", "query-c"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println(err)
			return
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "ok\n")
		}), ReadHeaderTimeout: time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		servers[name] = srv
		err = reg.Register(ctx, discovery.Registration{
			ID: name, Service: "query", Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port,
			Role: "query", Version: "1.0.0", Weight: []int{1, 1, 2}[i], Zone: "zone-a",
			Check: discovery.Check{Interval: time.Second, Timeout: 500 * time.Millisecond},
		})
		if err != nil {
			fmt.Println(err)
			return
		}
	}

	// The watcher: one blocking query after another, printing each new set.
	var (
		index uint64
		last  string
	)
	watchUntil := func(want int) {
		for {
			list, next, err := res.Healthy(ctx, "query", index)
			if err != nil {
				fmt.Println(err)
				return
			}
			index = next
			var parts []string
			for _, in := range list {
				parts = append(parts, fmt.Sprintf("%s(weight %d, %s, %s)", in.ID, in.Weight, in.Zone, strings.Join(in.Tags, " ")))
			}
			if got := strings.Join(parts, " "); got != last {
				last = got
				if got == "" {
					got = "none"
				}
				fmt.Println("healthy:", got)
			}
			if len(list) == want {
				return
			}
		}
	}
	watchUntil(3)

	// query-b crashes: its listener goes away without deregistering.
	servers["query-b"].Close()
	fmt.Println("query-b killed")
	watchUntil(2)

	// query-c stops gracefully: it deregisters first.
	if err := reg.Deregister(ctx, "query-c"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("query-c deregistered")
	watchUntil(1)

	// Output:
	// healthy: query-a(weight 1, zone-a, role=query version=1.0.0) query-b(weight 1, zone-a, role=query version=1.0.0) query-c(weight 2, zone-a, role=query version=1.0.0)
	// query-b killed
	// healthy: query-a(weight 1, zone-a, role=query version=1.0.0) query-c(weight 2, zone-a, role=query version=1.0.0)
	// query-c deregistered
	// healthy: query-a(weight 1, zone-a, role=query version=1.0.0)
}

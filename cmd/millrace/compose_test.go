package main

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/telemetry"
)

// compose.yaml cannot be run here (no Docker engine), so this test checks
// what can go wrong in it without running it: every millrace service runs a
// role of this binary with flags it accepts and variables it reads, whose
// values it takes; the ports and addresses agree between the services; the
// workers and projectors share their data volume; the images are pinned;
// the files it mounts exist; Prometheus and Grafana point at the services.

// composeFile is the part of compose.yaml the test reads.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string         `yaml:"image"`
	Build       any            `yaml:"build"`
	Command     []string       `yaml:"command"`
	Environment composeEnv     `yaml:"environment"`
	Ports       []string       `yaml:"ports"`
	Volumes     []string       `yaml:"volumes"`
	DependsOn   composeDepends `yaml:"depends_on"`
	Healthcheck map[string]any `yaml:"healthcheck"`
}

// composeEnv reads environment as a mapping or as a list of KEY=VALUE.
type composeEnv map[string]string

func (e *composeEnv) UnmarshalYAML(n *yaml.Node) error {
	*e = composeEnv{}
	switch n.Kind {
	case yaml.MappingNode:
		var m map[string]string
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k, v := range m {
			(*e)[k] = v
		}
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, kv := range l {
			k, v, _ := strings.Cut(kv, "=")
			(*e)[k] = v
		}
	default:
		return fmt.Errorf("environment: want a mapping or a list, line %d", n.Line)
	}
	return nil
}

// composeDepends reads depends_on as a list or as a mapping with conditions.
type composeDepends []string

func (d *composeDepends) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*d = l
	case yaml.MappingNode:
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			return err
		}
		for k := range m {
			*d = append(*d, k)
		}
	default:
		return fmt.Errorf("depends_on: want a list or a mapping, line %d", n.Line)
	}
	return nil
}

// repoRoot is the repository's root, from cmd/millrace.
const repoRoot = "../.."

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("parse compose.yaml: %v", err)
	}
	if len(f.Services) == 0 {
		t.Fatal("compose.yaml has no services")
	}
	return f
}

// isMillrace reports whether a service runs the image built from this
// repository.
func (s composeService) isMillrace() bool { return s.Build != nil }

// recordingEnv is a getenv over a service's environment that records the
// variables read.
type recordingEnv struct {
	env  map[string]string
	read map[string]bool
}

func (r *recordingEnv) getenv(key string) string {
	r.read[key] = true
	return r.env[key]
}

// readAtBuild are the variables a role reads only once it builds its parts
// (not while its flags and registry are configured).
func readAtBuild() []string { return []string{envUpstreamToken} }

func TestComposeRoles(t *testing.T) {
	f := loadCompose(t)
	specs := map[string]bool{}
	for _, s := range roleSpecs() {
		specs[s.name] = true
	}
	counts := map[string]int{}
	for _, name := range slices.Sorted(maps.Keys(f.Services)) {
		svc := f.Services[name]
		if !svc.isMillrace() {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if len(svc.Command) == 0 || !specs[svc.Command[0]] {
				t.Fatalf("command %q: want a role of the binary first (%s)", svc.Command, strings.Join(slices.Sorted(maps.Keys(specs)), ", "))
			}
			role := svc.Command[0]
			counts[role]++
			var spec roleSpec
			for _, s := range roleSpecs() {
				if s.name == role {
					spec = s
				}
			}
			env := &recordingEnv{env: svc.Environment, read: map[string]bool{}}

			// The flags parse and validate as `millrace <role>` would take them.
			cmd, cfg := roleCommand(spec, env.getenv, io.Discard, io.Discard)
			if err := cmd.ParseFlags(svc.Command[1:]); err != nil {
				t.Fatalf("millrace %s: %v", strings.Join(svc.Command, " "), err)
			}
			if args := cmd.Flags().Args(); len(args) > 0 {
				t.Fatalf("millrace %s: unexpected arguments %q", role, args)
			}
			cfg.setDefaults()
			if err := cfg.validate(spec, env.getenv); err != nil {
				t.Fatalf("millrace %s refuses its configuration: %v", role, err)
			}
			if err := checkExposure(cfg.HTTPAddr, cfg.Security.enabled(), cfg.Security.Insecure); err != nil {
				t.Fatalf("millrace %s: %v", role, err)
			}
			// The variables configure the registry and the tracing, and
			// their values are taken.
			d, err := discoveryFromEnv(env.getenv, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("discovery from the environment: %v", err)
			}
			if err := d.Close(); err != nil {
				t.Error(err)
			}
			if _, err := consul.ConfigFromEnv(env.getenv); err != nil {
				t.Fatalf("consul from the environment: %v", err)
			}
			if _, err := telemetry.ConfigFromEnv(env.getenv); err != nil {
				t.Fatalf("tracing from the environment: %v", err)
			}
			for _, k := range readAtBuild() {
				env.read[k] = true
			}
			for _, k := range slices.Sorted(maps.Keys(svc.Environment)) {
				if !env.read[k] && !strings.HasPrefix(k, envRulesPrefix+"__") {
					t.Errorf("environment %s: millrace %s never reads it", k, role)
				}
			}

			// The port: on all interfaces in the container, published on
			// loopback, registered under the service's name.
			host, port, err := net.SplitHostPort(cfg.HTTPAddr)
			if err != nil {
				t.Fatal(err)
			}
			if host != "0.0.0.0" {
				t.Errorf("--http-addr %s: listen on 0.0.0.0, or the other containers cannot reach it", cfg.HTTPAddr)
			}
			for _, p := range svc.Ports {
				hostIP, _, container := splitPort(t, p)
				if container != port {
					t.Errorf("ports %q: the container port is not the --http-addr port %s", p, port)
				}
				if hostIP != "127.0.0.1" {
					t.Errorf("ports %q: publish on 127.0.0.1 only (authentication is off)", p)
				}
			}
			if a := svc.Environment["MILLRACE_ADVERTISE_ADDR"]; a != name {
				t.Errorf("MILLRACE_ADVERTISE_ADDR %q: want %q, the name the other containers reach it by", a, name)
			}
			if spec.dataDir {
				if !mountsAt(svc.Volumes, cfg.DataDir) {
					t.Errorf("--data-dir %s: no volume is mounted there; its SQLite files would not survive the container", cfg.DataDir)
				}
			}

			// Kafka, Consul and Jaeger are services of the file, at the
			// addresses they listen on.
			for _, b := range cfg.KafkaBrokers {
				h, _, _ := net.SplitHostPort(b)
				k, ok := f.Services[h]
				if !ok || !strings.Contains(k.Environment["KAFKA_ADVERTISED_LISTENERS"], "://"+b) {
					t.Errorf("kafka broker %s: no service advertises it", b)
				}
			}
			ch, cp, _ := net.SplitHostPort(svc.Environment[consul.EnvHTTPAddr])
			if c, ok := f.Services[ch]; !ok || !strings.HasPrefix(c.Image, "hashicorp/consul:") || cp != "8500" {
				t.Errorf("%s %q: want the consul service's HTTP port, 8500", consul.EnvHTTPAddr, svc.Environment[consul.EnvHTTPAddr])
			}
			if ep := svc.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]; ep != "" {
				u, err := url.Parse(ep)
				if err != nil {
					t.Fatal(err)
				}
				if j, ok := f.Services[u.Hostname()]; !ok || !strings.HasPrefix(j.Image, "jaegertracing/jaeger:") || u.Port() != "4318" {
					t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q: want the jaeger service's OTLP/HTTP port, 4318", ep)
				}
			}
			for _, dep := range []string{"kafka", "consul"} {
				if !slices.Contains(svc.DependsOn, dep) {
					t.Errorf("depends_on: want %s, which it cannot start without", dep)
				}
			}
		})
	}
	t.Run("topology", func(t *testing.T) {
		want := map[string]int{"gateway": 2, "worker": 2, "projector": 2, "scheduler": 1}
		for role, n := range want {
			if counts[role] != n {
				t.Errorf("%d %s services, want %d", counts[role], role, n)
			}
		}
	})
}

func TestComposeInfrastructure(t *testing.T) {
	f := loadCompose(t)
	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"images are pinned", func(t *testing.T) {
			for name, svc := range f.Services {
				if svc.isMillrace() {
					continue // built from the Dockerfile, checked below
				}
				if err := pinned(svc.Image); err != nil {
					t.Errorf("service %s: %v", name, err)
				}
			}
			raw, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			from := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(string(raw), -1)
			if len(from) < 2 {
				t.Errorf("Dockerfile: %d stages, want a build stage and a runtime stage", len(from))
			}
			for _, m := range from {
				if err := pinned(m[1]); err != nil {
					t.Errorf("Dockerfile: %v", err)
				}
			}
			if !regexp.MustCompile(`(?m)^USER\s+nonroot`).Match(raw) || !strings.Contains(string(raw), "CGO_ENABLED=0") {
				t.Error("Dockerfile: want a static binary (CGO_ENABLED=0) run as the nonroot user")
			}
		}},
		{"kafka runs in KRaft mode from the official image", func(t *testing.T) {
			k := f.Services["kafka"]
			if !strings.HasPrefix(k.Image, "apache/kafka:") || !strings.Contains(k.Environment["KAFKA_PROCESS_ROLES"], "controller") {
				t.Errorf("kafka: image %q, process roles %q; want apache/kafka acting as its own controller", k.Image, k.Environment["KAFKA_PROCESS_ROLES"])
			}
			if k.Healthcheck == nil {
				t.Error("kafka: no healthcheck, so the roles cannot wait for it")
			}
		}},
		{"dependencies and volumes exist", func(t *testing.T) {
			for name, svc := range f.Services {
				for _, d := range svc.DependsOn {
					if _, ok := f.Services[d]; !ok {
						t.Errorf("service %s depends on %s, which does not exist", name, d)
					}
				}
				for _, v := range svc.Volumes {
					src, _, _ := strings.Cut(v, ":")
					switch {
					case strings.HasPrefix(src, "./"):
						if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
							t.Errorf("service %s mounts %s: %v", name, src, err)
						}
					default:
						if _, ok := f.Volumes[src]; !ok {
							t.Errorf("service %s mounts volume %s, which is not declared", name, src)
						}
					}
				}
			}
		}},
		{"workers and projectors share one data volume", func(t *testing.T) {
			var shared []string
			for name, svc := range f.Services {
				if !svc.isMillrace() || len(svc.Command) == 0 || (svc.Command[0] != "worker" && svc.Command[0] != "projector") {
					continue
				}
				for _, v := range svc.Volumes {
					src, _, _ := strings.Cut(v, ":")
					if !slices.Contains(shared, src) {
						shared = append(shared, src)
					}
				}
				if len(svc.Volumes) == 0 {
					t.Errorf("service %s has no data volume", name)
				}
			}
			if len(shared) != 1 {
				t.Errorf("workers and projectors mount %q; want one volume for all (docs/adr/0005)", shared)
			}
		}},
		{"published host ports are unique", func(t *testing.T) {
			seen := map[string]string{}
			for name, svc := range f.Services {
				for _, p := range svc.Ports {
					_, hostPort, _ := splitPort(t, p)
					if other, ok := seen[hostPort]; ok {
						t.Errorf("host port %s published by %s and %s", hostPort, other, name)
					}
					seen[hostPort] = name
				}
			}
		}},
		{"prometheus finds the roles in consul", func(t *testing.T) {
			var cfg struct {
				ScrapeConfigs []struct {
					ConsulSD []struct {
						Server string `yaml:"server"`
					} `yaml:"consul_sd_configs"`
					Relabel []struct {
						SourceLabels []string `yaml:"source_labels"`
						Regex        string   `yaml:"regex"`
						Action       string   `yaml:"action"`
					} `yaml:"relabel_configs"`
				} `yaml:"scrape_configs"`
			}
			mountedYAML(t, f, "prometheus", "/etc/prometheus/prometheus.yml", &cfg)
			if len(cfg.ScrapeConfigs) == 0 || len(cfg.ScrapeConfigs[0].ConsulSD) == 0 {
				t.Fatal("prometheus: no consul_sd_configs")
			}
			if s := cfg.ScrapeConfigs[0].ConsulSD[0].Server; s != f.Services["gateway-1"].Environment[consul.EnvHTTPAddr] {
				t.Errorf("prometheus asks consul at %s; the roles register at %s", s, f.Services["gateway-1"].Environment[consul.EnvHTTPAddr])
			}
			keeps := false
			for _, r := range cfg.ScrapeConfigs[0].Relabel {
				if r.Action == "keep" && slices.Contains(r.SourceLabels, "__meta_consul_service") {
					re := regexp.MustCompile("^(?:" + r.Regex + ")$")
					for _, s := range []string{serviceGateway, serviceQuery, serviceWorker, "millrace-scheduler"} {
						if !re.MatchString(s) {
							t.Errorf("prometheus drops service %s", s)
						}
					}
					keeps = true
				}
			}
			if !keeps {
				t.Error("prometheus keeps every consul service, not only millrace's")
			}
		}},
		{"grafana reads prometheus and has the dashboard", func(t *testing.T) {
			var ds struct {
				Datasources []struct {
					URL string `yaml:"url"`
				} `yaml:"datasources"`
			}
			mountedYAML(t, f, "grafana", "/etc/grafana/provisioning/datasources/prometheus.yaml", &ds)
			if len(ds.Datasources) == 0 {
				t.Fatal("grafana: no data source provisioned")
			}
			u, err := url.Parse(ds.Datasources[0].URL)
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := f.Services[u.Hostname()]; !ok || !strings.HasPrefix(p.Image, "prom/prometheus:") || u.Port() != "9090" {
				t.Errorf("grafana data source %s is not the prometheus service", ds.Datasources[0].URL)
			}
			var dash struct {
				Providers []struct {
					Options struct {
						Path string `yaml:"path"`
					} `yaml:"options"`
				} `yaml:"providers"`
			}
			mountedYAML(t, f, "grafana", "/etc/grafana/provisioning/dashboards/millrace.yaml", &dash)
			if len(dash.Providers) == 0 || !mountsAt(f.Services["grafana"].Volumes, filepath.Join(dash.Providers[0].Options.Path, "millrace.json")) {
				t.Error("grafana: the dashboard is not mounted where the provisioning looks for it")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.check)
	}
}

// pinned checks that an image names a fixed version: a tag other than
// latest, or a digest.
func pinned(image string) error {
	if strings.Contains(image, "@sha256:") {
		return nil
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return fmt.Errorf("image %q has no tag: pin a version", image)
	}
	if tag := image[i+1:]; tag == "latest" || tag == "" {
		return fmt.Errorf("image %q: pin a version, not %q", image, tag)
	}
	return nil
}

// splitPort reads a published port, host_ip:host_port:container_port.
func splitPort(t *testing.T, p string) (hostIP, hostPort, containerPort string) {
	t.Helper()
	parts := strings.Split(p, ":")
	if len(parts) != 3 {
		t.Fatalf("ports %q: want host_ip:host_port:container_port", p)
	}
	return parts[0], parts[1], parts[2]
}

// mountsAt reports whether one of volumes is mounted at path in the container.
func mountsAt(volumes []string, path string) bool {
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && (parts[1] == path || strings.HasPrefix(path, parts[1]+"/")) {
			return true
		}
	}
	return false
}

// mountedYAML decodes the file that service sees at path, from the mount
// that provides it.
func mountedYAML(t *testing.T, f composeFile, service, path string, v any) {
	t.Helper()
	for _, m := range f.Services[service].Volumes {
		parts := strings.Split(m, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
			continue
		}
		local := filepath.Join(repoRoot, parts[0])
		switch {
		case parts[1] == path:
		case strings.HasPrefix(path, parts[1]+"/"):
			local = filepath.Join(local, strings.TrimPrefix(path, parts[1]+"/"))
		default:
			continue
		}
		raw, err := os.ReadFile(local)
		if err != nil {
			t.Fatalf("%s sees %s as %s: %v", service, path, local, err)
		}
		if err := yaml.Unmarshal(raw, v); err != nil {
			t.Fatalf("parse %s: %v", local, err)
		}
		return
	}
	t.Fatalf("%s: nothing mounted at %s", service, path)
}

func TestPinned(t *testing.T) {
	tests := []struct {
		image string
		ok    bool
	}{
		{"apache/kafka:3.9.1", true},
		{"gcr.io/distroless/static-debian12:nonroot", true},
		{"localhost:5000/millrace@sha256:0123", true},
		{"prom/prometheus", false},
		{"prom/prometheus:latest", false},
		{"localhost:5000/millrace", false},
	}
	for _, tc := range tests {
		t.Run(tc.image, func(t *testing.T) {
			if err := pinned(tc.image); (err == nil) != tc.ok {
				t.Errorf("pinned(%q) = %v, want ok %v", tc.image, err, tc.ok)
			}
		})
	}
}

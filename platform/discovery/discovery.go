// Package discovery is millrace's port for service discovery: how an HTTP
// edge announces itself ([Registration], [Registrar]) and how a client finds
// the healthy instances of a service ([Instance], [Resolver]).
//
// Two implementations serve it. [Memory] is the in-process registry of
// `millrace dev`: it health-checks the instances it holds over HTTP, as a
// Consul agent would, and answers blocking queries from memory.
// platform/consul is the real one for many machines. Both pass the same
// suite, discoverytest.Run, so code written against the port does not know
// which one it has.
//
// Every instance is health-checked with an HTTP GET of its health path
// (default /healthz): a 2xx answer passes, anything else, a timeout or a
// refused connection makes the instance critical, and a critical instance is
// no longer reported healthy. An instance stays critical until a check
// passes again; one critical for longer than
// [Check.DeregisterCriticalAfter] is removed. A new registration starts
// passing (the process registers once it serves), and is checked from then
// on.
//
// Traffic shares come from [Instance.Weight]: a client sends an instance
// weight/sum-of-weights of its requests.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults of a Registration's check and weight.
const (
	DefaultHealthPath              = "/healthz"
	DefaultCheckInterval           = 10 * time.Second
	DefaultCheckTimeout            = 5 * time.Second
	DefaultDeregisterCriticalAfter = time.Minute
	DefaultWeight                  = 1
	// MaxWeight bounds Weight, so that sums of weights cannot overflow.
	MaxWeight = 10000
)

// Tag and metadata keys millrace writes on every registration. Role and
// version travel as tags ("role=query", "version=0.3.1") so that Consul's
// tag filters and UI show them; weight and zone travel as metadata.
const (
	TagRole    = "role"
	TagVersion = "version"
	MetaWeight = "weight"
	MetaZone   = "zone"
)

// Registration is one instance of a service, as it announces itself.
type Registration struct {
	// ID names this instance uniquely among all instances of all services
	// the registry holds. [NewID] derives one from service, host and port,
	// so that an instance restarted on the same address replaces its own
	// earlier registration instead of leaving a dead one behind.
	ID string
	// Service is the name clients resolve, e.g. "millrace-query".
	Service string
	// Address and Port are where other processes reach the instance: a
	// host name or IP address other machines can use, not a wildcard.
	Address string
	Port    int
	// Role and Version become the tags "role=<Role>" and
	// "version=<Version>". Both optional.
	Role    string
	Version string
	// Weight is the instance's share of traffic relative to the other
	// instances of its service, 1..MaxWeight. Default 1.
	Weight int
	// Zone names where the instance runs (a rack, an availability zone).
	// Optional; carried as metadata for clients that prefer their own zone.
	Zone string
	// Tags and Meta are extra tags and metadata, beside the ones derived
	// from the fields above (which win on a clash).
	Tags []string
	Meta map[string]string
	// Check is the HTTP health check of the instance.
	Check Check
}

// Check is the HTTP health check of a registration.
type Check struct {
	// Path is fetched with GET on the instance's address. Default /healthz.
	Path string
	// Interval between two checks. Default 10 s; at least 1 s.
	Interval time.Duration
	// Timeout of one check. Default 5 s, and never more than Interval.
	Timeout time.Duration
	// DeregisterCriticalAfter removes an instance that has been critical
	// this long. Default 1 min, which is also Consul's minimum; Consul
	// reaps every 30 s, so removal can take up to that much longer.
	DeregisterCriticalAfter time.Duration
}

// WithDefaults returns r with every unset field of its check and its weight
// set to the default.
func (r Registration) WithDefaults() Registration {
	if r.Weight == 0 {
		r.Weight = DefaultWeight
	}
	c := &r.Check
	if c.Path == "" {
		c.Path = DefaultHealthPath
	}
	if c.Interval == 0 {
		c.Interval = DefaultCheckInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(DefaultCheckTimeout, c.Interval)
	}
	if c.DeregisterCriticalAfter == 0 {
		c.DeregisterCriticalAfter = DefaultDeregisterCriticalAfter
	}
	return r
}

// nameRE is what Consul accepts without complaint in service names and ids,
// and what resolves in DNS.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// metaKeyRE is what Consul accepts as a metadata key.
var metaKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// Validate reports every problem of r at once. Call it on r.WithDefaults().
func (r Registration) Validate() error {
	var errs []error
	if !nameRE.MatchString(r.ID) {
		errs = append(errs, fmt.Errorf("instance id %q: want letters, digits, '.', '_' or '-'", r.ID))
	}
	if !nameRE.MatchString(r.Service) {
		errs = append(errs, fmt.Errorf("service name %q: want letters, digits, '.', '_' or '-'", r.Service))
	}
	if r.Address == "" {
		errs = append(errs, errors.New("address is empty: give the host or IP other processes reach this instance at"))
	} else if ip := net.ParseIP(r.Address); ip != nil && ip.IsUnspecified() {
		errs = append(errs, fmt.Errorf("address %s is a wildcard: give the host or IP other processes reach this instance at", r.Address))
	}
	if r.Port < 1 || r.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: want 1..65535", r.Port))
	}
	if r.Weight < 1 || r.Weight > MaxWeight {
		errs = append(errs, fmt.Errorf("weight %d: want 1..%d", r.Weight, MaxWeight))
	}
	for k := range r.Meta {
		if !metaKeyRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("metadata key %q: want up to 128 letters, digits, '_' or '-'", k))
		}
	}
	c := r.Check
	if !strings.HasPrefix(c.Path, "/") {
		errs = append(errs, fmt.Errorf("health path %q: want an absolute path such as /healthz", c.Path))
	}
	if c.Interval < time.Second {
		errs = append(errs, fmt.Errorf("check interval %s: want at least 1s", c.Interval))
	}
	if c.Timeout <= 0 || c.Timeout > c.Interval {
		errs = append(errs, fmt.Errorf("check timeout %s: want more than 0 and at most the interval %s", c.Timeout, c.Interval))
	}
	if c.DeregisterCriticalAfter < time.Minute {
		errs = append(errs, fmt.Errorf("deregister-critical-after %s: want at least 1m (Consul's minimum)", c.DeregisterCriticalAfter))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("registration %q: %w", r.ID, err)
	}
	return nil
}

// HealthURL is the URL the health check fetches.
func (r Registration) HealthURL() string {
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(r.Address, strconv.Itoa(r.Port)), Path: r.Check.Path}
	return u.String()
}

// AllTags returns the registration's tags: role and version first, then
// the extra tags, without duplicates.
func (r Registration) AllTags() []string {
	var tags []string
	if r.Role != "" {
		tags = append(tags, TagRole+"="+r.Role)
	}
	if r.Version != "" {
		tags = append(tags, TagVersion+"="+r.Version)
	}
	for _, t := range r.Tags {
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	return tags
}

// AllMeta returns the registration's metadata: the extra metadata with
// weight and zone set from their fields.
func (r Registration) AllMeta() map[string]string {
	meta := make(map[string]string, len(r.Meta)+2)
	for k, v := range r.Meta {
		meta[k] = v
	}
	meta[MetaWeight] = strconv.Itoa(r.Weight)
	if r.Zone != "" {
		meta[MetaZone] = r.Zone
	} else {
		delete(meta, MetaZone)
	}
	return meta
}

// NewID derives an instance id from the service and the address the
// instance serves at: "<service>-<host>-<port>", with characters a service
// id cannot hold replaced by '-'.
func NewID(service, host string, port int) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
				return r
			default:
				return '-'
			}
		}, s)
	}
	return clean(service) + "-" + strings.Trim(clean(host), "-") + "-" + strconv.Itoa(port)
}

// Instance is one healthy instance of a service, as a resolver reports it.
type Instance struct {
	ID      string
	Service string
	Address string
	Port    int
	// Role and Version come from the tags "role=…" and "version=…".
	Role    string
	Version string
	// Weight comes from the "weight" metadata; DefaultWeight when it is
	// missing or not a number in 1..MaxWeight.
	Weight int
	// Zone comes from the "zone" metadata.
	Zone string
	// Tags and Meta are everything the instance registered with.
	Tags []string
	Meta map[string]string
}

// NewInstance builds the Instance a registry reports for what was
// registered: role and version from the tags, weight and zone from the
// metadata. Both implementations of the port use it, so that they agree.
func NewInstance(id, service, address string, port int, tags []string, meta map[string]string) Instance {
	in := Instance{
		ID: id, Service: service, Address: address, Port: port,
		Weight: DefaultWeight,
		Tags:   slices.Clone(tags),
		Meta:   make(map[string]string, len(meta)),
	}
	for k, v := range meta {
		in.Meta[k] = v
	}
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		switch {
		case !ok:
		case k == TagRole:
			in.Role = v
		case k == TagVersion:
			in.Version = v
		}
	}
	if w, err := strconv.Atoi(meta[MetaWeight]); err == nil && w >= 1 && w <= MaxWeight {
		in.Weight = w
	}
	in.Zone = meta[MetaZone]
	return in
}

// HostPort is the instance's address as host:port.
func (i Instance) HostPort() string { return net.JoinHostPort(i.Address, strconv.Itoa(i.Port)) }

// Registrar announces instances. Implementations are safe for concurrent
// use. Contexts bound the call only; a registration lives until it is
// deregistered, its instance stays critical past DeregisterCriticalAfter,
// or the registry goes away.
type Registrar interface {
	// Register adds an instance, or replaces the registration with the
	// same id. The instance counts as healthy until its first check fails.
	Register(ctx context.Context, r Registration) error
	// Deregister removes an instance at once. An unknown id is not an
	// error, so that shutdown can always call it.
	Deregister(ctx context.Context, id string) error
}

// Resolver finds the healthy instances of a service. Implementations are
// safe for concurrent use.
type Resolver interface {
	// Healthy returns the instances of service whose health checks pass,
	// and an index to pass to the next call. With index 0 it answers at
	// once. With the index of an earlier answer it is a blocking query: it
	// returns when the answer may differ from that one, or when the
	// implementation's longest wait has passed (returning the same
	// answer), or with ctx's error when ctx is done. Compare answers rather
	// than assuming a change. An index is never 0; one lower than the index
	// passed in means the registry started over. An unknown service has no
	// instances and is not an error.
	Healthy(ctx context.Context, service string, index uint64) ([]Instance, uint64, error)
}

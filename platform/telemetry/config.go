package telemetry

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// DefaultServiceName is the service.name of spans when OTEL_SERVICE_NAME is unset.
const DefaultServiceName = "millrace"

// Sampler names, as in OTEL_TRACES_SAMPLER.
const (
	SamplerAlwaysOn                = "always_on"
	SamplerAlwaysOff               = "always_off"
	SamplerTraceIDRatio            = "traceidratio"
	SamplerParentBasedAlwaysOn     = "parentbased_always_on"
	SamplerParentBasedAlwaysOff    = "parentbased_always_off"
	SamplerParentBasedTraceIDRatio = "parentbased_traceidratio"
)

// samplerNames lists the samplers Config accepts.
func samplerNames() []string {
	return []string{
		SamplerAlwaysOn, SamplerAlwaysOff, SamplerTraceIDRatio,
		SamplerParentBasedAlwaysOn, SamplerParentBasedAlwaysOff, SamplerParentBasedTraceIDRatio,
	}
}

// protocolHTTPProtobuf is the only OTLP protocol the exporter speaks.
const protocolHTTPProtobuf = "http/protobuf"

// Config says how a process traces. The zero value traces nothing out of the
// process: spans get trace ids (for logs and for the traceparent headers that
// link services) but are neither recorded nor exported.
type Config struct {
	// ServiceName is the service.name resource attribute. Default "millrace".
	ServiceName string
	// Disabled turns the SDK off (OTEL_SDK_DISABLED=true): no spans at all.
	// Incoming trace context is still passed on unchanged.
	Disabled bool
	// Endpoint is the full OTLP/HTTP traces URL, such as
	// http://127.0.0.1:4318/v1/traces. Empty: nothing is exported.
	Endpoint string
	// Headers are sent with every export request (authentication, tenant).
	Headers map[string]string
	// Protocol is the OTLP protocol; only "http/protobuf" (the default) is
	// supported.
	Protocol string
	// Sampler is one of the Sampler* names. Default
	// parentbased_always_on when exporting; when not exporting, sampling is
	// parentbased_always_off whatever is set, since nothing would be kept.
	Sampler string
	// SamplerArg is the ratio of the traceidratio samplers, in [0, 1].
	// Default 1.
	SamplerArg string
}

func (c *Config) setDefaults() {
	if c.ServiceName == "" {
		c.ServiceName = DefaultServiceName
	}
	if c.Protocol == "" {
		c.Protocol = protocolHTTPProtobuf
	}
	if c.Sampler == "" {
		c.Sampler = SamplerParentBasedAlwaysOn
	}
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("OTLP traces endpoint %q: %w", c.Endpoint, err))
		case u.Scheme != "http" && u.Scheme != "https":
			errs = append(errs, fmt.Errorf("OTLP traces endpoint %q: want an http:// or https:// URL, such as http://127.0.0.1:4318", c.Endpoint))
		case u.Host == "":
			errs = append(errs, fmt.Errorf("OTLP traces endpoint %q: no host", c.Endpoint))
		}
	}
	if c.Protocol != "" && c.Protocol != protocolHTTPProtobuf {
		errs = append(errs, fmt.Errorf("OTLP protocol %q: only %s is supported; point the endpoint at the collector's OTLP/HTTP port (4318)", c.Protocol, protocolHTTPProtobuf))
	}
	if c.Sampler != "" && !slices.Contains(samplerNames(), c.Sampler) {
		errs = append(errs, fmt.Errorf("traces sampler %q: want one of %s", c.Sampler, strings.Join(samplerNames(), ", ")))
	}
	if c.SamplerArg != "" {
		if _, err := parseRatio(c.SamplerArg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// exporting reports whether spans leave the process.
func (c Config) exporting() bool { return !c.Disabled && c.Endpoint != "" }

// ratio returns SamplerArg as a ratio, 1 when unset.
func (c Config) ratio() float64 {
	if c.SamplerArg == "" {
		return 1
	}
	r, err := parseRatio(c.SamplerArg)
	if err != nil {
		return 1 // Validate reports it
	}
	return r
}

func parseRatio(s string) (float64, error) {
	r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || r < 0 || r > 1 {
		return 0, fmt.Errorf("traces sampler argument %q: want a ratio between 0 and 1, such as 0.25", s)
	}
	return r, nil
}

// ConfigFromEnv reads the standard OpenTelemetry variables through getenv
// (os.Getenv in production):
//
//	OTEL_SDK_DISABLED                    "true" turns tracing off
//	OTEL_SERVICE_NAME                    service.name (default millrace)
//	OTEL_TRACES_EXPORTER                 "otlp" (default) or "none"
//	OTEL_EXPORTER_OTLP_TRACES_ENDPOINT   full traces URL, used as is
//	OTEL_EXPORTER_OTLP_ENDPOINT          base URL; /v1/traces is appended
//	OTEL_EXPORTER_OTLP_TRACES_HEADERS,
//	OTEL_EXPORTER_OTLP_HEADERS           key=value,… (values URL-encoded)
//	OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
//	OTEL_EXPORTER_OTLP_PROTOCOL          http/protobuf only
//	OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
//
// The trace-specific variables win over the general ones. With no endpoint,
// nothing is exported. It reports every malformed value at once; call
// [Config.Validate] (NewTracing does) for the rest.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := env(k); v != "" {
				return v
			}
		}
		return ""
	}

	var errs []error
	c := Config{
		ServiceName: env("OTEL_SERVICE_NAME"),
		Disabled:    strings.EqualFold(env("OTEL_SDK_DISABLED"), "true"),
		Protocol:    first("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
		Sampler:     strings.ToLower(env("OTEL_TRACES_SAMPLER")),
		SamplerArg:  env("OTEL_TRACES_SAMPLER_ARG"),
	}

	switch exporter := strings.ToLower(env("OTEL_TRACES_EXPORTER")); exporter {
	case "", "otlp":
		if v := env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
			c.Endpoint = v
		} else if v := env("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
			c.Endpoint = strings.TrimRight(v, "/") + "/v1/traces"
		}
	case "none":
	default:
		errs = append(errs, fmt.Errorf("OTEL_TRACES_EXPORTER %q: want otlp or none", exporter))
	}

	if raw := first("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"); raw != "" {
		h, err := parseHeaders(raw)
		if err != nil {
			errs = append(errs, err)
		}
		c.Headers = h
	}
	return c, errors.Join(errs...)
}

// parseHeaders parses "k1=v1,k2=v2" with URL-encoded values, the format of
// OTEL_EXPORTER_OTLP_HEADERS.
func parseHeaders(raw string) (map[string]string, error) {
	headers := map[string]string{}
	var errs []error
	for _, pair := range strings.Split(raw, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			errs = append(errs, fmt.Errorf("OTLP headers: %q is not key=value", strings.TrimSpace(pair)))
			continue
		}
		value, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("OTLP headers: value of %s: %w", k, err))
			continue
		}
		headers[k] = value
	}
	return headers, errors.Join(errs...)
}

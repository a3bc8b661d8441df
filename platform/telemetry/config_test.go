package telemetry_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/millrace/millrace/platform/telemetry"
)

func TestConfigFromEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		want    telemetry.Config
		wantErr []string // substrings of the error; none means no error
	}{
		{name: "nothing set: nothing exported", env: map[string]string{}, want: telemetry.Config{}},
		{
			name: "base endpoint gets the traces path",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/", "OTEL_SERVICE_NAME": "orders-worker"},
			want: telemetry.Config{Endpoint: "http://127.0.0.1:4318/v1/traces", ServiceName: "orders-worker"},
		},
		{
			name: "traces endpoint is used as is and wins",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://collector:4318",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example.com/otlp/traces",
			},
			want: telemetry.Config{Endpoint: "https://traces.example.com/otlp/traces"},
		},
		{
			name: "exporter none drops the endpoint",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"},
			want: telemetry.Config{},
		},
		{
			name: "disabled, sampler and headers",
			env: map[string]string{
				"OTEL_SDK_DISABLED":           "TRUE",
				"OTEL_TRACES_SAMPLER":         "ParentBased_TraceIdRatio",
				"OTEL_TRACES_SAMPLER_ARG":     "0.25",
				"OTEL_EXPORTER_OTLP_HEADERS":  "api-key=abc%3D%3D, tenant = blue",
				"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
			},
			want: telemetry.Config{
				Disabled: true, Sampler: "parentbased_traceidratio", SamplerArg: "0.25", Protocol: "http/protobuf",
				Headers: map[string]string{"api-key": "abc==", "tenant": "blue"},
			},
		},
		{
			name: "trace headers win over general ones",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2"},
			want: telemetry.Config{Headers: map[string]string{"b": "2"}},
		},
		{
			name:    "every malformed value is reported",
			env:     map[string]string{"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_OTLP_HEADERS": "novalue,=x"},
			wantErr: []string{`OTEL_TRACES_EXPORTER "zipkin"`, `"novalue" is not key=value`, `"=x" is not key=value`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := telemetry.ConfigFromEnv(func(k string) string { return tc.env[k] })
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one mentioning %q", tc.wantErr)
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ConfigFromEnv: %v", err)
			}
			if !maps.Equal(got.Headers, tc.want.Headers) {
				t.Errorf("headers %v, want %v", got.Headers, tc.want.Headers)
			}
			got.Headers, tc.want.Headers = nil, nil
			if got.ServiceName != tc.want.ServiceName || got.Disabled != tc.want.Disabled || got.Endpoint != tc.want.Endpoint ||
				got.Protocol != tc.want.Protocol || got.Sampler != tc.want.Sampler || got.SamplerArg != tc.want.SamplerArg {
				t.Errorf("config %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name    string
		cfg     telemetry.Config
		wantErr []string
	}{
		{name: "zero value is valid", cfg: telemetry.Config{}},
		{name: "a full configuration is valid", cfg: telemetry.Config{
			Endpoint: "https://collector:4318/v1/traces", Sampler: telemetry.SamplerTraceIDRatio, SamplerArg: "0.1", Protocol: "http/protobuf",
		}},
		{
			name: "every problem at once",
			cfg:  telemetry.Config{Endpoint: "collector:4318", Protocol: "grpc", Sampler: "jaeger_remote", SamplerArg: "2"},
			wantErr: []string{
				`endpoint "collector:4318"`, `protocol "grpc": only http/protobuf`, `sampler "jaeger_remote"`, `argument "2"`,
			},
		},
		{name: "endpoint without host", cfg: telemetry.Config{Endpoint: "http:///v1/traces"}, wantErr: []string{"no host"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted an invalid configuration")
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if _, nerr := telemetry.NewTracing(tc.cfg, nil); nerr == nil {
				t.Error("NewTracing accepted the invalid configuration")
			}
		})
	}
}

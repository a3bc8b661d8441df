package config_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/config"
)

// settings is a document of the kind millrace keeps live.
type settings struct {
	Name   string  `yaml:"name" json:"name"`
	Limits limits  `yaml:"limits" json:"limits"`
	Routes []route `yaml:"routes" json:"routes"`
}

type limits struct {
	Rate   float64       `yaml:"rate" json:"rate"`
	Window time.Duration `yaml:"window" json:"window"`
}

type route struct {
	Path  string `yaml:"path" json:"path"`
	Burst int    `yaml:"burst" json:"burst"`
}

// pathError is a validation problem that knows where it is, as the
// gateway's RuleError does.
type pathError struct {
	path []string
	msg  string
}

func (e *pathError) Error() string        { return strings.Join(e.path, ".") + ": " + e.msg }
func (e *pathError) ConfigPath() []string { return e.path }

// validate checks settings, reporting every problem with its path.
func (s settings) validate() error {
	var errs []error
	if s.Limits.Rate <= 0 {
		errs = append(errs, &pathError{[]string{"limits", "rate"}, "must be above 0"})
	}
	for i, r := range s.Routes {
		if r.Burst < 1 {
			errs = append(errs, &pathError{[]string{"routes", strconv.Itoa(i), "burst"}, "must be at least 1"})
		}
	}
	if s.Name == "forbidden" {
		errs = append(errs, errors.New("this name is reserved"))
	}
	return errors.Join(errs...)
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format config.Format
		doc    string
		want   settings
		// problems are "line: message substring", in order.
		problems []string
	}{
		{name: "yaml", format: config.YAML,
			doc:  "name: a\nlimits:\n  rate: 2.5\n  window: 1m30s\nroutes:\n  - path: /x\n    burst: 3\n",
			want: settings{Name: "a", Limits: limits{Rate: 2.5, Window: 90 * time.Second}, Routes: []route{{"/x", 3}}}},
		{name: "json, tabs and an escaped solidus", format: config.JSON,
			doc:  "{\n\t\"name\": \"a\\/b \\\\/ \\u00e9\",\n\t\"limits\": {\"rate\": 1, \"window\": \"2s\"}\n}\n",
			want: settings{Name: `a/b \/ é`, Limits: limits{Rate: 1, Window: 2 * time.Second}}},
		{name: "yaml unknown field", format: config.YAML,
			doc:      "name: a\nlimits:\n  rate: 1\n  windw: 2s\n",
			problems: []string{`4: unknown field "windw"; known here: rate, window`}},
		{name: "yaml unknown field in a list", format: config.YAML,
			doc:      "routes:\n  - path: /x\n  - path: /y\n    brust: 1\n",
			problems: []string{`4: unknown field "brust"; known here: path, burst`}},
		{name: "yaml unknown top-level field", format: config.YAML,
			doc:      "name: a\nnmae: b\n",
			problems: []string{`2: unknown field "nmae"; known here: name, limits, routes`}},
		{name: "yaml wrong types", format: config.YAML,
			doc: "limits:\n  rate: fast\n  window: 5\nroutes: {}\n",
			problems: []string{
				`2: cannot use "fast" as a number`,
				`3: cannot use "5" as a duration; write one like 500ms, 2s or 1m30s`,
				`4: cannot use a mapping as a list`,
			}},
		{name: "yaml syntax", format: config.YAML,
			doc:      "name: a\nlimits:\n  rate: 1\n   window: 2s\n",
			problems: []string{`4: mapping values are not allowed in this context`}},
		{name: "yaml syntax: indentation", format: config.YAML,
			doc:      "limits:\n  rate: 1\n    window: 2s\nname: x\n",
			problems: []string{`3: mapping values are not allowed in this context`}},
		{name: "yaml syntax: key indented less", format: config.YAML,
			doc:      "limits:\n  rate: 1\n  window: 2s\n name: x\n",
			problems: []string{`4: did not find expected key`}},
		{name: "yaml syntax: tab", format: config.YAML,
			doc:      "name: x\nlimits:\n  rate: 1\n\twindow: 2s\n",
			problems: []string{`4: found a tab character`}},
		{name: "yaml syntax: unclosed quote", format: config.YAML,
			doc:      "name: x\nlimits:\n  rate: 1\nroutes:\n  - path: \"/a\n",
			problems: []string{`5: found unexpected end of stream`}},
		{name: "yaml syntax in a flow spanning lines, after another", format: config.YAML,
			// The broken list is reported where it starts.
			doc:      "limits: {rate: 1,\n  window: 2s}\nname: x\nroutes: [\n  {path: /a}\n  {path: /b}]\n",
			problems: []string{`4: did not find expected ',' or ']'`}},
		{name: "yaml duplicate key", format: config.YAML,
			doc:      "name: a\nname: b\n",
			problems: []string{`2: mapping key "name" already defined at line 1`}},
		{name: "yaml empty", format: config.YAML, doc: "# nothing\n",
			problems: []string{`0: the document is empty`}},
		{name: "yaml two documents", format: config.YAML, doc: "name: a\n---\nname: b\n",
			problems: []string{`2: a second document starts here`}},
		{name: "json syntax", format: config.JSON,
			doc:      "{\n  \"name\": \"a\",\n  \"limits\": {\"rate\": 1,}\n}\n",
			problems: []string{`3: JSON: invalid character '}'`}},
		{name: "json unfinished", format: config.JSON, doc: "{\n  \"name\": \"a\",\n",
			problems: []string{`3: JSON: the document ends too early`}},
		{name: "json trailing value", format: config.JSON, doc: "{}\n{}\n",
			problems: []string{`2: JSON: more after the end`}},
		{name: "json unknown field", format: config.JSON,
			doc:      "{\n  \"name\": \"a\",\n  \"limit\": {}\n}\n",
			problems: []string{`3: unknown field "limit"; known here: name, limits, routes`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := config.Decode[settings](tc.format, "rules."+string(tc.format), []byte(tc.doc))
			if len(tc.problems) == 0 {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Errorf("decoded %+v, want %+v", got, tc.want)
				}
				return
			}
			assertProblems(t, err, "rules."+string(tc.format), tc.problems)
		})
	}
}

// assertProblems checks that err is an *Error of source with the given
// problems ("line: message substring"), and that its message names the
// source and line of each.
func assertProblems(t *testing.T, err error, source string, want []string) {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v (%T), want a *config.Error", err, err)
	}
	if ce.Source != source {
		t.Errorf("source = %q, want %q", ce.Source, source)
	}
	if len(ce.Problems) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(ce.Problems), len(want), err)
	}
	for i, w := range want {
		lineStr, msg, _ := strings.Cut(w, ": ")
		line, _ := strconv.Atoi(lineStr)
		p := ce.Problems[i]
		if p.Line != line || !strings.Contains(p.Message, msg) {
			t.Errorf("problem %d = line %d %q, want line %d containing %q", i, p.Line, p.Message, line, msg)
		}
		prefix := source + ":" + lineStr + ": "
		if line == 0 {
			prefix = source + ": "
		}
		if !strings.Contains(err.Error(), prefix+p.Message) {
			t.Errorf("message does not contain %q:\n%s", prefix+p.Message, err)
		}
	}
}

func TestWithin(t *testing.T) {
	inner := errors.Join(
		&pathError{[]string{"limits", "rate"}, "must be above 0"},
		errors.New("something without a place"),
		fmt.Errorf("wrapped: %w", &pathError{[]string{"routes", "0"}, "bad"}),
	)
	err := config.Within("gateway", inner)
	leaves := err.(interface{ Unwrap() []error }).Unwrap()
	want := []struct {
		path []string
		msg  string
	}{
		{[]string{"gateway", "limits", "rate"}, "gateway.limits.rate: must be above 0"},
		{[]string{"gateway"}, "gateway: something without a place"},
		{[]string{"gateway", "routes", "0"}, "gateway: wrapped: routes.0: bad"},
	}
	if len(leaves) != len(want) {
		t.Fatalf("%d problems, want %d: %v", len(leaves), len(want), err)
	}
	for i, w := range want {
		var fe config.FieldError
		if !errors.As(leaves[i], &fe) {
			t.Fatalf("problem %d is not a FieldError: %v", i, leaves[i])
		}
		if strings.Join(fe.ConfigPath(), "/") != strings.Join(w.path, "/") || fe.Error() != w.msg {
			t.Errorf("problem %d = %v %q, want %v %q", i, fe.ConfigPath(), fe.Error(), w.path, w.msg)
		}
	}
	if config.Within("x", nil) != nil {
		t.Error("Within of nil is not nil")
	}
}

func TestFormatOf(t *testing.T) {
	for name, want := range map[string]config.Format{"a.yaml": config.YAML, "b.YML": config.YAML, "dir.d/c.json": config.JSON, "d.toml": ""} {
		got, err := config.FormatOf(name)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("FormatOf(%q) = %q, %v; want %q", name, got, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), ".yaml, .yml or .json") {
			t.Errorf("error does not say which names work: %v", err)
		}
	}
}

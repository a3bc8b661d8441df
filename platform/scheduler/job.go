package scheduler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Job is one job as configuration declares it. Exactly one of Cron, Every
// and At says when it is due. Decoded from YAML or JSON, a job starts from
// DefaultJob and changes what it names; unknown fields are refused.
//
//	close-unpaid-orders:
//	  cron: "0 */5 * * * *"            # seconds minutes hours dom month dow
//	  command: orders.sweep-unpaid-orders.v1
//	  payload: '{"placed_before": "{{ .FireTime | add "-30m" | rfc3339 }}"}'
//	  timeout: 1m
//	  retry: {max_attempts: 3, backoff: 10s}
//	  block: skip
//	  misfire: fire_once
type Job struct {
	// Description says what the job is for, for people.
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Cron is a cron expression with seconds: "seconds minutes hours
	// day-of-month month day-of-week", or @hourly, @daily, @weekly,
	// @monthly, @yearly. Evaluated in Timezone.
	Cron string `yaml:"cron,omitempty" json:"cron,omitempty"`
	// Every is a fixed interval: the job is due on every multiple of it
	// since the Unix epoch (every 5m: on the five minutes of the clock).
	Every Duration `yaml:"every,omitempty" json:"every,omitempty"`
	// At is a one-shot time (RFC 3339): the job is due once.
	At time.Time `yaml:"at,omitempty" json:"at,omitzero"`
	// Timezone is the IANA zone Cron is evaluated in. Default UTC.
	Timezone string `yaml:"timezone,omitempty" json:"timezone,omitempty"`

	// Command is the wire type of the command each run publishes, e.g.
	// "orders.sweep-unpaid-orders.v1".
	Command string `yaml:"command" json:"command"`
	// Payload is a text/template that renders the command's JSON payload
	// from TemplateData, e.g. {"date": "{{ .FireTime | date }}"}.
	Payload string `yaml:"payload" json:"payload"`

	// Enabled jobs fire on their schedule; a disabled one fires only when
	// triggered by hand. Default true.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Timeout is how long a run waits for its command's outcome before the
	// attempt counts as failed (timed_out). Default 1m.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// Retry says how a run whose command was rejected or timed out is
	// tried again.
	Retry Retry `yaml:"retry" json:"retry"`
	// Block says what a scheduled time does while a run of the job is
	// still open: skip (default), queue, or parallel.
	Block Block `yaml:"block" json:"block"`
	// Misfire says what becomes of times missed while no scheduler led
	// (or while the leader was held up beyond MisfireThreshold): fire_once
	// (default: the latest missed time fires, the others are skipped),
	// fire_all (each fires, oldest first, up to MaxMisfires, and the
	// times due on time after them), skip.
	Misfire Misfire `yaml:"misfire" json:"misfire"`
	// MisfireThreshold is how late a firing may be and still count as on
	// time. Default 5s.
	MisfireThreshold Duration `yaml:"misfire_threshold" json:"misfire_threshold"`
	// MaxMisfires bounds the missed times fire_all fires, and the runs a
	// queue holds. Default 100.
	MaxMisfires int `yaml:"max_misfires" json:"max_misfires"`
}

// Retry is a job's retry policy for its command's outcome.
type Retry struct {
	// MaxAttempts counts every attempt, the first included: 1 means no
	// retry. Default 1.
	MaxAttempts int `yaml:"max_attempts" json:"max_attempts"`
	// Backoff is the wait before each retry. Default 10s.
	Backoff Duration `yaml:"backoff" json:"backoff"`
}

// Block is what a due time does while a run of its job is open.
type Block string

// Block strategies.
const (
	// BlockSkip skips the due time (recorded as a skipped run).
	BlockSkip Block = "skip"
	// BlockQueue fires it once the open runs finished, in order.
	BlockQueue Block = "queue"
	// BlockParallel fires it at once, beside the open runs.
	BlockParallel Block = "parallel"
)

// Misfire is what becomes of due times found late, after
// Job.MisfireThreshold.
type Misfire string

// Misfire policies.
const (
	// MisfireFireOnce fires once now for all the missed times: the latest
	// missed time, or, when a time is due on time as well, that one; the
	// others are skipped.
	MisfireFireOnce Misfire = "fire_once"
	// MisfireFireAll fires every missed time, oldest first, one after
	// another (in parallel with block: parallel), up to MaxMisfires; older
	// ones beyond the bound are skipped.
	MisfireFireAll Misfire = "fire_all"
	// MisfireSkip skips every missed time.
	MisfireSkip Misfire = "skip"
)

// DefaultJob is what a job's declaration starts from.
func DefaultJob() Job {
	return Job{
		Enabled:          true,
		Timeout:          Duration(time.Minute),
		Retry:            Retry{MaxAttempts: 1, Backoff: Duration(10 * time.Second)},
		Block:            BlockSkip,
		Misfire:          MisfireFireOnce,
		MisfireThreshold: Duration(5 * time.Second),
		MaxMisfires:      100,
	}
}

// Schedule returns the job's schedule. The job must be valid.
func (j Job) Schedule() (Schedule, error) {
	switch {
	case j.Cron != "":
		loc, err := j.location()
		if err != nil {
			return nil, err
		}
		return ParseCron(j.Cron, loc)
	case j.Every > 0:
		return Every{Interval: j.Every.D()}, nil
	case !j.At.IsZero():
		return At(j.At), nil
	}
	return nil, errors.New("no schedule: set one of cron, every and at")
}

// Describe says when the job is due, in a few words: "cron 0 */5 * * * *",
// "every 30s", "at 2026-12-24T18:00:00Z".
func (j Job) Describe() string {
	switch {
	case j.Cron != "":
		if j.Timezone != "" && j.Timezone != "UTC" {
			return "cron " + j.Cron + " (" + j.Timezone + ")"
		}
		return "cron " + j.Cron
	case j.Every > 0:
		return "every " + j.Every.String()
	case !j.At.IsZero():
		return "at " + j.At.UTC().Format(time.RFC3339)
	}
	return "no schedule"
}

func (j Job) location() (*time.Location, error) {
	if j.Timezone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(j.Timezone)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: want an IANA name such as Europe/Berlin", j.Timezone)
	}
	return loc, nil
}

// jobFields lists the fields of a job as configuration spells them.
func jobFields() map[string]map[string]bool {
	return map[string]map[string]bool{
		"description": nil, "cron": nil, "every": nil, "at": nil, "timezone": nil,
		"command": nil, "payload": nil, "enabled": nil, "timeout": nil,
		"retry": {"max_attempts": true, "backoff": true},
		"block": nil, "misfire": nil, "misfire_threshold": nil, "max_misfires": nil,
	}
}

// UnmarshalYAML decodes a job onto DefaultJob, refusing unknown fields.
func (j *Job) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping with a schedule (cron, every or at), command and payload", node.Line)
	}
	fields := jobFields()
	var errs []error
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, val := node.Content[i], node.Content[i+1]
		sub, ok := fields[key.Value]
		if !ok {
			errs = append(errs, fmt.Errorf("%s (line %d): unknown field; known: %s", key.Value, key.Line, known(fields)))
			continue
		}
		if sub != nil && val.Kind == yaml.MappingNode {
			for k := 0; k+1 < len(val.Content); k += 2 {
				if f := val.Content[k]; !sub[f.Value] {
					errs = append(errs, fmt.Errorf("%s.%s (line %d): unknown field; known: %s",
						key.Value, f.Value, f.Line, strings.Join(slices.Sorted(maps.Keys(sub)), ", ")))
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	type plain Job
	out := plain(DefaultJob())
	if err := node.Decode(&out); err != nil {
		return err
	}
	*j = Job(out)
	return nil
}

// UnmarshalJSON decodes a job onto DefaultJob, refusing unknown fields.
func (j *Job) UnmarshalJSON(b []byte) error {
	type plain Job
	out := plain(DefaultJob())
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		return fmt.Errorf("decode job: %w", err)
	}
	*j = Job(out)
	return nil
}

func known[V any](m map[string]V) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

// CommandCheck checks a job's command type and a payload rendered from its
// template: that the type is a command, and that the payload is one of it.
// cmd/millrace checks both against package events and the JSON Schemas.
type CommandCheck func(commandType string, payload []byte) error

// namePattern is what a job name looks like.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidateJobs reports every problem of jobs at once. Each problem is a
// *FieldError placed at the job and field, so that a configuration loader
// can name its line. The payload of each job is rendered for a sample
// firing and, when check is not nil, checked with it.
func ValidateJobs(jobs map[string]Job, check CommandCheck) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(jobs)) {
		errs = append(errs, validateJob(name, jobs[name], check)...)
	}
	return errors.Join(errs...)
}

func validateJob(name string, j Job, check CommandCheck) []error {
	var errs []error
	bad := func(field string, format string, args ...any) {
		errs = append(errs, &FieldError{Path: []string{name, field}, Err: fmt.Errorf(format, args...)})
	}
	if !namePattern.MatchString(name) {
		errs = append(errs, &FieldError{Path: []string{name},
			Err: errors.New("job name: want lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 63")})
	}
	n := 0
	for _, set := range []bool{j.Cron != "", j.Every != 0, !j.At.IsZero()} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		errs = append(errs, &FieldError{Path: []string{name}, Err: errors.New(`no schedule: set one of cron ("0 */5 * * * *"), every ("30s") and at (an RFC 3339 time)`)})
	case n > 1:
		errs = append(errs, &FieldError{Path: []string{name}, Err: errors.New("more than one schedule: set only one of cron, every and at")})
	}
	loc, err := j.location()
	if err != nil {
		bad("timezone", "%w", err)
	}
	if j.Cron != "" && loc != nil {
		if _, err := ParseCron(j.Cron, loc); err != nil {
			bad("cron", "%w", err)
		}
	}
	if j.Every < 0 || (j.Every > 0 && j.Every < Duration(time.Second)) {
		bad("every", `%s: want at least "1s"`, j.Every)
	}
	if j.Every > 0 && time.Duration(j.Every)%time.Second != 0 {
		bad("every", `%s: want whole seconds, such as "90s"`, j.Every)
	}

	if j.Command == "" {
		bad("command", "missing: name the wire type of the command each run publishes, e.g. orders.sweep-unpaid-orders.v1")
	}
	if strings.TrimSpace(j.Payload) == "" {
		bad("payload", `missing: a JSON object, with {{ .FireTime }} and the other template fields where needed, or "{}"`)
	} else if payload, err := renderSample(name, j); err != nil {
		bad("payload", "%w", err)
	} else if check != nil && j.Command != "" {
		if err := check(j.Command, payload); err != nil {
			bad("command", "%w", err)
		}
	}

	if j.Timeout <= 0 {
		bad("timeout", `%s: want a positive duration such as "1m": how long a run waits for its command's outcome`, j.Timeout)
	}
	if j.Retry.MaxAttempts < 1 || j.Retry.MaxAttempts > 100 {
		bad("retry.max_attempts", "%d: want 1 (no retry) to 100", j.Retry.MaxAttempts)
	}
	if j.Retry.Backoff < 0 {
		bad("retry.backoff", "%s: must not be negative", j.Retry.Backoff)
	}
	switch j.Block {
	case BlockSkip, BlockQueue, BlockParallel:
	default:
		bad("block", "%q: want skip, queue or parallel", j.Block)
	}
	switch j.Misfire {
	case MisfireFireOnce, MisfireFireAll, MisfireSkip:
	default:
		bad("misfire", "%q: want fire_once, fire_all or skip", j.Misfire)
	}
	if j.MisfireThreshold < 0 {
		bad("misfire_threshold", "%s: must not be negative", j.MisfireThreshold)
	}
	if j.MaxMisfires < 1 || j.MaxMisfires > 1000 {
		bad("max_misfires", "%d: want 1 to 1000", j.MaxMisfires)
	}
	return errs
}

// FieldError is a problem with one field of one job. Its ConfigPath lets
// platform/config report it at its line.
type FieldError struct {
	// Path is the job's name, then the field as configuration spells it
	// ("retry.max_attempts" is one element).
	Path []string
	Err  error
}

func (e *FieldError) Error() string        { return strings.Join(e.Path, ".") + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error        { return e.Err }
func (e *FieldError) ConfigPath() []string { return splitPath(e.Path) }

// splitPath splits dotted elements: ["x", "retry.backoff"] is
// ["x", "retry", "backoff"].
func splitPath(p []string) []string {
	var out []string
	for i, s := range p {
		if i == 0 {
			out = append(out, s) // a job name may not hold a dot, but keep it whole
			continue
		}
		out = append(out, strings.Split(s, ".")...)
	}
	return out
}

// Duration is a time.Duration written as a Go duration string ("250ms",
// "5s", "1m30s") in JSON and YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String returns d as a Go duration string.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a Go duration string such as "250ms" or "1m30s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, like \"250ms\", \"5s\" or \"1m30s\"", b)
	}
	*d = Duration(v)
	return nil
}

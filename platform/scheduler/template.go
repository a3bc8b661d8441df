package scheduler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"text/template"
	"time"
)

// TemplateData is what a job's payload template sees.
type TemplateData struct {
	// JobName is the job's name.
	JobName string
	// FireTime is the scheduled time of the run, in UTC: the same on every
	// attempt and on every instance, whenever the run actually fires. For a
	// run triggered by hand, the time it was asked for.
	FireTime time.Time
	// RunID is the run's id (the id of its first command).
	RunID string
	// Trigger is what started the run: schedule, misfire, queue or manual.
	Trigger string
}

// templateFuncs are the functions a payload template may call, besides
// text/template's own:
//
//	rfc3339 T      T as an RFC 3339 time in UTC: 2026-11-30T09:00:00Z
//	date T         T's UTC day: 2026-11-30
//	add "D" T      T plus a Go duration, which may be negative: add "-30m"
//	days N T       T plus N days (N may be negative): days -1
//	json V         V as JSON: a quoted, escaped string for a string
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"date":    func(t time.Time) string { return t.UTC().Format(time.DateOnly) },
		"add": func(d string, t time.Time) (time.Time, error) {
			v, err := time.ParseDuration(d)
			if err != nil {
				return time.Time{}, fmt.Errorf("add %q: want a Go duration such as \"-30m\"", d)
			}
			return t.Add(v), nil
		},
		"days": func(n int, t time.Time) time.Time { return t.AddDate(0, 0, n) },
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}
}

// parsePayload parses a job's payload template.
func parsePayload(name, text string) (*template.Template, error) {
	t, err := template.New(name).Option("missingkey=error").Funcs(templateFuncs()).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	return t, nil
}

// RenderPayload renders a job's payload for one firing and checks that it
// is a JSON object.
func RenderPayload(j Job, data TemplateData) ([]byte, error) {
	t, err := parsePayload(data.JobName, j.Payload)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b.Bytes(), &obj); err != nil {
		return nil, fmt.Errorf("renders %s, which is not a JSON object: %w", shorten(b.String(), 120), err)
	}
	return b.Bytes(), nil
}

// renderSample renders a job's payload for a firing at a sample time.
func renderSample(name string, j Job) ([]byte, error) {
	return RenderPayload(j, TemplateData{
		JobName:  name,
		FireTime: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC),
		RunID:    CommandID(name, time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC), 1),
		Trigger:  TriggerSchedule,
	})
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

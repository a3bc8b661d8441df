package scheduler_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/millrace/millrace/platform/scheduler"
)

func job(change func(j *scheduler.Job)) scheduler.Job {
	j := scheduler.DefaultJob()
	j.Cron = "0 */5 * * * *"
	j.Command = "orders.sweep-unpaid-orders.v1"
	j.Payload = `{"placed_before": "{{ .FireTime | add "-30m" | rfc3339 }}"}`
	if change != nil {
		change(&j)
	}
	return j
}

func TestValidateJobs(t *testing.T) {
	cases := []struct {
		name string
		job  scheduler.Job
		want []string // every fragment must appear in the error; none: valid
	}{
		{"valid cron job", job(nil), nil},
		{"valid interval job", job(func(j *scheduler.Job) { j.Cron, j.Every = "", scheduler.Duration(90*time.Second) }), nil},
		{"valid one-shot job", job(func(j *scheduler.Job) { j.Cron, j.At = "", time.Date(2026, 12, 24, 18, 0, 0, 0, time.UTC) }), nil},
		{"cron without seconds", job(func(j *scheduler.Job) { j.Cron = "*/5 * * * *" }),
			[]string{"nightly.cron:", `"*/5 * * * *" has 5 fields, want 6`, "seconds minutes hours day-of-month month day-of-week"}},
		{"minute out of range", job(func(j *scheduler.Job) { j.Cron = "0 61 * * * *" }),
			[]string{"nightly.cron:", `the minutes field "61"`, "above maximum (59)"}},
		{"garbage in day of week", job(func(j *scheduler.Job) { j.Cron = "0 0 9 * * MOX" }),
			[]string{"nightly.cron:", `the day-of-week field "MOX"`}},
		{"unknown descriptor", job(func(j *scheduler.Job) { j.Cron = "@fortnightly" }), []string{"nightly.cron:", "known descriptors"}},
		{"no schedule", job(func(j *scheduler.Job) { j.Cron = "" }), []string{"nightly: no schedule"}},
		{"two schedules", job(func(j *scheduler.Job) { j.Every = scheduler.Duration(time.Minute) }), []string{"more than one schedule"}},
		{"sub-second interval", job(func(j *scheduler.Job) { j.Cron, j.Every = "", scheduler.Duration(500*time.Millisecond) }), []string{"nightly.every:", "at least"}},
		{"unknown time zone", job(func(j *scheduler.Job) { j.Timezone = "Mars/Olympus" }), []string{"nightly.timezone:", "IANA"}},
		{"payload not JSON", job(func(j *scheduler.Job) { j.Payload = `{"at": {{ .FireTime | rfc3339 }}}` }), []string{"nightly.payload:", "not a JSON object"}},
		{"payload names an unknown field", job(func(j *scheduler.Job) { j.Payload = `{"at": "{{ .Fire }}"}` }), []string{"nightly.payload:", "Fire"}},
		{"every problem at once", job(func(j *scheduler.Job) {
			j.Cron, j.Command, j.Timeout, j.Block, j.Misfire = "0 0 25 * * *", "", 0, "wait", "later"
			j.Retry.MaxAttempts = 0
		}), []string{`the hours field "25"`, "nightly.command: missing", "nightly.timeout:", "nightly.retry.max_attempts: 0", `nightly.block: "wait"`, `nightly.misfire: "later"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := scheduler.ValidateJobs(map[string]scheduler.Job{"nightly": c.job}, nil)
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("valid job refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("job accepted, want it refused with %q", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			var fe *scheduler.FieldError
			if !errors.As(err, &fe) || fe.Path[0] != "nightly" {
				t.Errorf("error %v is not a FieldError placed at the job", err)
			}
		})
	}
}

func TestValidateJobsChecksTheCommand(t *testing.T) {
	check := func(typ string, payload []byte) error {
		if typ != "orders.sweep-unpaid-orders.v1" {
			return errors.New("unknown command type " + typ)
		}
		if !strings.Contains(string(payload), `"placed_before": "2026-11-30T08:30:00Z"`) {
			return errors.New("unexpected payload " + string(payload))
		}
		return nil
	}
	if err := scheduler.ValidateJobs(map[string]scheduler.Job{"sweep": job(nil)}, check); err != nil {
		t.Fatalf("valid job refused: %v", err)
	}
	bad := job(func(j *scheduler.Job) { j.Command = "orders.nope.v1" })
	err := scheduler.ValidateJobs(map[string]scheduler.Job{"sweep": bad}, check)
	if err == nil || !strings.Contains(err.Error(), "sweep.command: unknown command type orders.nope.v1") {
		t.Fatalf("error = %v, want the check's verdict placed at sweep.command", err)
	}
}

func TestDecodeJob(t *testing.T) {
	cases := []struct {
		name, doc string
		check     func(t *testing.T, j scheduler.Job)
		wantErr   string
	}{
		{"defaults fill what is left out", `{every: 30s, command: a.b.v1, payload: "{}"}`, func(t *testing.T, j scheduler.Job) {
			if !j.Enabled || j.Block != scheduler.BlockSkip || j.Misfire != scheduler.MisfireFireOnce || j.Retry.MaxAttempts != 1 || j.Timeout.D() != time.Minute {
				t.Errorf("decoded %+v, want the defaults beside every", j)
			}
			if j.Every.D() != 30*time.Second {
				t.Errorf("every = %s, want 30s", j.Every)
			}
		}, ""},
		{"disabled and retried", "cron: '0 0 * * * *'\ncommand: a.b.v1\npayload: '{}'\nenabled: false\nretry: {max_attempts: 3, backoff: 2s}\n", func(t *testing.T, j scheduler.Job) {
			if j.Enabled || j.Retry.MaxAttempts != 3 || j.Retry.Backoff.D() != 2*time.Second {
				t.Errorf("decoded %+v", j)
			}
		}, ""},
		{"unknown field", "cron: '0 0 * * * *'\ncomand: a.b.v1\n", nil, "comand (line 2): unknown field"},
		{"unknown retry field", "every: 1m\nretry: {attempts: 3}\n", nil, "retry.attempts (line 2): unknown field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var j scheduler.Job
			err := yaml.Unmarshal([]byte(c.doc), &j)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, j)
		})
	}
}

func TestSchedules(t *testing.T) {
	base := time.Date(2026, 11, 30, 9, 0, 3, 0, time.UTC)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		job  scheduler.Job
		want []time.Time
	}{
		{"cron with seconds", job(func(j *scheduler.Job) { j.Cron = "*/20 * * * * *" }),
			[]time.Time{base.Add(17 * time.Second), base.Add(37 * time.Second), base.Add(57 * time.Second)}},
		{"cron in a time zone", job(func(j *scheduler.Job) { j.Cron, j.Timezone = "0 0 9 * * *", "Europe/Berlin" }),
			[]time.Time{time.Date(2026, 12, 1, 9, 0, 0, 0, berlin).UTC(), time.Date(2026, 12, 2, 9, 0, 0, 0, berlin).UTC()}},
		{"every on multiples since the epoch", job(func(j *scheduler.Job) { j.Cron, j.Every = "", scheduler.Duration(5*time.Minute) }),
			[]time.Time{base.Add(5*time.Minute - 3*time.Second), base.Add(10*time.Minute - 3*time.Second)}},
		{"one shot", job(func(j *scheduler.Job) { j.Cron, j.At = "", base.Add(time.Hour) }), []time.Time{base.Add(time.Hour), {}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := c.job.Schedule()
			if err != nil {
				t.Fatal(err)
			}
			at := base
			for i, want := range c.want {
				got := s.Next(at)
				if !got.Equal(want) {
					t.Fatalf("time %d = %s, want %s", i+1, got, want)
				}
				at = got
			}
		})
	}
}

func TestRenderPayload(t *testing.T) {
	j := job(func(j *scheduler.Job) {
		j.Payload = `{"job": {{ json .JobName }}, "day": "{{ .FireTime | days -1 | date }}", "before": "{{ .FireTime | add "-30m" | rfc3339 }}", "run": "{{ .RunID }}"}`
	})
	got, err := scheduler.RenderPayload(j, scheduler.TemplateData{
		JobName: `report "daily"`, FireTime: time.Date(2026, 12, 1, 0, 5, 0, 0, time.UTC), RunID: "r-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"job": "report \"daily\"", "day": "2026-11-30", "before": "2026-11-30T23:35:00Z", "run": "r-1"}`
	if string(got) != want {
		t.Fatalf("payload = %s, want %s", got, want)
	}
}

func TestCommandIDs(t *testing.T) {
	at := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	first := scheduler.CommandID("sweep", at, 1)
	cases := []struct {
		name string
		id   string
		same bool
	}{
		{"same job and time, in another zone", scheduler.CommandID("sweep", at.In(time.FixedZone("X", 3600)), 1), true},
		{"another attempt", scheduler.CommandID("sweep", at, 2), false},
		{"another time", scheduler.CommandID("sweep", at.Add(time.Nanosecond), 1), false},
		{"another job", scheduler.CommandID("report", at, 1), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if (c.id == first) != c.same {
				t.Errorf("id %s vs %s: same = %v, want %v", c.id, first, c.id == first, c.same)
			}
		})
	}
	if len(first) != 36 || first[14] != '5' {
		t.Errorf("id %q is not a version 5 UUID", first)
	}
}

// TestStoreConflicts checks compare-and-set on the SQLite store; the
// Consul store's is checked by TestConsul's cases, which share one store
// between instances.
func TestStoreConflicts(t *testing.T) {
	s := newSQLiteStore(t)
	ctx := context.Background()
	st, v, err := s.Load(ctx, "j")
	if err != nil || v != 0 || !st.Last.IsZero() {
		t.Fatalf("load of a new job = %+v, %d, %v; want the zero record at version 0", st, v, err)
	}
	st.Last = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.Save(ctx, "j", st, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, "j", st, 0); !errors.Is(err, scheduler.ErrConflict) {
		t.Fatalf("second create = %v, want ErrConflict", err)
	}
	got, v, err := s.Load(ctx, "j")
	if err != nil || v != 1 || !got.Last.Equal(st.Last) {
		t.Fatalf("load = %+v, %d, %v", got, v, err)
	}
	if err := s.Save(ctx, "j", got, 7); !errors.Is(err, scheduler.ErrConflict) {
		t.Fatalf("save at a stale version = %v, want ErrConflict", err)
	}
	if err := s.Save(ctx, "j", got, v); err != nil {
		t.Fatalf("save at the current version = %v", err)
	}
}

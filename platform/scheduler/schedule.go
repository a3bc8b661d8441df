package scheduler

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule gives the times a job is due.
type Schedule interface {
	// Next returns the first time the job is due strictly after t, or the
	// zero time when it is never due again (a one-shot job that passed).
	Next(t time.Time) time.Time
}

// cronFieldNames names the six fields of a cron expression, seconds first.
func cronFieldNames() []string {
	return []string{"seconds", "minutes", "hours", "day-of-month", "month", "day-of-week"}
}

// newCronParser reads cron expressions with a seconds field first, and the
// descriptors @yearly, @monthly, @weekly, @daily, @hourly.
func newCronParser() cron.Parser {
	return cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}

// ParseCron parses a cron expression with seconds in loc (UTC when nil).
// Its error names the field that is wrong and what it holds, e.g.
// `the minutes field "61": end of range (61) above maximum (59)`.
func ParseCron(expr string, loc *time.Location) (Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	expr = strings.TrimSpace(expr)
	if expr == "" {
		return nil, fmt.Errorf(`empty; want six fields, %s, e.g. "0 */5 * * * *"`, strings.Join(cronFieldNames(), " "))
	}
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, fmt.Errorf("%q: give the time zone in the job's timezone field, not in the expression", expr)
	}
	cronFields := cronFieldNames()
	p := newCronParser()
	if strings.HasPrefix(expr, "@") {
		if strings.HasPrefix(expr, "@every") {
			return nil, fmt.Errorf("%q: use the job's every field for a fixed interval", expr)
		}
		s, err := p.Parse(expr)
		if err != nil {
			return nil, fmt.Errorf("%q: %w; known descriptors: @yearly, @monthly, @weekly, @daily, @hourly", expr, err)
		}
		return inLocation{s, loc}, nil
	}
	fields := strings.Fields(expr)
	if len(fields) != len(cronFields) {
		return nil, fmt.Errorf(`%q has %d fields, want 6: %s (the first is seconds), e.g. "0 */5 * * * *"`,
			expr, len(fields), strings.Join(cronFields, " "))
	}
	// Parse each field in an expression that is valid otherwise, so that
	// the error can name the field.
	base := []string{"0", "0", "0", "1", "1", "*"}
	for i, f := range fields {
		probe := append([]string(nil), base...)
		probe[i] = f
		if _, err := p.Parse(strings.Join(probe, " ")); err != nil {
			return nil, fmt.Errorf("the %s field %q: %w", cronFields[i], f, err)
		}
	}
	s, err := p.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", expr, err)
	}
	return inLocation{s, loc}, nil
}

// inLocation evaluates a cron schedule in a time zone.
type inLocation struct {
	s   cron.Schedule
	loc *time.Location
}

func (c inLocation) Next(t time.Time) time.Time {
	n := c.s.Next(t.In(c.loc))
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// Every is due every Interval, at Anchor + k×Interval for every whole k:
// the times are the same on every instance, whenever it starts. The zero
// Anchor is the Unix epoch, so an interval of 5m is due on the five
// minutes of the clock.
type Every struct {
	Interval time.Duration
	Anchor   time.Time
}

// Next implements Schedule.
func (e Every) Next(t time.Time) time.Time {
	anchor := e.Anchor
	if anchor.IsZero() {
		anchor = time.Unix(0, 0)
	}
	if t.Before(anchor) {
		return anchor.UTC()
	}
	k := t.Sub(anchor) / e.Interval
	n := anchor.Add((k + 1) * e.Interval)
	return n.UTC()
}

// At is due once, at its time.
type At time.Time

// Next implements Schedule.
func (a At) Next(t time.Time) time.Time {
	if at := time.Time(a); t.Before(at) {
		return at.UTC()
	}
	return time.Time{}
}

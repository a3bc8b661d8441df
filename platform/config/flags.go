package config

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"sync/atomic"
)

// Flag declares a feature flag: a switch that code reads with
// Flags.Enabled and that the configuration turns on or off while the
// process runs (the features section of millrace's rules).
type Flag struct {
	// Name is how the configuration names it: lower-case letters, digits
	// and single underscores, e.g. gateway_prefer_wait (so that an
	// environment variable can name it too).
	Name string
	// Description says what it switches, for docs and messages.
	Description string
	// Default is its value when the configuration does not name it.
	Default bool
}

var flagNameRE = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// Flags are the feature flags in force. Code that a flag switches takes a
// *Flags (or a one-method interface it declares, Enabled(string) bool) and
// asks at the moment it decides; the configuration's apply function calls
// Set. Flags is safe for concurrent use; Enabled is a lock-free read.
type Flags struct {
	declared []Flag
	byName   map[string]Flag
	on       atomic.Pointer[map[string]bool]
}

// NewFlags declares the flags a process knows, each at its default.
func NewFlags(declared ...Flag) (*Flags, error) {
	f := &Flags{byName: map[string]Flag{}}
	var errs []error
	for _, d := range declared {
		switch {
		case !flagNameRE.MatchString(d.Name):
			errs = append(errs, fmt.Errorf("feature flag %q: use lower-case letters, digits and single underscores, e.g. gateway_prefer_wait", d.Name))
		case f.byName[d.Name] != (Flag{}):
			errs = append(errs, fmt.Errorf("feature flag %q: declared twice", d.Name))
		default:
			f.byName[d.Name] = d
			f.declared = append(f.declared, d)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("declare feature flags: %w", err)
	}
	on := f.Defaults()
	f.on.Store(&on)
	return f, nil
}

// Declared lists the flags, in the order declared.
func (f *Flags) Declared() []Flag { return append([]Flag(nil), f.declared...) }

// Defaults returns every flag at its default.
func (f *Flags) Defaults() map[string]bool {
	out := make(map[string]bool, len(f.declared))
	for _, d := range f.declared {
		out[d.Name] = d.Default
	}
	return out
}

// Enabled reports whether flag name is on. A name that was not declared
// is off.
func (f *Flags) Enabled(name string) bool {
	return (*f.on.Load())[name]
}

// Values returns every flag's value in force.
func (f *Flags) Values() map[string]bool { return maps.Clone(*f.on.Load()) }

// Check reports every name of values that is not a declared flag, each as
// a problem at its key, so that a misspelt flag is refused instead of
// ignored.
func (f *Flags) Check(values map[string]bool) error {
	var errs []error
	for _, name := range sortedKeys(values) {
		if _, ok := f.byName[name]; !ok {
			errs = append(errs, &flagError{name: name, known: f.names()})
		}
	}
	return errors.Join(errs...)
}

// Set puts values in force: each flag it names takes its value, every
// other flag its default. It refuses values with an unknown name (Check)
// and changes nothing then.
func (f *Flags) Set(values map[string]bool) error {
	if err := f.Check(values); err != nil {
		return err
	}
	on := f.Defaults()
	maps.Copy(on, values)
	f.on.Store(&on)
	return nil
}

func (f *Flags) names() string {
	names := make([]string, len(f.declared))
	for i, d := range f.declared {
		names[i] = d.Name
	}
	if len(names) == 0 {
		return "none are declared"
	}
	return "known: " + strings.Join(names, ", ")
}

// flagError is an unknown flag, placed at its key.
type flagError struct {
	name, known string
}

func (e *flagError) Error() string {
	return fmt.Sprintf("%s: unknown feature flag; %s", FormatPath([]string{e.name}), e.known)
}

func (e *flagError) ConfigPath() []string { return []string{e.name} }

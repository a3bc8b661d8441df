package schema

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Limits on numeric literals (json.Number) that Validate evaluates. The
// schema library compares numbers as exact rationals: a literal of a million
// digits, or 1e1000000, costs it a second or more per keyword, and an
// exponent beyond about a million makes it crash. Numbers beyond these limits
// are far outside float64 and int64, so no real document needs them.
const (
	maxNumberLength   = 400
	maxNumberExponent = 400
)

// checkNumbers walks a decoded document and reports every json.Number that
// Validate will not evaluate (Rule "number"). It fails when a json.Number is
// not a JSON number at all, which decoding never produces: the caller built
// the value by hand.
func checkNumbers(v any, ptr string, c *collector) {
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			checkNumbers(val, child(ptr, k), c)
		}
	case []any:
		for i, val := range v {
			checkNumbers(val, child(ptr, strconv.Itoa(i)), c)
		}
	case json.Number:
		exp, ok := parseNumber(string(v))
		switch {
		case !ok:
			if c.err == nil {
				c.err = fmt.Errorf("value at %q is json.Number(%q), which is not a JSON number", ptr, string(v))
			}
		case len(v) > maxNumberLength || exp > maxNumberExponent || exp < -maxNumberExponent:
			c.add(ptr, "number", fmt.Sprintf("number is too long or too large: at most %d characters and an exponent between -%d and %d", maxNumberLength, maxNumberExponent, maxNumberExponent))
		}
	}
}

// parseNumber checks s against the JSON number grammar
// (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?) and returns its exponent,
// saturated well beyond the limits.
func parseNumber(s string) (exp int, ok bool) {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = digits(s, i)
	default:
		return 0, false
	}
	if i < len(s) && s[i] == '.' {
		j := digits(s, i+1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		sign := 1
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			if s[i] == '-' {
				sign = -1
			}
			i++
		}
		j := digits(s, i)
		if j == i {
			return 0, false
		}
		for _, d := range s[i:j] {
			if exp < 1_000_000 {
				exp = exp*10 + int(d-'0')
			}
		}
		exp *= sign
		i = j
	}
	return exp, i == len(s)
}

func digits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

package gateway

import (
	"fmt"
	"net/http"
)

// MaxJSONDepth is how deeply a request body's arrays and objects may nest.
// No command comes near it; a deeper body is refused before it is parsed,
// so that it cannot make parsing and schema validation recurse.
const MaxJSONDepth = 32

// ProblemTooDeep (400): the request body nests deeper than MaxJSONDepth.
const ProblemTooDeep = problemBase + "json-too-deep"

// tooDeepError: the body nests deeper than the limit.
type tooDeepError struct {
	max    int
	offset int64
}

func (e *tooDeepError) Error() string {
	return fmt.Sprintf("JSON nests deeper than %d levels at byte offset %d", e.max, e.offset)
}

func (e *tooDeepError) problem() problem {
	off := e.offset
	return problem{
		Type: ProblemTooDeep, Title: "JSON nested too deeply", Status: http.StatusBadRequest,
		Detail: fmt.Sprintf("The request body nests arrays and objects deeper than %d levels (at byte offset %d), the most the gateway accepts. "+
			"Send a flatter document; no command needs more.", e.max, e.offset),
		Offset:   &off,
		MaxDepth: e.max,
	}
}

// checkDepth scans body for arrays and objects nested deeper than max,
// outside strings. It does not check the syntax: decodeJSON does.
func checkDepth(body []byte, max int) error {
	depth := 0
	inString, escaped := false, false
	for i, c := range body {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > max {
				return &tooDeepError{max: max, offset: int64(i)}
			}
		case '}', ']':
			depth--
		}
	}
	return nil
}

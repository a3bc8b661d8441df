package config

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// ParsePath reads a key path as millrace writes them in its messages:
// keys joined by dots, list indexes and keys that are not plain words in
// brackets, the latter quoted:
//
//	gateway.max_in_flight
//	gateway.rate_limits[0].burst
//	router.handlers["notifications.orders.events"].retry.max_attempts
//
// A plain key made of digits (rate_limits.0) is an index too where the
// document has a list.
func ParsePath(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("key path is empty; write one like gateway.max_in_flight")
	}
	var path []string
	i := 0
	for i < len(s) {
		switch {
		case s[i] == '[':
			end := strings.IndexByte(s[i:], ']')
			if i+1 < len(s) && s[i+1] == '"' {
				q, err := strconv.QuotedPrefix(s[i+1:])
				if err != nil {
					return nil, fmt.Errorf("key path %q: a quoted key at %d does not end; write it like [\"a.b\"]", s, i)
				}
				key, _ := strconv.Unquote(q)
				i += 1 + len(q)
				if i >= len(s) || s[i] != ']' {
					return nil, fmt.Errorf("key path %q: expected ] after the quoted key at %d", s, i)
				}
				path = append(path, key)
				i++
			} else {
				if end < 0 {
					return nil, fmt.Errorf("key path %q: [ at %d is not closed", s, i)
				}
				inner := s[i+1 : i+end]
				if _, ok := index(inner); !ok {
					return nil, fmt.Errorf("key path %q: [%s] is neither a list index nor a quoted key; quote keys: [\"%s\"]", s, inner, inner)
				}
				path = append(path, inner)
				i += end + 1
			}
			if i < len(s) && s[i] == '.' {
				i++
				if i == len(s) {
					return nil, fmt.Errorf("key path %q ends with a dot", s)
				}
			}
		case s[i] == '.':
			return nil, fmt.Errorf("key path %q: empty key at %d", s, i)
		default:
			end := strings.IndexAny(s[i:], ".[")
			if end < 0 {
				end = len(s) - i
			}
			path = append(path, s[i:i+end])
			i += end
			if i < len(s) && s[i] == '.' {
				i++
				if i == len(s) {
					return nil, fmt.Errorf("key path %q ends with a dot", s)
				}
			}
		}
	}
	return path, nil
}

// FormatPath writes a path as ParsePath reads it, as the errors of
// validation name places: rate_limits[0].burst,
// timeouts.routes["GET /v1/orders/{id}"].
func FormatPath(path []string) string {
	var b strings.Builder
	for i, seg := range path {
		switch {
		case isIndexSeg(seg):
			b.WriteString("[" + seg + "]")
		case isPlainKey(seg):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(seg)
		default:
			b.WriteString("[" + strconv.Quote(seg) + "]")
		}
	}
	return b.String()
}

func isIndexSeg(s string) bool { _, ok := index(s); return ok }

// index reads a list index: decimal digits only.
func index(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func isPlainKey(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// lookup returns the node at path under n.
func lookup(n *yaml.Node, path []string) (*yaml.Node, bool) {
	n = resolveAlias(rootOf(n))
	for _, seg := range path {
		if n == nil {
			return nil, false
		}
		next, _ := child(n, seg)
		if next == nil {
			return nil, false
		}
		n = resolveAlias(next)
	}
	return n, n != nil
}

// setPath puts value at path under root, a mapping, creating the mappings
// on the way. A list on the way must hold the index named.
func setPath(root *yaml.Node, path []string, value *yaml.Node) error {
	n := root
	for i, seg := range path {
		last := i == len(path)-1
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == seg {
					found = true
					if last {
						keepComments(value, n.Content[j+1])
						n.Content[j+1] = value
						return nil
					}
					next := resolveAlias(n.Content[j+1])
					if next.Kind != yaml.MappingNode && next.Kind != yaml.SequenceNode {
						next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
						n.Content[j+1] = next
					}
					n = next
					break
				}
			}
			if !found {
				if last {
					n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: seg}, value)
					return nil
				}
				next := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: seg}, next)
				n = next
			}
		case yaml.SequenceNode:
			idx, ok := index(seg)
			if !ok || idx >= len(n.Content) {
				return fmt.Errorf("%s is a list of %d items: name an item by its index, 0 to %d",
					FormatPath(path[:i]), len(n.Content), len(n.Content)-1)
			}
			if last {
				keepComments(value, n.Content[idx])
				n.Content[idx] = value
				return nil
			}
			n = resolveAlias(n.Content[idx])
			if n.Kind != yaml.MappingNode && n.Kind != yaml.SequenceNode {
				return fmt.Errorf("%s is a single value, not a mapping", FormatPath(path[:i+1]))
			}
		default:
			return fmt.Errorf("%s is a single value, not a mapping", FormatPath(path[:i]))
		}
	}
	return nil
}

// keepComments moves the comments of the node replaced to its replacement.
func keepComments(to, from *yaml.Node) {
	if to.HeadComment == "" {
		to.HeadComment = from.HeadComment
	}
	if to.LineComment == "" {
		to.LineComment = from.LineComment
	}
	if to.FootComment == "" {
		to.FootComment = from.FootComment
	}
}

// unsetPath removes the key at path under root. It reports whether there
// was one.
func unsetPath(root *yaml.Node, path []string) bool {
	parent, ok := lookup(root, path[:len(path)-1])
	if !ok {
		return false
	}
	last := path[len(path)-1]
	switch parent.Kind {
	case yaml.MappingNode:
		for j := 0; j+1 < len(parent.Content); j += 2 {
			if parent.Content[j].Value == last {
				parent.Content = append(parent.Content[:j], parent.Content[j+2:]...)
				return true
			}
		}
	case yaml.SequenceNode:
		if idx, ok := index(last); ok && idx < len(parent.Content) {
			parent.Content = append(parent.Content[:idx], parent.Content[idx+1:]...)
			return true
		}
	}
	return false
}

// parseValue reads a value given on a command line as YAML: 64, 2s, true,
// "a string", [1, 2], {rate: 5, burst: 10}. An empty string is the empty
// string.
func parseValue(s string) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(s), &doc); err != nil {
		return nil, fmt.Errorf("value %q is not YAML: %s; quote a string that YAML reads otherwise", s, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	v := rootOf(&doc)
	if v == nil {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "", Style: yaml.DoubleQuotedStyle}, nil
	}
	v = copyNode(v)
	clearPositions(v)
	return v, nil
}

func clearPositions(n *yaml.Node) {
	n.Line, n.Column = 0, 0
	for _, c := range n.Content {
		clearPositions(c)
	}
}

// editDocument sets (or, with unset, removes) the value at path in a
// document and returns the new document. Replacing a value written on one
// line by a single value edits that line alone, so that the rest of the
// document stays as it was written; anything else re-encodes the document
// (YAML keeps its comments). A nil data is an empty document.
func editDocument(format Format, data []byte, path []string, value string, unset bool) ([]byte, error) {
	var doc yaml.Node
	if len(bytes.TrimSpace(data)) > 0 {
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("read the document to edit: %w", err)
		}
	}
	root := rootOf(&doc)
	if doc.Kind == 0 || root == nil {
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}
	}
	if root.Kind != yaml.MappingNode {
		return nil, errors.New("the document is not a mapping of settings; fix it by hand first")
	}
	if unset {
		if !unsetPath(root, path) {
			return nil, fmt.Errorf("%s is not set in the document; nothing to remove", FormatPath(path))
		}
		return encodeAs(format, &doc)
	}
	v, err := parseValue(value)
	if err != nil {
		return nil, err
	}
	if old, ok := lookup(root, path); ok {
		if out, ok := spliceScalar(format, data, old, v); ok {
			return out, nil
		}
	}
	if err := setPath(root, path, v); err != nil {
		return nil, err
	}
	return encodeAs(format, &doc)
}

// encodeAs writes a document tree in format.
func encodeAs(format Format, doc *yaml.Node) ([]byte, error) {
	if format == JSON {
		return nodeJSON(doc, true)
	}
	return encodeYAML(doc)
}

// spliceScalar replaces the text of the scalar old, written on one line of
// data, with the scalar v. It reports false when it cannot do so safely.
func spliceScalar(format Format, data []byte, old, v *yaml.Node) ([]byte, bool) {
	if old.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode || old.Line < 1 || old.Column < 1 {
		return nil, false
	}
	var text string
	if format == JSON {
		b, err := nodeJSON(v, false)
		if err != nil {
			return nil, false
		}
		text = string(b)
	} else {
		b, err := yaml.Marshal(v)
		if err != nil {
			return nil, false
		}
		text = strings.TrimSuffix(string(b), "\n")
	}
	if strings.Contains(text, "\n") {
		return nil, false
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if old.Line > len(lines) {
		return nil, false
	}
	line := lines[old.Line-1]
	// Column counts characters.
	start := 0
	for c := 1; c < old.Column; c++ {
		if start >= len(line) {
			return nil, false
		}
		_, size := utf8.DecodeRune(line[start:])
		start += size
	}
	n := scalarLen(line[start:], old)
	if n <= 0 {
		return nil, false
	}
	var out bytes.Buffer
	for i, l := range lines {
		if i == old.Line-1 {
			out.Write(line[:start])
			out.WriteString(text)
			out.Write(line[start+n:])
			continue
		}
		out.Write(l)
	}
	return out.Bytes(), true
}

// scalarLen returns how many bytes at the start of rest are the scalar n,
// written on that one line, or 0 when rest does not start with it.
func scalarLen(rest []byte, n *yaml.Node) int {
	switch n.Style {
	case 0:
		if bytes.HasPrefix(rest, []byte(n.Value)) {
			after := rest[len(n.Value):]
			if len(after) == 0 || after[0] == ' ' || after[0] == '\n' || after[0] == '\r' || after[0] == ',' || after[0] == '}' || after[0] == ']' || after[0] == '#' {
				return len(n.Value)
			}
		}
	case yaml.DoubleQuotedStyle:
		if len(rest) > 0 && rest[0] == '"' {
			for i := 1; i < len(rest); i++ {
				switch rest[i] {
				case '\\':
					i++
				case '"':
					return i + 1
				case '\n':
					return 0
				}
			}
		}
	case yaml.SingleQuotedStyle:
		if len(rest) > 0 && rest[0] == '\'' {
			for i := 1; i < len(rest); i++ {
				switch rest[i] {
				case '\'':
					if i+1 < len(rest) && rest[i+1] == '\'' {
						i++
						continue
					}
					return i + 1
				case '\n':
					return 0
				}
			}
		}
	}
	return 0
}

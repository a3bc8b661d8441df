package config

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/millrace/millrace/platform/auth/secret"
)

// Redacted is what a secret prints as (secret.Redacted). A field is secret
// when its type is secret.String or its struct tag says secret:"true":
//
//	Token secret.String `yaml:"token" json:"token"`
//	Token string        `yaml:"token" json:"token" secret:"true"`
//
// Its value never leaves the process through this package: `config get`,
// the admin API and the history of changes show it as Redacted, and a
// history record notes only that it changed.
const Redacted = secret.Redacted

// secretPaths lists the paths of the fields of t tagged secret:"true"; "*"
// stands for any key of a map or index of a list.
func secretPaths(t reflect.Type) [][]string {
	var out [][]string
	var walk func(t reflect.Type, path []string, depth int)
	walk = func(t reflect.Type, path []string, depth int) {
		if t == nil || depth > maxDepth {
			return
		}
		t = deref(t)
		if isLeafType(t) {
			return
		}
		switch t.Kind() {
		case reflect.Struct:
			for i := range t.NumField() {
				f := t.Field(i)
				name, ok := yamlName(f)
				if !ok {
					continue
				}
				p := append(slices.Clip(path), name)
				if f.Tag.Get("secret") == "true" || deref(f.Type) == secretStringType {
					out = append(out, p)
					continue
				}
				walk(f.Type, p, depth+1)
			}
		case reflect.Map, reflect.Slice, reflect.Array:
			walk(t.Elem(), append(slices.Clip(path), "*"), depth+1)
		}
	}
	walk(t, nil, 0)
	return out
}

// maxDepth bounds how deep the walks over a configuration type go.
const maxDepth = 16

var (
	yamlUnmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	timeType            = reflect.TypeFor[time.Time]()
	secretStringType    = reflect.TypeFor[secret.String]()
)

// isLeafType reports types decoded as one value whatever their kind.
func isLeafType(t reflect.Type) bool {
	if t == timeType {
		return true
	}
	pt := reflect.PointerTo(t)
	return pt.Implements(yamlUnmarshalerType) || pt.Implements(textUnmarshalerType) ||
		t.Implements(yamlUnmarshalerType) || t.Implements(textUnmarshalerType)
}

// redactNode replaces the value of every secret under root with Redacted
// and returns the values it replaced, keyed by their path (FormatPath).
// Null and empty values are left as they are: they say no secret is set.
func redactNode(root *yaml.Node, secrets [][]string) map[string]string {
	found := map[string]string{}
	for _, sp := range secrets {
		visitPath(rootOf(root), sp, nil, func(n *yaml.Node, path []string) {
			n = resolveAlias(n)
			if n.Kind == yaml.ScalarNode && (isNull(n) || n.Value == "") {
				return
			}
			var raw string
			if n.Kind == yaml.ScalarNode {
				raw = n.Value
			} else {
				b, _ := yaml.Marshal(n)
				raw = string(b)
			}
			found[FormatPath(path)] = raw
			*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: Redacted, Style: yaml.DoubleQuotedStyle,
				HeadComment: n.HeadComment, LineComment: n.LineComment, FootComment: n.FootComment, Line: n.Line, Column: n.Column}
		})
	}
	return found
}

// visitPath calls fn with every node matching pattern under n ("*" matches
// every key or index) and its concrete path.
func visitPath(n *yaml.Node, pattern, at []string, fn func(*yaml.Node, []string)) {
	n = resolveAlias(n)
	if n == nil {
		return
	}
	if len(pattern) == 0 {
		fn(n, at)
		return
	}
	seg, rest := pattern[0], pattern[1:]
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if seg == "*" || n.Content[i].Value == seg {
				if n.Content[i].Value == "<<" {
					continue
				}
				visitPath(n.Content[i+1], rest, append(slices.Clip(at), n.Content[i].Value), fn)
			}
		}
	case yaml.SequenceNode:
		if seg == "*" {
			for i, c := range n.Content {
				visitPath(c, rest, append(slices.Clip(at), strconv.Itoa(i)), fn)
			}
		}
	}
}

// redactDocument returns a document with its secrets replaced by Redacted,
// and the secrets' values by path. A document without secrets comes back
// as it is, byte for byte; one with secrets is re-encoded (YAML keeps its
// comments).
func redactDocument(format Format, data []byte, secrets [][]string) ([]byte, map[string]string, error) {
	if len(secrets) == 0 || len(bytes.TrimSpace(data)) == 0 {
		return data, nil, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// A document that does not parse was refused; it may still hold a
		// secret, so none of it is shown.
		return []byte("# (not shown: the document does not parse)\n"), nil, nil
	}
	found := redactNode(&doc, secrets)
	if len(found) == 0 {
		return data, nil, nil
	}
	out, err := encodeAs(format, &doc)
	if err != nil {
		return nil, nil, err
	}
	return out, found, nil
}

// withSecrets returns a document, redacted or not, with exactly the secrets
// given (path → value) and no other: what a rollback writes, so that it
// restores every setting but the secrets, which stay as they are now.
func withSecrets(format Format, data []byte, secrets [][]string, values map[string]string) ([]byte, error) {
	var doc yaml.Node
	if len(bytes.TrimSpace(data)) > 0 {
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("read the document: %w", err)
		}
	}
	root := rootOf(&doc)
	if doc.Kind == 0 || root == nil {
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}
	}
	var remove [][]string
	for _, sp := range secrets {
		visitPath(root, sp, nil, func(_ *yaml.Node, path []string) { remove = append(remove, path) })
	}
	for _, p := range remove {
		unsetPath(root, p)
	}
	for _, k := range sortedKeys(values) {
		path, err := ParsePath(k)
		if err != nil {
			return nil, err
		}
		v, err := parseValue(values[k])
		if err != nil {
			// Keep the secret as the string it is.
			v = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: values[k], Style: yaml.DoubleQuotedStyle}
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!str" {
			v.Style = yaml.DoubleQuotedStyle
		}
		if err := setPath(root, path, v); err != nil {
			return nil, err
		}
	}
	return encodeAs(format, &doc)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// effectiveNode encodes a configuration value as a YAML tree, secrets
// redacted.
func effectiveNode(v any, secrets [][]string) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, fmt.Errorf("encode the configuration: %w", err)
	}
	redactNode(&n, secrets)
	return &n, nil
}

// nodeJSON writes a YAML tree as JSON, keys in the order written;
// indented when indent is set. Durations and other strings stay strings.
func nodeJSON(n *yaml.Node, indent bool) ([]byte, error) {
	var b bytes.Buffer
	if err := writeNodeJSON(&b, rootOf(n)); err != nil {
		return nil, err
	}
	if !indent {
		return b.Bytes(), nil
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

func writeNodeJSON(b *bytes.Buffer, n *yaml.Node) error {
	n = resolveAlias(n)
	if n == nil {
		b.WriteString("null")
		return nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, n.Content[i].Value)
			b.WriteByte(':')
			if err := writeNodeJSON(b, n.Content[i+1]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeNodeJSON(b, c); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("encode JSON: line %d: %w", n.Line, err)
		}
		switch x := v.(type) {
		case nil:
			b.WriteString("null")
		case bool:
			b.WriteString(strconv.FormatBool(x))
		case int, int64, uint64:
			fmt.Fprint(b, x)
		case float64:
			if math.IsInf(x, 0) || math.IsNaN(x) {
				writeJSONString(b, n.Value)
			} else {
				b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
			}
		default:
			writeJSONString(b, n.Value)
		}
	default:
		return fmt.Errorf("encode JSON: line %d: unexpected YAML node", n.Line)
	}
	return nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Write(bytes.TrimSuffix(tmp.Bytes(), []byte("\n")))
}

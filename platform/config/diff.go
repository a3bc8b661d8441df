package config

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Diff lists what changed between two versions of a document, one line per
// setting, in the order of the new document: "gateway.max_in_flight: 1024
// -> 64", "+ features.gateway_prefer_wait: false" (added),
// "- log_level: debug" (removed). Lists and single values are compared
// whole; mappings key by key. A document that does not parse is compared
// whole.
func Diff(old, new string) []string {
	oldLeaves, errOld := leaves(old)
	newLeaves, errNew := leaves(new)
	if errOld != nil || errNew != nil {
		if old == new {
			return nil
		}
		return []string{"the document changed (it does not parse, so it is compared whole)"}
	}
	var out []string
	seen := map[string]bool{}
	for _, l := range newLeaves {
		seen[l.path] = true
		i := slices.IndexFunc(oldLeaves, func(o leaf) bool { return o.path == l.path })
		switch {
		case i < 0:
			out = append(out, fmt.Sprintf("+ %s: %s", l.path, l.value))
		case oldLeaves[i].value != l.value:
			out = append(out, fmt.Sprintf("%s: %s -> %s", l.path, oldLeaves[i].value, l.value))
		}
	}
	for _, o := range oldLeaves {
		if !seen[o.path] {
			out = append(out, fmt.Sprintf("- %s: %s", o.path, o.value))
		}
	}
	return out
}

type leaf struct{ path, value string }

// leaves flattens a document into its settings: every value that is not a
// mapping, with its path.
func leaves(doc string) ([]leaf, error) {
	var n yaml.Node
	if strings.TrimSpace(doc) != "" {
		if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
			return nil, err
		}
	}
	var out []leaf
	var walk func(n *yaml.Node, path []string)
	walk = func(n *yaml.Node, path []string) {
		n = resolveAlias(n)
		if n == nil {
			return
		}
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], append(slices.Clip(path), n.Content[i].Value))
			}
			return
		}
		if len(path) == 0 {
			return
		}
		out = append(out, leaf{path: FormatPath(path), value: flowText(n)})
	}
	walk(rootOf(&n), nil)
	return out, nil
}

// flowText writes a value on one line.
func flowText(n *yaml.Node) string {
	c := copyNode(n)
	var setFlow func(*yaml.Node)
	setFlow = func(x *yaml.Node) {
		x.HeadComment, x.LineComment, x.FootComment = "", "", ""
		if x.Kind == yaml.MappingNode || x.Kind == yaml.SequenceNode {
			x.Style |= yaml.FlowStyle
		}
		for _, ch := range x.Content {
			setFlow(ch)
		}
	}
	setFlow(c)
	b, err := yaml.Marshal(c)
	if err != nil {
		return n.Value
	}
	return strings.TrimSpace(string(b))
}

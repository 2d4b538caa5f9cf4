package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// decoder walks a yaml.Node tree, collecting errors instead of stopping.
type decoder struct {
	errs []*Error
	// warns are problems that do not stop the daemon (Inert keys).
	warns []*Error
	// budget bounds the nodes visited: aliases let a small document name
	// the same subtree many times, and a walk must stay linear in the input.
	budget     int
	overBudget bool
	// file is the included file being decoded, empty for the config
	// file itself; errors and positions name it.
	file string
	// mainFile is the config file's name ("" if Parse has none);
	// included is set once a file was included.
	mainFile string
	included bool
}

func (d *decoder) errf(path string, line int, format string, args ...any) {
	d.errs = append(d.errs, &Error{Path: path, Line: line, Msg: fmt.Sprintf(format, args...), File: d.file})
}

func (d *decoder) warnf(path string, line int, format string, args ...any) {
	d.warns = append(d.warns, &Error{Path: path, Line: line, Msg: fmt.Sprintf(format, args...), File: d.file})
}

// countNodes counts the nodes of the tree without following aliases.
func countNodes(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	c := 1
	for _, ch := range n.Content {
		c += countNodes(ch)
	}
	return c
}

// resolve follows aliases, charges the budget and maps null to nil, so
// `key:` with no value counts as absent (zrepl's docs write optional keys
// that way).
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > 100 {
			return nil
		}
		n = n.Alias
	}
	if n == nil || d.overBudget {
		return nil
	}
	d.budget--
	if d.budget < 0 {
		d.overBudget = true
		d.errf("", n.Line, "document too complex: aliases expand to too many nodes")
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil
	}
	return n
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unknown node"
}

func child(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func mapKey(path, key string) string { return fmt.Sprintf("%s[%q]", path, key) }

// mapping is one YAML mapping being decoded. Every key the code asks for
// becomes a known key; done reports the others as unknown.
type mapping struct {
	d    *decoder
	path string
	// schema is the mapping's place in the key registry (see keys.go):
	// path without list indexes, with the type of typed sections.
	schema  string
	line    int // of the mapping, or of where it is missing
	valid   bool
	vals    map[string]*yaml.Node
	keys    map[string]*yaml.Node
	order   []string
	known   []string // in the order asked, for "want ..." lists
	isKnown map[string]bool
	// freeKeys marks a map whose keys are data (filter patterns, property
	// names), not options: paths name its entries as path["key"].
	freeKeys bool
	// checked marks keys whose registry status get has applied; refused
	// are those of them whose value the registry refuses.
	checked map[string]bool
	refused []string
}

// mapping starts decoding n at path, whose registry schema is schema; line
// is used when n is absent.
func (d *decoder) mapping(path, schema string, n *yaml.Node, line int) *mapping {
	return d.newMapping(path, schema, n, line, false)
}

func (d *decoder) newMapping(path, schema string, n *yaml.Node, line int, freeKeys bool) *mapping {
	m := &mapping{d: d, path: path, schema: schema, line: line, vals: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}, isKnown: map[string]bool{}, freeKeys: freeKeys, checked: map[string]bool{}}
	n = d.resolve(n)
	if n == nil {
		return m
	}
	m.line = n.Line
	if n.Kind != yaml.MappingNode {
		d.errf(path, n.Line, "want a mapping, got %s", describe(n))
		return m
	}
	m.valid = true
	m.add(n, false, 0)
	return m
}

// add collects n's entries. Explicit entries are taken first, so entries
// merged in with YAML's "<<" never override them.
func (m *mapping) add(n *yaml.Node, merged bool, depth int) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := m.d.resolve(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			m.d.errf(m.path, n.Content[i].Line, "mapping keys must be strings")
			continue
		}
		if k.ShortTag() == "!!merge" {
			merges = append(merges, k, v)
			continue
		}
		if first, dup := m.keys[k.Value]; dup {
			if !merged {
				m.d.errf(m.entry(k.Value), k.Line, "duplicate key %q (first at line %d)", k.Value, first.Line)
			}
			continue
		}
		m.keys[k.Value] = k
		m.vals[k.Value] = v
		m.order = append(m.order, k.Value)
	}
	for i := 0; i < len(merges); i += 2 {
		k, mv := merges[i], m.d.resolve(merges[i+1])
		if depth > 10 {
			m.d.errf(m.path, k.Line, "merge keys nested too deeply")
			continue
		}
		switch {
		case mv != nil && mv.Kind == yaml.MappingNode:
			m.add(mv, true, depth+1)
		case mv != nil && mv.Kind == yaml.SequenceNode:
			for _, e := range mv.Content {
				if e := m.d.resolve(e); e != nil && e.Kind == yaml.MappingNode {
					m.add(e, true, depth+1)
				} else {
					m.d.errf(m.path, k.Line, "merge key \"<<\" wants mappings")
				}
			}
		default:
			m.d.errf(m.path, k.Line, "merge key \"<<\" wants a mapping or a list of mappings")
		}
	}
}

// entry is the path of the entry key.
func (m *mapping) entry(key string) string {
	if m.freeKeys {
		return mapKey(m.path, key)
	}
	return child(m.path, key)
}

// branch moves the mapping's schema below the type its type key chose.
func (m *mapping) branch(typ string) { m.schema = child(m.schema, typ) }

// know marks key as one this mapping has. The parser may read only keys
// of the registry: one it reads without an entry is an internal error, so
// that a key cannot be added without saying what the daemon does with it.
func (m *mapping) know(key string) {
	if m.isKnown[key] {
		return
	}
	m.isKnown[key] = true
	m.known = append(m.known, key)
	if m.freeKeys {
		return
	}
	if _, ok := registry[child(m.schema, key)]; !ok {
		m.d.errf(m.entry(key), m.keyLine(key), "internal error: the parser reads key %s, which the key registry (engine/config/keys.go) does not list", child(m.schema, key))
	}
}

// get returns the value of key, nil if absent or null. A value the
// registry refuses is reported and read as absent; an Inert key is
// reported as a warning.
func (m *mapping) get(key string) *yaml.Node {
	m.know(key)
	v, ok := m.vals[key]
	if !ok {
		return nil
	}
	n := m.d.resolve(v)
	if n == nil || m.freeKeys {
		return n
	}
	if m.checked[key] {
		return n
	}
	m.checked[key] = true
	switch k := registry[child(m.schema, key)]; k.Status {
	case Partial:
		if !allowedValue(n, k.Allowed) {
			m.refused = append(m.refused, key)
		}
	case Inert:
		m.d.warnf(m.entry(key), m.keyLine(key), "key %q %s", key, k.Why)
	}
	return n
}

// refuse reports the values the registry refuses (see get). It runs once
// the mapping is decoded, and leaves out keys whose value was reported
// invalid already: "want an integer" says more than "not implemented".
func (m *mapping) refuse() {
	for _, key := range m.refused {
		p := m.entry(key)
		reported := false
		for _, e := range m.d.errs {
			if e.Path == p || strings.HasPrefix(e.Path, p+".") || strings.HasPrefix(e.Path, p+"[") {
				reported = true
			}
		}
		if !reported {
			k := registry[child(m.schema, key)]
			m.d.errf(p, m.keyLine(key), "%s", refusal(key, m.d.resolve(m.vals[key]), k))
		}
	}
	m.refused = nil
}

// allowedValue reports whether n is one of allowed; booleans and integers
// compare by value, so that yes and true are the same.
func allowedValue(n *yaml.Node, allowed []string) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	v := n.Value
	if b, ok := boolValue(n); ok {
		v = strconv.FormatBool(b)
	} else if i, err := strconv.ParseInt(strings.ReplaceAll(v, "_", ""), 0, 64); err == nil && n.ShortTag() == "!!int" {
		v = strconv.FormatInt(i, 10)
	}
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func refusal(key string, n *yaml.Node, k KeyInfo) string {
	if len(k.Allowed) == 0 {
		return fmt.Sprintf("key %q %s", key, k.Why)
	}
	return fmt.Sprintf("value %s %s (want %s)", describe(n), k.Why, strings.Join(k.Allowed, " or "))
}

func (m *mapping) has(key string) bool { return m.get(key) != nil }

// pos locates the mapping's keys.
func (m *mapping) pos() Pos {
	p := Pos{path: m.path, line: m.line, lines: make(map[string]int, len(m.keys)), file: m.d.file}
	for k, n := range m.keys {
		p.lines[k] = n.Line
	}
	return p
}

// keyLine is the line of key, or of the mapping if key is absent.
func (m *mapping) keyLine(key string) int {
	if k, ok := m.keys[key]; ok {
		return k.Line
	}
	return m.line
}

func (m *mapping) missing(key, why string) {
	if why != "" {
		why = " (" + why + ")"
	}
	m.d.errf(m.path, m.line, "missing required key %q%s", key, why)
}

// done reports refused values and keys nobody asked for.
func (m *mapping) done() {
	m.refuse()
	if !m.valid {
		return
	}
	var want []string
	for _, k := range m.known {
		// Keys refused whatever their value are no use to suggest.
		if r := registry[child(m.schema, k)]; m.freeKeys || r.Status != Partial || len(r.Allowed) > 0 {
			want = append(want, k)
		}
	}
	for _, k := range m.order {
		if !m.isKnown[k] {
			m.d.errf(child(m.path, k), m.keys[k].Line, "unknown key %q (want %s)", k, strings.Join(want, ", "))
		}
	}
}

// scalar checks that n is a scalar; ok is false (and an error recorded)
// otherwise.
func (d *decoder) scalar(path string, n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errf(path, n.Line, "want a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// str reads an optional string; present is false if absent or invalid.
func (m *mapping) str(key string) (s string, present bool) {
	n := m.get(key)
	if n == nil {
		return "", false
	}
	return m.d.scalar(child(m.path, key), n)
}

// reqStr reads a string that must be present and non-empty.
func (m *mapping) reqStr(key, why string) string {
	s, ok := m.str(key)
	if !ok {
		if m.get(key) == nil {
			m.missing(key, why)
		}
		return ""
	}
	if strings.TrimSpace(s) == "" {
		m.d.errf(child(m.path, key), m.keyLine(key), "must not be empty")
		return "" // callers check only non-empty values
	}
	return s
}

func (m *mapping) boolean(key string, def bool) bool {
	n := m.get(key)
	if n == nil {
		return def
	}
	b, ok := boolValue(n)
	if !ok {
		m.d.errf(child(m.path, key), n.Line, "want true or false, got %s", describe(n))
		return def
	}
	return b
}

// boolValue accepts YAML 1.2 booleans and, because zrepl read its config
// with a YAML 1.1 parser, the 1.1 words yes/no/on/off.
func boolValue(n *yaml.Node) (b, ok bool) {
	if n.Kind != yaml.ScalarNode || n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 {
		return false, false
	}
	switch strings.ToLower(n.Value) {
	case "true", "yes", "on":
		return true, true
	case "false", "no", "off":
		return false, true
	}
	return false, false
}

// integer reads an optional int within [lo, hi].
func (m *mapping) integer(key string, def, lo, hi int) int {
	n := m.get(key)
	if n == nil {
		return def
	}
	v, ok := m.d.intValue(child(m.path, key), n, lo, hi)
	if !ok {
		return def
	}
	return v
}

func (d *decoder) intValue(path string, n *yaml.Node, lo, hi int) (int, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.errf(path, n.Line, "want an integer, got %s", describe(n))
		return 0, false
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	if err != nil || v < int64(lo) || v > int64(hi) {
		if hi == math.MaxInt {
			d.errf(path, n.Line, "want an integer >= %d, got %s", lo, n.Value)
		} else {
			d.errf(path, n.Line, "want an integer from %d to %d, got %s", lo, hi, n.Value)
		}
		return 0, false
	}
	return int(v), true
}

// duration reads an optional positive duration.
func (m *mapping) duration(key string, def time.Duration) time.Duration {
	n := m.get(key)
	if n == nil {
		return def
	}
	s, ok := m.d.scalar(child(m.path, key), n)
	if !ok {
		return def
	}
	dur, err := ParseDuration(s)
	if err != nil {
		m.d.errf(child(m.path, key), n.Line, "%v", err)
		return def
	}
	return dur
}

// goDuration reads an optional duration in Go's syntax (300ms, 1h30m),
// which zrepl uses for its timeouts and retry intervals; zero is allowed
// only if zero is true.
func (m *mapping) goDuration(key string, def time.Duration, zero bool) time.Duration {
	n := m.get(key)
	if n == nil {
		return def
	}
	s, ok := m.d.scalar(child(m.path, key), n)
	if !ok {
		return def
	}
	dur, err := ParseGoDuration(s, zero)
	if err != nil {
		m.d.errf(child(m.path, key), n.Line, "%v", err)
		return def
	}
	return dur
}

// list returns the items of an optional sequence (aliases resolved; nil
// items kept as nil so indexes stay those of the document).
func (m *mapping) list(key string) ([]*yaml.Node, bool) {
	n := m.get(key)
	if n == nil {
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		m.d.errf(child(m.path, key), n.Line, "want a list, got %s", describe(n))
		return nil, false
	}
	return n.Content, true
}

// strItem is a string of a list, with its place in the document.
type strItem struct {
	S    string
	Path string
	Line int
}

func strs(items []strItem) []string {
	if items == nil {
		return nil
	}
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.S
	}
	return out
}

// strList reads an optional list of non-empty strings, leaving out (and
// reporting) items that are not.
func (m *mapping) strList(key string) (out []strItem) {
	items, ok := m.list(key)
	if !ok {
		return nil
	}
	out = make([]strItem, 0, len(items))
	for i, it := range items {
		p := index(child(m.path, key), i)
		it = m.d.resolve(it)
		if it == nil {
			m.d.errf(p, items[i].Line, "want a string, got null")
			continue
		}
		s, ok := m.d.scalar(p, it)
		if !ok {
			continue
		}
		if strings.TrimSpace(s) == "" {
			m.d.errf(p, it.Line, "must not be empty")
			continue
		}
		out = append(out, strItem{S: s, Path: p, Line: it.Line})
	}
	return out
}

// enum reads an optional string that must be one of want.
func (m *mapping) enum(key, def string, want ...string) string {
	s, ok := m.str(key)
	if !ok {
		return def
	}
	for _, w := range want {
		if s == w {
			return s
		}
	}
	m.d.errf(child(m.path, key), m.keyLine(key), "unknown value %q (want %s)", s, strings.Join(want, ", "))
	return def
}

package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// FilterRule is one entry of a filesystems filter.
type FilterRule struct {
	// Path is the dataset the rule names; zero for the pattern "<", which
	// is the subtree of every pool.
	Path zfs.DatasetPath
	// Subtree is set for patterns ending in '<': Path and all below it.
	Subtree bool
	Accept  bool
}

// Pattern writes the rule's key as it appears in a config.
func (r FilterRule) Pattern() string {
	s := r.Path.String()
	if r.Subtree {
		s += "<"
	}
	return s
}

// specificity orders rules: deeper paths win, and at the same path an
// exact rule wins over a subtree rule.
func (r FilterRule) specificity() int {
	depth := -1
	if !r.Path.IsZero() {
		depth = r.Path.Depth()
	}
	s := (depth + 1) * 2
	if !r.Subtree {
		s++
	}
	return s
}

func (r FilterRule) matches(p zfs.DatasetPath) bool {
	if !r.Subtree {
		return p == r.Path
	}
	return r.Path.IsZero() || p.HasPrefix(r.Path)
}

// ParseFilterPattern parses a filter key: "pool/a" (exactly that dataset),
// "pool/a<" (it and everything below) or "<" (everything).
func ParseFilterPattern(pattern string) (FilterRule, error) {
	var r FilterRule
	s := pattern
	if strings.HasSuffix(s, "<") {
		r.Subtree = true
		s = s[:len(s)-1]
	}
	if strings.Contains(s, "<") {
		return FilterRule{}, fmt.Errorf("invalid filter pattern %q: '<' may only end a pattern", pattern)
	}
	if s == "" {
		if r.Subtree {
			return r, nil
		}
		return FilterRule{}, fmt.Errorf("empty filter pattern (use \"<\" to match every filesystem)")
	}
	p, err := zfs.NewDatasetPath(s)
	if err != nil {
		return FilterRule{}, fmt.Errorf("invalid filter pattern %q: %w", pattern, err)
	}
	r.Path = p
	return r, nil
}

// Filter decides which filesystems a job works on. The most specific
// matching rule decides; a filesystem no rule matches is not accepted.
type Filter struct {
	rules []FilterRule // most specific first
}

// NewFilter builds a filter from rules; two rules with the same pattern
// are an error.
func NewFilter(rules []FilterRule) (*Filter, error) {
	f := &Filter{rules: append([]FilterRule(nil), rules...)}
	sort.SliceStable(f.rules, func(i, j int) bool {
		return f.rules[i].specificity() > f.rules[j].specificity()
	})
	for i := 1; i < len(f.rules); i++ {
		if f.rules[i].Pattern() == f.rules[i-1].Pattern() {
			return nil, fmt.Errorf("filter pattern %q appears twice", f.rules[i].Pattern())
		}
	}
	return f, nil
}

// FilterFromMap builds a filter from the config form {pattern: accept}.
func FilterFromMap(m map[string]bool) (*Filter, error) {
	var rules []FilterRule
	var errs []error
	for pat, accept := range m {
		r, err := ParseFilterPattern(pat)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.Accept = accept
		rules = append(rules, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return NewFilter(rules)
}

// Match reports whether the filter accepts p.
func (f *Filter) Match(p zfs.DatasetPath) bool {
	if f == nil {
		return false
	}
	// Rules are sorted by specificity, so the first match is the longest.
	for _, r := range f.rules {
		if r.matches(p) {
			return r.Accept
		}
	}
	return false
}

// Rules returns the rules, most specific first.
func (f *Filter) Rules() []FilterRule {
	if f == nil {
		return nil
	}
	return append([]FilterRule(nil), f.rules...)
}

func (f *Filter) String() string {
	parts := make([]string, len(f.Rules()))
	for i, r := range f.Rules() {
		parts[i] = fmt.Sprintf("%q: %v", r.Pattern(), r.Accept)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// SubtreeFilter accepts p and everything below it.
func SubtreeFilter(p zfs.DatasetPath) *Filter {
	return &Filter{rules: []FilterRule{{Path: p, Subtree: true, Accept: true}}}
}

// Overlap reports whether some dataset is accepted by both f and g, and
// one such dataset. A filter's decision for a dataset depends only on the
// longest rule path that is a prefix of it, so it suffices to probe every
// rule path, a fresh child of each, and a fresh pool.
func (f *Filter) Overlap(g *Filter) (witness zfs.DatasetPath, ok bool) {
	rules := append(f.Rules(), g.Rules()...)
	used := map[string]bool{}
	for _, r := range rules {
		for _, c := range strings.Split(r.Path.String(), "/") {
			used[c] = true
		}
	}
	probe := "x"
	for used[probe] {
		probe += "x"
	}
	candidates := []string{probe}
	for _, r := range rules {
		if !r.Path.IsZero() {
			candidates = append(candidates, r.Path.String(), r.Path.String()+"/"+probe)
		}
	}
	for _, c := range candidates {
		p, err := zfs.NewDatasetPath(c)
		if err != nil {
			continue // too long a name: no dataset can be there
		}
		if f.Match(p) && g.Match(p) {
			return p, true
		}
	}
	return zfs.DatasetPath{}, false
}

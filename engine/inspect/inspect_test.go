package inspect

import (
	"reflect"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

type inner struct {
	n   int
	re  *regexp.Regexp
	loc *time.Location
}

type shape interface{ area() int }

type sq struct{ side int }

func (s sq) area() int { return s.side * s.side }

type outer struct {
	Name    string
	hidden  inner
	ptr     *inner
	again   *inner
	f       func()
	nilF    func()
	mu      sync.Mutex
	ch      chan int
	m       map[string]time.Duration
	s       shape
	b       []byte
	skipped skipMe
	list    []int
}

type skipMe struct{ x int }

func TestTree(t *testing.T) {
	in := &inner{n: 3, re: regexp.MustCompile("^a"), loc: time.UTC}
	v := outer{
		Name: "x", hidden: inner{n: 1}, ptr: in, again: in, f: func() {},
		ch: make(chan int), m: map[string]time.Duration{"k": time.Second},
		s: sq{2}, b: []byte("abc"), skipped: skipMe{1}, list: []int{1, 2},
	}
	got := Tree(&v, Options{Skip: func(t reflect.Type) bool { return t == reflect.TypeOf(skipMe{}) }})
	assert.Equal(t, map[string]any{
		"Name":   "x",
		"hidden": map[string]any{"n": int64(1), "re": "nil", "loc": "nil"},
		"ptr":    map[string]any{"n": int64(3), "re": "^a", "loc": "UTC"},
		"again":  map[string]any{Ref: ".ptr"},
		"f":      "func",
		"nilF":   nil,
		"m":      map[string]any{"k": "1s"},
		"s":      map[string]any{"side": int64(2), Type: "inspect.sq"},
		"b":      "3 bytes sha256:ba7816bf8f01cfea",
		"list":   []any{int64(1), int64(2)},
	}, got)
}

func TestFlattenAndDiff(t *testing.T) {
	a := Flatten(Tree(map[string]any{"a": []int{1}, "b": "x"}, Options{}))
	b := Flatten(Tree(map[string]any{"a": []int{1, 2}, "b": "x"}, Options{}))
	assert.Equal(t, []string{".a@value.len", ".a@value[1]"}, Diff(a, b))
	assert.Empty(t, Diff(a, a))
}

func TestCycleAndBudget(t *testing.T) {
	type node struct{ next *node }
	n := &node{}
	n.next = n
	assert.Equal(t, map[string]any{"next": map[string]any{Ref: ""}}, Tree(n, Options{}))
	assert.Equal(t, []any{int64(1), "…", "…"}, Tree([]int{1, 2, 3}, Options{MaxNodes: 2}))
}

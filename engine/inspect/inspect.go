// Package inspect renders a Go value, unexported fields included, as a
// tree of maps, lists and scalars: what configcheck prints of the jobs and
// logging outlets a config builds, and what the key walk compares to prove
// that every config key changes something the daemon reads.
//
// A struct becomes a map of its fields; a map a map of its entries (keys
// written as scalars); a slice or array a list; a pointer or interface its
// target (an interface adds "@type", the dynamic type); a pointer seen
// before becomes {"@ref": path of its first place}. Functions become
// "func" (or nil): what a closure holds cannot be seen, which is why the
// daemon keeps what it builds in structs. Channels, unsafe pointers and
// the types of packages sync and sync/atomic are left out. A few types
// are written by their String form: time.Time, time.Duration,
// *time.Location, *regexp.Regexp, *big.Int; byte slices by length and
// SHA-256.
package inspect

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// Options tune Tree.
type Options struct {
	// Skip leaves out values of the types it reports true for (and
	// pointers to them); nil skips nothing.
	Skip func(t reflect.Type) bool
	// MaxNodes bounds the tree (default 1<<20); past it, values become
	// "…".
	MaxNodes int
}

// Ref is the key of a pointer seen before.
const Ref = "@ref"

// Type is the key of an interface value's dynamic type.
const Type = "@type"

// Tree renders v.
func Tree(v any, o Options) any {
	if o.MaxNodes <= 0 {
		o.MaxNodes = 1 << 20
	}
	w := &walker{o: o, seen: map[seenKey]string{}}
	return w.walk(reflect.ValueOf(v), "")
}

type seenKey struct {
	p uintptr
	t reflect.Type
}

type walker struct {
	o     Options
	seen  map[seenKey]string
	nodes int
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	timeType     = reflect.TypeOf(time.Time{})
	locationType = reflect.TypeOf((*time.Location)(nil))
	regexpType   = reflect.TypeOf((*regexp.Regexp)(nil))
	bigIntType   = reflect.TypeOf((*big.Int)(nil))
)

// readable returns v such that Interface works, also for values reached
// through unexported fields (which reflect lets one read but not
// Interface).
func readable(v reflect.Value) (reflect.Value, bool) {
	if v.CanInterface() {
		return v, true
	}
	if v.CanAddr() {
		return reflect.NewAt(v.Type(), unsafe.Pointer(v.UnsafeAddr())).Elem(), true
	}
	return v, false
}

func (w *walker) skipped(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.PkgPath() {
	case "sync", "sync/atomic":
		return true
	}
	return w.o.Skip != nil && w.o.Skip(t)
}

// special writes the types rendered by their String form.
func special(v reflect.Value) (string, bool) {
	switch v.Type() {
	case durationType:
		return time.Duration(v.Int()).String(), true
	case timeType, locationType, regexpType, bigIntType:
	default:
		return "", false
	}
	if v.Kind() == reflect.Pointer && v.IsNil() {
		return "nil", true
	}
	r, ok := readable(v)
	if !ok {
		return "", false
	}
	switch x := r.Interface().(type) {
	case time.Time:
		return x.Format(time.RFC3339Nano), true
	case *time.Location:
		return x.String(), true
	case *regexp.Regexp:
		return x.String(), true
	case *big.Int:
		return x.String(), true
	}
	return "", false
}

func (w *walker) walk(v reflect.Value, path string) any {
	if !v.IsValid() {
		return nil
	}
	w.nodes++
	if w.nodes > w.o.MaxNodes {
		return "…"
	}
	if s, ok := special(v); ok {
		return s
	}
	switch v.Kind() {
	case reflect.Bool:
		return v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint()
	case reflect.Float32, reflect.Float64:
		return v.Float()
	case reflect.Complex64, reflect.Complex128:
		return fmt.Sprint(v.Complex())
	case reflect.String:
		return v.String()
	case reflect.Func:
		if v.IsNil() {
			return nil
		}
		return "func"
	case reflect.Chan, reflect.UnsafePointer:
		return nil
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		if w.skipped(v.Type()) {
			return nil
		}
		k := seenKey{v.Pointer(), v.Type()}
		if first, ok := w.seen[k]; ok {
			return map[string]any{Ref: first}
		}
		w.seen[k] = path
		return w.walk(v.Elem(), path)
	case reflect.Interface:
		if v.IsNil() {
			return nil
		}
		e := v.Elem()
		if w.skipped(e.Type()) {
			return nil
		}
		t := w.walk(e, path)
		if m, ok := t.(map[string]any); ok {
			if _, ref := m[Ref]; !ref {
				m[Type] = e.Type().String()
				return m
			}
		}
		return map[string]any{Type: e.Type().String(), "@value": t}
	case reflect.Struct:
		if w.skipped(v.Type()) {
			return nil
		}
		out := map[string]any{}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Type.Kind() == reflect.Chan || f.Type.Kind() == reflect.UnsafePointer || w.skipped(f.Type) {
				continue
			}
			out[f.Name] = w.walk(v.Field(i), path+"."+f.Name)
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return nil
		}
		out := map[string]any{}
		iter := v.MapRange()
		for iter.Next() {
			k := scalarKey(w, iter.Key())
			out[k] = w.walk(iter.Value(), path+"["+k+"]")
		}
		return out
	case reflect.Slice:
		if v.IsNil() {
			return nil
		}
		fallthrough
	case reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, v.Len())
			for i := range b {
				b[i] = byte(v.Index(i).Uint())
			}
			sum := sha256.Sum256(b)
			return fmt.Sprintf("%d bytes sha256:%s", len(b), hex.EncodeToString(sum[:8]))
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = w.walk(v.Index(i), path+"["+strconv.Itoa(i)+"]")
		}
		return out
	}
	return fmt.Sprintf("<%s>", v.Kind())
}

// scalarKey writes a map key.
func scalarKey(w *walker, k reflect.Value) string {
	switch t := w.walk(k, "").(type) {
	case string:
		return t
	case nil:
		return "nil"
	default:
		return fmt.Sprint(t)
	}
}

// Flatten turns a tree into one entry per scalar, keyed by its path
// (".field", "[index]", "[key]").
func Flatten(tree any) map[string]string {
	out := map[string]string{}
	flatten(tree, "", out)
	return out
}

func flatten(t any, path string, out map[string]string) {
	switch x := t.(type) {
	case map[string]any:
		if len(x) == 0 {
			out[path] = "{}"
		}
		for k, v := range x {
			if strings.HasPrefix(k, "@") {
				flatten(v, path+k, out)
			} else {
				flatten(v, path+"."+k, out)
			}
		}
	case []any:
		out[path+".len"] = strconv.Itoa(len(x))
		for i, v := range x {
			flatten(v, path+"["+strconv.Itoa(i)+"]", out)
		}
	default:
		out[path] = fmt.Sprint(x)
	}
}

// Diff lists the paths whose values differ between two flattened trees,
// sorted.
func Diff(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

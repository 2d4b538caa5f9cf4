package statusui

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/job"
)

// readmeStatus is README's section on `zrepl status`.
func readmeStatus(t *testing.T) string {
	b, err := os.ReadFile("../../../README.md")
	require.NoError(t, err)
	s := string(b)
	i := strings.Index(s, "## `zrepl status`")
	require.GreaterOrEqual(t, i, 0, "README has a section \"## `zrepl status`\"")
	s = s[i+1:]
	if j := strings.Index(s, "\n## "); j >= 0 {
		s = s[:j]
	}
	return s
}

// Every field `--mode raw` prints is documented in README: adding one to
// job.Status without saying what it is fails here.
func TestReadmeDocumentsRawSchema(t *testing.T) {
	doc := readmeStatus(t)
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Map {
			ty = ty.Elem()
		}
		if ty.Kind() != reflect.Struct || ty == reflect.TypeOf(time.Time{}) || seen[ty] {
			return
		}
		seen[ty] = true
		for f := range ty.Fields() {
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			optional := strings.Contains(opts, "omit")
			want := "`" + name + "`"
			if optional {
				want = "`" + name + "?`"
			}
			if !strings.Contains(doc, want) {
				t.Errorf("README's status section does not document %s.%s as %s", path, name, want)
			}
			walk(f.Type, path+"."+name)
		}
	}
	walk(reflect.TypeOf(job.Status{}), "job")
}

// Every key the interactive screen answers is in README's key table.
func TestReadmeDocumentsKeys(t *testing.T) {
	doc := readmeStatus(t)
	src, err := os.ReadFile("interactive.go")
	require.NoError(t, err)
	i := strings.Index(string(src), "func (m *model) key(")
	require.GreaterOrEqual(t, i, 0)
	body := string(src)[i:]
	body = body[:strings.Index(body, "\n}\n")]
	n := 0
	for _, c := range regexp.MustCompile(`case ((?:"[^"]+",? ?)+):`).FindAllStringSubmatch(body, -1) {
		for _, k := range regexp.MustCompile(`"([^"]+)"`).FindAllStringSubmatch(c[1], -1) {
			n++
			key := k[1]
			if key == " " {
				key = "space"
			}
			if !strings.Contains(doc, "`"+key+"`") {
				t.Errorf("README's status key table lacks `%s`", key)
			}
		}
	}
	require.Greater(t, n, 10, "found the key switch in interactive.go")
}

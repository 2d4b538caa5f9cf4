package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"zrepl.dev/zrepl/engine/zfs"
)

func mustPath(s string) zfs.DatasetPath { return zfs.MustDatasetPath(s) }

// FuzzParse checks that no input panics and that Parse returns either a
// config or a non-empty *Errors, never both or neither.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "examples", "*.yml"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, tc := range brokenConfigs {
		f.Add([]byte(doc(tc.yaml)))
	}
	f.Add([]byte("a: &a [*a]"))
	f.Add([]byte("jobs: [{<<: [{name: x}], type: snap}]"))
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := Parse(b)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", cfg != nil, err)
		}
		if err != nil {
			var errs *Errors
			if !errors.As(err, &errs) || len(errs.List) == 0 {
				t.Fatalf("error is not a non-empty *Errors: %v", err)
			}
			for _, e := range errs.List {
				if e.Msg == "" || e.Line < 0 {
					t.Fatalf("malformed entry %+v", e)
				}
			}
			return
		}
		for _, j := range cfg.Jobs {
			if j.Name == "" || j.ID.String() != j.Name {
				t.Fatalf("accepted job with bad name %q", j.Name)
			}
		}
	})
}

package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func snapJob(name, fs string) string {
	return "  - name: " + name + "\n    type: snap\n    filesystems: {\"" + fs + "<\": true}\n" +
		"    snapshotting: {type: manual}\n    pruning: {keep: [{type: last_n, count: 1}]}\n"
}

// writeFiles writes name -> content below dir, making directories.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
}

// TestIncludeFilesAndDirectories: include names files and directories of
// *.yml relative to the including file (not the working directory); their
// jobs follow the config file's, directory entries in name order, each
// job knowing its file.
func TestIncludeFilesAndDirectories(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"etc/zrepl.yml":        "include:\n  - ./one.yml\n  - conf.d\n  - " + filepath.Join(dir, "abs.yml") + "\njobs:\n" + snapJob("main", "pool/main"),
		"etc/one.yml":          "jobs:\n" + snapJob("one", "pool/one"),
		"etc/conf.d/b.yml":     "jobs:\n" + snapJob("b", "pool/b"),
		"etc/conf.d/a.yml":     "jobs:\n" + snapJob("a1", "pool/a1") + snapJob("a2", "pool/a2"),
		"etc/conf.d/notes.txt": "not yaml: [",
		"etc/conf.d/empty.yml": "# nothing here yet\n",
		"abs.yml":              "jobs:\n" + snapJob("abs", "pool/abs"),
	})
	// A relative include resolved against the working directory would
	// find nothing here.
	t.Chdir(t.TempDir())
	cfg, err := ParseFile(filepath.Join(dir, "etc/zrepl.yml"))
	require.NoError(t, err)
	var names, files []string
	for _, j := range cfg.Jobs {
		names = append(names, j.Name)
		files = append(files, j.File)
	}
	assert.Equal(t, []string{"main", "one", "a1", "a2", "b", "abs"}, names)
	e := filepath.Join(dir, "etc")
	assert.Equal(t, []string{"", e + "/one.yml", e + "/conf.d/a.yml", e + "/conf.d/a.yml", e + "/conf.d/b.yml", dir + "/abs.yml"}, files)
	assert.Equal(t, 7, cfg.Jobs[3].Line, "a job's line is its line in its own file")
}

// TestIncludeDuplicateJobName: a name defined in two files is reported in
// the second, naming the first file and line too.
func TestIncludeDuplicateJobName(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"zrepl.yml":    "include: [d]\njobs:\n" + snapJob("x", "pool/a"),
		"d/first.yml":  "jobs:\n" + snapJob("y", "pool/b"),
		"d/second.yml": "# second\njobs:\n" + snapJob("y", "pool/c") + snapJob("x", "pool/d"),
	})
	main := filepath.Join(dir, "zrepl.yml")
	_, err := ParseFile(main)
	var errs *Errors
	require.True(t, errors.As(err, &errs), "%v", err)
	require.Len(t, errs.List, 2, "%v", err)
	second := filepath.Join(dir, "d/second.yml")
	assert.Equal(t, Error{File: second, Path: "jobs[0].name", Line: 3,
		Msg: `duplicate job name "y" (first used by jobs[0] at line 2 of ` + filepath.Join(dir, "d/first.yml") + ")"}, *errs.List[0])
	assert.Equal(t, Error{File: second, Path: "jobs[1].name", Line: 8,
		Msg: `duplicate job name "x" (first used by jobs[0] at line 3 of ` + main + ")"}, *errs.List[1])
	assert.Contains(t, err.Error(), second+": jobs[0].name: line 3: duplicate job name \"y\"")
}

// TestIncludeRefusals: what zrepl refuses, and an included global section,
// which zrepl would ignore.
func TestIncludeRefusals(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"nested.yml": "include: [other.yml]\njobs:\n" + snapJob("n", "pool/n"),
		"other.yml":  "jobs:\n" + snapJob("o", "pool/o"),
		"global.yml": "global:\n  logging: [{type: stdout, level: debug, format: json}]\n",
		"bad.yml":    "jobs:\n" + snapJob("b", "pool/b") + "    wat: 1\n",
		"syntax.yml": "jobs: [\n",
		"job.yaml":   "jobs:\n" + snapJob("y", "pool/y"),
	})
	main := filepath.Join(dir, "zrepl.yml")
	writeFiles(t, dir, map[string]string{"zrepl.yml": "include:\n  - nested.yml\n  - global.yml\n  - missing.yml\n  - job.yaml\n  - bad.yml\n  - syntax.yml\n  - other.yml\n  - ./other.yml\n"})
	_, err := ParseFile(main)
	var errs *Errors
	require.True(t, errors.As(err, &errs), "%v", err)
	got := map[string][]string{}
	for _, e := range errs.List {
		f := e.File
		if f == "" {
			f = "zrepl.yml"
		}
		got[filepath.Base(f)] = append(got[filepath.Base(f)], e.Error())
	}
	assert.Equal(t, map[string][]string{
		"zrepl.yml": {
			`include[2]: line 4: cannot include "missing.yml": no such file or directory (want a .yml file or a directory of them)`,
			`include[3]: line 5: cannot include "job.yaml": an included file's name must end in .yml`,
			`include[7]: line 9: ` + filepath.Join(dir, "other.yml") + ` is included twice (first by include[6] at line 8): its jobs would be defined twice`,
		},
		"nested.yml": {"include: line 1: an included file must not include other files (want every include in the config file " + main + ")"},
		"global.yml": {"global: line 1: an included file may define jobs only (want global in the config file " + main + "; zrepl ignores it here)"},
		"bad.yml":    {`jobs[0].wat: line 7: unknown key "wat" (want name, type, filesystems, snapshotting, pruning)`},
		"syntax.yml": {"line 1: YAML syntax: did not find expected node content"},
	}, got)
	// The config file's own problems come first.
	assert.Empty(t, errs.List[0].File)
}

// TestIncludeNeedsAFileForRelativePaths: Parse has no file to resolve a
// relative path against.
func TestIncludeNeedsAFileForRelativePaths(t *testing.T) {
	errs := parseErrors(t, "include: [x.yml]\n")
	require.Len(t, errs, 1)
	assert.Equal(t, `include[0]: line 1: relative include path "x.yml" needs the config's file name (want an absolute path)`, errs[0].Error())
	errs = parseErrors(t, "include: x.yml\n")
	assert.Equal(t, `include: line 1: want a list, got "x.yml"`, errs[0].Error())
}

// TestCronSnapshotting: zrepl's cron syntax with an optional seconds
// field; a bad spec names the key and line and says what is allowed.
func TestCronSnapshotting(t *testing.T) {
	const base = "jobs:\n  - name: s\n    type: snap\n    filesystems: {\"pool<\": true}\n" +
		"    snapshotting: {type: cron, prefix: z_, cron: %q, timestamp_format: iso-8601, timestamp_location: Europe/Berlin}\n" +
		"    pruning: {keep: [{type: last_n, count: 1}]}\n"
	cfg := mustParse(t, fmt.Sprintf(base, "*/5 * * * *"))
	s := cfg.Jobs[0].Snapshotting
	require.True(t, s.Scheduled())
	assert.Equal(t, "*/5 * * * *", s.Cron)
	at := time.Date(2026, 1, 1, 10, 2, 0, 0, time.UTC)
	assert.Equal(t, at.Add(3*time.Minute), s.CronSchedule.Next(at))
	assert.Equal(t, "Europe/Berlin", s.TimestampLocation.String())

	cfg = mustParse(t, fmt.Sprintf(base, "15 */5 * * * *"))
	assert.Equal(t, at.Add(3*time.Minute+15*time.Second), cfg.Jobs[0].Snapshotting.CronSchedule.Next(at))

	for _, bad := range []string{"@daily", "61 * * * *", "* * *", ""} {
		errs := parseErrors(t, fmt.Sprintf(base, bad))
		require.Len(t, errs, 1, bad)
		if bad == "" {
			assert.Equal(t, "jobs[0].snapshotting.cron: line 5: must not be empty", errs[0].Error())
			continue
		}
		assert.Equal(t, "jobs[0].snapshotting.cron", errs[0].Path, bad)
		assert.Equal(t, 5, errs[0].Line)
		assert.Contains(t, errs[0].Msg, `(want minute hour day-of-month month day-of-week, with an optional seconds field first`)
	}
	errs := parseErrors(t, "jobs:\n  - name: s\n    type: snap\n    filesystems: {\"pool<\": true}\n    snapshotting: {type: cron, prefix: z_}\n    pruning: {keep: [{type: last_n, count: 1}]}\n")
	assert.Equal(t, `jobs[0].snapshotting: line 5: missing required key "cron" (when to snapshot, like "*/5 * * * *")`, errs[0].Error())
}

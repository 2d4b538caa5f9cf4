package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
	"zrepl.dev/zrepl/zfsmodel"
)

// startQuickstart runs the daemon command on cfg in this process until the
// test ends, after its first run (replication and pruning) ended.
func startQuickstart(t *testing.T, cfg string) *syncBuffer {
	t.Helper()
	var logs syncBuffer
	root := newRootCommand(&logs, &logs)
	root.SetArgs([]string{"daemon", "--config", cfg})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	waitFor(t, 30*time.Second, "the first run to end", func() bool {
		out, err := run(t, "status", "--json", "--config", cfg)
		var st []job.Status
		if err != nil || json.Unmarshal([]byte(out), &st) != nil || len(st) == 0 {
			return false
		}
		return st[0].Runs == 1 && !st[0].LastRunEnd.IsZero() && st[0].State == job.StateIdle
	})
	return &logs
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// zrepl's zfs-abstraction commands, its test commands, version and pprof,
// with zrepl's flags and output, through a running daemon.
func TestZreplCommands(t *testing.T) {
	dir := shortDir(t)
	cfg := quickstartIn(t, dir, "1h")
	// Leftovers of a job the config no longer has: a step hold and a step
	// bookmark on pool/data@s1.
	m := zfsmodel.New(zfsmodel.Options{Seed: 4})
	require.NoError(t, m.CreatePool("pool"))
	require.NoError(t, m.CreatePool("backup"))
	fs := zfs.MustDatasetPath("pool/data")
	require.NoError(t, m.CreateFilesystem(fs, zfsmodel.FSOptions{}))
	require.NoError(t, m.Snapshot(context.Background(), fs, "s1"))
	gone := endpoint.MustJobID("gone")
	require.NoError(t, m.Hold(context.Background(), zfs.SnapshotRef(fs, "s1"), endpoint.StepHoldTag(gone)))
	vs, err := m.ListVersions(context.Background(), fs)
	require.NoError(t, err)
	require.NoError(t, m.Bookmark(context.Background(), zfs.SnapshotRef(fs, "s1"), endpoint.StepBookmarkName(vs[0].GUID, gone)))
	require.NoError(t, saveModel(m, dir))
	startQuickstart(t, cfg)

	za := func(args ...string) []string {
		t.Helper()
		out, err := run(t, append(append([]string{"zfs-abstraction"}, args...), "--config", cfg)...)
		require.NoError(t, err, "%v", args)
		return lines(out)
	}
	all := za("list")
	require.Len(t, all, 4, "%q", all)
	cursor := regexp.MustCompile(`^replication-cursor-bookmark-v2 pool/data#zrepl_CURSOR_G_[0-9a-f]{16}_J_quickstart_push$`)
	lrh := regexp.MustCompile(`^last-received-hold "zrepl_last_received_J_quickstart_sink" on backup/laptop/pool/data@zrepl_\w+$`)
	stepHold := `step-hold "zrepl_STEP_J_gone" on pool/data@s1`
	stepBookmark := regexp.MustCompile(`^step-bookmark pool/data#zrepl_STEP_G_[0-9a-f]{16}_J_gone$`)
	assert.Regexp(t, lrh, all[0], "ordered by filesystem")
	assert.Contains(t, all, stepHold)
	holdsOut, err := run(t, "holds", "list", "--config", cfg)
	require.NoError(t, err)
	assert.Equal(t, all, lines(holdsOut), "holds is an alias")

	cur := za("list", "--type", "replication-cursor-bookmark-v2")
	require.Len(t, cur, 1)
	assert.Regexp(t, cursor, cur[0])
	assert.Len(t, za("list", "--type", "step-hold,last-received-hold"), 2)
	assert.Len(t, za("list", "--type", "step-hold", "--type", "step-bookmark"), 2, "repeated --type adds")
	assert.Equal(t, []string{stepHold}, za("list", "--job", "gone", "--type", "step-hold"))
	sink := za("list", "--job", "quickstart_sink")
	require.Len(t, sink, 1)
	assert.Regexp(t, lrh, sink[0])
	assert.Len(t, za("list", "--fs", "pool/data"), 3)
	assert.Len(t, za("list", "--fs", "backup<:ok"), 1)
	assert.Empty(t, za("list", "--fs", "pool<:ok,pool/data:!"))
	assert.Empty(t, za("list", "--fs", "backup/laptop"), "exactly that filesystem")
	assert.Len(t, za("list", "-p", "4"), 4)
	assert.Empty(t, za("list", "--type", "tentative-replication-cursor-bookmark-v2"), "zrepl's type name is known; none here")
	for _, bad := range [][]string{
		{"--type", "bogus"}, {"--fs", "pool:maybe"}, {"--fs", "pool/@x"}, {"--job", "a/b"},
	} {
		_, err := run(t, append([]string{"zfs-abstraction", "list", "--config", cfg}, bad...)...)
		assert.Error(t, err, "%v", bad)
	}

	// JSON as zrepl prints it: an object per abstraction.
	out, err := run(t, "zfs-abstraction", "list", "--json", "--job", "gone", "--config", cfg)
	require.NoError(t, err)
	dec := json.NewDecoder(strings.NewReader(out))
	var objs []map[string]any
	for dec.More() {
		var o map[string]any
		require.NoError(t, dec.Decode(&o))
		objs = append(objs, o)
	}
	require.Len(t, objs, 2, out)
	for _, o := range objs {
		assert.Equal(t, "pool/data", o["FS"])
		assert.Equal(t, "gone", o["JobID"])
		assert.NotZero(t, o["CreateTXG"])
		assert.Contains(t, []string{"step-hold", "step-bookmark"}, o["Type"])
		fv := o["FilesystemVersion"].(map[string]any)
		assert.Contains(t, []string{"snapshot", "bookmark"}, fv["Type"])
		assert.Equal(t, o["FullPath"], "pool/data"+map[string]string{"snapshot": "@", "bookmark": "#"}[fv["Type"].(string)]+o["Name"].(string))
	}

	// release-stale, narrowed by the filters.
	assert.Empty(t, za("release-stale", "--dry-run", "--fs", "backup<:ok"))
	bm := za("release-stale", "--dry-run", "--type", "step-bookmark")
	require.Len(t, bm, 1)
	assert.Regexp(t, `^would destroy step-bookmark pool/data#zrepl_STEP_G_`, bm[0])
	out, err = run(t, "zfs-abstraction", "release-stale", "--dry-run", "--json", "--config", cfg)
	require.NoError(t, err)
	var dry []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &dry), out)
	assert.Len(t, dry, 2, "the cursor and the received snapshot's hold are not stale")
	assert.Equal(t, []string{"destroy " + stepHold + " ... OK"}, za("release-stale", "--type", "step-hold"))
	left := za("list", "--job", "gone")
	require.Len(t, left, 1)
	assert.Regexp(t, stepBookmark, left[0])

	// release-all takes what the filters select, cursors too.
	assert.Len(t, za("release-all", "--dry-run"), 3, "everything zrepl made")
	out, err = run(t, "zfs-abstraction", "release-all", "--job", "gone", "--json", "--config", cfg)
	require.NoError(t, err)
	var res struct {
		Abstraction map[string]any
		DestroyErr  *string
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	assert.Equal(t, "step-bookmark", res.Abstraction["Type"])
	assert.Nil(t, res.DestroyErr)
	assert.Empty(t, za("list", "--job", "gone"))
	assert.Len(t, za("list"), 2)

	// test placeholder and test filesystems read the backend as zrepl's do.
	tst := func(args ...string) []string {
		t.Helper()
		out, err := run(t, append(append([]string{"test"}, args...), "--config", cfg)...)
		require.NoError(t, err, "%v", args)
		return lines(out)
	}
	ph := tst("placeholder", "--all")
	assert.Equal(t, "IS_PLACEHOLDER\tDATASET\tzrepl:placeholder", ph[0])
	assert.Contains(t, ph, "yes\tbackup/laptop\ton", "the sink's placeholder for the client")
	assert.Contains(t, ph, "no\tbackup/laptop/pool/data\t")
	assert.Contains(t, ph, "no\tpool/data\t")
	assert.Equal(t, []string{"IS_PLACEHOLDER\tDATASET\tzrepl:placeholder", "no\tpool/data\t"}, tst("placeholder", "--dataset", "pool/data"))
	for _, bad := range [][]string{{}, {"--all", "--dataset", "pool"}, {"--dataset", "pool/nope"}} {
		_, err := run(t, append([]string{"test", "placeholder", "--config", cfg}, bad...)...)
		assert.Error(t, err, "%v", bad)
	}
	fsAll := tst("filesystems", "--job", "quickstart_push", "--all")
	assert.Contains(t, fsAll, "ACCEPT\tpool/data\t")
	assert.Contains(t, fsAll, "REJECT\tbackup/laptop/pool/data\t")
	assert.Contains(t, fsAll, "REJECT\tpool\t")
	assert.Equal(t, []string{"ACCEPT\tpool/data/new\t"}, tst("filesystems", "--job", "quickstart_push", "--input", "pool/data/new"))
	assert.Equal(t, []string{"REJECT\tother/x\t"}, tst("filesystems", "--job", "quickstart_push", "--input", "other/x"))
	_, err = run(t, "test", "filesystems", "--job", "quickstart_push", "--all", "--input", "pool/data", "--config", cfg)
	assert.ErrorContains(t, err, "--all or --input")

	// decoderesumetoken: --token prints zrepl's JSON; the argument, ours.
	tok := resumetoken.Token{Object: 1, Offset: 2, Bytes: 3, ToGUID: 0xabc, ToName: "pool/data@s2", FromGUID: 0x123, CompressOK: true, RawOK: true}
	out, err = run(t, "test", "decoderesumetoken", "--token", tok.Encode())
	require.NoError(t, err)
	var zt map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &zt), out)
	assert.Equal(t, map[string]any{
		"HasFromGUID": true, "HasToGUID": true, "FromGUID": float64(0x123), "ToGUID": float64(0xabc), "ToName": "pool/data@s2",
		"HasCompressOK": true, "CompressOK": true, "HasRawOk": true, "RawOK": true, "HasLargeBlockOK": false, "LargeBlockOK": false,
		"HasEmbedOk": false, "EmbedOK": false, "HasSavedOk": false, "SavedOk": false,
	}, zt)
	out, err = run(t, "test", "decoderesumetoken", tok.Encode())
	require.NoError(t, err)
	assert.Equal(t, tok.String()+"\n", out)
	_, err = run(t, "test", "decoderesumetoken")
	assert.ErrorContains(t, err, "--token")

	// version: the client's and the daemon's; a different client warns.
	out, err = run(t, "version", "--config", cfg)
	require.NoError(t, err)
	assert.Regexp(t, `^client: zrepl version=dev go=\S+ GOOS=\w+ GOARCH=\w+ Compiler=\w+\nserver: zrepl version=dev go=`, out)
	out, err = run(t, "version", "--show", "daemon", "--config", cfg)
	require.NoError(t, err)
	assert.Regexp(t, `^server: zrepl version=dev `, out)
	var stderr strings.Builder
	root := newRootCommand(io.Discard, &stderr)
	root.SetArgs([]string{"version", "--config", cfg})
	version = "v9.9.9"
	err = root.Execute()
	version = "dev"
	require.NoError(t, err)
	assert.Contains(t, stderr.String(), "WARNING: client version != daemon version, restart zrepl daemon")

	// pprof: on at an address, off again.
	out, err = run(t, "pprof", "listen", "on", "127.0.0.1:0", "--config", cfg)
	require.NoError(t, err)
	addr := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(out)
	require.Len(t, addr, 2, out)
	resp, err := http.Get("http://" + addr[1] + "/debug/pprof/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), "goroutine")
	_, err = run(t, "pprof", "listen", "off", "--config", cfg)
	require.NoError(t, err)
	_, err = http.Get("http://" + addr[1] + "/debug/pprof/")
	assert.Error(t, err, "off: nothing listens")
	for _, bad := range [][]string{{"on"}, {"off", "x"}, {"maybe"}} {
		_, err := run(t, append([]string{"pprof", "listen", "--config", cfg}, bad...)...)
		assert.Error(t, err, "%v", bad)
	}
}

// status without a mode on a non-terminal prints the dump, as --mode dump
// does; --json is --mode raw; --job narrows both; an interactive screen on
// a pipe, zrepl's legacy mode and unknown jobs are errors that say why.
func TestStatusModes(t *testing.T) {
	dir := shortDir(t)
	cfg := quickstartIn(t, dir, "1h")
	startQuickstart(t, cfg)

	plain, err := run(t, "status", "--config", cfg)
	require.NoError(t, err)
	assert.Contains(t, plain, "Job: quickstart_push (push)")
	assert.Contains(t, plain, "Job: quickstart_sink (sink)")
	assert.NotContains(t, plain, "\x1b[", "no escape codes on a pipe")
	dump, err := run(t, "status", "--mode", "dump", "--config", cfg)
	require.NoError(t, err)
	// The jobs are idle: the texts differ at most in their durations.
	durations := regexp.MustCompile(`[0-9]+(\.[0-9]+)?(ms|µs|s|m|h|d)\b`)
	assert.Equal(t, durations.ReplaceAllString(dump, "D"), durations.ReplaceAllString(plain, "D"))

	one, err := run(t, "status", "--mode", "dump", "--job", "quickstart_sink", "--config", cfg)
	require.NoError(t, err)
	assert.Contains(t, one, "Job: quickstart_sink")
	assert.NotContains(t, one, "quickstart_push")

	raw, err := run(t, "status", "--mode", "raw", "--job", "quickstart_push", "--config", cfg)
	require.NoError(t, err)
	var st []job.Status
	require.NoError(t, json.Unmarshal([]byte(raw), &st))
	require.Len(t, st, 1)
	assert.Equal(t, "quickstart_push", st[0].Name)
	assert.Equal(t, 1, st[0].Runs)
	js, err := run(t, "status", "--json", "--job", "quickstart_push", "--config", cfg)
	require.NoError(t, err)
	var st2 []job.Status
	require.NoError(t, json.Unmarshal([]byte(js), &st2))
	assert.Equal(t, st[0].Name, st2[0].Name)
	assert.Equal(t, st[0].LastRunEnd, st2[0].LastRunEnd)

	for args, want := range map[string]string{
		"--mode interactive":      "not a terminal",
		"--mode legacy":           "not offered",
		"--mode fancy":            "want interactive, dump or raw",
		"--json --mode dump":      "--json is --mode raw",
		"--mode dump --job nojob": `job "nojob" not found`,
		"--mode raw --job nojob":  `job "nojob" not found`,
	} {
		_, err := run(t, append([]string{"status", "--config", cfg}, strings.Fields(args)...)...)
		assert.ErrorContains(t, err, want, args)
	}
}

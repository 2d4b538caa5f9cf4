package zfsreal

// The fake zfs: the test binary itself, run through a symlink named "zfs"
// in a per-test directory (TestMain tells the two apart by argv[0]). The
// directory holds the script the fake obeys and the record of its calls.
// A symlink rather than a written wrapper script, because executing a file
// just written can fail with ETXTBSY while other goroutines fork.

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// fakeRule is how the fake answers one exact command line.
type fakeRule struct {
	Args   []string `json:"args"`
	Stdout string   `json:"stdout,omitempty"`
	// StdoutHex is binary output, hex-encoded, after Stdout.
	StdoutHex string `json:"stdout_hex,omitempty"`
	// StreamBytes of patternByte follow Stdout and StdoutHex.
	StreamBytes int64  `json:"stream_bytes,omitempty"`
	Stderr      string `json:"stderr,omitempty"`
	Exit        int    `json:"exit,omitempty"`
	// ReadStdin reads stdin before answering: to EOF, or StdinLimit bytes.
	ReadStdin  bool  `json:"read_stdin,omitempty"`
	StdinLimit int64 `json:"stdin_limit,omitempty"`
	// Hang sleeps after the output until killed.
	Hang bool `json:"hang,omitempty"`
	// Env names an environment variable whose value is printed on stdout.
	Env string `json:"env,omitempty"`
}

type fakeCall struct {
	Args []string `json:"args"`
	Pid  int      `json:"pid"`
}

type fakeStdin struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// patternByte is the content of streamed bytes: position-dependent, so a
// reordered, dropped or duplicated chunk shows.
func patternByte(i int64) byte { return byte(i*131 + i>>9) }

func streamBytes(n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = patternByte(int64(i))
	}
	return b
}

var testBinary string

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "zfs" {
		os.Exit(fakeMain(filepath.Dir(os.Args[0]), os.Args[1:]))
	}
	var err error
	if testBinary, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	goleak.VerifyTestMain(m)
}

func fakeMain(dir string, args []string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "fakezfs:", err)
		return 97
	}
	f, err := os.OpenFile(filepath.Join(dir, "calls"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fail(err)
	}
	line, _ := json.Marshal(fakeCall{Args: args, Pid: os.Getpid()})
	// One O_APPEND write per call keeps the record whole.
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fail(err)
	}
	f.Close()

	script, err := os.ReadFile(filepath.Join(dir, "script.json"))
	if err != nil {
		return fail(err)
	}
	var rules []fakeRule
	if err := json.Unmarshal(script, &rules); err != nil {
		return fail(err)
	}
	var rule *fakeRule
	for i := range rules {
		if strings.Join(rules[i].Args, "\x00") == strings.Join(args, "\x00") && len(rules[i].Args) == len(args) {
			rule = &rules[i]
			break
		}
	}
	if rule == nil {
		return fail(fmt.Errorf("no rule for %q", args))
	}
	if rule.ReadStdin {
		h := sha256.New()
		var r io.Reader = os.Stdin
		if rule.StdinLimit > 0 {
			r = io.LimitReader(r, rule.StdinLimit)
		}
		n, err := io.Copy(h, r)
		if err != nil {
			return fail(err)
		}
		rec, _ := json.Marshal(fakeStdin{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))})
		if err := os.WriteFile(filepath.Join(dir, "stdin."+strconv.Itoa(os.Getpid())), rec, 0o644); err != nil {
			return fail(err)
		}
	}
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	out.WriteString(rule.Stdout)
	if b, err := hex.DecodeString(rule.StdoutHex); err == nil {
		out.Write(b)
	}
	if rule.Env != "" {
		out.WriteString(os.Getenv(rule.Env))
	}
	chunk := make([]byte, 64<<10)
	for off := int64(0); off < rule.StreamBytes; off += int64(len(chunk)) {
		n := min(int64(len(chunk)), rule.StreamBytes-off)
		for i := range n {
			chunk[i] = patternByte(off + i)
		}
		if _, err := out.Write(chunk[:n]); err != nil {
			return 141 // as if killed by SIGPIPE
		}
	}
	if err := out.Flush(); err != nil {
		return 141
	}
	os.Stderr.WriteString(rule.Stderr)
	if rule.Hang {
		for {
			time.Sleep(time.Hour)
		}
	}
	return rule.Exit
}

// fake is one test's fake zfs.
type fake struct {
	t     testing.TB
	dir   string
	bin   string
	rules []fakeRule
}

func newFake(t testing.TB) *fake {
	t.Helper()
	dir := t.TempDir()
	f := &fake{t: t, dir: dir, bin: filepath.Join(dir, "zfs")}
	require.NoError(t, os.Symlink(testBinary, f.bin))
	f.save()
	t.Cleanup(func() {
		// Every child must have been reaped by the time a test ends.
		if kids := children(); len(kids) > 0 {
			t.Errorf("child processes left behind: %v", kids)
		}
	})
	return f
}

func (f *fake) save() {
	b, err := json.Marshal(f.rules)
	require.NoError(f.t, err)
	tmp := filepath.Join(f.dir, "script.json.tmp")
	require.NoError(f.t, os.WriteFile(tmp, b, 0o644))
	require.NoError(f.t, os.Rename(tmp, filepath.Join(f.dir, "script.json")))
}

// on adds a rule for the command line args (split on spaces unless a
// field holds a tab: use onArgs then).
func (f *fake) on(args string, r fakeRule) {
	f.onArgs(strings.Fields(args), r)
}

func (f *fake) onArgs(args []string, r fakeRule) {
	r.Args = args
	f.rules = append(f.rules, r)
	f.save()
}

func (f *fake) cli() *CLI { return New(Options{ZFSBinary: f.bin}) }

func (f *fake) calls() []fakeCall {
	b, err := os.ReadFile(filepath.Join(f.dir, "calls"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(f.t, err)
	var cs []fakeCall
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var c fakeCall
		require.NoError(f.t, json.Unmarshal([]byte(line), &c))
		cs = append(cs, c)
	}
	return cs
}

// commands is the calls as space-joined command lines.
func (f *fake) commands() []string {
	var out []string
	for _, c := range f.calls() {
		out = append(out, strings.Join(c.Args, " "))
	}
	return out
}

func (f *fake) stdin(pid int) (fakeStdin, bool) {
	b, err := os.ReadFile(filepath.Join(f.dir, "stdin."+strconv.Itoa(pid)))
	if errors.Is(err, os.ErrNotExist) {
		return fakeStdin{}, false
	}
	require.NoError(f.t, err)
	var s fakeStdin
	require.NoError(f.t, json.Unmarshal(b, &s))
	return s, true
}

// waitCalls waits until the fake has recorded n calls: a started child
// records itself before anything else. Bounded so a broken test fails
// instead of hanging; the bound is not a speed assertion.
func (f *fake) waitCalls(n int) []fakeCall {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cs := f.calls()
		if len(cs) >= n {
			return cs
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("fake zfs recorded %d calls, want %d", len(cs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gone reports whether pid no longer exists at all: not running and not a
// zombie (kill(pid, 0) succeeds on a zombie).
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// children lists the pids whose parent is this process, zombies included,
// from /proc.
func children() []int {
	me := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 2 {
			if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == me {
				kids = append(kids, pid)
			}
		}
	}
	return kids
}

package machine

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
)

// The machine is driven by scripts: each line is an event, and the
// tab-indented lines after it are the decisions its Ready must hold then
// (none when there are none). No model, no goroutine, no clock.
//
//	new [steps=N] [estimates=N] [attempts=N] [initial=all] [abort-foreign]
//	listed [sender-err=MSG] [receiver-err=MSG]
//	estimated ID SIZE|err
//	action ID ok|err=MSG
//	step ID ok|err=MSG|permanent=MSG|suspended
//	resize N | timer | cancel

func snap(name string, guid, txg uint64) zfs.FilesystemVersion {
	return zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: name, GUID: guid, CreateTXG: txg}
}

func fs(side, path string, vs ...zfs.FilesystemVersion) endpoint.Filesystem {
	return endpoint.Filesystem{Path: path, Info: zfs.FilesystemInfo{Path: zfs.MustDatasetPath(side + "/" + path), Encryption: "off", KeyStatus: zfs.KeyStatusNone}, Versions: vs}
}

func render(rd Ready) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, "\t"+format+"\n", args...) }
	if rd.List {
		line("list")
	}
	for _, e := range rd.Estimate {
		line("estimate %d %s", e.ID, stepName(e.Req))
	}
	for _, id := range rd.Abandon {
		line("abandon %d", id)
	}
	for _, a := range rd.Actions {
		switch a.Kind {
		case AbortPartialReceive:
			// The reason is the planner's wording.
			line("action %d abort %s", a.ID, a.FS)
		case ConfirmOnSender:
			line("action %d confirm %s", a.ID, stepName(a.Confirm))
		case MoveLastReceivedHold:
			line("action %d hold %s %s", a.ID, a.FS, a.HoldTo.RelName())
		}
	}
	for _, s := range rd.Start {
		extra := ""
		if s.Last {
			extra += " last"
		}
		if s.Expected > 0 {
			extra += fmt.Sprintf(" expected=%d", s.Expected)
		}
		if s.Resume {
			extra += " resume"
		}
		line("start %d %s%s", s.ID, stepName(s.Send), extra)
	}
	for _, id := range rd.Suspend {
		line("suspend %d", id)
	}
	if rd.Sleep > 0 {
		line("sleep %v", rd.Sleep)
	}
	if rd.Done != nil {
		parts := []string{fmt.Sprintf("done attempts=%d", rd.Done.Attempts)}
		for _, f := range rd.Done.Filesystems {
			p := fmt.Sprintf("%s=%s/%d", f.FS, strings.ReplaceAll(string(f.State), " ", "-"), f.StepsDone)
			if f.Err != nil {
				p += fmt.Sprintf("(%v)", f.Err)
			}
			if f.Permanent {
				p += "!"
			}
			parts = append(parts, p)
		}
		line("%s", strings.Join(parts, " "))
	}
	return b.String()
}

func stepName(r endpoint.SendRequest) string {
	s := r.FS + " "
	if r.From == nil {
		s += "full " + r.To.RelName()
	} else {
		s += r.From.RelName() + " -> " + r.To.RelName()
	}
	if r.ResumeToken != "" {
		s += " (resuming)"
	}
	return s
}

type permanentErr string

func (e permanentErr) Error() string   { return string(e) }
func (e permanentErr) Permanent() bool { return true }

// script runs a script against listings and fails at the first Ready that
// differs.
func script(t *testing.T, sender, receiver []endpoint.Filesystem, text string) {
	t.Helper()
	var m *Machine
	lines := strings.Split(strings.TrimSpace(text), "\n")
	for i := 0; i < len(lines); {
		ev := strings.TrimSpace(lines[i])
		i++
		var want strings.Builder
		for i < len(lines) && strings.HasPrefix(lines[i], "\t") {
			want.WriteString(lines[i] + "\n")
			i++
		}
		f := strings.Fields(ev)
		arg := func(k int) string {
			if k < len(f) {
				return f[k]
			}
			return ""
		}
		num := func(k int) int {
			n, err := strconv.Atoi(arg(k))
			if err != nil {
				t.Fatalf("line %q: %v", ev, err)
			}
			return n
		}
		outcome := func(s string) error {
			switch {
			case s == "ok":
				return nil
			case s == "suspended":
				return fmt.Errorf("%w (context canceled)", ErrSuspended)
			case strings.HasPrefix(s, "err="):
				return errors.New(strings.ReplaceAll(s[4:], "_", " "))
			case strings.HasPrefix(s, "permanent="):
				return permanentErr(strings.ReplaceAll(s[10:], "_", " "))
			}
			t.Fatalf("line %q: unknown outcome %q", ev, s)
			return nil
		}
		switch f[0] {
		case "new":
			var cfg Config
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.Atoi(v)
				switch k {
				case "steps":
					cfg.Concurrency = n
				case "estimates":
					cfg.SizeEstimates = n
				case "attempts":
					cfg.MaxAttempts = n
				case "initial":
					cfg.Policy.InitialReplication = planner.AllSnapshots
				case "abort-foreign":
					cfg.Policy.AbortForeignPartialReceive = true
				}
			}
			m = New(cfg)
		case "listed":
			var serr, rerr error
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "sender-err":
					serr = errors.New(v)
				case "receiver-err":
					rerr = errors.New(v)
				}
			}
			m.Listed(sender, receiver, serr, rerr)
		case "estimated":
			if arg(2) == "err" {
				m.Estimated(StepID(num(1)), 0, errors.New("estimate failed"))
			} else {
				m.Estimated(StepID(num(1)), int64(num(2)), nil)
			}
		case "action":
			m.ActionDone(ActionID(num(1)), outcome(arg(2)))
		case "step":
			m.StepDone(StepID(num(1)), outcome(arg(2)))
		case "resize":
			if err := m.Resize(num(1)); err != nil {
				t.Fatal(err)
			}
		case "timer":
			m.TimerFired()
		case "cancel":
			m.Cancel(errors.New("job stopped"))
		default:
			t.Fatalf("unknown event %q", ev)
		}
		if got := render(m.Ready()); got != want.String() {
			t.Fatalf("after %q:\ngot:\n%swant:\n%s", ev, got, want.String())
		}
	}
}

// Children wait for their parent's first step; estimates come first for
// the steps about to be queued, then by step index; a step starts once its
// estimate is in.
func TestChildrenWaitForParent(t *testing.T) {
	sender := []endpoint.Filesystem{
		fs("pool", "data", snap("s1", 1, 10), snap("s2", 2, 20)),
		fs("pool", "data/c", snap("s1", 3, 11)),
	}
	script(t, sender, nil, `
new steps=2 estimates=2 initial=all
	list
listed
	estimate 0 pool/data full @s1
	estimate 2 pool/data/c full @s1
estimated 2 100
	estimate 1 pool/data @s1 -> @s2
estimated 0 1000
	start 0 pool/data full @s1 expected=1000
step 0 ok
	start 2 pool/data/c full @s1 last expected=100
estimated 1 50
	start 1 pool/data @s1 -> @s2 last expected=50
step 2 ok
step 1 ok
	done attempts=1 data=done/2 data/c=done/1
`)
}

// A failed parent fails its children; a temporary failure retries after
// the backoff, with a new listing; a permanent one ends the run.
func TestFailureRetriesAndPermanentEnds(t *testing.T) {
	sender := []endpoint.Filesystem{fs("pool", "data", snap("s1", 1, 10)), fs("pool", "data/c", snap("s1", 3, 11))}
	script(t, sender, nil, `
new attempts=3
	list
listed
	estimate 0 pool/data full @s1
	estimate 1 pool/data/c full @s1
estimated 0 10
	start 0 pool/data full @s1 last expected=10
step 0 err=connection_reset
	abandon 1
estimated 1 10
	sleep 2s
resize 2
timer
	list
listed sender-err=unreachable
	sleep 4s
timer
	list
listed
	estimate 0 pool/data full @s1
	estimate 1 pool/data/c full @s1
estimated 1 err
estimated 0 err
	start 0 pool/data full @s1 last
step 0 permanent=refused
	done attempts=3 data=failed/0(refused)! data/c=failed/0(parent data was not replicated)!
`)
}

// Lowering the limit suspends the youngest step; it resumes first, as a
// resume of its partial state.
func TestResizeSuspendsYoungest(t *testing.T) {
	sender := []endpoint.Filesystem{fs("pool", "a", snap("s1", 1, 10)), fs("pool", "b", snap("s1", 2, 11)), fs("pool", "c", snap("s1", 3, 12))}
	script(t, sender, nil, `
new steps=3 estimates=3
	list
listed
	estimate 0 pool/a full @s1
	estimate 1 pool/b full @s1
	estimate 2 pool/c full @s1
estimated 0 1
	start 0 pool/a full @s1 last expected=1
estimated 1 2
	start 1 pool/b full @s1 last expected=2
estimated 2 3
	start 2 pool/c full @s1 last expected=3
resize 1
	suspend 2
	suspend 1
step 1 suspended
step 2 ok
step 0 ok
	start 1 pool/b full @s1 last expected=2 resume
step 1 ok
	done attempts=1 a=done/1 b=done/1 c=done/1
`)
}

// A cancelled run starts nothing new and fails what waits with the cause.
func TestCancelFailsWhatWaits(t *testing.T) {
	sender := []endpoint.Filesystem{fs("pool", "a", snap("s1", 1, 10)), fs("pool", "b", snap("s1", 2, 11)), fs("pool", "b/c", snap("s1", 3, 12))}
	script(t, sender, nil, `
new
	list
listed
	estimate 0 pool/a full @s1
	estimate 1 pool/b full @s1
	estimate 2 pool/b/c full @s1
estimated 0 1
	start 0 pool/a full @s1 last expected=1
estimated 1 1
estimated 2 1
cancel
step 0 err=context_canceled
	done attempts=1 a=failed/0(context canceled) b=failed/0(job stopped) b/c=failed/0(parent b was not replicated)
`)
}

// An up-to-date filesystem whose marks a failed bookkeeping left behind
// gets them put right, one call after another; a failing call fails it.
func TestUpToDateReconciles(t *testing.T) {
	sender := []endpoint.Filesystem{fs("pool", "data", snap("s1", 1, 10))}
	receiver := []endpoint.Filesystem{fs("backup", "data", snap("s1", 1, 3))}
	script(t, sender, receiver, `
new
	list
listed
	action 0 confirm pool/data full @s1
action 0 ok
	action 1 hold data @s1
action 1 err=dataset_is_busy
	sleep 2s
cancel
	done attempts=1 data=failed/0(move last-received hold to @s1 (up to date): dataset is busy)
`)
}

// A foreign partial receive is aborted before the filesystem's steps.
func TestAbortBeforeSteps(t *testing.T) {
	sender := []endpoint.Filesystem{fs("pool", "data", snap("s1", 1, 10), snap("s2", 2, 20))}
	r := fs("backup", "data", snap("s1", 1, 3))
	r.Info.ReceiveResumeToken = "not-a-token"
	script(t, sender, []endpoint.Filesystem{r}, `
new abort-foreign
	list
listed
	estimate 0 pool/data @s1 -> @s2
	action 0 abort data
estimated 0 5
action 0 ok
	start 0 pool/data @s1 -> @s2 last expected=5
step 0 ok
	done attempts=1 data=done/1
`)
}

// The default backoff doubles up to a minute.
func TestDefaultBackoff(t *testing.T) {
	c := Config{}
	c.defaults()
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 3: 8 * time.Second, 6: time.Minute, 20: time.Minute} {
		if got := c.Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", n, got, want)
		}
	}
}

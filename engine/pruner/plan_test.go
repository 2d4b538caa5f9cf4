package pruner

import (
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPlanKeptByAnyRule(t *testing.T) {
	snaps := []Snapshot{
		at("zrepl_1", 1, 50*time.Hour), at("manual_2", 2, 40*time.Hour), at("zrepl_3", 3, 30*time.Hour),
		at("zrepl_4", 4, 20*time.Hour), at("zrepl_5", 5, 2*time.Hour), at("zrepl_6", 6, time.Hour),
		at("zrepl_7", 7, 0),
	}
	for i := range snaps[:6] {
		snaps[i].Replicated = true
	}
	p := Policy{Rules: []Rule{
		KeepNotReplicated(), // zrepl_7
		KeepRegex(regexp.MustCompile("^manual_"), false),                         // manual_2
		KeepLastN(1, regexp.MustCompile("^zrepl_[0-4]$")),                        // zrepl_4
		KeepGrid([]GridInterval{{Length: 90 * time.Minute, Keep: KeepAll}}, nil), // zrepl_6, zrepl_7
	}}
	got := names(Plan(snaps, p, t0))
	// zrepl_6 is the newest replicated: protected. zrepl_5 is outside the
	// grid and matches nothing else.
	want := []string{"zrepl_1", "zrepl_3", "zrepl_5"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("destroyed (-want +got):\n%s", d)
	}
}

func TestPlanNoRulesDestroysAllButProtected(t *testing.T) {
	snaps := []Snapshot{at("a", 1, 3*time.Hour), at("b", 2, 2*time.Hour), at("c", 3, time.Hour), at("d", 4, 0)}
	snaps[1].Held = true
	snaps[2].Replicated = true
	snaps[0].Replicated = true
	got := names(Plan(snaps, Policy{}, t0))
	// b held, c newest replicated, d newest.
	if d := cmp.Diff([]string{"a"}, got); d != "" {
		t.Errorf("destroyed (-want +got):\n%s", d)
	}
}

func TestPlanPrefixIsolation(t *testing.T) {
	snaps := []Snapshot{
		at("manual_1", 1, 5*time.Hour), at("zrepl_2", 2, 4*time.Hour), at("manual_3", 3, 3*time.Hour),
		at("zrepl_4", 4, 2*time.Hour), at("zrepl_5", 5, time.Hour), at("manual_6", 6, 0),
	}
	p := Policy{Prefix: "zrepl_", Rules: []Rule{KeepLastN(1, nil)}}
	got := names(Plan(snaps, p, t0))
	// The rules see only zrepl_*: last_n keeps zrepl_5 although manual_6
	// is newer; manual_* are never destroyed.
	if d := cmp.Diff([]string{"zrepl_2", "zrepl_4"}, got); d != "" {
		t.Errorf("destroyed (-want +got):\n%s", d)
	}
}

func TestPlanProtections(t *testing.T) {
	// The newest snapshot is the newest by createtxg, whatever its
	// creation time says.
	snaps := []Snapshot{at("a", 1, time.Hour), at("b", 2, 2*time.Hour), at("c", 3, 3*time.Hour)}
	if d := cmp.Diff([]string{"a", "b"}, names(Plan(snaps, Policy{}, t0))); d != "" {
		t.Errorf("newest by txg: destroyed (-want +got):\n%s", d)
	}

	// The incremental base stays even when outside the prefix is newer.
	snaps = []Snapshot{at("zrepl_1", 1, 3*time.Hour), at("zrepl_2", 2, 2*time.Hour), at("zrepl_3", 3, time.Hour), at("manual_4", 4, 0)}
	snaps[0].Replicated, snaps[1].Replicated = true, true
	if d := cmp.Diff([]string{"zrepl_1", "zrepl_3"}, names(Plan(snaps, Policy{Prefix: "zrepl_"}, t0))); d != "" {
		t.Errorf("incremental base: destroyed (-want +got):\n%s", d)
	}

	// Held snapshots stay, kept by no rule or not.
	snaps = []Snapshot{at("a", 1, 3*time.Hour), at("b", 2, 2*time.Hour), at("c", 3, time.Hour)}
	snaps[0].Held = true
	if d := cmp.Diff([]string{"b"}, names(Plan(snaps, Policy{}, t0))); d != "" {
		t.Errorf("held: destroyed (-want +got):\n%s", d)
	}

	if got := Plan(nil, Policy{}, t0); len(got) != 0 {
		t.Errorf("empty input planned %v", got)
	}
	if got := Plan([]Snapshot{at("only", 1, 1000*time.Hour)}, Policy{}, t0); got != nil {
		t.Errorf("a lone snapshot is the newest, planned %v", got)
	}
}

// TestPlanCursorSnapshotMayGo: with keep_snapshot_at_cursor: false the
// snapshot at the cursor is replicated like the older ones, and not_replicated
// lets it go; the newest snapshot stays protected.
func TestPlanCursorSnapshotMayGo(t *testing.T) {
	snaps := []Snapshot{at("zrepl_1", 1, 3*time.Hour), at("zrepl_2", 2, 2*time.Hour), at("zrepl_3", 3, time.Hour)}
	snaps[0].Replicated, snaps[1].Replicated = true, true // the cursor is at zrepl_2
	p := Policy{Rules: []Rule{KeepNotReplicated()}}
	if d := cmp.Diff([]string{"zrepl_1"}, names(Plan(snaps, p, t0))); d != "" {
		t.Errorf("default: destroyed (-want +got):\n%s", d)
	}
	p.CursorSnapshotMayGo = true
	if d := cmp.Diff([]string{"zrepl_1", "zrepl_2"}, names(Plan(snaps, p, t0))); d != "" {
		t.Errorf("cursor snapshot may go: destroyed (-want +got):\n%s", d)
	}
	snaps[2].Replicated = true
	if d := cmp.Diff([]string{"zrepl_1", "zrepl_2"}, names(Plan(snaps, p, t0))); d != "" {
		t.Errorf("the newest stays: destroyed (-want +got):\n%s", d)
	}
}

func TestPlanNilRuleIgnored(t *testing.T) {
	snaps := []Snapshot{at("a", 1, time.Hour), at("b", 2, 0)}
	if d := cmp.Diff([]string{"a"}, names(Plan(snaps, Policy{Rules: []Rule{nil}}, t0))); d != "" {
		t.Errorf("destroyed (-want +got):\n%s", d)
	}
}

// The retention grid of the docs' example over two days of snapshots
// every 10 minutes: the first hour keeps all, then one per hour.
func TestPlanGridTwoDays(t *testing.T) {
	var snaps []Snapshot
	for i := 0; i < 2*24*6; i++ {
		ago := time.Duration(2*24*6-1-i) * 10 * time.Minute
		s := at("zrepl_"+t0.Add(-ago).Format("20060102_150405"), uint64(i+1), ago)
		s.Replicated = true
		snaps = append(snaps, s)
	}
	p := Policy{Prefix: "zrepl_", Rules: []Rule{
		KeepNotReplicated(),
		KeepGrid([]GridInterval{{Length: time.Hour, Keep: KeepAll}, {Length: time.Hour, Keep: 1, Repeat: 24}}, nil),
	}}
	plan := Plan(snaps, p, t0)
	kept := len(snaps) - len(plan)
	// 6 in the first hour (ages 0..50m), one per hour for 24 hours.
	if kept != 6+24 {
		t.Errorf("kept %d snapshots, want %d", kept, 6+24)
	}
	for _, s := range plan {
		if age := t0.Sub(s.Creation); age < time.Hour {
			t.Errorf("destroyed %s of age %v inside the keep=all hour", s.Name, age)
		}
	}
}

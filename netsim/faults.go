package netsim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// FaultKind says what a Fault does.
type FaultKind int

const (
	// FaultReset resets connection Conn when direction Dir reaches AtByte:
	// that direction's reader gets exactly AtByte bytes, then ECONNRESET.
	FaultReset FaultKind = iota + 1
	// FaultStall holds back everything after byte AtByte of Dir for For.
	FaultStall
	// FaultHalfOpen makes the connection half-open when Dir reaches AtByte.
	FaultHalfOpen
	// FaultPartition partitions hosts A and B from At (after the network's
	// creation) for For.
	FaultPartition
	// FaultRefuseDial refuses dial number Conn.
	FaultRefuseDial
)

var kindNames = map[FaultKind]string{
	FaultReset:      "reset",
	FaultStall:      "stall",
	FaultHalfOpen:   "half-open",
	FaultPartition:  "partition",
	FaultRefuseDial: "refuse-dial",
}

func (k FaultKind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("fault-kind(%d)", int(k))
}

// Fault is one scheduled fault. Connections are named by the number of the
// Dial that creates them (1 for the network's first dial, refused or not),
// which is deterministic when the test dials in a deterministic order.
type Fault struct {
	Kind   FaultKind
	Conn   int           // dial number (reset, stall, half-open, refuse-dial)
	Dir    Dir           // direction whose offset triggers the fault
	AtByte int64         // offset that triggers the fault
	For    time.Duration // stall and partition length
	A, B   string        // partitioned hosts
	At     time.Duration // partition start, after the network's creation
}

func (f Fault) String() string {
	switch f.Kind {
	case FaultReset:
		return fmt.Sprintf("conn#%d %v: reset at byte %d", f.Conn, f.Dir, f.AtByte)
	case FaultStall:
		return fmt.Sprintf("conn#%d %v: stall at byte %d for %v", f.Conn, f.Dir, f.AtByte, f.For)
	case FaultHalfOpen:
		return fmt.Sprintf("conn#%d %v: half-open at byte %d", f.Conn, f.Dir, f.AtByte)
	case FaultPartition:
		return fmt.Sprintf("partition %s|%s at +%v for %v", f.A, f.B, f.At, f.For)
	case FaultRefuseDial:
		return fmt.Sprintf("dial#%d: refused", f.Conn)
	}
	return fmt.Sprintf("%v %+v", f.Kind, struct {
		Conn   int
		Dir    Dir
		AtByte int64
	}{f.Conn, f.Dir, f.AtByte})
}

func (f Fault) validate() error {
	switch f.Kind {
	case FaultReset, FaultStall, FaultHalfOpen:
		if f.Conn < 1 {
			return fmt.Errorf("connection number %d is not positive", f.Conn)
		}
		if !f.Dir.valid() {
			return fmt.Errorf("direction %v is neither up nor down", f.Dir)
		}
		if f.AtByte < 0 {
			return fmt.Errorf("byte offset %d is negative", f.AtByte)
		}
		if f.Kind == FaultStall && f.For <= 0 {
			return fmt.Errorf("stall duration %v is not positive", f.For)
		}
	case FaultPartition:
		if err := validHost(f.A); err != nil {
			return err
		}
		if err := validHost(f.B); err != nil {
			return err
		}
		if f.A == f.B {
			return fmt.Errorf("cannot partition host %q from itself", f.A)
		}
		if f.At < 0 || f.For <= 0 {
			return fmt.Errorf("partition start %v must not be negative and duration %v must be positive", f.At, f.For)
		}
	case FaultRefuseDial:
		if f.Conn < 1 {
			return fmt.Errorf("dial number %d is not positive", f.Conn)
		}
	default:
		return fmt.Errorf("unknown fault kind %d", int(f.Kind))
	}
	return nil
}

// FaultPlan is a list of faults, usually generated from a seed. Its String
// form is meant for the log of a failing test.
type FaultPlan struct {
	Seed   int64
	Faults []Fault
}

func (p FaultPlan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fault plan (seed %d, %d faults)", p.Seed, len(p.Faults))
	for _, f := range p.Faults {
		b.WriteString("\n  ")
		b.WriteString(f.String())
	}
	return b.String()
}

// PlanConfig bounds what GeneratePlan may produce.
type PlanConfig struct {
	// Faults is how many faults to generate.
	Faults int
	// Conns: connection faults and refusals target dials 1..Conns.
	Conns int
	// MaxByte bounds trigger offsets: [0, MaxByte].
	MaxByte int64
	// MaxStall bounds stall lengths; stalls are off when zero.
	MaxStall time.Duration
	// Hosts are the candidates for partitions (at least two needed).
	Hosts []string
	// Horizon bounds partition starts: [0, Horizon).
	Horizon time.Duration
	// MaxPartition bounds partition lengths; partitions are off when zero.
	MaxPartition time.Duration
	// Kinds restricts the kinds generated; empty means every kind the
	// other fields allow.
	Kinds []FaultKind
}

func (c PlanConfig) possible(k FaultKind) error {
	switch k {
	case FaultReset, FaultHalfOpen, FaultRefuseDial:
		if c.Conns < 1 {
			return fmt.Errorf("%v needs Conns > 0", k)
		}
	case FaultStall:
		if c.Conns < 1 || c.MaxStall <= 0 {
			return fmt.Errorf("%v needs Conns > 0 and MaxStall > 0", k)
		}
	case FaultPartition:
		if len(c.Hosts) < 2 || c.Horizon <= 0 || c.MaxPartition <= 0 {
			return fmt.Errorf("%v needs two distinct Hosts, Horizon > 0 and MaxPartition > 0", k)
		}
	default:
		return fmt.Errorf("unknown fault kind %d", int(k))
	}
	return nil
}

// GeneratePlan draws cfg.Faults faults from a generator seeded by seed: the
// same seed and config always give the same plan.
func GeneratePlan(seed int64, cfg PlanConfig) (FaultPlan, error) {
	if cfg.Faults < 0 || cfg.Conns < 0 || cfg.MaxByte < 0 || cfg.MaxStall < 0 || cfg.Horizon < 0 || cfg.MaxPartition < 0 {
		return FaultPlan{}, fmt.Errorf("netsim: plan config has a negative bound: %+v", cfg)
	}
	if cfg.MaxByte == math.MaxInt64 {
		return FaultPlan{}, errors.New("netsim: plan config: MaxByte must be below MaxInt64")
	}
	// Partitions pick two different hosts among the distinct names given.
	var hosts []string
	seen := map[string]bool{}
	for _, h := range cfg.Hosts {
		if err := validHost(h); err != nil {
			return FaultPlan{}, fmt.Errorf("netsim: plan config: %w", err)
		}
		if !seen[h] {
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	cfg.Hosts = hosts
	kinds := cfg.Kinds
	if len(kinds) == 0 {
		for k := FaultReset; k <= FaultRefuseDial; k++ {
			if cfg.possible(k) == nil {
				kinds = append(kinds, k)
			}
		}
	}
	for _, k := range kinds {
		if err := cfg.possible(k); err != nil {
			return FaultPlan{}, fmt.Errorf("netsim: plan config: %w", err)
		}
	}
	plan := FaultPlan{Seed: seed}
	if cfg.Faults == 0 {
		return plan, nil
	}
	if len(kinds) == 0 {
		return FaultPlan{}, errors.New("netsim: plan config allows no fault kind (set Conns, or Hosts, Horizon and MaxPartition)")
	}
	// The stream constant only separates plan draws from jitter draws.
	rng := rand.New(rand.NewPCG(uint64(seed), 0x706c616e))
	// Durations are whole milliseconds (when the bound allows) so that plans
	// read well in logs.
	round := func(d, bound time.Duration) time.Duration {
		if bound >= 10*time.Millisecond {
			d = d.Truncate(time.Millisecond)
		}
		return d
	}
	dur := func(bound time.Duration) time.Duration {
		return max(1, round(1+time.Duration(rng.Int64N(int64(bound))), bound))
	}
	for i := 0; i < cfg.Faults; i++ {
		f := Fault{Kind: kinds[rng.IntN(len(kinds))]}
		switch f.Kind {
		case FaultReset, FaultStall, FaultHalfOpen:
			f.Conn = 1 + rng.IntN(cfg.Conns)
			f.Dir = Dir(rng.IntN(2))
			f.AtByte = rng.Int64N(cfg.MaxByte + 1) // MaxByte < MaxInt64, checked
			if f.Kind == FaultStall {
				f.For = dur(cfg.MaxStall)
			}
		case FaultRefuseDial:
			f.Conn = 1 + rng.IntN(cfg.Conns)
		case FaultPartition:
			i := rng.IntN(len(hosts))
			j := rng.IntN(len(hosts) - 1)
			if j >= i {
				j++
			}
			f.A, f.B = hosts[i], hosts[j]
			f.At = round(time.Duration(rng.Int64N(int64(cfg.Horizon))), cfg.Horizon)
			f.For = dur(cfg.MaxPartition)
		}
		plan.Faults = append(plan.Faults, f)
	}
	// Sorted for reading: partitions by start, then per connection by offset.
	sort.SliceStable(plan.Faults, func(i, j int) bool {
		a, b := plan.Faults[i], plan.Faults[j]
		ap, bp := a.Kind == FaultPartition, b.Kind == FaultPartition
		switch {
		case ap != bp:
			return ap
		case ap:
			return a.At < b.At
		case a.Conn != b.Conn:
			return a.Conn < b.Conn
		case a.Kind == FaultRefuseDial || b.Kind == FaultRefuseDial:
			return a.Kind == FaultRefuseDial && b.Kind != FaultRefuseDial
		case a.Dir != b.Dir:
			return a.Dir < b.Dir
		}
		return a.AtByte < b.AtByte
	})
	return plan, nil
}

// Schedule adds a plan's faults to the network. Connection faults must name
// dials that have not happened yet. Nothing is scheduled if any fault is
// invalid.
func (n *Network) Schedule(plan FaultPlan) error {
	for i, f := range plan.Faults {
		if err := f.validate(); err != nil {
			return fmt.Errorf("netsim: fault %d (%v): %w", i, f, err)
		}
	}
	n.mu.Lock()
	for i, f := range plan.Faults {
		if f.Kind != FaultPartition && f.Conn <= n.dials {
			n.mu.Unlock()
			return fmt.Errorf("netsim: fault %d (%v): dial #%d already happened", i, f, f.Conn)
		}
	}
	for _, f := range plan.Faults {
		switch f.Kind {
		case FaultRefuseDial:
			n.planRefused[f.Conn] = true
		case FaultReset, FaultStall, FaultHalfOpen:
			n.planConn[f.Conn] = append(n.planConn[f.Conn], f)
		}
	}
	n.mu.Unlock()
	for _, f := range plan.Faults {
		if f.Kind == FaultPartition {
			if err := n.addPartition(f.A, f.B, f.At, f.For, false); err != nil {
				return err
			}
		}
	}
	return nil
}

func (n *Network) applyConnFaultLocked(p *pipe, f Fault) {
	t := trigger{off: f.AtByte, dur: f.For}
	switch f.Kind {
	case FaultReset:
		t.kind = trigReset
	case FaultStall:
		t.kind = trigStall
	case FaultHalfOpen:
		t.kind = trigHalfOpen
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.s[f.Dir].addTrigger(t)
	_ = p.fireTriggers(int(f.Dir), time.Now())
}

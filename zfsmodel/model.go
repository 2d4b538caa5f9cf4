// Package zfsmodel is an in-memory ZFS: it implements zfs.ZFS with pools,
// filesystems, snapshots, bookmarks, holds, encryption, real byte send
// streams and resumable receives, printing the same error texts OpenZFS 2.1
// prints. Simulations and tests use it in place of a ZFS host; given a
// non-zero Options.Seed and a Clock it is deterministic. Without a seed its
// GUIDs are random, as a real pool's are: the daemon's model backend must
// never hand out a GUID twice, not even after its state went back in time
// (restored from a backup), since replication takes equal GUIDs for equal
// snapshots.
//
// File content is modelled as blocks of BlockSize bytes whose bytes are a
// function of a 64-bit key, so a filesystem of a gigabyte costs a few
// hundred kilobytes of memory and a send stream still carries every byte.
//
// Beyond zfs.ZFS, tests and simulations use the model-only methods:
// CreatePool, DestroyPool, CreateFilesystem, DestroyFilesystem, WriteData, LoadKey,
// UnloadKey, Checksum, LiveChecksum, Modified, Info and UserProperty; the
// fault hooks FailNext (fail the next calls of a method) and CutNextSend
// (end the next send stream early); and Save/Load, which persist the whole
// state. Options.CheckpointEvery/OnCheckpoint let a caller save the partial
// state of a receive while it runs, so a killed process resumes from there.
package zfsmodel

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// BlockSize is the size of one modelled data block (ZFS's default
// recordsize).
const BlockSize = 128 << 10

// Cipher is the encryption property of encrypted datasets.
const Cipher = "aes-256-gcm"

// Release is an OpenZFS release line whose behaviour the model imitates
// where the lines differ (so far: error texts). Each difference is a
// conformance case naming the versions it was measured on.
type Release string

const (
	// OpenZFS21 is the 2.1 line, measured on 2.1.11 (Debian 12).
	OpenZFS21 Release = "2.1"
	// OpenZFS23 is the 2.3 line, measured on 2.3.2 (bookworm-backports)
	// and 2.3.9 (Debian 13).
	OpenZFS23 Release = "2.3"
	// Newest is what a zero Options.Imitate means.
	Newest = OpenZFS23
)

// Releases lists the lines the model can imitate, oldest first.
var Releases = []Release{OpenZFS21, OpenZFS23}

// ParseRelease returns the line a version names: "2.1", "2.1.11" and
// "zfs-2.1.11-1+deb12u1" (zfs version's first line) are OpenZFS21.
func ParseRelease(version string) (Release, error) {
	v := strings.TrimPrefix(strings.TrimSpace(version), "zfs-")
	for _, r := range Releases {
		if v == string(r) || strings.HasPrefix(v, string(r)+".") || strings.HasPrefix(v, string(r)+"-") {
			return r, nil
		}
	}
	return "", fmt.Errorf("zfsmodel: OpenZFS version %q: the model imitates only %v", version, Releases)
}

// Options configure a Model.
type Options struct {
	// Imitate is the OpenZFS line whose behaviour the model shows where
	// the lines differ; empty means Newest. New panics on a value not in
	// Releases (use ParseRelease on input).
	Imitate Release
	// Seed, if non-zero, makes GUIDs and encryption key IDs a
	// deterministic sequence (tests and simulations). Zero draws them from
	// crypto/rand.
	Seed int64
	// Clock gives snapshot creation times. Nil means a fake clock that
	// starts at 2020-01-01 UTC and advances one second per reading, so
	// that a model without a clock is still deterministic.
	Clock func() time.Time
	// CheckpointEvery makes a resumable receive (-s) record its partial
	// state and resume token each time this many more bytes of the stream
	// arrived, as real ZFS keeps what a receive wrote up to the last
	// transaction group sync: a process killed mid-stream can resume from
	// the last checkpoint if the state was saved there. 0 (or less) turns it off
	// (the state is recorded only when the receive ends).
	CheckpointEvery int64
	// OnCheckpoint, if set, is called after each checkpoint, without the
	// model's lock held (it may call Save), on the receiving goroutine:
	// the receive reads no further until it returns.
	OnCheckpoint func()
}

// Model is an in-memory ZFS host. It is safe for concurrent use.
type Model struct {
	mu    sync.Mutex
	clock func() time.Time
	st    state

	// receiving marks filesystems with a receive in flight (not persisted).
	receiving map[string]bool
	faults    map[string][]error
	cuts      []int64

	ckEvery int64
	onCk    func()
	release Release
}

// state is everything Save persists.
type state struct {
	// Seed is Options.Seed (0: random GUIDs); GUIDCounter counts the
	// GUIDs drawn, the position in a seeded sequence.
	Seed        int64
	GUIDCounter uint64
	Pools       map[string]*pool
	Datasets    map[string]*dataset
}

type pool struct {
	Name string
	TXG  uint64
}

type dataset struct {
	Name      string
	GUID      uint64
	Encrypted bool
	// EncRoot is the encryption root's name; equal to Name for a root.
	EncRoot string
	// KeyID identifies an encryption root's key; KeyLoaded is its
	// keystatus. Both are only meaningful on an encryption root.
	KeyID     uint64
	KeyLoaded bool
	Props     map[string]string
	// Received are the property values the last receive with a property
	// stream (zfs send -p or -b) set: a local value in Props overrides
	// one, as `zfs get` shows it.
	Received map[string]string `json:",omitempty"`
	Head     content
	// HeadTXG is the birth txg of the newest change of the live
	// filesystem; it is "modified since snapshot S" iff HeadTXG > S.TXG
	// and Head differs from S's content (modifiedSince).
	HeadTXG   uint64
	Snaps     []*snapshot // ascending TXG
	Bookmarks []*bookmark
	Partial   *partial `json:",omitempty"`
}

type snapshot struct {
	Name     string
	GUID     uint64
	TXG      uint64
	Creation time.Time
	Holds    []string // sorted
	Content  content
}

type bookmark struct {
	Name     string
	GUID     uint64
	TXG      uint64
	Creation time.Time
}

// content maps block numbers to blocks.
type content map[uint64]block

type block struct {
	// Key determines the block's bytes (see fillBlock).
	Key uint64
	// Birth is the pool txg in which the block was written; incremental
	// sends carry the blocks born after the source's txg, as ZFS does.
	Birth uint64
	// Sum is the CRC-32C of the block's plain bytes.
	Sum uint32
}

func (c content) clone() content {
	out := make(content, len(c))
	for k, v := range c {
		out[k] = v
	}
	return out
}

// New returns an empty model.
func New(o Options) *Model {
	m := &Model{st: state{Seed: o.Seed, Pools: map[string]*pool{}, Datasets: map[string]*dataset{}}}
	m.init(o)
	return m
}

func (m *Model) init(o Options) {
	m.clock = o.Clock
	if m.clock == nil {
		t := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
		m.clock = func() time.Time { t = t.Add(time.Second); return t }
	}
	m.receiving = map[string]bool{}
	m.faults = map[string][]error{}
	m.ckEvery, m.onCk = max(o.CheckpointEvery, 0), o.OnCheckpoint
	m.release = o.Imitate
	if m.release == "" {
		m.release = Newest
	}
	if !slices.Contains(Releases, m.release) {
		panic(fmt.Sprintf("zfsmodel: Options.Imitate %q is not one of %v", o.Imitate, Releases))
	}
}

// Imitates is the OpenZFS line the model imitates.
func (m *Model) Imitates() Release { return m.release }

var _ zfs.ZFS = (*Model)(nil)

const golden = 0x9E3779B97F4A7C15

func splitmix(x uint64) uint64 {
	x += golden
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// newGUID draws the next GUID. Seeded, splitmix is a bijection and its
// inputs never repeat, so GUIDs are unique within one model's history as
// long as that history only moves forward; unseeded, they are random, so
// a state restored from a backup does not hand out the GUIDs it handed
// out after the backup once more.
func (m *Model) newGUID() uint64 {
	for {
		m.st.GUIDCounter++
		var g uint64
		if m.st.Seed != 0 {
			g = splitmix(uint64(m.st.Seed) + m.st.GUIDCounter*golden)
		} else {
			var b [8]byte
			rand.Read(b[:]) // never fails (crypto/rand's documentation)
			g = binary.LittleEndian.Uint64(b[:])
		}
		if g != 0 {
			return g
		}
	}
}

func (m *Model) nextTXG(poolName string) uint64 {
	p := m.st.Pools[poolName]
	p.TXG++
	return p.TXG
}

func zerr(kind zfs.Kind, op, ds, format string, args ...any) *zfs.Error {
	return &zfs.Error{Kind: kind, Op: op, Dataset: ds, Msg: fmt.Sprintf(format, args...)}
}

func nameErr(op, ds string, err error) error {
	return &zfs.Error{Kind: zfs.ErrInvalidName, Op: op, Dataset: ds, Msg: err.Error(), Err: err}
}

func checkPath(op string, p zfs.DatasetPath) error {
	if p.IsZero() {
		return nameErr(op, "", &zfs.NameError{Name: "", What: "dataset", Reason: "empty name", Pos: -1})
	}
	if err := zfs.ValidateDatasetPath(p.String()); err != nil {
		return nameErr(op, p.String(), err)
	}
	return nil
}

func checkRef(op string, r zfs.VersionRef, want zfs.VersionKind) error {
	if r.FS.IsZero() {
		return nameErr(op, r.String(), &zfs.NameError{Name: r.String(), What: "dataset", Reason: "empty name", Pos: -1})
	}
	if err := r.Validate(); err != nil {
		return nameErr(op, r.String(), err)
	}
	if want != 0 && r.Kind != want {
		return zerr(zfs.ErrInvalidName, op, r.String(), "'%s' is not a %s", r.String(), want)
	}
	return nil
}

func notExist(op, name string) *zfs.Error {
	return zerr(zfs.ErrDatasetNotExist, op, name, "cannot open '%s': dataset does not exist", name)
}

// takeFault pops a queued fault for the first of methods that has one,
// if any. Called with mu held.
func (m *Model) takeFault(methods ...string) error {
	for _, method := range methods {
		q := m.faults[method]
		if len(q) == 0 {
			continue
		}
		m.faults[method] = q[1:]
		return q[0]
	}
	return nil
}

func (m *Model) lookup(op, name string) (*dataset, error) {
	d := m.st.Datasets[name]
	if d == nil {
		return nil, notExist(op, name)
	}
	return d, nil
}

func (d *dataset) snap(name string) *snapshot {
	for _, s := range d.Snaps {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (d *dataset) bookmark(name string) *bookmark {
	for _, b := range d.Bookmarks {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// versionByGUID finds a snapshot or bookmark of d by GUID, preferring the
// snapshot; txg is its createtxg.
func (d *dataset) versionByGUID(guid uint64) (txg uint64, ok bool) {
	for _, s := range d.Snaps {
		if s.GUID == guid {
			return s.TXG, true
		}
	}
	for _, b := range d.Bookmarks {
		if b.GUID == guid {
			return b.TXG, true
		}
	}
	return 0, false
}

// partialBase is the snapshot the saved state of a partial incremental
// receive builds on, or nil. In real ZFS that state is a clone of it.
func (d *dataset) partialBase() *snapshot {
	p := d.Partial
	if p == nil || p.Full || p.Overwrite {
		return nil
	}
	for _, s := range d.Snaps {
		if s.GUID == p.BaseGUID {
			return s
		}
	}
	return nil
}

// recvClone is the name of the hidden clone real ZFS keeps the partial
// state of an incremental receive in; error texts name it.
func (d *dataset) recvClone() string { return d.Name + "/%recv" }

func (d *dataset) latest() *snapshot {
	if len(d.Snaps) == 0 {
		return nil
	}
	return d.Snaps[len(d.Snaps)-1]
}

// modifiedSince is ZFS's "modified since snapshot s": the head written
// after s and differing from it. ZFS compares the two objsets' meta
// dnodes, so a head that a receive left block for block as its base was
// (an incremental that changed nothing), with that receive's snapshot
// destroyed, is not modified (TestDifferential, 2.3.9).
func (d *dataset) modifiedSince(s *snapshot) bool {
	return d.HeadTXG > s.TXG && !maps.Equal(d.Head, s.Content)
}

// root returns the encryption root of d, or nil if d is not encrypted.
func (m *Model) root(d *dataset) *dataset {
	if !d.Encrypted {
		return nil
	}
	return m.st.Datasets[d.EncRoot]
}

func (m *Model) keyLoaded(d *dataset) bool {
	r := m.root(d)
	return r == nil || r.KeyLoaded
}

func poolOf(name string) string {
	p, _, _ := strings.Cut(name, "/")
	return p
}

func parentOf(name string) (string, bool) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", false
	}
	return name[:i], true
}

// CreatePool creates a pool and its root filesystem.
func (m *Model) CreatePool(name string) error {
	if err := zfs.ValidateDatasetPath(name); err != nil {
		return nameErr("create", name, err)
	}
	if strings.Contains(name, "/") {
		return zerr(zfs.ErrInvalidName, "create", name, "cannot create '%s': a pool name has no '/'", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st.Pools[name] != nil {
		return zerr(zfs.ErrDatasetExists, "create", name, "cannot create '%s': pool already exists", name)
	}
	m.st.Pools[name] = &pool{Name: name}
	m.st.Datasets[name] = &dataset{Name: name, GUID: m.newGUID(), Props: map[string]string{}, Head: content{}}
	return nil
}

// DestroyPool destroys a pool and everything in it, holds or not (zpool
// destroy -f). It refuses while a receive into the pool is in flight.
func (m *Model) DestroyPool(name string) error {
	const op = "destroy"
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st.Pools[name] == nil {
		return zerr(zfs.ErrDatasetNotExist, op, name, "cannot open '%s': no such pool", name)
	}
	for ds := range m.receiving {
		if poolOf(ds) == name {
			return zerr(zfs.ErrDatasetBusy, op, name, "cannot destroy '%s': pool is busy", name)
		}
	}
	for ds := range m.st.Datasets {
		if poolOf(ds) == name {
			delete(m.st.Datasets, ds)
		}
	}
	delete(m.st.Pools, name)
	return nil
}

// FSOptions configure CreateFilesystem.
type FSOptions struct {
	// Parents creates missing parents (zfs create -p).
	Parents bool
	// Encrypted makes the filesystem a new encryption root with its key
	// loaded. Without it a filesystem inherits its parent's encryption.
	Encrypted bool
}

// CreateFilesystem creates fs (zfs create).
func (m *Model) CreateFilesystem(fs zfs.DatasetPath, o FSOptions) error {
	const op = "create"
	if err := checkPath(op, fs); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.createLocked(op, fs.String(), o, nil)
}

func (m *Model) createLocked(op, name string, o FSOptions, props map[string]string) error {
	if m.st.Datasets[name] != nil {
		return zerr(zfs.ErrDatasetExists, op, name, "cannot create '%s': dataset already exists", name)
	}
	if m.st.Pools[poolOf(name)] == nil {
		return zerr(zfs.ErrDatasetNotExist, op, name, "cannot create '%s': no such pool '%s'", name, poolOf(name))
	}
	parentName, _ := parentOf(name)
	parent := m.st.Datasets[parentName]
	if parent == nil {
		if !o.Parents {
			return zerr(zfs.ErrDatasetNotExist, op, name, "cannot create '%s': parent does not exist", name)
		}
		if err := m.createLocked(op, parentName, FSOptions{Parents: true}, nil); err != nil {
			return err
		}
		parent = m.st.Datasets[parentName]
	}
	d := &dataset{Name: name, GUID: m.newGUID(), Props: map[string]string{}, Head: content{}}
	for k, v := range props {
		d.Props[k] = v
	}
	switch {
	case o.Encrypted:
		d.Encrypted, d.EncRoot, d.KeyID, d.KeyLoaded = true, name, m.newGUID(), true
	case parent.Encrypted:
		if !m.keyLoaded(parent) {
			return zerr(zfs.ErrKeyNotLoaded, op, name, "cannot create '%s': encryption root's key is not loaded or provided", name)
		}
		d.Encrypted, d.EncRoot = true, parent.EncRoot
	}
	m.st.Datasets[name] = d
	return nil
}

// WriteData changes the content of fs: nblocks consecutive blocks, starting
// at a block number derived from seed, get new content. The content is a
// function of (seed, block number, the txg of the write).
func (m *Model) WriteData(fs zfs.DatasetPath, seed int64, nblocks int) error {
	const op = "write"
	if err := checkPath(op, fs); err != nil {
		return err
	}
	if nblocks < 0 {
		return zerr(0, op, fs.String(), "negative block count %d", nblocks)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookup(op, fs.String())
	if err != nil {
		return err
	}
	if !m.keyLoaded(d) {
		return zerr(zfs.ErrKeyNotLoaded, op, d.Name, "cannot write to '%s': encryption key not loaded", d.Name)
	}
	if d.Partial != nil && d.Partial.Full {
		return zerr(zfs.ErrDatasetBusy, op, d.Name, "cannot write to '%s': dataset is busy", d.Name)
	}
	txg := m.nextTXG(poolOf(d.Name))
	start := splitmix(uint64(seed)) % 1024
	scratch := make([]byte, BlockSize)
	for j := uint64(0); j < uint64(nblocks); j++ {
		bn := start + j
		key := splitmix(splitmix(uint64(seed)^bn*golden) ^ txg)
		d.Head[bn] = block{Key: key, Birth: txg, Sum: blockSum(key, scratch)}
	}
	d.HeadTXG = txg
	return nil
}

// LoadKey loads the key of an encryption root.
func (m *Model) LoadKey(root zfs.DatasetPath) error {
	return m.setKey(root, true)
}

// UnloadKey unloads the key of an encryption root.
func (m *Model) UnloadKey(root zfs.DatasetPath) error {
	return m.setKey(root, false)
}

func (m *Model) setKey(fs zfs.DatasetPath, load bool) error {
	op := "load-key"
	if !load {
		op = "unload-key"
	}
	if err := checkPath(op, fs); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookup(op, fs.String())
	if err != nil {
		return err
	}
	switch {
	case !d.Encrypted:
		return zerr(zfs.ErrUnsupported, op, d.Name, "Key %s error: '%s' is not encrypted.", map[bool]string{true: "load", false: "unload"}[load], d.Name)
	case d.EncRoot != d.Name:
		return zerr(zfs.ErrUnsupported, op, d.Name, "Keys must be loaded for encryption root of '%s' (%s).", d.Name, d.EncRoot)
	case d.KeyLoaded == load && load:
		return zerr(zfs.ErrUnsupported, op, d.Name, "Key load error: Key already loaded for '%s'.", d.Name)
	case d.KeyLoaded == load:
		return zerr(zfs.ErrUnsupported, op, d.Name, "Key unload error: Key already unloaded for '%s'.", d.Name)
	}
	d.KeyLoaded = load
	return nil
}

// FailNext makes the next n calls of method (a zfs.ZFS method name such as
// "Send" or "Receive") fail with err before doing anything. The batched
// forms count as calls of the single ones too: HoldAll and ReleaseAll take
// the faults of Hold and Release, ListTree those of ListFilesystems and
// ListVersions, so a fault injected where the engine used to call one of
// those still hits where it now calls the other.
func (m *Model) FailNext(method string, n int, err error) error {
	if !knownMethods[method] {
		return fmt.Errorf("zfsmodel: FailNext: unknown method %q", method)
	}
	if n < 0 || err == nil {
		return fmt.Errorf("zfsmodel: FailNext(%q): need n >= 0 and a non-nil error", method)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := 0; i < n; i++ {
		m.faults[method] = append(m.faults[method], err)
	}
	return nil
}

var knownMethods = map[string]bool{
	"ListPools": true, "ListFilesystems": true, "ListVersions": true, "ListTree": true, "CreatePlaceholder": true, "SetUserProperty": true,
	"Snapshot": true, "Bookmark": true, "Destroy": true, "Rollback": true, "Hold": true, "Release": true, "HoldAll": true, "ReleaseAll": true,
	"Holds": true, "Send": true, "SendSize": true, "Receive": true, "AbortReceive": true, "ReadStreamHeader": true,
}

// ErrStreamCut is what a reader of a send stream cut by CutNextSend gets.
var ErrStreamCut = errors.New("zfsmodel: send stream cut by fault injection")

// CutNextSend makes the next send stream (one per call, in order) end with
// ErrStreamCut after afterBytes bytes.
func (m *Model) CutNextSend(afterBytes int64) error {
	if afterBytes < 0 {
		return fmt.Errorf("zfsmodel: CutNextSend: negative byte count %d", afterBytes)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cuts = append(m.cuts, afterBytes)
	return nil
}

func sortedKeys[V any](mp map[string]V) []string {
	out := make([]string, 0, len(mp))
	for k := range mp {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// lookupRef finds the filesystem of r; the error names r itself, as ZFS
// names the snapshot it could not open.
func (m *Model) lookupRef(op string, r zfs.VersionRef) (*dataset, error) {
	d := m.st.Datasets[r.FS.String()]
	if d == nil {
		return nil, notExist(op, r.String())
	}
	return d, nil
}

// DestroyFilesystem destroys fs (zfs destroy). Without recursive, fs must
// have no children and no snapshots; with it, children, snapshots and
// bookmarks go too, unless a snapshot among them is held. A pool's root
// filesystem cannot be destroyed.
func (m *Model) DestroyFilesystem(fs zfs.DatasetPath, recursive bool) error {
	const op = "destroy"
	if err := checkPath(op, fs); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookup(op, fs.String())
	if err != nil {
		return err
	}
	if !strings.Contains(d.Name, "/") {
		return zerr(zfs.ErrUnsupported, op, d.Name, "cannot destroy '%s': operation does not apply to pools", d.Name)
	}
	var doomed []string
	for _, name := range sortedKeys(m.st.Datasets) {
		if name == d.Name || strings.HasPrefix(name, d.Name+"/") {
			doomed = append(doomed, name)
		}
	}
	if !recursive {
		if len(doomed) > 1 {
			return zerr(zfs.ErrDatasetBusy, op, d.Name, "cannot destroy '%s': filesystem has children\nuse '-r' to destroy the following datasets:\n%s", d.Name, strings.Join(doomed[1:], "\n"))
		}
		var versions []string
		for _, s := range d.Snaps {
			versions = append(versions, d.Name+"@"+s.Name)
		}
		for _, b := range d.Bookmarks {
			versions = append(versions, d.Name+"#"+b.Name)
		}
		if len(versions) > 0 {
			return zerr(zfs.ErrDatasetBusy, op, d.Name, "cannot destroy '%s': filesystem has children\nuse '-r' to destroy the following datasets:\n%s", d.Name, strings.Join(versions, "\n"))
		}
	}
	for _, name := range doomed {
		if m.receiving[name] {
			return zerr(zfs.ErrDatasetBusy, op, name, "cannot destroy '%s': dataset is busy", name)
		}
		for _, s := range m.st.Datasets[name].Snaps {
			if len(s.Holds) > 0 {
				return zerr(zfs.ErrDatasetBusy, op, name+"@"+s.Name, "cannot destroy snapshot %s@%s: dataset is busy", name, s.Name)
			}
		}
	}
	for _, name := range doomed {
		delete(m.st.Datasets, name)
	}
	return nil
}

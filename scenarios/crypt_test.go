package scenarios

import (
	"errors"
	"strings"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// Encryption in the world: the sender's encFS is an encryption root. The
// jobs with send.raw send it raw, so it lands as an encryption root of its
// own whose key the receiver does not have loaded (and their unencrypted
// filesystems as zfs send -w streams). One job sends plain (the default
// send section) into a receiver root that is itself encrypted: encryption
// on receive, under the receiver's key. Operators load and unload keys on
// both hosts.

// encFS is the sender's encrypted filesystem.
const encFS = "src/data/b"

// plainJob is the index in jobs of the job that sends plain into an
// encrypted receiver root.
const plainJob = 1

// sendsPlain: j sends encrypted filesystems decrypted.
func (j job) sendsPlain() bool { return j.id == jobs[plainJob].id }

// sendPolicy is j's send section.
func (j job) sendPolicy() zfs.SendPolicy {
	if j.sendsPlain() {
		return zfs.SendPolicy{}
	}
	return zfs.SendPolicy{Flags: zfs.SendFlags{Raw: true}}
}

// keyRoots are the encryption roots whose keys an operator may toggle: the
// sender's, the plain job's receiver root, and the raw copies of encFS.
func keyRoots() []string {
	roots := []string{"src:" + encFS, "dst:" + jobs[plainJob].dstRoot}
	for i, j := range jobs {
		if i != plainJob {
			roots = append(roots, "dst:"+j.dstFS(encFS))
		}
	}
	return roots
}

// toggleKey loads or unloads the key of a drawn encryption root, as an
// operator would (zfs load-key / unload-key). A root that does not exist
// (yet) is a no-op.
func (w *world) toggleKey(t *rapid.T) {
	host, root, _ := strings.Cut(rapid.SampledFrom(keyRoots()).Draw(t, "keyRoot"), ":")
	m := map[string]*zfsmodel.Model{"src": w.src, "dst": w.dst}[host]
	p := zfs.MustDatasetPath(root)
	info, err := m.Info(p)
	if errors.Is(err, zfs.ErrDatasetNotExist) {
		return
	}
	must(t, err)
	if info.EncryptionRoot != root {
		t.Fatalf("%s:%s is no encryption root (encryption root %q)", host, root, info.EncryptionRoot)
	}
	if info.KeyStatus == zfs.KeyStatusAvailable {
		must(t, m.UnloadKey(p))
	} else {
		must(t, m.LoadKey(p))
	}
	w.persist(t)
}

// loadAllKeys loads every key an operator unloaded (before the liveness
// check: after loading, replication must converge).
func (w *world) loadAllKeys(t *rapid.T) {
	for _, hr := range keyRoots() {
		host, root, _ := strings.Cut(hr, ":")
		m := map[string]*zfsmodel.Model{"src": w.src, "dst": w.dst}[host]
		info, err := m.Info(zfs.MustDatasetPath(root))
		if errors.Is(err, zfs.ErrDatasetNotExist) {
			continue
		}
		must(t, err)
		// A raw copy stays without its key: the receiver never needs it.
		if info.KeyStatus == zfs.KeyStatusUnavailable && (host == "src" || root == jobs[plainJob].dstRoot) {
			must(t, m.LoadKey(zfs.MustDatasetPath(root)))
		}
	}
	w.persist(t)
}

// keyed is a copy of m with every key loaded, for reading content that
// the checks compare (reading needs the key; the copy leaves m alone).
func (w *world) keyed(t *rapid.T, m *zfsmodel.Model) *zfsmodel.Model {
	c := m.Clone(zfsmodel.Options{Clock: w.clock})
	for _, pool := range []string{"src", "dst"} {
		infos, err := c.ListFilesystems(bg, zfs.MustDatasetPath(pool))
		if errors.Is(err, zfs.ErrDatasetNotExist) {
			continue
		}
		must(t, err)
		for _, info := range infos {
			if info.EncryptionRoot == info.Path.String() && info.KeyStatus == zfs.KeyStatusUnavailable {
				must(t, c.LoadKey(info.Path))
			}
		}
	}
	return c
}

// checksummer reads snapshot contents of one model, through a keyed copy
// where a key is not loaded.
type checksummer struct {
	w     *world
	m     *zfsmodel.Model
	keyed *zfsmodel.Model
}

func (c *checksummer) sum(t *rapid.T, ref zfs.VersionRef) string {
	sum, err := c.m.Checksum(ref)
	if errors.Is(err, zfs.ErrKeyNotLoaded) {
		if c.keyed == nil {
			c.keyed = c.w.keyed(t, c.m)
		}
		sum, err = c.keyed.Checksum(ref)
	}
	must(t, err)
	return sum
}

// checkEncryptedAtRest: no plain data of an encrypted filesystem lands on
// the receiver unencrypted. Every receiver copy of encFS is encrypted: a
// raw copy as its own encryption root, the plain job's copy under its
// encrypted root.
func (w *world) checkEncryptedAtRest(t *rapid.T) {
	for _, fs := range fsNames {
		src, err := w.src.Info(zfs.MustDatasetPath(fs))
		must(t, err)
		if !src.Encrypted() {
			continue
		}
		for _, j := range jobs {
			dst := j.dstFS(fs)
			info, err := w.dst.Info(zfs.MustDatasetPath(dst))
			if errors.Is(err, zfs.ErrDatasetNotExist) {
				continue
			}
			must(t, err)
			want := dst
			if j.sendsPlain() {
				want = j.dstRoot
			}
			if !info.Encrypted() || info.EncryptionRoot != want {
				t.Fatalf("INVARIANT encrypted-at-rest: %s, a copy of the encrypted %s, has encryption %q with encryption root %q, want %q\n%s", dst, fs, info.Encryption, info.EncryptionRoot, want, w.dump(t))
			}
		}
	}
}

// keyUnloaded reports whether a key j needs for fs is not loaded: the
// plain job needs the sender's key of encFS (to read it) and its
// receiver root's key (to write below it); raw sends need no key.
func (w *world) keyUnloaded(t *rapid.T, j job, fs string) bool {
	if !j.sendsPlain() {
		return false
	}
	unloaded := func(m *zfsmodel.Model, ds string) bool {
		info, err := m.Info(zfs.MustDatasetPath(ds))
		if errors.Is(err, zfs.ErrDatasetNotExist) {
			return false
		}
		must(t, err)
		return info.KeyStatus == zfs.KeyStatusUnavailable
	}
	return fs == encFS && unloaded(w.src, encFS) || unloaded(w.dst, j.dstRoot)
}

// checkKeyFailures: in a run without faults, a filesystem that needs an
// unloaded key fails or is skipped with an error that says so (never
// another error, never a corrupt receive: the content checks see to
// that), unless it diverged or is an encrypted placeholder, conflicts of
// their own.
func (w *world) checkKeyFailures(t *rapid.T, j job, rep replication.Report, keyless map[string]bool) {
	for _, f := range rep.Filesystems {
		if f.Err == nil || !keyless[f.FS] || w.diverged(t, j, f.FS) || w.encryptedPlaceholder(t, j, f.FS) {
			continue
		}
		stats.keyFailures.Add(1)
		msg := strings.ToLower(f.Err.Error())
		if !strings.Contains(msg, "key") && !strings.Contains(msg, "was not replicated") {
			t.Fatalf("INVARIANT key-error: %s: a run of %s with a key unloaded failed with an error that does not name the key: %v\n%s", f.FS, j.id, f.Err, w.dump(t))
		}
	}
}

// keylessFilesystems are the filesystems j needs an unloaded key for.
func (w *world) keylessFilesystems(t *rapid.T, j job) map[string]bool {
	out := map[string]bool{}
	for _, fs := range fsNames {
		if w.keyUnloaded(t, j, fs) {
			out[fs] = true
		}
	}
	return out
}

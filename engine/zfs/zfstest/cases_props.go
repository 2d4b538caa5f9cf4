package zfstest

import (
	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	register("SendProperties", caseSendProperties)
	register("BackupProperties", caseBackupProperties)
	register("ResumedSendProperties", caseResumedSendProperties)
	register("ReceivedPlaceholderProperty", caseReceivedPlaceholderProperty)
}

// A filesystem is a placeholder only where zrepl:placeholder is set on it
// locally (zrepl reads it with source local): one received with -p from a
// placeholder has the value as a received one and is no placeholder.
func caseReceivedPlaceholderProperty(e *env) {
	src := e.create("src", false)
	e.create("sink", false)
	e.setProp(src, zfs.PlaceholderProperty, "on")
	if fi := e.mustInfo(src); !fi.Placeholder {
		e.t.Fatalf("%s with a local %s=on is not a placeholder", src, zfs.PlaceholderProperty)
	}
	e.write(src, 1)
	a := e.snap(src, "a")
	dst := e.path("sink/dst")
	args := full(src, a)
	args.Flags.Properties = true
	e.mustTransfer(args, dst, zfs.RecvOptions{})
	e.wantProp(dst, zfs.PlaceholderProperty, "on", "received")
	if fi := e.mustInfo(dst); fi.Placeholder {
		e.t.Errorf("%s with a received %s=on is listed as a placeholder", dst, zfs.PlaceholderProperty)
	}
}

// setProp sets a user property locally.
func (e *env) setProp(fs zfs.DatasetPath, name, value string) {
	e.t.Helper()
	if err := e.z.SetUserProperty(e.ctx, fs, name, value); err != nil {
		e.t.Fatalf("set %s=%s on %s: %v", name, value, fs, err)
	}
}

// wantProp asserts a property's value and source on fs.
func (e *env) wantProp(fs zfs.DatasetPath, name, value, source string) {
	e.t.Helper()
	v, src, err := e.h.Property(e.ctx, fs, name)
	if err != nil {
		e.t.Fatalf("get %s of %s: %v", name, fs, err)
	}
	if v != value || src != source {
		e.t.Errorf("%s of %s = %q (%s), want %q (%s)", name, fs, v, src, value, source)
	}
}

const (
	propTag  = "com.example:tag"
	propDrop = "com.example:drop"
	propOver = "com.example:over"
)

// zfs send -p carries user properties; the receive makes them received
// values, except those -x excludes, and -o sets local ones. A later -p
// stream replaces the received values: one the sender no longer has is
// gone. Without -p nothing is carried.
func caseSendProperties(e *env) {
	src := e.create("src", false)
	e.create("sink", false)
	e.setProp(src, propTag, "one")
	e.setProp(src, propDrop, "x")
	e.write(src, 1)
	a := e.snap(src, "a")

	plain := e.path("sink/plain")
	e.mustTransfer(full(src, a), plain, zfs.RecvOptions{})
	e.wantProp(plain, propTag, "", "-")

	dst := e.path("sink/dst")
	args := full(src, a)
	args.Flags.Properties = true
	e.mustTransfer(args, dst, zfs.RecvOptions{InheritProperties: []string{propDrop}, SetProperties: map[string]string{propOver: "v"}})
	e.wantProp(dst, propTag, "one", "received")
	e.wantProp(dst, propDrop, "", "-")
	e.wantProp(dst, propOver, "v", "local")

	e.setProp(src, propTag, "two")
	e.setProp(src, propDrop, "")
	e.setProp(src, propOver, "w")
	e.write(src, 2)
	b := e.snap(src, "b")
	args = incr(src, a, b)
	args.Flags.Properties = true
	e.mustTransfer(args, dst, zfs.RecvOptions{})
	e.received(dst, a, b)
	e.wantProp(dst, propTag, "two", "received")
	e.wantProp(dst, propDrop, "", "-")
	// A local value overrides the received one.
	e.wantProp(dst, propOver, "v", "local")

	// A property a -p stream carried and the next one does not is gone.
	e.setProp(src, propTag, "")
	e.write(src, 3)
	c := e.snap(src, "c")
	args = incr(src, b, c)
	args.Flags.Properties = true
	e.mustTransfer(args, dst, zfs.RecvOptions{})
	e.wantProp(dst, propTag, "", "-")
}

// zfs send -b carries the received values of properties, not the local
// ones that override them; -p carries what is in effect.
func caseBackupProperties(e *env) {
	src := e.create("src", false)
	e.create("sink", false)
	e.setProp(src, propTag, "one")
	e.write(src, 1)
	a := e.snap(src, "a")
	mid := e.path("sink/mid")
	args := full(src, a)
	args.Flags.Properties = true
	e.mustTransfer(args, mid, zfs.RecvOptions{})
	e.setProp(mid, propTag, "local")
	e.setProp(mid, propOver, "v")
	e.wantProp(mid, propTag, "local", "local")

	backup := e.path("sink/backup")
	args = full(mid, e.version(mid, zfs.Snapshot, "a"))
	args.Flags.BackupProperties = true
	e.mustTransfer(args, backup, zfs.RecvOptions{})
	e.wantProp(backup, propTag, "one", "received")
	e.wantProp(backup, propOver, "", "-")

	props := e.path("sink/props")
	args.Flags = zfs.SendFlags{Properties: true}
	e.mustTransfer(args, props, zfs.RecvOptions{})
	e.wantProp(props, propTag, "local", "received")
	e.wantProp(props, propOver, "v", "received")
}

// An interrupted full -p receive, resumed (zfs send -t carries no
// properties), has the properties of the first stream; an interrupted
// incremental one, resumed, keeps the properties from before it: its
// stream's changes are lost.
func caseResumedSendProperties(e *env) {
	src := e.create("src", false)
	e.create("sink", false)
	dst := e.path("sink/dst")
	e.setProp(src, propTag, "one")
	e.write(src, 1)
	a := e.snap(src, "a")
	args := full(src, a)
	args.Flags.Properties = true
	e.interrupt(args, dst, true)
	tok, _ := e.token(dst)
	e.mustTransfer(zfs.SendArgs{FS: src, To: a, ResumeToken: tok}, dst, zfs.RecvOptions{Resumable: true})
	e.received(dst, a)
	e.wantProp(dst, propTag, "one", "received")

	e.setProp(src, propTag, "two")
	e.write(src, 2)
	b := e.snap(src, "b")
	args = incr(src, a, b)
	args.Flags.Properties = true
	e.interrupt(args, dst, true)
	tok, _ = e.token(dst)
	e.mustTransfer(zfs.SendArgs{FS: src, From: &a, To: b, ResumeToken: tok}, dst, zfs.RecvOptions{Resumable: true})
	e.received(dst, a, b)
	e.wantProp(dst, propTag, "one", "received")
}

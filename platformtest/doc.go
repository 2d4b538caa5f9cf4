// Package platformtest holds the tests that run against real OpenZFS: a smoke
// test of the send/receive/resume path the engine relies on, and (added by the
// zfsreal work) the conformance suite run against the CLI-backed
// implementation.
//
// The tests skip where ZFS is absent, which is what `make test` sees on a
// machine without the kernel module. `make platformtest` runs them for real:
// directly on a host with ZFS, otherwise inside a throwaway QEMU VM (see
// platformtest/vm/README.md), where ZREPL_PLATFORMTEST=vm is set and a missing
// ZFS is a failure rather than a skip.
package platformtest

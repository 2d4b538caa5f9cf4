// Package zfsreal implements the zfs.ZFS interface on a real ZFS host by
// running the zfs(8) command line tool (OpenZFS 2.1 and later).
//
// Every name is validated before a command is built, so bad input never
// reaches a command line, and never where zfs would read it as an option.
// Failures come back as *zfs.Error whose Kind is scraped from zfs's stderr
// (see classify), with Msg holding that stderr and ExitStatus its status.
//
// Send streams straight from the child's stdout and Receive feeds the
// child's stdin from the caller's reader: nothing is buffered whole or
// written to temporary files. Where Receive is given a stream of Send (on
// one host; see StreamWrapper), it splices one child's output into the
// other's input, so the bytes do not pass through this process at all.
// Options.Observe reports every child with its duration, to see where a
// run's time goes. Every child started is waited for, whether
// it ends, fails, is cancelled through its context or is abandoned by
// closing its stream, so no zombie or stray zfs process is left behind.
package zfsreal

//go:build !linux

package main

import "io"

// isTerminal: only Linux is told apart; elsewhere stdout counts as no
// terminal (times written as configured, no colours).
func isTerminal(io.Writer) bool { return false }

// Package houserules holds no code: its tests check rules about the
// repository as a whole that review alone kept missing (every package
// documented, which packages may import which, no test machinery in the
// daemon binary). A rule broken fails `make test` with the package and
// the import or file at fault.
package houserules

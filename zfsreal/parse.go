package zfsreal

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// outputError says zfs printed something this package cannot read; it
// points at the line so a format change is easy to see.
type outputError struct {
	Line   int
	Text   string
	Reason string
}

func (e *outputError) Error() string {
	return fmt.Sprintf("unexpected zfs output on line %d (%q): %s", e.Line, e.Text, e.Reason)
}

// lines splits -H output into rows of tab-separated fields, skipping blank
// lines, and checks each row has n fields.
func lines(out []byte, n int, each func(no int, line string, f []string) error) error {
	for i, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != n {
			return &outputError{Line: i + 1, Text: line, Reason: fmt.Sprintf("%d fields, want %d", len(f), n)}
		}
		if err := each(i+1, line, f); err != nil {
			return err
		}
	}
	return nil
}

// dash is how zfs -H prints an unset value.
func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

func parseUint(no int, line, what, s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, &outputError{Line: no, Text: line, Reason: fmt.Sprintf("%s %q is not a number", what, s)}
	}
	return v, nil
}

// listPoolsArgs is the listing ListPools parses: the depth-0 filesystems
// of every pool, which are the pools' root filesystems. zfs rather than
// `zpool list`, because it needs only the one binary this package runs,
// and it lists only pools whose datasets can be opened, which are the only
// ones there is anything to replicate from.
func listPoolsArgs() []string {
	return []string{"list", "-H", "-o", "name", "-t", "filesystem", "-d", "0"}
}

// parsePools reads the output of listPoolsArgs, sorted by name. A row
// that is not a pool name (it has a '/') or is repeated is an error.
func parsePools(out []byte) ([]zfs.DatasetPath, error) {
	var pools []zfs.DatasetPath
	seen := map[string]bool{}
	err := lines(out, 1, func(no int, line string, f []string) error {
		p, err := zfs.NewDatasetPath(f[0])
		if err != nil {
			return &outputError{Line: no, Text: line, Reason: err.Error()}
		}
		if p.Depth() != 0 {
			return &outputError{Line: no, Text: line, Reason: "not a pool's root filesystem"}
		}
		if seen[f[0]] {
			return &outputError{Line: no, Text: line, Reason: "listed twice"}
		}
		seen[f[0]] = true
		pools = append(pools, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(pools, func(a, b zfs.DatasetPath) int { return strings.Compare(a.String(), b.String()) })
	return pools, nil
}

// listFilesystemsArgs is the listing ListFilesystems parses.
func listFilesystemsArgs(root zfs.DatasetPath) []string {
	return []string{"list", "-H", "-p", "-o",
		"name,guid,receive_resume_token,encryption,encryptionroot,keystatus," + zfs.PlaceholderProperty,
		"-t", "filesystem,volume", "-r", root.String()}
}

// parseFilesystems reads the output of listFilesystemsArgs(root). Rows
// come back parents before children (sorted by path component), root
// first; a row outside root or a repeated row is an error.
func parseFilesystems(out []byte, root zfs.DatasetPath) ([]zfs.FilesystemInfo, error) {
	var infos []zfs.FilesystemInfo
	seen := map[string]bool{}
	err := lines(out, 7, func(no int, line string, f []string) error {
		p, err := zfs.NewDatasetPath(f[0])
		if err != nil {
			return &outputError{Line: no, Text: line, Reason: err.Error()}
		}
		if !p.HasPrefix(root) {
			return &outputError{Line: no, Text: line, Reason: fmt.Sprintf("%s is not below %s", p, root)}
		}
		if seen[p.String()] {
			return &outputError{Line: no, Text: line, Reason: "listed twice"}
		}
		seen[p.String()] = true
		info, err := parseFSRow(no, line, p, f[1], f[2], f[3], f[4], f[5], f[6])
		if err != nil {
			return err
		}
		infos = append(infos, info)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !seen[root.String()] {
		return nil, &outputError{Line: 0, Text: "", Reason: fmt.Sprintf("%s is missing from its own listing", root)}
	}
	slices.SortStableFunc(infos, func(a, b zfs.FilesystemInfo) int { return comparePaths(a.Path, b.Path) })
	return infos, nil
}

// comparePaths orders by component: a parent before its children, a
// subtree together. NUL sorts below every character a name may hold, so
// comparing with '/' replaced by NUL does it ("a/b" before "a-c").
func comparePaths(a, b zfs.DatasetPath) int {
	key := func(p zfs.DatasetPath) string { return strings.ReplaceAll(p.String(), "/", "\x00") }
	return strings.Compare(key(a), key(b))
}

// parseFSRow reads a filesystem's properties from one listing row.
func parseFSRow(no int, line string, p zfs.DatasetPath, guid, token, encryption, encRoot, keyStatus, placeholder string) (zfs.FilesystemInfo, error) {
	g, err := parseUint(no, line, "guid", guid)
	if err != nil {
		return zfs.FilesystemInfo{}, err
	}
	info := zfs.FilesystemInfo{
		Path:               p,
		GUID:               g,
		ReceiveResumeToken: dash(token),
		Encryption:         dash(encryption),
		EncryptionRoot:     dash(encRoot),
		Placeholder:        placeholder == "on",
	}
	if info.Encryption == "" {
		info.Encryption = "off"
	}
	switch ks := zfs.KeyStatus(keyStatus); ks {
	case "-", zfs.KeyStatusNone:
		info.KeyStatus = zfs.KeyStatusNone
	case zfs.KeyStatusAvailable, zfs.KeyStatusUnavailable:
		info.KeyStatus = ks
	default:
		return zfs.FilesystemInfo{}, &outputError{Line: no, Text: line, Reason: fmt.Sprintf("unknown keystatus %q", keyStatus)}
	}
	return info, nil
}

// parseVersionRow reads a snapshot's or bookmark's properties from one
// listing row.
func parseVersionRow(no int, line string, ref zfs.VersionRef, guid, createTXG, creation, userRefs string) (zfs.FilesystemVersion, error) {
	v := zfs.FilesystemVersion{Kind: ref.Kind, Name: ref.Name}
	var err error
	if v.GUID, err = parseUint(no, line, "guid", guid); err != nil {
		return v, err
	}
	if v.CreateTXG, err = parseUint(no, line, "createtxg", createTXG); err != nil {
		return v, err
	}
	c, err := parseUint(no, line, "creation", creation)
	if err != nil {
		return v, err
	}
	if c > 1<<62 {
		return v, &outputError{Line: no, Text: line, Reason: "creation time out of range"}
	}
	v.Creation = time.Unix(int64(c), 0).UTC()
	if ref.Kind == zfs.Snapshot {
		if v.UserRefs, err = parseUint(no, line, "userrefs", userRefs); err != nil {
			return v, err
		}
	} else if userRefs != "-" && userRefs != "0" {
		return v, &outputError{Line: no, Text: line, Reason: "a bookmark with user holds"}
	}
	return v, nil
}

// treeProps are the columns of listTreeArgs: a filesystem's and a
// version's properties in one row, zfs printing "-" where one does not
// apply to the row's type.
const treeProps = "name,guid,createtxg,creation,userrefs,receive_resume_token,encryption,encryptionroot,keystatus," + zfs.PlaceholderProperty +
	",written,referenced,logicalreferenced"

// treeColumns is the number of columns of treeProps.
const treeColumns = 13

// listTreeArgs is the listing ListTree parses.
func listTreeArgs(root zfs.DatasetPath) []string {
	return []string{"list", "-H", "-p", "-o", treeProps, "-t", "filesystem,volume,snapshot,bookmark", "-r", root.String()}
}

// parseTree reads the output of listTreeArgs(root), in any row order:
// filesystems parents before children, each one's versions ordered as
// parseVersions orders them. A row outside root, a repeated row or a
// version of a filesystem the listing lacks is an error.
func parseTree(out []byte, root zfs.DatasetPath) ([]zfs.Listing, error) {
	byFS := map[zfs.DatasetPath]*zfs.Listing{}
	var order []zfs.DatasetPath
	type pending struct {
		no   int
		line string
		fs   zfs.DatasetPath
		v    zfs.FilesystemVersion
		size zfs.VersionSize
	}
	var versions []pending
	seen := map[string]bool{}
	err := lines(out, treeColumns, func(no int, line string, f []string) error {
		if seen[f[0]] {
			return &outputError{Line: no, Text: line, Reason: "listed twice"}
		}
		seen[f[0]] = true
		if strings.ContainsAny(f[0], "@#") {
			ref, err := zfs.ParseVersionRef(f[0])
			if err != nil {
				return &outputError{Line: no, Text: line, Reason: err.Error()}
			}
			v, err := parseVersionRow(no, line, ref, f[1], f[2], f[3], f[4])
			if err != nil {
				return err
			}
			var size zfs.VersionSize
			if ref.Kind == zfs.Snapshot {
				if size, err = parseSizes(no, line, f[10], f[11], f[12]); err != nil {
					return err
				}
			}
			versions = append(versions, pending{no, line, ref.FS, v, size})
			return nil
		}
		p, err := zfs.NewDatasetPath(f[0])
		if err != nil {
			return &outputError{Line: no, Text: line, Reason: err.Error()}
		}
		if !p.HasPrefix(root) {
			return &outputError{Line: no, Text: line, Reason: fmt.Sprintf("%s is not below %s", p, root)}
		}
		info, err := parseFSRow(no, line, p, f[1], f[5], f[6], f[7], f[8], f[9])
		if err != nil {
			return err
		}
		byFS[p] = &zfs.Listing{Info: info}
		order = append(order, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if byFS[root] == nil {
		return nil, &outputError{Line: 0, Text: "", Reason: fmt.Sprintf("%s is missing from its own listing", root)}
	}
	for _, pv := range versions {
		if byFS[pv.fs] == nil {
			return nil, &outputError{Line: pv.no, Text: pv.line, Reason: fmt.Sprintf("a version of %s, which is not listed", pv.fs)}
		}
	}
	// Versions and their sizes sorted together: by filesystem, then as
	// parseVersions orders them.
	slices.SortStableFunc(versions, func(a, b pending) int {
		if c := strings.Compare(a.fs.String(), b.fs.String()); c != 0 {
			return c
		}
		return compareVersions(a.v, b.v)
	})
	for _, pv := range versions {
		l := byFS[pv.fs]
		l.Versions = append(l.Versions, pv.v)
		l.Sizes = append(l.Sizes, pv.size)
	}
	slices.SortStableFunc(order, comparePaths)
	out2 := make([]zfs.Listing, len(order))
	for i, p := range order {
		out2[i] = *byFS[p]
	}
	return out2, nil
}

// parseSizes reads a snapshot's written, referenced and logicalreferenced.
func parseSizes(no int, line, written, referenced, logical string) (zfs.VersionSize, error) {
	var s zfs.VersionSize
	var err error
	if s.Written, err = parseUint(no, line, "written", written); err != nil {
		return s, err
	}
	if s.Referenced, err = parseUint(no, line, "referenced", referenced); err != nil {
		return s, err
	}
	if s.LogicalReferenced, err = parseUint(no, line, "logicalreferenced", logical); err != nil {
		return s, err
	}
	return s, nil
}

// listVersionsArgs is the listing ListVersions parses.
func listVersionsArgs(fs zfs.DatasetPath) []string {
	return []string{"list", "-H", "-p", "-o", "name,guid,createtxg,creation,userrefs",
		"-t", "snapshot,bookmark", "-d", "1", fs.String()}
}

// parseVersions reads the output of listVersionsArgs(fs), sorted by
// createtxg, snapshots before bookmarks of the same txg, then by name.
func parseVersions(out []byte, fs zfs.DatasetPath) ([]zfs.FilesystemVersion, error) {
	var vs []zfs.FilesystemVersion
	seen := map[string]bool{}
	err := lines(out, 5, func(no int, line string, f []string) error {
		ref, err := zfs.ParseVersionRef(f[0])
		if err != nil {
			return &outputError{Line: no, Text: line, Reason: err.Error()}
		}
		if ref.FS != fs {
			return &outputError{Line: no, Text: line, Reason: fmt.Sprintf("%s is not a version of %s", f[0], fs)}
		}
		if seen[f[0]] {
			return &outputError{Line: no, Text: line, Reason: "listed twice"}
		}
		seen[f[0]] = true
		v, err := parseVersionRow(no, line, ref, f[1], f[2], f[3], f[4])
		if err != nil {
			return err
		}
		vs = append(vs, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(vs, compareVersions)
	return vs, nil
}

func compareVersions(a, b zfs.FilesystemVersion) int {
	switch {
	case a.CreateTXG != b.CreateTXG:
		if a.CreateTXG < b.CreateTXG {
			return -1
		}
		return 1
	case a.Kind != b.Kind:
		if a.Kind == zfs.Snapshot {
			return -1
		}
		return 1
	}
	return strings.Compare(a.Name, b.Name)
}

// holdRow is one line of `zfs holds -H`: NAME, TAG, TIMESTAMP.
type holdRow struct{ Snapshot, Tag string }

func parseHolds(out []byte) ([]holdRow, error) {
	var rows []holdRow
	err := lines(out, 3, func(no int, line string, f []string) error {
		if f[1] == "" {
			return &outputError{Line: no, Text: line, Reason: "empty hold tag"}
		}
		rows = append(rows, holdRow{Snapshot: f[0], Tag: f[1]})
		return nil
	})
	return rows, err
}

// parseSendSize reads `zfs send -nvP`: the "size" line when there is one
// (a plain send), else the last "full"/"incremental" line (a resumed send
// prints no total). The token contents a resumed send prints first are
// skipped.
func parseSendSize(out string) (int64, bool) {
	var size int64
	found := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(strings.TrimRight(line, "\r"), "\t")
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "size", "full", "incremental":
		default:
			continue
		}
		n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if err != nil || n < 0 {
			continue
		}
		if f[0] == "size" {
			return n, true
		}
		size, found = n, true
	}
	return size, found
}

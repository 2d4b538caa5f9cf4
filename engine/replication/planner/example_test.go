package planner_test

import (
	"fmt"

	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
)

func Example() {
	v := func(kind zfs.VersionKind, name string, guid, txg uint64) zfs.FilesystemVersion {
		return zfs.FilesystemVersion{Kind: kind, Name: name, GUID: guid, CreateTXG: txg}
	}
	res, err := planner.Plan(planner.Input{
		Sender: []planner.Filesystem{
			{
				Path: "pool/home",
				Info: zfs.FilesystemInfo{Path: zfs.MustDatasetPath("pool/home")},
				Versions: []zfs.FilesystemVersion{
					// @s1 was pruned on the sender; the cursor bookmark keeps its GUID.
					v(zfs.Bookmark, "zrepl_CURSOR_G_0000000000000001_J_push", 1, 10),
					v(zfs.Snapshot, "s2", 2, 20),
					v(zfs.Snapshot, "s3", 3, 30),
				},
			},
			{
				Path:     "pool/home/alice/mail",
				Info:     zfs.FilesystemInfo{Path: zfs.MustDatasetPath("pool/home/alice/mail")},
				Versions: []zfs.FilesystemVersion{v(zfs.Snapshot, "s1", 11, 10), v(zfs.Snapshot, "s2", 12, 20)},
			},
		},
		Receiver: []planner.Filesystem{
			{Path: "pool", Info: zfs.FilesystemInfo{Placeholder: true}},
			{Path: "pool/home", Versions: []zfs.FilesystemVersion{v(zfs.Snapshot, "s1", 1, 5)}},
		},
	})
	if err != nil {
		panic(err)
	}
	for _, fs := range res.Filesystems {
		fmt.Printf("%s: %s", fs.Path, fs.Status)
		if fs.WaitFor != "" {
			fmt.Printf(" (after %s)", fs.WaitFor)
		}
		fmt.Println()
		for _, a := range fs.Actions {
			fmt.Println("  ", a.Kind)
		}
		for _, s := range fs.Steps {
			fmt.Println("  ", s)
		}
	}
	// Output:
	// pool/home: replicate
	//    #zrepl_CURSOR_G_0000000000000001_J_push -> @s2
	//    @s2 -> @s3
	// pool/home/alice: placeholder
	//    create placeholder
	// pool/home/alice/mail: replicate (after pool/home/alice)
	//    full @s2
}

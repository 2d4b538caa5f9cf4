// Command mkcpio writes a directory tree as a Linux initramfs archive (cpio
// "newc" format), so the platform-test VM can be assembled without the cpio
// package on the host.
//
// Usage:
//
//	mkcpio [-gzip] [-prepend FILE] -o OUT DIR
//
// With -prepend, FILE (typically the cached, compressed base initramfs) is
// copied first and the new archive appended after zero padding: the kernel
// unpacks concatenated archives in order, so the per-run part (test binary,
// /init) can change without rebuilding the base.
package main

import (
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	out := flag.String("o", "", "output file (required)")
	gz := flag.Bool("gzip", false, "gzip-compress the archive written from DIR")
	prepend := flag.String("prepend", "", "file copied verbatim before the archive")
	flag.Parse()
	if *out == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: mkcpio [-gzip] [-prepend FILE] -o OUT DIR")
		os.Exit(2)
	}
	if err := run(*out, flag.Arg(0), *prepend, *gz); err != nil {
		fmt.Fprintln(os.Stderr, "mkcpio:", err)
		os.Exit(1)
	}
}

func run(out, dir, prepend string, gz bool) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if prepend != "" {
		if err := copyPadded(f, prepend); err != nil {
			return err
		}
	}
	if !gz {
		return WriteArchive(f, dir)
	}
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return err
	}
	if err := WriteArchive(zw, dir); err != nil {
		return err
	}
	return zw.Close()
}

// copyPadded copies the file at path to w and pads with zero bytes to a
// multiple of 4, where the kernel expects the next archive to start (it skips
// zero bytes between archives).
func copyPadded(w io.Writer, path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	n, err := io.Copy(w, src)
	if err != nil {
		return fmt.Errorf("copying %s: %w", path, err)
	}
	_, err = w.Write(make([]byte, pad4(n)))
	return err
}

func pad4(n int64) int64 { return (4 - n%4) % 4 }

// WriteArchive writes every directory, regular file and symlink under root
// as a newc archive, names relative to root, owned by root, with mtime 0 so
// the same tree always gives the same bytes.
func WriteArchive(w io.Writer, root string) error {
	cw := &countWriter{w: w}
	ino := uint32(1)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		var (
			mode uint32
			data []byte
			file string
		)
		perm := uint32(info.Mode().Perm())
		switch {
		case info.Mode().IsDir():
			mode = 0o040000 | perm
		case info.Mode().IsRegular():
			mode = 0o100000 | perm
			file = path
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			mode = 0o120000 | 0o777
			data = []byte(target)
		default:
			return fmt.Errorf("%s: unsupported file type %v (only directories, regular files and symlinks)", path, info.Mode().Type())
		}
		size := int64(len(data))
		if file != "" {
			size = info.Size()
		}
		if size > 0xffffffff {
			return fmt.Errorf("%s: too large for a newc archive (%d bytes)", path, size)
		}
		nlink := uint32(1)
		if info.IsDir() {
			nlink = 2
		}
		if err := writeHeader(cw, filepath.ToSlash(rel), ino, mode, nlink, uint32(size)); err != nil {
			return err
		}
		ino++
		if file != "" {
			n, err := copyFile(cw, file)
			if err != nil {
				return err
			}
			if n != size {
				return fmt.Errorf("%s: changed size while archiving (%d, then %d bytes)", path, size, n)
			}
		} else if _, err := cw.Write(data); err != nil {
			return err
		}
		_, err = cw.Write(make([]byte, pad4(cw.n)))
		return err
	})
	if err != nil {
		return err
	}
	if err := writeHeader(cw, "TRAILER!!!", 0, 0, 1, 0); err != nil {
		return err
	}
	// Conventional 512-byte alignment at the end, so another archive may follow.
	_, err = cw.Write(make([]byte, (512-cw.n%512)%512))
	return err
}

func copyFile(w io.Writer, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(w, f)
}

func writeHeader(cw *countWriter, name string, ino, mode, nlink, size uint32) error {
	if strings.ContainsRune(name, 0) {
		return errors.New("name contains NUL: " + name)
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
	// rdevmajor, rdevminor, namesize (with NUL), check.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if _, err := io.WriteString(cw, hdr+name+"\x00"); err != nil {
		return err
	}
	_, err := cw.Write(make([]byte, pad4(cw.n)))
	return err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

package platformtest

// ssh+stdinserver between our daemon and zrepl v0.7.0. The VM has no
// OpenSSH (its initramfs carries busybox and the zfs userland, and the
// build host has no sshd to copy), so the tests stand in for ssh and
// sshd with the same connections: the daemons run "ssh" from PATH, which
// is this test binary (fakeSSH: it dials the -p port of the host named
// last, over TCP, and passes stdin and stdout through), and a listener in
// the test (interopEnv.sshd) runs the forced command per connection with
// its stdin and stdout on pipes, as sshd does: `zrepl stdinserver ID` of
// zrepl's binary and config, or our stdinserver (transport.StdinServer,
// what our `zrepl stdinserver ID` runs, here in this test binary).
// Everything zrepl's ssh transport puts on the connection — its
// handshake, the stdinserver's socket and fd passing, the rpc after it —
// is the real thing; only ssh's encryption and authentication are not.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/transport"
)

// The environment of our stdinserver, run as the forced command.
const (
	stdinserverSocketEnv   = "ZREPL_INTEROP_STDINSERVER_SOCKET"
	stdinserverIdentityEnv = "ZREPL_INTEROP_STDINSERVER_IDENTITY"
)

func TestMain(m *testing.M) {
	// Run as "ssh" by a daemon under test, or as our forced command.
	if filepath.Base(os.Args[0]) == "ssh" {
		os.Exit(fakeSSH(os.Args[1:]))
	}
	if socket := os.Getenv(stdinserverSocketEnv); socket != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := transport.StdinServer(ctx, socket, os.Getenv(stdinserverIdentityEnv), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "stdinserver:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeSSH is ssh's part of a connection: the arguments are ssh's as
// zrepl and our daemon pass them (-p PORT, -i FILE, -o OPTION, -T,
// USER@HOST). It exits 255 with ssh-like complaints when the connection
// fails, 0 when the remote end closed it.
func fakeSSH(args []string) int {
	port, dest := "22", ""
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "-p":
			i++
			if i < len(args) {
				port = args[i]
			}
		case "-i", "-o", "-l":
			i++
		default:
			if !strings.HasPrefix(a, "-") {
				dest = a
			}
		}
	}
	host := dest[strings.LastIndex(dest, "@")+1:]
	c, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 10*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ssh: connect to host %s port %s: %v\n", host, port, err)
		return 255
	}
	go func() {
		_, _ = io.Copy(c, os.Stdin)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	if _, err := io.Copy(os.Stdout, c); err != nil {
		fmt.Fprintf(os.Stderr, "Read from remote host %s: %v\n", host, err)
		return 255
	}
	return 0
}

// sshKey is the identity file the connect blocks name (fakeSSH reads
// none; both configs want the file to exist).
func (e *interopEnv) sshKey() string {
	if e.key == "" {
		e.key = filepath.Join(e.t.TempDir(), "id_ed25519")
		require.NoError(e.t, os.WriteFile(e.key, []byte("fake ssh: no key is read\n"), 0o600))
	}
	return e.key
}

// useFakeSSH puts fakeSSH first on PATH for the daemons (ours in this
// process, zrepl's started by it) until t ends.
func useFakeSSH(t *testing.T) {
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.Symlink(self, filepath.Join(dir, "ssh")))
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// sshd listens on a loopback port as sshd would with the forced command
// for id in authorized_keys.
func (e *interopEnv) sshd(id string) string {
	t := e.t
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	logPath := filepath.Join(t.TempDir(), "sshd-"+id+".log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	var mu sync.Mutex
	var procs []*exec.Cmd
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		mu.Unlock()
		wg.Wait()
		logf.Close()
		dumpTail(t, "the forced commands of "+id, logPath)
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			cmd := e.forcedCommand(id)
			cmd.Stderr = logf
			if err := e.serveSSH(c.(*net.TCPConn), cmd, &wg); err != nil {
				fmt.Fprintf(logf, "sshd: %v\n", err)
				c.Close()
				continue
			}
			mu.Lock()
			procs = append(procs, cmd)
			mu.Unlock()
		}
	}()
	return l.Addr().String()
}

// forcedCommand is what authorized_keys would force for id: the serving
// daemon's stdinserver.
func (e *interopEnv) forcedCommand(id string) *exec.Cmd {
	if e.zreplServes {
		return exec.Command(e.bin, "--config", e.z.cfgPath, "stdinserver", id)
	}
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(),
		stdinserverSocketEnv+"="+daemon.StdinserverSocket(&e.o.cfg.Global, id),
		stdinserverIdentityEnv+"="+id)
	return cmd
}

// serveSSH runs cmd for the connection c with its stdin and stdout on
// pipes, and ends c when the command's stdout ends, as sshd does.
func (e *interopEnv) serveSSH(c *net.TCPConn, cmd *exec.Cmd, wg *sync.WaitGroup) error {
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	cmd.Stdin, cmd.Stdout = inR, outW
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return err
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(inW, c)
		inW.Close()
	}()
	down := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(down)
		if _, err := io.Copy(c, outR); err != nil && !errors.Is(err, net.ErrClosed) {
			c.SetLinger(0) // the connection broke: pass it on as a reset
			c.Close()
		}
		outR.Close()
		_ = c.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_ = cmd.Wait()
		<-down
		c.Close()
	}()
	return nil
}

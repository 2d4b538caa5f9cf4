// Package dbtest starts real PostgreSQL and MariaDB servers for tests of
// the database snapshot hooks: each on a temporary data directory, on a
// loopback port, stopped and removed when the test ends. The servers come
// from Debian's packages (`make dbservers` installs them; CI runs it); a
// test on a machine without them skips, saying so.
//
// Under root the servers run as their packages' users (postgres refuses
// to run as root), found with os/user; the data directory is theirs.
package dbtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql's "mysql"
	"github.com/jackc/pgx/v5"
)

const installHint = "`make dbservers` installs PostgreSQL and MariaDB from Debian's packages"

// startTimeout bounds a server's start (slow under load on 2 cores).
const startTimeout = 90 * time.Second

// server is a started server process.
type server struct {
	t    testing.TB
	dir  string
	cmd  *exec.Cmd
	done chan error
	log  string
	// stopSig asks the server for a fast, clean shutdown.
	stopSig syscall.Signal
}

// owner is who runs a server: the current user, or under root the
// package's system user.
type owner struct {
	cred *syscall.Credential
	name string
}

func ownerFor(t testing.TB, systemUser string) owner {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			t.Fatalf("dbtest: current user: %v", err)
		}
		return owner{name: u.Username}
	}
	u, err := user.Lookup(systemUser)
	if err != nil {
		t.Skipf("dbtest: running as root, but there is no %q user to run the server as (%v); %s", systemUser, err, installHint)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return owner{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, name: u.Username}
}

// tempDir is a directory the owner may use; /tmp keeps socket paths
// short (a Unix socket path has about 100 bytes).
func tempDir(t testing.TB, prefix string, o owner) string {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if o.cred != nil {
		if err := os.Chown(dir, int(o.cred.Uid), int(o.cred.Gid)); err != nil {
			t.Fatalf("dbtest: %v", err)
		}
	}
	return dir
}

func (o owner) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: o.cred}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// run runs a setup command, failing the test with its output.
func (o owner) run(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := o.command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dbtest: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (o owner) start(t testing.TB, dir string, stopSig syscall.Signal, name string, args ...string) *server {
	t.Helper()
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	defer logf.Close()
	cmd := o.command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("dbtest: start %s: %v", name, err)
	}
	s := &server{t: t, dir: dir, cmd: cmd, done: make(chan error, 1), log: logPath, stopSig: stopSig}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(s.stop)
	return s
}

// stop shuts the server down cleanly, or kills it after a while.
func (s *server) stop() {
	syscall.Kill(s.cmd.Process.Pid, s.stopSig)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// await calls ready until it succeeds; it fails the test with the
// server's log if the server exits or does not get ready in time.
func (s *server) await(what string, ready func(ctx context.Context) error) {
	s.t.Helper()
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			b, _ := os.ReadFile(s.log)
			s.t.Fatalf("dbtest: %s exited while starting: %v\n%s", what, err, b)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last = ready(ctx)
		cancel()
		if last == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(s.log)
	s.t.Fatalf("dbtest: %s not ready after %s: %v\n%s", what, startTimeout, last, b)
}

// findBinary looks for name on PATH, then in the directories of globs
// (the newest version first: they sort by version number).
func findBinary(name string, globs ...string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, g := range globs {
		ms, _ := filepath.Glob(filepath.Join(g, name))
		sort.Sort(sort.Reverse(sort.StringSlice(ms)))
		for _, m := range ms {
			if fi, err := os.Stat(m); err == nil && fi.Mode()&0o111 != 0 {
				return m, true
			}
		}
	}
	return "", false
}

// Postgres is a running PostgreSQL server whose superuser is postgres,
// trusted on loopback.
type Postgres struct {
	Port int
	// Dir holds the data directory and the server's socket.
	Dir string
}

// DSN connects as the superuser, in libpq's keyword/value syntax.
func (p *Postgres) DSN() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", p.Port)
}

// Conn is a new connection as the superuser, closed at the test's end.
func (p *Postgres) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN())
	if err != nil {
		t.Fatalf("dbtest: connect to postgres: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// StartPostgres starts a PostgreSQL server for the test, or skips the
// test if PostgreSQL is not installed.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	globs := []string{"/usr/lib/postgresql/*/bin"}
	initdb, ok := findBinary("initdb", globs...)
	if !ok {
		t.Skipf("dbtest: no PostgreSQL server here (initdb is neither on PATH nor in /usr/lib/postgresql/*/bin); %s", installHint)
	}
	// The server of the same installation as initdb.
	if real, err := filepath.EvalSymlinks(initdb); err == nil {
		initdb = real
	}
	postgres := filepath.Join(filepath.Dir(initdb), "postgres")
	o := ownerFor(t, "postgres")
	dir := tempDir(t, "zrepl-pg-", o)
	data := filepath.Join(dir, "data")
	o.run(t, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	p := &Postgres{Port: freePort(t), Dir: dir}
	s := o.start(t, dir, syscall.SIGINT, postgres, "-D", data, "-k", dir, "-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "shared_buffers=16MB")
	s.await("postgres", func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, p.DSN())
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	return p
}

// MariaDB is a running MariaDB server. Its root has no password; the
// user zrepl_lock_tables has exactly the grant zrepl's docs give the
// mysql-lock-tables hook (RELOAD), and the database zrepl_test exists.
type MariaDB struct {
	Port int
	Dir  string
}

// LockUserPassword is zrepl_lock_tables' password.
const LockUserPassword = "yourpasswordhere"

// RootDSN connects as root over TCP to the database zrepl_test.
func (m *MariaDB) RootDSN() string {
	return fmt.Sprintf("root@tcp(127.0.0.1:%d)/zrepl_test", m.Port)
}

// LockDSN connects as zrepl_lock_tables, as zrepl's docs configure it.
func (m *MariaDB) LockDSN() string {
	return fmt.Sprintf("zrepl_lock_tables:%s@tcp(127.0.0.1:%d)/", LockUserPassword, m.Port)
}

// DB is a connection pool as root, closed at the test's end.
func (m *MariaDB) DB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// StartMariaDB starts a MariaDB server for the test, or skips the test if
// MariaDB is not installed.
func StartMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	mariadbd, ok := findBinary("mariadbd", "/usr/sbin", "/usr/libexec")
	if !ok {
		if mariadbd, ok = findBinary("mysqld", "/usr/sbin", "/usr/libexec"); !ok {
			t.Skipf("dbtest: no MariaDB server here (mariadbd is neither on PATH nor in /usr/sbin); %s", installHint)
		}
	}
	installDB, ok := findBinary("mariadb-install-db", "/usr/bin", "/usr/scripts")
	if !ok {
		if installDB, ok = findBinary("mysql_install_db", "/usr/bin", "/usr/scripts"); !ok {
			t.Skipf("dbtest: MariaDB's mariadb-install-db is missing; %s", installHint)
		}
	}
	o := ownerFor(t, "mysql")
	dir := tempDir(t, "zrepl-my-", o)
	data := filepath.Join(dir, "data")
	o.run(t, installDB, "--no-defaults", "--datadir="+data, "--user="+o.name, "--auth-root-authentication-method=normal", "--skip-test-db")
	m := &MariaDB{Port: freePort(t), Dir: dir}
	s := o.start(t, dir, syscall.SIGTERM, mariadbd, "--no-defaults", "--datadir="+data, "--user="+o.name,
		"--socket="+filepath.Join(dir, "sock"), "--pid-file="+filepath.Join(dir, "pid"),
		"--port="+strconv.Itoa(m.Port), "--bind-address=127.0.0.1", "--skip-name-resolve",
		"--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--innodb-flush-log-at-trx-commit=0")
	rootNoDB := fmt.Sprintf("root@tcp(127.0.0.1:%d)/", m.Port)
	s.await("mariadb", func(ctx context.Context) error {
		db, err := sql.Open("mysql", rootNoDB)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(ctx)
	})
	db, err := sql.Open("mysql", rootNoDB)
	if err != nil {
		t.Fatalf("dbtest: %v", err)
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE DATABASE zrepl_test",
		// zrepl's docs, docs/configuration/snapshotting.rst.
		"CREATE USER zrepl_lock_tables IDENTIFIED BY '" + LockUserPassword + "'",
		"GRANT RELOAD ON *.* TO zrepl_lock_tables",
		"FLUSH PRIVILEGES",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("dbtest: %s: %v", q, err)
		}
	}
	return m
}

// WaitBlocked waits until a statement starting with prefix waits for the
// global read lock, as the server's process list says (MySQL: "Waiting
// for global read lock"; MariaDB implements that lock with its backup
// lock). On timeout the error lists what the server was doing.
func WaitBlocked(ctx context.Context, db *sql.DB, prefix string) error {
	for {
		var n int
		err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.processlist
			WHERE info LIKE CONCAT(?, '%') AND (state LIKE '%global read lock%' OR state LIKE '%backup lock%')`, prefix).Scan(&n)
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			var all []string
			if rows, err := db.Query("SELECT COALESCE(info, ''), COALESCE(state, '') FROM information_schema.processlist"); err == nil {
				for rows.Next() {
					var info, state string
					if rows.Scan(&info, &state) == nil {
						all = append(all, info+" ("+state+")")
					}
				}
				rows.Close()
			}
			return fmt.Errorf("no %q waits for the global read lock; the server runs %q", prefix, all)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

package hooks

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/hooks/dbtest"
)

// checkpointLSN is where the server's last checkpoint started.
func checkpointLSN(t *testing.T, p *dbtest.Postgres) string {
	t.Helper()
	var lsn string
	require.NoError(t, p.Conn(t).QueryRow(context.Background(), "SELECT redo_lsn::text FROM pg_control_checkpoint()").Scan(&lsn))
	return lsn
}

// The checkpoint has run when the snapshot is taken: the server's last
// checkpoint moved past the WAL written before the hook ran.
func TestPostgresCheckpointBeforeSnapshot(t *testing.T) {
	p := dbtest.StartPostgres(t)
	ctx := context.Background()
	c := p.Conn(t)
	_, err := c.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 1000)")
	require.NoError(t, err)
	var walBefore string
	require.NoError(t, c.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&walBefore))
	before := checkpointLSN(t, p)
	var notYet bool
	require.NoError(t, c.QueryRow(ctx, "SELECT $1::pg_lsn < $2::pg_lsn", before, walBefore).Scan(&notYet))
	require.True(t, notYet, "the test's writes are after the last checkpoint")

	l := commandList(t, discard(), Spec{Type: PostgresCheckpoint, DSN: p.DSN(), Filesystems: onlyFS(fsA)})
	var atSnapshot string
	rep := l.Run(ctx, fsA, "s", func(context.Context) error {
		atSnapshot = checkpointLSN(t, p)
		return nil
	})
	require.NoError(t, rep.HookErr())
	require.Len(t, rep.Results, 1, "a checkpoint has no post edge")
	assert.Equal(t, "postgres-checkpoint 127.0.0.1:"+strconv.Itoa(p.Port), rep.Results[0].Hook)
	var moved bool
	require.NoError(t, c.QueryRow(ctx, "SELECT $1::pg_lsn >= $2::pg_lsn", atSnapshot, walBefore).Scan(&moved))
	assert.True(t, moved, "checkpoint at %s when the snapshot was taken, the writes were up to %s (last checkpoint before: %s)", atSnapshot, walBefore, before)

	// Not for other filesystems.
	other := fsA
	other, _ = other.Child("other")
	before = checkpointLSN(t, p)
	_, err = c.Exec(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	rep = l.Run(ctx, other, "s", func(context.Context) error { return nil })
	assert.Empty(t, rep.Results)
	assert.Equal(t, before, checkpointLSN(t, p))
}

// The read lock is held while the snapshot is taken, on the hook's
// connection: a write from a second connection waits for it, and goes
// through once the hook unlocked, also when the snapshot failed.
func TestMySQLLockHeldAcrossSnapshot(t *testing.T) {
	m := dbtest.StartMariaDB(t)
	db := m.DB(t)
	ctx := context.Background()
	_, err := db.Exec("CREATE TABLE zrepl_test.t (id INT PRIMARY KEY) ENGINE=InnoDB")
	require.NoError(t, err)
	// The user of zrepl's docs, with only the RELOAD grant.
	l := commandList(t, discard(), Spec{Type: MySQLLockTables, DSN: m.LockDSN(), Filesystems: onlyFS(fsA)})

	for i, snapErr := range []error{nil, errors.New("snapshot failed")} {
		wrote := make(chan error, 1)
		rep := l.Run(ctx, fsA, "s", func(context.Context) error {
			go func() {
				_, err := db.Exec("INSERT INTO zrepl_test.t VALUES (?)", i)
				wrote <- err
			}()
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			require.NoError(t, dbtest.WaitBlocked(wctx, db, "INSERT INTO zrepl_test.t"), "the write waits for the hook's lock while the snapshot is taken")
			select {
			case err := <-wrote:
				t.Errorf("the write went through during the snapshot (err %v)", err)
			default:
			}
			return snapErr
		})
		assert.Equal(t, snapErr, rep.SnapshotErr)
		require.NoError(t, rep.HookErr())
		require.Len(t, rep.Results, 2)
		assert.Equal(t, []Phase{PreSnapshot, PostSnapshot}, []Phase{rep.Results[0].Phase, rep.Results[1].Phase})
		select {
		case err := <-wrote:
			require.NoError(t, err, "the write succeeds once the lock is released")
		case <-time.After(30 * time.Second):
			t.Fatalf("the write still waits after the hook's post edge (snapshot error %v)", snapErr)
		}
	}
	var n int
	require.NoError(t, db.QueryRow("SELECT COUNT(*) FROM zrepl_test.t").Scan(&n))
	assert.Equal(t, 2, n)
}

// A lock that cannot be had within the timeout fails the hook, and the
// server gives the pending lock up too, so writers are not kept waiting
// behind it.
func TestMySQLLockTimeoutReleasesServer(t *testing.T) {
	m := dbtest.StartMariaDB(t)
	db := m.DB(t)
	ctx := context.Background()
	_, err := db.Exec("CREATE TABLE zrepl_test.t (id INT PRIMARY KEY) ENGINE=InnoDB")
	require.NoError(t, err)
	// A session holding a write lock on the table keeps FLUSH TABLES
	// WITH READ LOCK waiting.
	blocker, err := db.Conn(ctx)
	require.NoError(t, err)
	defer blocker.Close()
	_, err = blocker.ExecContext(ctx, "LOCK TABLES zrepl_test.t WRITE")
	require.NoError(t, err)

	l := commandList(t, discard(), Spec{Type: MySQLLockTables, DSN: m.LockDSN(), Timeout: 2 * time.Second, ErrIsFatal: true})
	took := false
	start := time.Now()
	rep := l.Run(ctx, fsA, "s", func(context.Context) error { took = true; return nil })
	require.Len(t, rep.Results, 1)
	assert.ErrorIs(t, rep.Results[0].Err, ErrTimeout)
	assert.Less(t, time.Since(start), 10*time.Second)
	assert.True(t, rep.Skipped)
	assert.False(t, took)

	// The server drops the pending FLUSH within its lock_wait_timeout.
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, db.QueryRow(`SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'FLUSH TABLES WITH READ LOCK%'`).Scan(&n))
		return n == 0
	}, 10*time.Second, 50*time.Millisecond, "no FLUSH TABLES WITH READ LOCK is left waiting on the server")
	_, err = blocker.ExecContext(ctx, "UNLOCK TABLES")
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = db.ExecContext(wctx, "INSERT INTO zrepl_test.t VALUES (1)")
	assert.NoError(t, err, "writers are not blocked once the blocker is gone")
}

// silentServer accepts connections and never answers.
func silentServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	return l.Addr().String()
}

// Database hooks are bounded by their timeout and say why they failed,
// without the DSN's password, also where no server is installed.
func TestDatabaseHookFailures(t *testing.T) {
	silent := silentServer(t)
	host, port, _ := net.SplitHostPort(silent)
	refused := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		return l.Addr().String()
	}()
	rhost, rport, _ := net.SplitHostPort(refused)
	for _, tc := range []struct {
		name string
		spec Spec
		kind error
		want string
	}{
		{"postgres hangs", Spec{Type: PostgresCheckpoint, DSN: "host=" + host + " port=" + port + " user=u password=s3cret sslmode=disable", Timeout: 300 * time.Millisecond}, ErrTimeout, "connect"},
		{"postgres refused", Spec{Type: PostgresCheckpoint, DSN: "host=" + rhost + " port=" + rport + " user=u password=s3cret sslmode=disable"}, ErrHookFailed, "connection refused"},
		{"mysql hangs", Spec{Type: MySQLLockTables, DSN: "u:s3cret@tcp(" + silent + ")/", Timeout: 300 * time.Millisecond}, ErrTimeout, "connect"},
		{"mysql refused", Spec{Type: MySQLLockTables, DSN: "u:s3cret@tcp(" + refused + ")/"}, ErrHookFailed, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := commandList(t, discard(), tc.spec)
			start := time.Now()
			rep := l.Run(context.Background(), fsA, "s", func(context.Context) error { return nil })
			require.Len(t, rep.Results, 1)
			err := rep.Results[0].Err
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.kind)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "s3cret")
			assert.Less(t, time.Since(start), 5*time.Second)
			assert.False(t, rep.Skipped, "not fatal: the snapshot is taken")
		})
	}
}

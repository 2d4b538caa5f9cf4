package hooks

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// erLockWaitTimeout is ER_LOCK_WAIT_TIMEOUT, MySQL's and MariaDB's error
// 1205.
const erLockWaitTimeout = 1205

type mysqlHook struct {
	cfg  *mysql.Config
	addr string // for names: net(address), no credentials
}

func newMySQL(dsn string) (mysqlHook, error) {
	if strings.TrimSpace(dsn) == "" {
		return mysqlHook{}, badSpec("no dsn")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return mysqlHook{}, badSpec("invalid dsn: %s", strings.TrimPrefix(err.Error(), "invalid DSN: "))
	}
	return mysqlHook{cfg: cfg, addr: cfg.Net + "(" + cfg.Addr + ")"}, nil
}

func (m mysqlHook) before(ctx context.Context, inv invocation) (afterFunc, string, error) {
	connector, err := mysql.NewConnector(m.cfg.Clone())
	if err != nil {
		return nil, "", err
	}
	db := sql.OpenDB(connector)
	// One connection holds the lock from FLUSH to UNLOCK: the lock is
	// the session's.
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, "", fmt.Errorf("connect: %w", err)
	}
	release := func() {
		conn.Close()
		db.Close()
	}
	// The server gives up waiting for the lock when the hook does, so
	// that a pending lock does not keep blocking writers.
	secs := max(1, int(math.Ceil(inv.timeout.Seconds())))
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("SET SESSION lock_wait_timeout = %d", secs)); err != nil {
		release()
		return nil, "", fmt.Errorf("set lock_wait_timeout: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "FLUSH TABLES WITH READ LOCK"); err != nil {
		release()
		// The server may give up first: its lock_wait_timeout is ours.
		if me := (*mysql.MySQLError)(nil); errors.As(err, &me) && me.Number == erLockWaitTimeout {
			return nil, "", fmt.Errorf("FLUSH TABLES WITH READ LOCK: %w after %s (the server's lock_wait_timeout): %w", ErrTimeout, inv.timeout, err)
		}
		return nil, "", fmt.Errorf("FLUSH TABLES WITH READ LOCK: %w", err)
	}
	return func(ctx context.Context, inv invocation) (string, error) {
		// Closing the session releases the lock also if UNLOCK fails.
		defer release()
		if _, err := conn.ExecContext(ctx, "UNLOCK TABLES"); err != nil {
			return "", fmt.Errorf("UNLOCK TABLES: %w (the connection is closed, which releases the lock)", err)
		}
		return "", nil
	}, "", nil
}

package hooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// CheckDSN reports whether dsn is a valid DSN for a hook of type typ. The
// error never contains the DSN (it may hold a password).
func CheckDSN(typ Type, dsn string) error {
	var err error
	switch typ {
	case PostgresCheckpoint:
		_, err = newPostgres(dsn)
	case MySQLLockTables:
		_, err = newMySQL(dsn)
	default:
		err = badSpec("a %s hook has no dsn", typ)
	}
	return err
}

type postgresHook struct {
	dsn  string
	addr string // for names: host:port, no credentials
}

func newPostgres(dsn string) (postgresHook, error) {
	if strings.TrimSpace(dsn) == "" {
		return postgresHook{}, badSpec("no dsn")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return postgresHook{}, badSpec("invalid dsn: %s", parseErrorText(err))
	}
	return postgresHook{dsn: dsn, addr: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}, nil
}

// parseErrorText is pgx's reason without the connection string, which it
// redacts only on a best-effort basis.
func parseErrorText(err error) string {
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return err.Error()
	}
	s := pe.Error()
	if i := strings.LastIndex(s, "`: "); i >= 0 {
		return s[i+3:]
	}
	return "cannot parse it"
}

func (p postgresHook) before(ctx context.Context, inv invocation) (afterFunc, string, error) {
	// Parsed again at each run, as libpq would: the environment and
	// the password file may have changed since the daemon started.
	cfg, err := pgx.ParseConfig(p.dsn)
	if err != nil {
		return nil, "", fmt.Errorf("invalid dsn: %s", parseErrorText(err))
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return nil, "", fmt.Errorf("CHECKPOINT: %w", err)
	}
	return nil, "", nil
}

package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

var (
	// ErrBadRequest matches requests the server refuses as malformed.
	ErrBadRequest = errors.New("bad request")
	// ErrProtocol means the peer broke the protocol.
	ErrProtocol = errors.New("protocol error")
)

// zfsKinds are the stable wire names of zfs error kinds. Numbers would
// silently change meaning when the list of kinds changes.
var zfsKinds = map[zfs.Kind]string{
	zfs.ErrDatasetNotExist:           "dataset_not_exist",
	zfs.ErrDatasetExists:             "dataset_exists",
	zfs.ErrDatasetBusy:               "dataset_busy",
	zfs.ErrHoldTagExists:             "hold_tag_exists",
	zfs.ErrHoldTagNotFound:           "hold_tag_not_found",
	zfs.ErrDestinationExists:         "destination_exists",
	zfs.ErrDestinationModified:       "destination_modified",
	zfs.ErrIncrementalSourceMismatch: "incremental_source_mismatch",
	zfs.ErrResumeTokenCorrupt:        "resume_token_corrupt",
	zfs.ErrResumeTokenMismatch:       "resume_token_mismatch",
	zfs.ErrNoResumableState:          "no_resumable_state",
	zfs.ErrPartialReceive:            "partial_receive",
	zfs.ErrKeyNotLoaded:              "key_not_loaded",
	zfs.ErrEncryptionMismatch:        "encryption_mismatch",
	zfs.ErrVersionMismatch:           "version_mismatch",
	zfs.ErrInvalidName:               "invalid_name",
	zfs.ErrNewerSnapshotsExist:       "newer_snapshots_exist",
	zfs.ErrUnsupported:               "unsupported",
	zfs.ErrNotEncrypted:              "not_encrypted",
}

// sentinels are the other errors whose identity crosses the wire.
var sentinels = []struct {
	name string
	err  error
}{
	{"not_allowed", endpoint.ErrNotAllowed},
	{"received_wrong_version", endpoint.ErrReceivedWrongVersion},
	{"invalid_job_id", endpoint.ErrInvalidJobID},
	{"bad_identity", transport.ErrBadIdentity},
	{"bad_request", ErrBadRequest},
	{"protocol", ErrProtocol},
	{"truncated", ErrTruncated},
	{"corrupt_stream", ErrCorruptStream},
}

func zfsKindByName(name string) (zfs.Kind, bool) {
	for k, n := range zfsKinds {
		if n == name {
			return k, true
		}
	}
	return 0, false
}

// errorInfo describes err for the wire.
func errorInfo(err error) *pb.ErrorInfo {
	info := &pb.ErrorInfo{Text: err.Error()}
	if k := zfs.KindOf(err); k != 0 {
		info.ZfsKind = zfsKinds[k]
	}
	var ze *zfs.Error
	if errors.As(err, &ze) {
		info.ZfsOp, info.ZfsDataset, info.ZfsMsg = ze.Op, ze.Dataset, ze.Msg
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			info.Sentinels = append(info.Sentinels, s.name)
		}
	}
	return info
}

// RemoteError is an error that happened on the other side of a connection.
// errors.Is finds the zfs error kind and the endpoint and rpc sentinels it
// had there, and errors.As finds a *zfs.Error if there was one.
type RemoteError struct {
	// Text is the error's text on the server.
	Text string
	// ZFS is the server's *zfs.Error, if any.
	ZFS    *zfs.Error
	causes []error
}

func (e *RemoteError) Error() string { return e.Text }

func (e *RemoteError) Unwrap() []error { return e.causes }

func remoteError(info *pb.ErrorInfo) *RemoteError {
	e := &RemoteError{Text: info.Text}
	if k, ok := zfsKindByName(info.ZfsKind); ok {
		if info.ZfsOp != "" || info.ZfsDataset != "" || info.ZfsMsg != "" {
			e.ZFS = &zfs.Error{Kind: k, Op: info.ZfsOp, Dataset: info.ZfsDataset, Msg: info.ZfsMsg}
			e.causes = append(e.causes, e.ZFS)
		} else {
			e.causes = append(e.causes, k)
		}
	}
	for _, name := range info.Sentinels {
		for _, s := range sentinels {
			if s.name == name {
				e.causes = append(e.causes, s.err)
			}
		}
	}
	return e
}

// toStatus turns a handler's error into a gRPC status carrying ErrorInfo.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isOurs(err) {
		return err
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, endpoint.ErrNotAllowed), errors.Is(err, transport.ErrBadIdentity):
		code = codes.PermissionDenied
	case errors.Is(err, ErrBadRequest), errors.Is(err, zfs.ErrInvalidName), errors.Is(err, endpoint.ErrInvalidJobID):
		code = codes.InvalidArgument
	case zfs.KindOf(err) != 0:
		code = codes.FailedPrecondition
	}
	st, derr := status.New(code, err.Error()).WithDetails(errorInfo(err))
	if derr != nil {
		return status.Error(code, err.Error())
	}
	return st.Err()
}

// isOurs: an error that is a gRPC status only because it wraps one keeps
// its own text and kinds.
func isOurs(err error) bool {
	_, direct := err.(interface{ GRPCStatus() *status.Status })
	return !direct
}

// fromStatus turns a failed call's error into one naming the call and
// wrapping a RemoteError where the server sent one.
func fromStatus(ctx context.Context, call string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", call, err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*pb.ErrorInfo); ok {
			if strings.HasPrefix(info.Text, call+": ") {
				return remoteError(info) // the server named the call already
			}
			return fmt.Errorf("%s: %w", call, remoteError(info))
		}
	}
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded:
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", call, context.Cause(ctx))
		}
	case codes.Unimplemented:
		return fmt.Errorf("%s: the server does not serve this call (%s): %w", call, st.Message(), ErrProtocol)
	}
	return fmt.Errorf("%s: %s: %s", call, st.Code(), st.Message())
}

// truncateText bounds a peer's or an error's text for messages and logs.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

package zfs

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestErrorKinds(t *testing.T) {
	cause := errors.New("exit status 1")
	err := fmt.Errorf("replicating: %w", &Error{
		Kind: ErrDatasetBusy, Op: "destroy", Dataset: "srcp/fs@s1",
		Msg: "cannot destroy snapshot srcp/fs@s1: dataset is busy", ExitStatus: 1, Err: cause,
	})
	assert.ErrorIs(t, err, ErrDatasetBusy)
	assert.NotErrorIs(t, err, ErrDatasetNotExist)
	assert.ErrorIs(t, err, cause)
	assert.Equal(t, ErrDatasetBusy, KindOf(err))
	assert.Contains(t, err.Error(), "srcp/fs@s1")
	assert.Contains(t, err.Error(), "dataset is busy")

	assert.Equal(t, kindUnknown, KindOf(errors.New("other")))
	assert.Equal(t, ErrInvalidName, KindOf(ValidateDatasetPath("")))
	bare := fmt.Errorf("resume token for p/fs: %w", ErrResumeTokenCorrupt)
	assert.Equal(t, ErrResumeTokenCorrupt, KindOf(bare), "a kind wrapped bare counts, as it does for errors.Is")
	unknown := &Error{Op: "list", Dataset: "p", Msg: "something new"}
	assert.NotErrorIs(t, unknown, Kind(0), "an unknown kind matches no kind, not even itself")
	assert.Equal(t, "zfs list p: something new", unknown.Error())
	assert.Equal(t, "zfs recv p/x: resume token corrupt", (&Error{Kind: ErrResumeTokenCorrupt, Op: "recv", Dataset: "p/x"}).Error())
	for k := range kindNames {
		assert.NotEmpty(t, k.Error())
	}
	assert.Contains(t, Kind(999).Error(), "999")
}

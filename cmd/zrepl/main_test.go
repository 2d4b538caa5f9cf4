package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func run(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCommand(&out, &errOut)
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version", "--show", "client")
	require.NoError(t, err)
	assert.Regexp(t, `^client: zrepl version=dev go=go\S+ GOOS=\w+ GOARCH=\w+ Compiler=\w+\n$`, out)
	// Without a daemon: the client's version, and a note.
	out, err = run(t, "version", "--config", "/nonexistent/zrepl.yml")
	require.NoError(t, err)
	assert.Contains(t, out, "client: zrepl version=dev")
	assert.NotContains(t, out, "server:")
	_, err = run(t, "version", "--show", "daemon", "--config", "/nonexistent/zrepl.yml")
	assert.ErrorContains(t, err, "/nonexistent/zrepl.yml")
	_, err = run(t, "version", "--show", "server")
	assert.ErrorContains(t, err, "want client or daemon")
}

func TestDaemonNeedsAReadableConfig(t *testing.T) {
	_, err := run(t, "daemon", "--config", "/nonexistent/zrepl.yml")
	require.ErrorContains(t, err, "/nonexistent/zrepl.yml")
}

// The token and its fields come from real OpenZFS 2.1.11 (shared research notes).
const realToken = "1-b88d7b776-b8-789c636064000310a500c4ec50360710e72765a52697303030419460caa7a515a7968064f41861f26c48f2499525a9c540dae1b0012336fd25f9e9a599290c0c3ab7ae71f8b975acd64092e704cbe725e6a6323014172517e8a7153b141b32c001000d9b15e4"

func TestDecodeResumeToken(t *testing.T) {
	out, err := run(t, "test", "decoderesumetoken", realToken)
	require.NoError(t, err)
	assert.Contains(t, out, "srcp/fs@s1")
	assert.Contains(t, strings.ToLower(out), "ab88464e08d6da2c")

	out, err = run(t, "test", "decoderesumetoken", "--json", realToken)
	require.NoError(t, err)
	assert.Contains(t, out, `"ToName": "srcp/fs@s1"`)

	_, err = run(t, "test", "decoderesumetoken", "1-0-0-zz")
	require.Error(t, err)
}

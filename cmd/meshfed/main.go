// Command meshfed is the single meshfed binary: it runs a hub server
// (meshfed hub) and administers a running federation through the hub's
// Admin gRPC API (meshfed token, clusters, services, policy, analyze).
//
// Every subcommand is thin: it parses flags into a component Config, calls
// Validate, constructs the component and runs it. Flags and environment
// variables are read here and nowhere else.
//
// Exit codes: 0 on success, 1 when a command fails at run time (including
// any gRPC error, printed as "error: <code>: <message>"), 2 for a usage
// error such as an unknown flag, a bad flag value or an invalid hub
// configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
)

// version and commit are set at build time:
//
//	go build -ldflags "-X main.version=v0.1.0 -X main.commit=$(git rev-parse HEAD)" ./cmd/meshfed
var version, commit = "dev", "unknown"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(execute(context.Background(), newRootCmd(), os.Args[1:]))
}

// codedError carries the exit code of a failed command. Errors returned by
// a command's RunE are wrapped in one (see runE); errors that cobra returns
// on its own (unknown command or flag, bad flag value, wrong argument count)
// are not, and are usage errors.
type codedError struct {
	code int
	err  error
	// lines are printed instead of err, one "error: " line each, e.g. every
	// problem of an invalid config.
	lines []error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// usageError marks err as a usage error (exit code 2).
func usageError(err error) error { return &codedError{code: exitUsage, err: err} }

// usageErrorf formats a usage error.
func usageErrorf(format string, args ...any) error {
	return usageError(fmt.Errorf(format, args...))
}

// execute runs root with args and returns the process exit code. Errors are
// printed to root's error stream.
func execute(ctx context.Context, root *cobra.Command, args []string) int {
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	stderr := root.ErrOrStderr()
	var ce *codedError
	if !errors.As(err, &ce) {
		// From cobra itself: the command line is wrong.
		fmt.Fprintf(stderr, "error: %v\n", err)
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	printError(stderr, ce)
	return ce.code
}

// printError prints a command's failure: a gRPC status as its code and
// message, anything else as its text.
func printError(w io.Writer, ce *codedError) {
	if len(ce.lines) > 0 {
		for _, e := range ce.lines {
			fmt.Fprintf(w, "error: %v\n", e)
		}
		return
	}
	if st, ok := status.FromError(ce.err); ok {
		fmt.Fprintf(w, "error: %s: %s\n", st.Code(), st.Message())
		return
	}
	fmt.Fprintf(w, "error: %v\n", ce.err)
}

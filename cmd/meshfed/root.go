package main

import (
	"context"
	"errors"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub"
)

// deps are what the commands reach outside the process for. Tests replace
// them; newRootCmd uses the real ones.
type deps struct {
	// runHub constructs a hub server from a validated config and runs it
	// until ctx is done.
	runHub func(ctx context.Context, cfg hub.Config, log *slog.Logger) error
	// generateKey returns a new hub encrypt key.
	generateKey func() (string, error)
	// dialAdmin connects to the hubs named in the client config at path.
	// The caller calls close when done.
	dialAdmin func(ctx context.Context, path string) (client fedv1.AdminClient, close func() error, err error)
	// getenv reads an environment variable.
	getenv func(string) string
}

// newRootCmd builds the meshfed command tree with the real dependencies.
func newRootCmd() *cobra.Command {
	return newRoot(realDeps())
}

// realDeps are the dependencies of the real binary.
func realDeps() deps {
	return deps{
		runHub:      runHub,
		generateKey: hub.GenerateEncryptKey,
		dialAdmin:   dialAdmin,
		getenv:      os.Getenv,
	}
}

// newRoot builds the meshfed command tree on d.
func newRoot(d deps) *cobra.Command {
	root := &cobra.Command{
		Use:   "meshfed",
		Short: "meshfed federates service meshes across clusters",
		Long: `meshfed federates service meshes across clusters.

Run a hub with "meshfed hub", then administer the federation with the token,
clusters, services, policy and analyze commands. Those read a client config file
(--config, default $MESHFED_CONFIG or ~/.meshfed/config) such as the
admin.yaml a hub writes into its data directory at bootstrap.`,
		SilenceErrors: true, // execute prints them
		SilenceUsage:  true,
	}
	root.AddCommand(
		newVersionCmd(),
		newHubCmd(d),
		newTokenCmd(d),
		newClustersCmd(d),
		newServicesCmd(d),
		newPolicyCmd(d),
		newAnalyzeCmd(d),
		newTrustCmd(d),
		newUICmd(d),
		newJoinCmd(),
		newAgentCmd(),
		newGatewayCmd(),
		newDevCmd(d),
	)
	return root
}

// runE adapts a command body: whatever it returns is a run-time failure
// (exit 1) unless it is already a codedError (e.g. a usageError).
func runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		if err == nil {
			return nil
		}
		var ce *codedError
		if errors.As(err, &ce) {
			return err
		}
		return &codedError{code: exitError, err: err}
	}
}

package testenv

import "context"

// InstallCRDs creates the CRDs an agent needs in the cluster (the MCS
// ServiceExport and ServiceImport, and ClusterProperty) and waits until
// they serve, as testenv does before it joins a cluster's agent. It is for
// tests that join clusters themselves ([Options.NoAgents]). CRDs that
// exist are left alone.
func (c *ClusterEnv) InstallCRDs(ctx context.Context) error { return installCRDs(ctx, c) }

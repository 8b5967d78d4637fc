// Package e2e holds end-to-end tests that run the real meshfed binary as
// separate processes on loopback and drive it through its CLI, the way an
// operator would.
package e2e

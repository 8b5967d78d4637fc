// Package pkgdoc holds the repository-wide test that every Go package has a
// package doc comment.
//
// The test walks the module from its root (the directory holding go.mod),
// the same set of packages that ./... names: hidden directories, testdata,
// vendor, bin and nested modules are skipped. It has no non-test code; this
// file exists to carry the package's own doc comment.
package pkgdoc

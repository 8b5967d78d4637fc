package trust

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestFileStore(t *testing.T) {
	dir := t.TempDir()
	s := NewFileStore(filepath.Join(dir, "ca", "root.pem"))
	if _, err := s.Load(); !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load before Save = %v, want ErrNotFound", err)
	}
	if err := s.Save([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := s.Save([]byte("two")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || string(got) != "two" {
		t.Fatalf("Load = %q, %v", got, err)
	}
	st, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode = %v, want 0600", perm)
	}
	dst, err := os.Stat(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if perm := dst.Mode().Perm(); perm != 0o700 {
		t.Errorf("directory mode = %v, want 0700", perm)
	}
	// No temporary files are left behind.
	entries, err := os.ReadDir(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the store", len(entries))
	}
	// A key file others may read is refused.
	if err := os.Chmod(s.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil {
		t.Error("Load accepted a world-readable key file")
	}
}

func TestRootAuthorityOnFileStore(t *testing.T) {
	clk := newFakeClock(t)
	cfg := testRootConfig(t, "west.test", clk)
	path := filepath.Join(t.TempDir(), "root.pem")
	a := newRootAuthority(t, cfg, NewFileStore(path))
	if _, err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	b := newRootAuthority(t, cfg, NewFileStore(path))
	if got, want := b.Status(), a.Status(); got.Phase != want.Phase || got.Sequence != want.Sequence || !got.SwitchAt.Equal(want.SwitchAt) {
		t.Errorf("reloaded from file: %+v, want %+v", got, want)
	}
}

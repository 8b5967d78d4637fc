package trust

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Store persists a RootAuthority's state (its roots, their private keys and
// the rotation schedule) as PEM bytes. It is consumed by RootAuthority,
// which calls it with its own lock held, so calls never overlap. A file
// store ships here; the agent provides a Kubernetes Secret store.
type Store interface {
	// Load returns the bytes last saved. It returns an error matching
	// ErrNotFound if nothing has been saved yet; any other error stops the
	// authority from starting rather than letting it generate a new root.
	Load() ([]byte, error)
	// Save durably replaces the stored bytes. Readers must see either the
	// old or the new bytes, never a mix.
	Save(pem []byte) error
}

// FileStore is a Store in one file, written atomically (a temporary file
// in the same directory, fsynced, then renamed over the old one) with mode
// 0600. Load refuses a file that group or others may access.
type FileStore struct {
	path string
}

var _ Store = (*FileStore)(nil)

// NewFileStore returns a FileStore at path. The directory is created (mode
// 0700) on the first Save if it does not exist.
func NewFileStore(path string) *FileStore { return &FileStore{path: path} }

// Path returns the file's path.
func (s *FileStore) Path() string { return s.path }

// Load reads the file. It returns an error matching ErrNotFound (and
// fs.ErrNotExist) if the file does not exist, and refuses a file whose mode
// grants any access to group or others.
func (s *FileStore) Load() ([]byte, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("trust: file store: %w", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("trust: file store: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("trust: file store: %s has mode %v; it holds private keys and must not be accessible to group or others (want 0600)", s.path, perm)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("trust: file store: read %s: %w", s.path, err)
	}
	return data, nil
}

// Save writes data to a temporary file in the same directory with mode
// 0600, syncs it, renames it over the store's file and syncs the directory.
func (s *FileStore) Save(data []byte) error {
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("trust: file store: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(s.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("trust: file store: %w", err)
	}
	name := tmp.Name()
	cleanup := func(err error) error {
		_ = tmp.Close()
		_ = os.Remove(name)
		return fmt.Errorf("trust: file store: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return cleanup(err)
	}
	if _, err := tmp.Write(data); err != nil {
		return cleanup(err)
	}
	if err := tmp.Sync(); err != nil {
		return cleanup(err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("trust: file store: %w", err)
	}
	if err := os.Rename(name, s.path); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("trust: file store: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("trust: file store: sync dir: %w", err)
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return fmt.Errorf("trust: file store: sync dir: %w", err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("trust: file store: sync dir: %w", err)
	}
	return nil
}

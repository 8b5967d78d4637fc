package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// The hub state cache in ConfigMaps (kubernetes source). A ConfigMap holds
// at most 1 MiB, so the gzipped state is cut into chunks. Each write goes
// to the slot (a or b) not named by the index, then the index is switched
// to it, so a crash mid-write leaves the previous state whole.
const (
	// HubStateConfigMap is the index ConfigMap; its chunks are
	// HubStateConfigMap-<slot>-<i>.
	HubStateConfigMap = "meshfed-hub-state"
	cmChunkBytes      = 900 << 10
	// MaxHubStateChunks bounds the ConfigMaps of one state (about 56 MiB
	// gzipped); a bigger state is only cached on disk.
	MaxHubStateChunks = 64
	// DefaultConfigMapCacheInterval is the least time between two writes
	// of the ConfigMap cache; the disk cache is written after every delta.
	DefaultConfigMapCacheInterval = time.Second
)

type configMapCache struct {
	client    kubernetes.Interface
	namespace string
	interval  time.Duration
	log       *slog.Logger
	box       mailbox[*view]
}

func newConfigMapCache(client kubernetes.Interface, namespace string, interval time.Duration, log *slog.Logger) *configMapCache {
	return &configMapCache{client: client, namespace: namespace, interval: interval, log: log, box: newMailbox[*view]()}
}

// put queues a view snapshot (immutable) for the writer.
func (c *configMapCache) put(v *view) { c.box.put(v) }

// run writes the latest queued view at most once per interval until ctx
// is done. The ConfigMaps may lag the disk cache by up to an interval.
func (c *configMapCache) run(ctx context.Context) error {
	var last uint64
	var next <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.box.ch:
			if next == nil {
				next = time.After(0)
			}
			continue
		case <-next:
			next = nil
		}
		v, ok := c.box.take()
		if !ok || v.revision == last {
			continue
		}
		if err := c.save(ctx, v); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Warn("caching the hub state in ConfigMaps", "revision", v.revision, "err", err)
			c.box.put(v) // retried after the interval
		} else {
			last = v.revision
		}
		next = time.After(c.interval)
	}
}

func (c *configMapCache) meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: c.namespace, Labels: map[string]string{LabelManagedBy: ManagedByValue}}
}

func chunkName(slot string, i int) string {
	return HubStateConfigMap + "-" + slot + "-" + strconv.Itoa(i)
}

func (c *configMapCache) save(ctx context.Context, v *view) error {
	raw, err := encodeView(v)
	if err != nil {
		return err
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write(raw); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	data := z.Bytes()
	n := (len(data) + cmChunkBytes - 1) / cmChunkBytes
	if n > MaxHubStateChunks {
		return fmt.Errorf("hub state: %d bytes gzipped, more than %d ConfigMaps of %d bytes", len(data), MaxHubStateChunks, cmChunkBytes)
	}
	cms := c.client.CoreV1().ConfigMaps(c.namespace)
	idx, err := cms.Get(ctx, HubStateConfigMap, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	slot := "a"
	if err == nil && idx.Data["slot"] == "a" {
		slot = "b"
	}
	for i := range n {
		part := data[i*cmChunkBytes : min(len(data), (i+1)*cmChunkBytes)]
		cm := &corev1.ConfigMap{ObjectMeta: c.meta(chunkName(slot, i)), BinaryData: map[string][]byte{"part": part}}
		if err := upsertConfigMap(ctx, c.client, cm); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(data)
	next := &corev1.ConfigMap{ObjectMeta: c.meta(HubStateConfigMap), Data: map[string]string{
		"slot": slot, "chunks": strconv.Itoa(n), "sha256": hex.EncodeToString(sum[:]), "revision": strconv.FormatUint(v.revision, 10),
	}}
	if err := upsertConfigMap(ctx, c.client, next); err != nil {
		return err
	}
	// Chunks beyond this state's count in this slot are stale.
	return deleteChunks(ctx, cms, slot, n)
}

// deleteChunks deletes slot's chunks from the first'th on, up to the first
// that does not exist (chunks are written from 0 up, without gaps).
func deleteChunks(ctx context.Context, cms typedcorev1.ConfigMapInterface, slot string, first int) error {
	for i := first; i < MaxHubStateChunks; i++ {
		err := cms.Delete(ctx, chunkName(slot, i), metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func upsertConfigMap(ctx context.Context, client kubernetes.Interface, cm *corev1.ConfigMap) error {
	cms := client.CoreV1().ConfigMaps(cm.Namespace)
	cur, err := cms.Get(ctx, cm.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		return err
	case err != nil:
		return err
	case !isOwned(cur):
		return fmt.Errorf("ConfigMap %s/%s exists and is not meshfed's; not touching it", cm.Namespace, cm.Name)
	}
	cm.ResourceVersion = cur.ResourceVersion
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	return err
}

// load returns the cached view, or nil, nil when there is none.
func (c *configMapCache) load(ctx context.Context) (*view, error) {
	cms := c.client.CoreV1().ConfigMaps(c.namespace)
	idx, err := cms.Get(ctx, HubStateConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(idx.Data["chunks"])
	if err != nil || n < 1 || n > MaxHubStateChunks {
		return nil, fmt.Errorf("hub state ConfigMap: chunks %q: must be 1 to %d", idx.Data["chunks"], MaxHubStateChunks)
	}
	var data []byte
	for i := range n {
		cm, err := cms.Get(ctx, chunkName(idx.Data["slot"], i), metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("hub state ConfigMap chunk %d: %w", i, err)
		}
		data = append(data, cm.BinaryData["part"]...)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != idx.Data["sha256"] {
		return nil, errors.New("hub state ConfigMaps: checksum mismatch")
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("hub state ConfigMaps: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, MaxHubStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("hub state ConfigMaps: %w", err)
	}
	if len(raw) > MaxHubStateBytes {
		return nil, fmt.Errorf("hub state ConfigMaps: more than %d bytes", MaxHubStateBytes)
	}
	return decodeView(raw)
}

// clear deletes the cached hub state: the index first, so that a load
// finds no cache even if deleting a chunk fails, then every chunk of both
// slots.
func (c *configMapCache) clear(ctx context.Context) error {
	cms := c.client.CoreV1().ConfigMaps(c.namespace)
	if err := cms.Delete(ctx, HubStateConfigMap, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	for _, slot := range []string{"a", "b"} {
		if err := deleteChunks(ctx, cms, slot, 0); err != nil {
			return err
		}
	}
	return nil
}

package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Duration is a duration written as a Go (and Istio) duration string,
// "5s" or "250ms". Zero means unset. Marshal writes it canonically: an
// integer count of the largest unit that divides it exactly (h, m, s, ms,
// us, ns), so "1.5s" is written "1500ms" and "60m" is written "1h".
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

var durationUnits = [...]struct {
	unit time.Duration
	name string
}{
	{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"},
	{time.Millisecond, "ms"}, {time.Microsecond, "us"}, {time.Nanosecond, "ns"},
}

// String returns the canonical form of d, "0s" for zero.
func (d Duration) String() string {
	if d == 0 {
		return "0s"
	}
	v := time.Duration(d)
	for _, u := range durationUnits {
		if v%u.unit == 0 {
			return strconv.FormatInt(int64(v/u.unit), 10) + u.name
		}
	}
	panic("unreachable") // every duration is a whole number of ns
}

// ParseDuration parses a Go duration string ("90s", "1.5s", "1h30m").
func ParseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("must be a duration such as \"5s\" or \"250ms\", got %s", quote(s))
	}
	return Duration(v), nil
}

// MarshalJSON writes the canonical string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, d.String()), nil
}

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("must be a duration string such as \"5s\"")
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

package devenv

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// Config configures an Env.
type Config struct {
	// Binary is the meshfed executable every child runs.
	Binary string
	// EncryptKeyEnv is the environment variable meshfed hub reads its
	// encrypt key from when --encrypt-key is empty: the key goes to the
	// servers there, not on the command line where ps shows it.
	EncryptKeyEnv string
	// Dir is the state directory: data directories, logs, dev.json.
	Dir string
	// BasePort is the first port of the plan (see Ports); the plan uses
	// PortSpan ports from it.
	BasePort int
	// OneShot stops everything once dev.json is written and verified.
	OneShot bool
	// ReadyTimeout bounds the start-up, from Run to dev.json.
	ReadyTimeout time.Duration
	// StopTimeout is how long a child has to exit after SIGTERM before it
	// is killed.
	StopTimeout time.Duration
	// Restart is when a child that exited is started again.
	Restart RestartPolicy
	// Out receives the human summary, events (a child restarted, a fault
	// put into force or healed) and the live view.
	Out io.Writer
	// Live shows the live view on Out once the federation is ready: which
	// cluster answers a steady trickle of calls from central to
	// default/reviews (see live.go).
	Live bool
	// LiveInPlace redraws the live view's status line in place (Out is a
	// terminal) instead of writing a line per status.
	LiveInPlace bool
	// LiveRate is how many calls a second the live view makes.
	LiveRate int
	// LivePeriod is how often the live view shows a status.
	LivePeriod time.Duration
	// Log receives the supervisor's log. If nil, the log is written as
	// text at LogLevel to LogOut (on Out's terminal, out of the live view's
	// way), or discarded if LogOut is nil.
	Log      *slog.Logger
	LogOut   io.Writer
	LogLevel slog.Level
}

// RestartPolicy is the backoff of a child that exits: it is restarted
// after Min; each exit within Stable of its start doubles the delay, up to
// Max; a child that ran for Stable or longer starts over at Min.
type RestartPolicy struct {
	Min, Max, Stable time.Duration
}

// Next returns the delay before the next restart, given the previous delay
// (0 the first time) and how long the child ran.
func (p RestartPolicy) Next(prev, ran time.Duration) time.Duration {
	if prev == 0 || ran >= p.Stable {
		return p.Min
	}
	return min(2*prev, p.Max)
}

// Defaults.
const (
	DefaultBasePort     = 7400
	DefaultReadyTimeout = 60 * time.Second
	DefaultStopTimeout  = 10 * time.Second
	DefaultLiveRate     = 10
	DefaultLivePeriod   = time.Second
	MaxLiveRate         = 1000
)

// DefaultRestart restarts after 2 s, doubling up to 30 s for a child that
// keeps dying within 10 s.
var DefaultRestart = RestartPolicy{Min: 2 * time.Second, Max: 30 * time.Second, Stable: 10 * time.Second}

// DefaultConfig returns a Config with every tunable set; Binary and Out are
// the caller's.
func DefaultConfig() Config {
	return Config{
		Dir:          ".dev",
		BasePort:     DefaultBasePort,
		ReadyTimeout: DefaultReadyTimeout,
		StopTimeout:  DefaultStopTimeout,
		Restart:      DefaultRestart,
		LiveRate:     DefaultLiveRate,
		LivePeriod:   DefaultLivePeriod,
	}
}

// Validate reports every invalid field, each a *federation.FieldError.
func (c Config) Validate() error {
	var errs []error
	add := func(field, value, reason string) {
		errs = append(errs, &federation.FieldError{Field: field, Value: value, Reason: reason})
	}
	if c.Binary == "" {
		add("binary", "", "required: the meshfed executable")
	}
	if c.EncryptKeyEnv == "" {
		add("encrypt_key_env", "", "required: the variable meshfed hub reads its key from")
	}
	if c.Dir == "" {
		add("state_dir", "", "required")
	}
	if c.BasePort < MinBasePort || c.BasePort > MaxBasePort {
		add("port_base", strconv.Itoa(c.BasePort), "must be in "+strconv.Itoa(MinBasePort)+".."+strconv.Itoa(MaxBasePort)+
			" (the plan uses "+strconv.Itoa(PortSpan)+" ports from it)")
	}
	if c.ReadyTimeout <= 0 {
		add("ready_timeout", c.ReadyTimeout.String(), "must be positive")
	}
	if c.StopTimeout <= 0 {
		add("stop_timeout", c.StopTimeout.String(), "must be positive")
	}
	if c.Restart.Min <= 0 || c.Restart.Max < c.Restart.Min {
		add("restart", c.Restart.Min.String()+".."+c.Restart.Max.String(), "must have 0 < min <= max")
	}
	if c.Restart.Stable <= 0 {
		add("restart.stable", c.Restart.Stable.String(), "must be positive")
	}
	if c.LiveRate < 1 || c.LiveRate > MaxLiveRate {
		add("live_rate", strconv.Itoa(c.LiveRate), "must be in 1.."+strconv.Itoa(MaxLiveRate)+" calls a second")
	}
	if c.LivePeriod < 100*time.Millisecond {
		add("live_period", c.LivePeriod.String(), "must be at least 100ms")
	}
	if c.Out == nil {
		add("out", "", "required")
	}
	return errors.Join(errs...)
}

// abs returns c with Dir made absolute.
func (c Config) abs() (Config, error) {
	d, err := filepath.Abs(c.Dir)
	if err != nil {
		return c, err
	}
	c.Dir = d
	return c, nil
}

// Deps are what an Env reaches outside the supervisor for.
type Deps struct {
	// GenerateKey returns a new hub encrypt key (created once per state
	// directory).
	GenerateKey func() (string, error)
	// CreateToken creates a one-time join token for cluster through the
	// hub's Admin API, authenticated by the client config at adminConfig.
	CreateToken func(ctx context.Context, adminConfig string, cluster federation.ClusterName) (string, error)
}

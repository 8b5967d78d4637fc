package trust

import (
	"reflect"
	"testing"
)

// TestDefaultConfigsSetEveryField checks that every Default*Config sets
// every field but those listed, each with the reason it has no default.
func TestDefaultConfigsSetEveryField(t *testing.T) {
	for _, c := range []struct {
		cfg       any
		noDefault map[string]string
	}{
		{DefaultRootConfig(), map[string]string{"TrustDomain": "per cluster"}},
		{DefaultIntermediateConfig(), map[string]string{"TrustDomain": "per cluster", "ChainPEM": "operator material", "KeyPEM": "operator material", "RootsPEM": "optional operator material"}},
		{DefaultWorkloadAPIConfig(), map[string]string{"TrustDomain": "SPIRE's", "Addr": "deployment-specific"}},
		{DefaultCAConfig(), nil},
		{DefaultSVIDSourceConfig(), nil},
		{DefaultFetcherConfig(), map[string]string{
			"TrustDomain": "per relationship", "URL": "per relationship", "Profile": "explicit, never inferred",
			"EndpointID": "explicit, never inferred", "WebPKIRoots": "nil means system roots", "EndpointBundles": "per relationship",
		}},
	} {
		v := reflect.ValueOf(c.cfg)
		name := v.Type().Name()
		for i := range v.NumField() {
			f := v.Type().Field(i)
			_, listed := c.noDefault[f.Name]
			switch zero := v.Field(i).IsZero(); {
			case listed && !zero:
				t.Errorf("%s.%s is listed as having no default but is set", name, f.Name)
			case !listed && zero:
				t.Errorf("Default%s leaves %s zero; give it a default or list it with a reason", name, f.Name)
			}
		}
		for field := range c.noDefault {
			if _, ok := v.Type().FieldByName(field); !ok {
				t.Errorf("%s has no field %s", name, field)
			}
		}
	}
}

package deployments

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"

	"github.com/switchyard-llm/switchyard/pkg/natsauth"
)

// The Kubernetes manifests run NATS with authentication: the nodes include
// the auth.conf of `switchyard creds server-config` from Secret nats-auth,
// each service mounts only its own credentials from Secret
// switchyard-nats-creds, and the KEDA scalers name the SWITCHYARD account.

// mountedKeys are the ConfigMap or Secret keys a volume mounts.
type mountedKeys struct {
	name  string
	items []corev1.KeyToPath
}

// volumeConfigMaps are the ConfigMaps a volume mounts (directly or
// projected).
func volumeConfigMaps(v corev1.Volume) []mountedKeys {
	var out []mountedKeys
	if cm := v.ConfigMap; cm != nil {
		out = append(out, mountedKeys{cm.Name, cm.Items})
	}
	if p := v.Projected; p != nil {
		for _, src := range p.Sources {
			if cm := src.ConfigMap; cm != nil {
				out = append(out, mountedKeys{cm.Name, cm.Items})
			}
		}
	}
	return out
}

// volumeSecrets are the Secrets a volume mounts (directly or projected).
func volumeSecrets(v corev1.Volume) []mountedKeys {
	var out []mountedKeys
	if s := v.Secret; s != nil {
		out = append(out, mountedKeys{s.SecretName, s.Items})
	}
	if p := v.Projected; p != nil {
		for _, src := range p.Sources {
			if s := src.Secret; s != nil {
				out = append(out, mountedKeys{s.Name, s.Items})
			}
		}
	}
	return out
}

// secretFileAt finds the Secret key a container sees at path: the Secret
// volume mounted above it and the item placed there. keys are every key
// that volume mounts.
func secretFileAt(path string, mounts []corev1.VolumeMount, volumes map[string]corev1.Volume) (secret, key string, keys []string) {
	for _, vm := range mounts {
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, s := range volumeSecrets(volumes[vm.Name]) {
			for _, item := range s.items {
				keys = append(keys, item.Key)
				if item.Path == rel {
					secret, key = s.name, item.Key
				}
			}
		}
		if secret != "" {
			return secret, key, keys
		}
	}
	return "", "", nil
}

// checkNATSCreds: a Switchyard container reads SWITCHYARD_NATS_CREDS from
// a Secret it mounts, the key holding its own user's credentials (the file
// name `creds server-config` writes into <data>/creds, so `kubectl create
// secret --from-file=<data>/creds` makes the keys), and no other user's.
func checkNATSCreds(t *testing.T, m *manifests, where, user, path string, mounts []corev1.VolumeMount, volumes map[string]corev1.Volume) {
	t.Helper()
	if path == "" {
		t.Errorf("%s: SWITCHYARD_NATS_CREDS is not set: NATS refuses a connection without credentials", where)
		return
	}
	secret, key, keys := secretFileAt(path, mounts, volumes)
	want := filepath.Base(natsauth.CredsFile("", user))
	switch {
	case secret == "":
		t.Errorf("%s: SWITCHYARD_NATS_CREDS=%s is not a file of a mounted Secret", where, path)
	case key != want:
		t.Errorf("%s: SWITCHYARD_NATS_CREDS is key %s of Secret %s, want %s (the %s user)", where, key, secret, want, user)
	case !m.secretHas(secret, key):
		t.Errorf("%s: SWITCHYARD_NATS_CREDS is key %s of Secret %s, which does not exist", where, key, secret)
	case len(keys) != 1:
		t.Errorf("%s: mounts the credentials %v, want only its own (%s)", where, keys, want)
	}
}

// checkScalerAccount: the ScaledObject's account is set by a kustomize
// replacement from a ConfigMap key of these manifests named after the
// account the executors' consumers live in (SWITCHYARD; `$G` does not
// exist once NATS runs with accounts).
func checkScalerAccount(t reporter, m *manifests, where string) {
	t.Helper()
	for _, r := range m.kustomize.Replacements {
		targeted := slices.ContainsFunc(r.Targets, func(tg struct {
			Select struct {
				Kind string `json:"kind"`
			} `json:"select"`
			FieldPaths []string `json:"fieldPaths"`
		}) bool {
			return tg.Select.Kind == "ScaledObject" && slices.Contains(tg.FieldPaths, "spec.triggers.0.metadata.account")
		})
		if !targeted {
			continue
		}
		key, ok := strings.CutPrefix(r.Source.FieldPath, "data.")
		if cm := m.configMaps[r.Source.Name]; r.Source.Kind != "ConfigMap" || !ok || cm == nil || cm.Data[key] == "" {
			t.Errorf("%s: its account comes from %s %s %s, which does not exist", where, r.Source.Kind, r.Source.Name, r.Source.FieldPath)
		}
		if key != natsauth.AccountSwitchyard {
			t.Errorf("%s: its account is the key %s, want the %s account's", where, key, natsauth.AccountSwitchyard)
		}
		return
	}
	t.Errorf("%s: no kustomize replacement sets its account (the SWITCHYARD account's key)", where)
}

// writeAuthConf writes the auth.conf an operator generates beside the
// node files in dir (what Secret nats-auth holds).
func writeAuthConf(t *testing.T, dir string) *natsauth.Authority {
	t.Helper()
	auth, err := natsauth.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conf, err := auth.ServerConfig("$NATS_RESOLVER_DIR")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return auth
}

// checkNATSAuth: the node trusts the generated operator with a full
// resolver whose directory (NATS_RESOLVER_DIR) is on the data volume, and
// its config directory holds auth.conf from Secret nats-auth.
func checkNATSAuth(t *testing.T, pod string, opts *server.Options, auth *natsauth.Authority, c corev1.Container, volumes []corev1.Volume) {
	t.Helper()
	op, err := auth.OperatorClaims()
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.TrustedOperators) != 1 || opts.TrustedOperators[0].Subject != op.Subject || opts.SystemAccount != auth.SystemAccount() ||
		fmt.Sprintf("%T", opts.AccountResolver) != "*server.DirAccResolver" {
		t.Errorf("nats.conf for %s: does not include auth.conf (operators %d, system account %q, resolver %T)", pod, len(opts.TrustedOperators), opts.SystemAccount, opts.AccountResolver)
	}
	var resolverDir string
	for _, e := range c.Env {
		if e.Name == "NATS_RESOLVER_DIR" {
			resolverDir = e.Value
		}
	}
	if resolverDir == "" || !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
		return strings.HasPrefix(resolverDir, vm.MountPath) && vm.Name == "data"
	}) {
		t.Errorf("StatefulSet nats: NATS_RESOLVER_DIR %q is not on the data volume (pushed accounts must survive a restart)", resolverDir)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range volumes {
		vols[v.Name] = v
	}
	if secret, key, _ := secretFileAt("/etc/nats/auth.conf", c.VolumeMounts, vols); secret != "nats-auth" || key != "auth.conf" {
		t.Errorf("StatefulSet nats: /etc/nats/auth.conf is key %q of Secret %q, want auth.conf of nats-auth", key, secret)
	}
}

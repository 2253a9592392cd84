package deployments

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/santhosh-tekuri/jsonschema/v6"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/switchyard-llm/switchyard/pkg/envcfg"
	"github.com/switchyard-llm/switchyard/pkg/natsauth"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/policy"
	"github.com/switchyard-llm/switchyard/pkg/svc"
	"github.com/switchyard-llm/switchyard/services/executor"
)

const k8sDir = "kubernetes"

// manifests are the decoded objects of the Kubernetes directory.
type manifests struct {
	namespaces   map[string]*corev1.Namespace
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	services     map[string]*corev1.Service
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	jobs         map[string]*batchv1.Job
	pdbs         map[string]*policyv1.PodDisruptionBudget
	scaled       map[string]*scaledObject
	kustomize    kustomization
}

// kustomization is the part of kustomize's Kustomization these files use
// (decoded strictly: another field fails the test until it is added here).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	// Replacements copy a value of one object into others (the NATS
	// account key into the ScaledObjects).
	Replacements []kustomizeReplacement `json:"replacements"`
}

type kustomizeReplacement struct {
	Source struct {
		Kind      string `json:"kind"`
		Name      string `json:"name"`
		FieldPath string `json:"fieldPath"`
	} `json:"source"`
	Targets []struct {
		Select struct {
			Kind string `json:"kind"`
		} `json:"select"`
		FieldPaths []string `json:"fieldPaths"`
	} `json:"targets"`
}

// loadManifests decodes every document of every listed file strictly
// into the upstream Go type of its kind (a ScaledObject into KEDA's, by
// keda, unless nil, and against KEDA's CRD schema): an unknown field, a
// misspelt one or a wrong type fails, as an API server's strict field
// validation would.
func loadManifests(t *testing.T, keda *kedaDecoder) *manifests {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" || k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Namespace != "switchyard" {
		t.Errorf("kustomization.yaml: %s %s namespace %q", k.APIVersion, k.Kind, k.Namespace)
	}
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml", base)
		}
	}
	m := &manifests{namespaces: map[string]*corev1.Namespace{}, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		jobs: map[string]*batchv1.Job{}, pdbs: map[string]*policyv1.PodDisruptionBudget{}, scaled: map[string]*scaledObject{}, kustomize: k}
	var kedaSchema *jsonschema.Schema
	scaledDocs := map[string]string{}
	for _, res := range k.Resources {
		data, err := os.ReadFile(filepath.Join(k8sDir, res))
		if err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", res, err)
			continue
		}
		for i, doc := range splitDocs(string(data)) {
			where := fmt.Sprintf("%s#%d", res, i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			var obj interface{ GetName() string }
			var meta *metav1.ObjectMeta
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 Namespace":
				o := &corev1.Namespace{}
				obj, meta, m.namespaces[decodeName(t, where, doc, o, &o.ObjectMeta)] = o, &o.ObjectMeta, o
			case "v1 ConfigMap":
				o := &corev1.ConfigMap{}
				obj, meta, m.configMaps[decodeName(t, where, doc, o, &o.ObjectMeta)] = o, &o.ObjectMeta, o
			case "v1 Secret":
				o := &corev1.Secret{}
				obj, meta, m.secrets[decodeName(t, where, doc, o, &o.ObjectMeta)] = o, &o.ObjectMeta, o
			case "v1 Service":
				o := &corev1.Service{}
				obj, meta, m.services[decodeName(t, where, doc, o, &o.ObjectMeta)] = o, &o.ObjectMeta, o
			case "apps/v1 Deployment":
				o := &appsv1.Deployment{}
				obj, meta, m.deployments[decodeName(t, where, doc, o, &o.ObjectMeta)] = o, &o.ObjectMeta, o
			case "apps/v1 StatefulSet":
				o := &appsv1.StatefulSet{}
				obj, meta, m.statefulSets[decodeName(t, where, doc, o, &o.ObjectMeta)] = o, &o.ObjectMeta, o
			case "batch/v1 Job":
				o := &batchv1.Job{}
				obj, meta, m.jobs[decodeName(t, where, doc, o, &o.ObjectMeta)] = o, &o.ObjectMeta, o
			case "policy/v1 PodDisruptionBudget":
				o := &policyv1.PodDisruptionBudget{}
				obj, meta, m.pdbs[decodeName(t, where, doc, o, &o.ObjectMeta)] = o, &o.ObjectMeta, o
			case "keda.sh/v1alpha1 ScaledObject":
				if kedaSchema == nil {
					kedaSchema = kedaScaledObjectSchema(t)
				}
				if err := validateScaledObjectSchema(kedaSchema, doc); err != nil {
					t.Errorf("%s: KEDA's CRD schema: %v", where, err)
				}
				scaledDocs[where] = doc // decoded below, all in one run of the decoder
				continue
			default:
				t.Errorf("%s: %s %s has no check here", where, tm.APIVersion, tm.Kind)
				continue
			}
			if tm.Kind != "Namespace" && meta.Namespace != k.Namespace {
				t.Errorf("%s: %s %s in namespace %q, want %q", where, tm.Kind, obj.GetName(), meta.Namespace, k.Namespace)
			}
		}
	}
	if keda == nil { // a test that reads no ScaledObject
		scaledDocs = nil
	}
	for where, res := range keda.decode(t, scaledDocs) {
		o, err := res.scaledObject()
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if o.Name == "" {
			t.Errorf("%s: no metadata.name", where)
		}
		if o.Namespace != k.Namespace {
			t.Errorf("%s: ScaledObject %s in namespace %q, want %q", where, o.Name, o.Namespace, k.Namespace)
		}
		m.scaled[o.Name] = o
	}
	if m.namespaces[k.Namespace] == nil {
		t.Errorf("no Namespace %s", k.Namespace)
	}
	return m
}

func decodeName(t *testing.T, where, doc string, into any, meta *metav1.ObjectMeta) string {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
		t.Errorf("%s: %v", where, err)
	}
	if meta.Name == "" {
		t.Errorf("%s: no metadata.name", where)
	}
	return meta.Name
}

// podOf is a workload's pod template and the name it is known by.
type podOf struct {
	kind, name string
	selector   *metav1.LabelSelector
	template   corev1.PodTemplateSpec
	claims     []corev1.PersistentVolumeClaim
}

func (m *manifests) workloads() []podOf {
	var out []podOf
	for _, name := range sortedKeys(m.deployments) {
		d := m.deployments[name]
		out = append(out, podOf{"Deployment", name, d.Spec.Selector, d.Spec.Template, nil})
	}
	for _, name := range sortedKeys(m.statefulSets) {
		s := m.statefulSets[name]
		out = append(out, podOf{"StatefulSet", name, s.Spec.Selector, s.Spec.Template, s.Spec.VolumeClaimTemplates})
	}
	// A Job's selector is generated by the API server.
	for _, name := range sortedKeys(m.jobs) {
		out = append(out, podOf{"Job", name, nil, m.jobs[name].Spec.Template, nil})
	}
	return out
}

// secretHas: the Secret exists and holds key (data or stringData).
func (m *manifests) secretHas(name, key string) bool {
	s := m.secrets[name]
	if s == nil {
		return false
	}
	_, inData := s.Data[key]
	_, inString := s.StringData[key]
	return inData || inString
}

// TestKubernetesManifests decodes every manifest strictly and checks the
// references between them: selectors, ports, probes, ConfigMap and Secret
// keys, volumes, the environment each Switchyard container gets against
// what its binary reads, PodDisruptionBudgets; and that a Job provisions
// the streams with the operator's credentials, which no service mounts.
func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t, newKEDADecoder(t))
	var pol *policyFile
	provisioned := false
	for _, w := range m.workloads() {
		where := w.kind + " " + w.name
		// A Job runs to completion: no selector of its own, no probes, no
		// disruption budget.
		job := w.kind == "Job"
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if !job && (err != nil || sel.Empty() || !sel.Matches(labels.Set(w.template.Labels))) {
			t.Errorf("%s: selector %v does not select its pod template's labels %v (%v)", where, w.selector, w.template.Labels, err)
		}
		if rp := w.template.Spec.RestartPolicy; job && rp != corev1.RestartPolicyOnFailure && rp != corev1.RestartPolicyNever {
			t.Errorf("%s: restartPolicy %q, want OnFailure or Never", where, rp)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range w.template.Spec.Volumes {
			volumes[v.Name] = v
			for _, cm := range volumeConfigMaps(v) {
				for _, item := range cm.items {
					if _, ok := m.configMaps[cm.name].Data[item.Key]; m.configMaps[cm.name] == nil || !ok {
						t.Errorf("%s: volume %s mounts key %s of ConfigMap %s, which does not exist", where, v.Name, item.Key, cm.name)
					}
				}
			}
			for _, sec := range volumeSecrets(v) {
				if m.secrets[sec.name] == nil {
					t.Errorf("%s: volume %s mounts Secret %s, which does not exist", where, v.Name, sec.name)
				}
				for _, item := range sec.items {
					if !m.secretHas(sec.name, item.Key) {
						t.Errorf("%s: volume %s mounts key %s of Secret %s, which does not exist", where, v.Name, item.Key, sec.name)
					}
				}
			}
		}
		for _, c := range w.claims {
			volumes[c.Name] = corev1.Volume{Name: c.Name}
		}
		for _, c := range w.template.Spec.Containers {
			cw := where + " container " + c.Name
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for kind, probe := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				if job {
					continue
				}
				if probe == nil || probe.HTTPGet == nil {
					t.Errorf("%s: no %s probe over HTTP", cw, kind)
					continue
				}
				if _, ok := ports[probe.HTTPGet.Port.StrVal]; probe.HTTPGet.Port.Type != intstr.String || !ok {
					t.Errorf("%s: %s probe on port %s, not a named port of the container", cw, kind, probe.HTTPGet.Port.String())
				}
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s: no cpu and memory requests", cw)
			}
			for _, vm := range c.VolumeMounts {
				if _, ok := volumes[vm.Name]; !ok {
					t.Errorf("%s: mounts volume %s, which the pod does not have", cw, vm.Name)
				}
			}
			env := map[string]string{}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef == nil || m.configMaps[ef.ConfigMapRef.Name] == nil {
					t.Errorf("%s: envFrom %+v: no such ConfigMap", cw, ef)
					continue
				}
				for k, v := range m.configMaps[ef.ConfigMapRef.Name].Data {
					env[k] = v
				}
			}
			for _, e := range c.Env {
				switch {
				case e.ValueFrom == nil:
					env[e.Name] = e.Value
				case e.ValueFrom.SecretKeyRef != nil:
					if ref := e.ValueFrom.SecretKeyRef; !m.secretHas(ref.Name, ref.Key) {
						t.Errorf("%s: %s from key %s of Secret %s, which does not exist", cw, e.Name, ref.Key, ref.Name)
					}
					env[e.Name] = secretValue
				case e.ValueFrom.FieldRef != nil:
					env[e.Name] = e.ValueFrom.FieldRef.FieldPath
				default:
					t.Errorf("%s: %s: a source this test does not check", cw, e.Name)
				}
			}
			if !strings.HasPrefix(c.Image, "switchyard:") {
				continue
			}
			// A Switchyard container: its binary and what it reads.
			binary, ok := commandBinary(c.Command)
			if !ok {
				t.Errorf("%s: command %v, want one binary (or switchyard provision)", cw, c.Command)
				continue
			}
			pf := policyMountedAt(t, m, cw, env["SWITCHYARD_POLICY"], c.VolumeMounts, volumes)
			if pf == nil {
				continue
			}
			if pol == nil {
				pol = pf
			} else if pol.source != pf.source {
				t.Errorf("%s: mounts another policy (%s) than the other services (%s)", cw, pf.source, pol.source)
			}
			checkServiceEnv(t, cw, binary, env, pf.pol)
			checkNATSURLs(t, m, cw, env["SWITCHYARD_NATS_URL"])
			if binary == provisionCmd {
				provisioned = true
				checkNATSCreds(t, m, cw, natsauth.OperatorUser, env["SWITCHYARD_NATS_CREDS"], c.VolumeMounts, volumes)
				continue
			}
			if job {
				t.Errorf("%s: a Job running %s, not %s", cw, binary, provisionCmd)
				continue
			}
			checkNATSCreds(t, m, cw, natsauth.ServiceUser(binary, env["SWITCHYARD_VENDOR"]), env["SWITCHYARD_NATS_CREDS"], c.VolumeMounts, volumes)
			checkGCMemoryLimit(t, cw, env, c.Resources.Limits.Memory())
			if got := port(t, cw, env["SWITCHYARD_HTTP_ADDR"]); got != fmt.Sprint(ports["health"]) {
				t.Errorf("%s: /healthz on port %s (SWITCHYARD_HTTP_ADDR) but the probed port \"health\" is %d", cw, got, ports["health"])
			}
			for _, probe := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if probe != nil && probe.HTTPGet != nil && (probe.HTTPGet.Path != "/healthz" || probe.HTTPGet.Port.StrVal != "health") {
					t.Errorf("%s: probe %s on port %s, want /healthz on health", cw, probe.HTTPGet.Path, probe.HTTPGet.Port.String())
				}
			}
			if binary == "edge" && port(t, cw, env["SWITCHYARD_EDGE_ADDR"]) != fmt.Sprint(ports["api"]) {
				t.Errorf("%s: the API listens on %s but the container port \"api\" is %d", cw, env["SWITCHYARD_EDGE_ADDR"], ports["api"])
			}
			if binary == "ledger" {
				checkK8sAddr(t, m, cw, env["SWITCHYARD_CLICKHOUSE_ADDR"])
			}
		}
		// Every workload has a PodDisruptionBudget selecting its pods.
		covered := false
		for _, pdb := range m.pdbs {
			s, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			covered = covered || (err == nil && !s.Empty() && s.Matches(labels.Set(w.template.Labels)))
		}
		if !covered && w.name != "clickhouse" && !job { // one ClickHouse server: a budget would block node drains
			t.Errorf("%s: no PodDisruptionBudget selects its pods", where)
		}
	}
	if pol == nil {
		t.Fatal("no Switchyard container mounts a policy")
	}
	if !provisioned {
		t.Errorf("no Job runs %s: the services' users may not create the streams, buckets and consumers", provisionCmd)
	}
	for _, name := range sortedKeys(m.services) {
		checkService(t, m, name)
	}
	checkNATSStatefulSet(t, m)
	checkExecutorsAndScalers(t, m, pol.pol)
}

// checkGCMemoryLimit: a service's soft memory limit (the collector's,
// SWITCHYARD_GC_MEMORY_LIMIT_MIB or its default) is at most 90% of its
// container's memory limit, so the collector works harder as the heap nears
// it instead of the kernel killing the container first.
func checkGCMemoryLimit(t reporter, where string, env map[string]string, limit *resource.Quantity) {
	t.Helper()
	var gc svc.GC
	if err := envcfg.Process(envcfg.LookupMap(env), &gc); err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	switch {
	case limit.IsZero():
		t.Errorf("%s: no memory limit", where)
	case gc.MemoryLimitMiB == 0:
		t.Errorf("%s: SWITCHYARD_GC_MEMORY_LIMIT_MIB=0: no soft limit under the memory limit of %s", where, limit)
	case gc.MemoryLimitMiB<<20 > limit.Value()*9/10:
		t.Errorf("%s: soft memory limit %d MiB (SWITCHYARD_GC_MEMORY_LIMIT_MIB) above 90%% of the memory limit %s", where, gc.MemoryLimitMiB, limit)
	}
}

type policyFile struct {
	source string // ConfigMap/key
	pol    *policy.Policy
}

// policyMountedAt finds the policy file a container's SWITCHYARD_POLICY
// names among its ConfigMap mounts and parses it like a stage does.
func policyMountedAt(t *testing.T, m *manifests, where, path string, mounts []corev1.VolumeMount, volumes map[string]corev1.Volume) *policyFile {
	t.Helper()
	for _, vm := range mounts {
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/")
		cm := volumes[vm.Name].ConfigMap
		if !ok || cm == nil {
			continue
		}
		for _, item := range cm.Items {
			if item.Path != rel {
				continue
			}
			f := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(f, []byte(m.configMaps[cm.Name].Data[item.Key]), 0o600); err != nil {
				t.Fatal(err)
			}
			return &policyFile{source: cm.Name + "/" + item.Key, pol: loadPolicy(t, f)}
		}
	}
	t.Errorf("%s: SWITCHYARD_POLICY=%s is not a file of a mounted ConfigMap", where, path)
	return nil
}

// checkService: the Service selects a workload's pods and each target
// port is a port of their containers.
func checkService(t *testing.T, m *manifests, name string) {
	t.Helper()
	svc := m.services[name]
	var pods []podOf
	for _, w := range m.workloads() {
		if len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.template.Labels)) {
			pods = append(pods, w)
		}
	}
	if len(pods) == 0 {
		t.Errorf("Service %s: selector %v selects no workload", name, svc.Spec.Selector)
		return
	}
	for _, p := range svc.Spec.Ports {
		for _, w := range pods {
			found := false
			for _, c := range w.template.Spec.Containers {
				for _, cp := range c.Ports {
					found = found || (p.TargetPort.Type == intstr.String && cp.Name == p.TargetPort.StrVal) ||
						(p.TargetPort.Type == intstr.Int && cp.ContainerPort == p.TargetPort.IntVal)
				}
			}
			if !found {
				t.Errorf("Service %s: port %s targets %s, not a port of %s %s", name, p.Name, p.TargetPort.String(), w.kind, w.name)
			}
		}
	}
}

// serviceByHost finds the Service a cluster DNS name points at: svc,
// svc.ns, svc.ns.svc.cluster.local, or pod.svc… of a headless Service.
func serviceByHost(m *manifests, host string) (svc *corev1.Service, pod string) {
	parts := strings.Split(strings.TrimSuffix(host, ".svc.cluster.local"), ".")
	if len(parts) > 1 && parts[len(parts)-1] == "switchyard" {
		parts = parts[:len(parts)-1]
	}
	switch len(parts) {
	case 1:
		return m.services[parts[0]], ""
	case 2:
		return m.services[parts[1]], parts[0]
	}
	return nil, ""
}

// checkK8sAddr: host:port is a Service of the manifests with that port.
func checkK8sAddr(t *testing.T, m *manifests, where, addr string) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, addr, err)
		return
	}
	svc, _ := serviceByHost(m, host)
	if svc == nil || !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return fmt.Sprint(sp.Port) == p }) {
		t.Errorf("%s: %s is not a Service port of these manifests", where, addr)
	}
}

// checkNATSURLs: the first URL is the headless Service of the NATS
// StatefulSet, a name that resolves to every node: nats.go dials the
// addresses of a name in random order, so the pods of a Deployment, which
// all read this one list, spread over the nodes instead of all joining
// the pod listed first (the first URL is always tried first). The others
// name every pod, for reconnects; all on the client port.
func checkNATSURLs(t reporter, m *manifests, where, urls string) {
	t.Helper()
	sts := m.statefulSets["nats"]
	if sts == nil {
		t.Errorf("no StatefulSet nats")
		return
	}
	var pods []string
	for i, u := range strings.Split(urls, ",") {
		host, p, err := net.SplitHostPort(strings.TrimPrefix(u, "nats://"))
		svc, pod := serviceByHost(m, host)
		switch {
		case err != nil || svc == nil || svc.Name != sts.Spec.ServiceName || p != "4222":
			t.Errorf("%s: NATS URL %s is not %s:4222 or <pod>.%[3]s:4222", where, u, sts.Spec.ServiceName)
		case i == 0 && pod != "":
			t.Errorf("%s: the first NATS URL %s is one pod: every process of the ConfigMap would join it first; list the headless Service %s first (its name resolves to every node)", where, u, sts.Spec.ServiceName)
		case i > 0 && pod == "":
			t.Errorf("%s: NATS URL %s: only the first names the Service", where, u)
		case i > 0:
			pods = append(pods, pod)
		}
	}
	var want []string
	for i := range *sts.Spec.Replicas {
		want = append(want, fmt.Sprintf("%s-%d", sts.Name, i))
	}
	if slices.Sort(pods); !slices.Equal(pods, want) {
		t.Errorf("%s: NATS URLs name pods %v, the StatefulSet has %v", where, pods, want)
	}
}

// TestNATSURLsSpread: the URL check refuses a list that sends every
// process to the same node first, and the other mistakes it exists for.
func TestNATSURLsSpread(t *testing.T) {
	m := loadManifests(t, nil)
	shipped := m.configMaps["switchyard-config"].Data["SWITCHYARD_NATS_URL"]
	for _, tc := range []struct {
		name, urls string
		wantErr    bool
	}{
		{"shipped", shipped, false},
		{"headless Service first", "nats://nats-headless:4222,nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222,nats://nats-2.nats-headless:4222", false},
		{"one pod first", "nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222,nats://nats-2.nats-headless:4222", true},
		{"a pod missing", "nats://nats-headless:4222,nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222", true},
		{"cluster port", "nats://nats-headless:6222,nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222,nats://nats-2.nats-headless:4222", true},
		{"another Service", "nats://clickhouse:4222,nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222,nats://nats-2.nats-headless:4222", true},
		{"a pod that does not exist", "nats://nats-headless:4222,nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222,nats://nats-3.nats-headless:4222", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			checkNATSURLs(rec, m, "SWITCHYARD_NATS_URL", tc.urls)
			if got := len(rec.errs) > 0; got != tc.wantErr {
				t.Errorf("errors %v, want some: %v", rec.errs, tc.wantErr)
			}
		})
	}
}

// kedaNATSJetStreamMetadata are the trigger metadata keys of KEDA's
// nats-jetstream scaler (the `keda:"name=…"` tags of its metadata struct
// in pkg/scalers/nats_jetstream_scaler.go, v2.21.0); the CRD schema
// holds metadata as a free map, so the keys are checked here.
var kedaNATSJetStreamMetadata = []string{"natsServerMonitoringEndpoint", "account", "accountID", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}

// checkExecutorsAndScalers: one executor Deployment per vendor of the
// policy, with its key from the Secret, and one ScaledObject per executor
// watching the consumer the executor creates.
func checkExecutorsAndScalers(t reporter, m *manifests, pol *policy.Policy) {
	t.Helper()
	executors := map[string]string{} // vendor → Deployment
	for name, d := range m.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			if slices.Equal(c.Command, []string{"executor"}) {
				for _, e := range c.Env {
					if e.Name == "SWITCHYARD_VENDOR" {
						executors[e.Value] = name
					}
				}
			}
		}
	}
	for vendor := range pol.Vendors {
		if executors[vendor] == "" {
			t.Errorf("vendor %s of the policy has no executor Deployment", vendor)
		}
	}
	scaledTargets := map[string]bool{}
	for name, so := range m.scaled {
		where := "ScaledObject " + name
		target := so.Spec.ScaleTargetRef
		if target == nil || m.deployments[target.Name] == nil || (target.Kind != "" && target.Kind != "Deployment") {
			t.Errorf("%s: scales %+v, not a Deployment of these manifests", where, target)
			continue
		}
		scaledTargets[target.Name] = true
		var vendor string
		for v, d := range executors {
			if d == target.Name {
				vendor = v
			}
		}
		if vendor == "" {
			t.Errorf("%s: scales %s, not an executor", where, target.Name)
			continue
		}
		if so.Spec.MinReplicaCount == nil || so.Spec.MaxReplicaCount == nil || *so.Spec.MinReplicaCount < 1 || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
			t.Errorf("%s: replicas %s..%s, want 1 ≤ min ≤ max", where, optInt(so.Spec.MinReplicaCount), optInt(so.Spec.MaxReplicaCount))
		}
		if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
			t.Errorf("%s: triggers %+v, want one nats-jetstream", where, so.Spec.Triggers)
			continue
		}
		md := so.Spec.Triggers[0].Metadata
		for k := range md {
			if !slices.Contains(kedaNATSJetStreamMetadata, k) {
				t.Errorf("%s: metadata %s is not a field of KEDA's nats-jetstream scaler", where, k)
			}
		}
		if md["stream"] != natsx.StreamPipeline || md["consumer"] != executor.ConsumerName(vendor) {
			t.Errorf("%s: watches %s/%s, the executors of %s consume %s/%s", where, md["stream"], md["consumer"], vendor, natsx.StreamPipeline, executor.ConsumerName(vendor))
		}
		checkScalerAccount(t, m, where)
		for _, k := range []string{"lagThreshold", "activationLagThreshold"} {
			if n, err := strconv.Atoi(md[k]); err != nil || n < 0 {
				t.Errorf("%s: %s=%q is not a count", where, k, md[k])
			}
		}
		// The scaler asks <consumer leader's server name>.<endpoint host>
		// on a cluster: the endpoint is the headless Service of the NATS
		// StatefulSet, whose pods' names are their server names.
		host, p, err := net.SplitHostPort(md["natsServerMonitoringEndpoint"])
		svc, pod := serviceByHost(m, host)
		if err != nil || svc == nil || pod != "" || svc.Name != m.statefulSets["nats"].Spec.ServiceName || svc.Spec.ClusterIP != corev1.ClusterIPNone ||
			!slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool { return fmt.Sprint(sp.Port) == p && sp.TargetPort.StrVal == "monitor" }) {
			t.Errorf("%s: natsServerMonitoringEndpoint %q is not the headless NATS Service's monitor port", where, md["natsServerMonitoringEndpoint"])
		}
	}
	for vendor, d := range executors {
		if !scaledTargets[d] {
			t.Errorf("executor Deployment %s (%s) has no ScaledObject", d, vendor)
		}
	}
}

func optInt(p *int32) string {
	if p == nil {
		return "unset"
	}
	return strconv.Itoa(int(*p))
}

// checkNATSStatefulSet: three replicas; its ConfigMap holds the cluster
// settings of deployments/nats/cluster.conf verbatim and a node file the
// server's own parser accepts for each pod, with routes to every pod.
func checkNATSStatefulSet(t *testing.T, m *manifests) {
	t.Helper()
	sts := m.statefulSets["nats"]
	if sts == nil || sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Fatalf("StatefulSet nats: want 3 replicas")
	}
	if hs := m.services[sts.Spec.ServiceName]; hs == nil || hs.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("StatefulSet nats: serviceName %s is not a headless Service", sts.Spec.ServiceName)
	}
	cm := m.configMaps["nats-config"]
	want, err := os.ReadFile("nats/cluster.conf")
	if err != nil {
		t.Fatal(err)
	}
	if cm == nil || cm.Data["cluster.conf"] != string(want) {
		t.Fatalf("ConfigMap nats-config: cluster.conf differs from deployments/nats/cluster.conf")
	}
	c := sts.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Args, []string{"-c", "/etc/nats/nats.conf"}) {
		t.Errorf("StatefulSet nats: args %v", c.Args)
	}
	dir := t.TempDir()
	for _, key := range []string{"cluster.conf", "nats.conf"} {
		if err := os.WriteFile(filepath.Join(dir, key), []byte(cm.Data[key]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	auth := writeAuthConf(t, dir)
	var storeDir string
	for _, e := range c.Env {
		if e.Name == "NATS_STORE_DIR" {
			storeDir = e.Value
		}
	}
	t.Setenv("NATS_STORE_DIR", storeDir)
	t.Setenv("NATS_RESOLVER_DIR", t.TempDir())
	for i := range 3 {
		pod := fmt.Sprintf("nats-%d", i)
		t.Setenv("POD_NAME", pod)
		opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
		if err != nil {
			t.Fatalf("nats.conf for %s: %v", pod, err)
		}
		var routes []string
		for _, r := range opts.Routes {
			routes = append(routes, r.Host)
		}
		wantRoutes := []string{"nats-0.nats-headless:6222", "nats-1.nats-headless:6222", "nats-2.nats-headless:6222"}
		if opts.ServerName != pod || !opts.JetStream || opts.StoreDir != storeDir || opts.SyncInterval != 10*time.Second ||
			opts.Cluster.Name != "switchyard" || opts.Cluster.Port != 6222 || opts.Port != 4222 || opts.HTTPPort != 8222 || !slices.Equal(routes, wantRoutes) {
			t.Errorf("nats.conf for %s: server %q, JetStream %v in %q, sync %v, cluster %q :%d, client :%d, monitor :%d, routes %v", pod, opts.ServerName,
				opts.JetStream, opts.StoreDir, opts.SyncInterval, opts.Cluster.Name, opts.Cluster.Port, opts.Port, opts.HTTPPort, routes)
		}
		if storeDir == "" || !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool {
			return strings.HasPrefix(storeDir, vm.MountPath) && vm.Name == "data"
		}) {
			t.Errorf("StatefulSet nats: store %q is not on the data volume", storeDir)
		}
		checkNATSAuth(t, pod, opts, auth, c, sts.Spec.Template.Spec.Volumes)
	}
}

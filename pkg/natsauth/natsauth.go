// Package natsauth is Switchyard's NATS identity authority in the
// decentralized JWT model: one operator signs the accounts (SYS for the
// server's system account, SWITCHYARD for the pipeline, one per tenant),
// and every user (an operator of the CLI, each service, each tenant's
// clients) is a JWT signed by its account. The server trusts the operator
// and keeps the account JWTs in a directory resolver; a new tenant's
// account, or a revocation, is pushed to the running server through the
// system account, with no restart.
//
// Keys and credentials live under `up`'s data directory, every file 0600:
//
//	<data>/auth/{operator,sys,switchyard}.nk  seeds
//	<data>/auth/tenants/<tenant>.nk           each tenant account's seed
//	<data>/auth/tenants.json                  issued tenant users
//	<data>/auth/resolver/                     account JWTs (the server's)
//	<data>/creds/<user>.creds                 operator, sys, each service
//
// A tenant's identity is bound by the server, not by the envelope: its
// account imports the request service with its local subject
// `llm.requests` mapped to `llm.requests.tenant.<tenant>` in SWITCHYARD, so
// the subject the intake reads names the publisher's account whatever the
// envelope says (JetStream drops Nats-Request-Info, so the subject is what
// survives into the stream).
package natsauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Account names (the JWT names; the server knows accounts by public key).
const (
	AccountSystem     = "SYS"
	AccountSwitchyard = "SWITCHYARD"
)

// OperatorUser is the CLI's user in SWITCHYARD: every right in the account.
const OperatorUser = "operator"

// Authority holds the keys of one Switchyard deployment.
type Authority struct {
	dir                       string // <data>
	operator, sys, switchyard nkeys.KeyPair
}

// AuthDir and CredsDir are where the keys and the generated credentials
// live under a data directory.
func AuthDir(dataDir string) string  { return filepath.Join(dataDir, "auth") }
func CredsDir(dataDir string) string { return filepath.Join(dataDir, "creds") }

// CredsFile is the path of a generated user's credentials.
func CredsFile(dataDir, user string) string {
	return filepath.Join(CredsDir(dataDir), user+".creds")
}

// ResolverDir is where the server keeps the account JWTs.
func ResolverDir(dataDir string) string { return filepath.Join(AuthDir(dataDir), "resolver") }

// Exists says whether dataDir holds an authority (`up` ran there with
// authentication on).
func Exists(dataDir string) bool {
	_, err := os.Stat(filepath.Join(AuthDir(dataDir), "operator.nk"))
	return err == nil
}

// LoadOrCreate opens the authority of dataDir, generating its keys the
// first time. Keys are never regenerated: credentials issued before stay
// valid across restarts.
func LoadOrCreate(dataDir string) (*Authority, error) {
	if err := os.MkdirAll(AuthDir(dataDir), 0o700); err != nil {
		return nil, err
	}
	a := &Authority{dir: dataDir}
	var err error
	for _, k := range []struct {
		file   string
		prefix nkeys.PrefixByte
		kp     *nkeys.KeyPair
	}{
		{"operator.nk", nkeys.PrefixByteOperator, &a.operator},
		{"sys.nk", nkeys.PrefixByteAccount, &a.sys},
		{"switchyard.nk", nkeys.PrefixByteAccount, &a.switchyard},
	} {
		if *k.kp, err = loadOrCreateKey(filepath.Join(AuthDir(dataDir), k.file), k.prefix); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Load opens an existing authority (the CLI beside `up`).
func Load(dataDir string) (*Authority, error) {
	if !Exists(dataDir) {
		return nil, fmt.Errorf("no NATS authority in %s (run `switchyard up` there with authentication on, or set SWITCHYARD_DATA_DIR)", dataDir)
	}
	return LoadOrCreate(dataDir)
}

func loadOrCreateKey(path string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if err == nil {
		return nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	kp, err := nkeys.CreatePair(prefix)
	if err != nil {
		return nil, err
	}
	if seed, err = kp.Seed(); err != nil {
		return nil, err
	}
	return kp, writeSecret(path, seed)
}

// writeSecret writes a file only its owner can read, replacing any.
func writeSecret(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil { // an existing tmp kept its mode
		return err
	}
	return os.Rename(tmp, path)
}

func pub(kp nkeys.KeyPair) string {
	p, _ := kp.PublicKey() // cannot fail for a pair built from a seed
	return p
}

// SystemAccount and SwitchyardAccount are the public keys the server
// knows the accounts by.
func (a *Authority) SystemAccount() string     { return pub(a.sys) }
func (a *Authority) SwitchyardAccount() string { return pub(a.switchyard) }

// tenantKey is a tenant account's key pair, created with its first user.
func (a *Authority) tenantKey(tenant string) (nkeys.KeyPair, error) {
	return loadOrCreateKey(filepath.Join(AuthDir(a.dir), "tenants", tenant+".nk"), nkeys.PrefixByteAccount)
}

// OperatorClaims is the operator JWT the server trusts.
func (a *Authority) OperatorClaims() (*jwt.OperatorClaims, error) {
	oc := jwt.NewOperatorClaims(pub(a.operator))
	oc.Name = "switchyard"
	oc.SystemAccount = a.SystemAccount()
	token, err := oc.Encode(a.operator)
	if err != nil {
		return nil, err
	}
	return jwt.DecodeOperatorClaims(token)
}

// AccountJWTs are every account's JWT, signed now: SYS, SWITCHYARD and
// each tenant's (with its revocations).
func (a *Authority) AccountJWTs() (map[string]string, error) {
	out := map[string]string{}
	sys := jwt.NewAccountClaims(a.SystemAccount())
	sys.Name = AccountSystem
	var err error
	if out[a.SystemAccount()], err = sys.Encode(a.operator); err != nil {
		return nil, err
	}
	if out[a.SwitchyardAccount()], err = a.switchyardJWT(); err != nil {
		return nil, err
	}
	reg, err := a.Tenants()
	if err != nil {
		return nil, err
	}
	for _, t := range reg {
		if _, done := out[t.Account]; done {
			continue
		}
		if out[t.Account], err = a.TenantJWT(t.Tenant); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RequestSubjectPrefix is where a tenant's requests land in SWITCHYARD:
// llm.requests.tenant.<tenant>, bound by the tenant account's import.
const RequestSubjectPrefix = "llm.requests.tenant."

// Subjects SWITCHYARD shares with the tenant accounts; each tenant
// account imports only its own part.
var exportStreams = []string{"llm.replies.>", "llm.deltas.>", "_INBOX.>"}

// DirectGetReplies prefixes the last-by-subject form of JetStream's direct
// get on LLM_REPLIES: DirectGetReplies + "llm.replies.<tenant>.<id>"
// answers the last reply stored on that subject. The subject read is the
// one requested (the server refuses a body naming another subject, a
// sequence or a batch), so importing only DirectGetReplies +
// "llm.replies.<tenant>.>" lets a tenant read its own stored replies and
// nothing else of the stream.
const DirectGetReplies = "$JS.API.DIRECT.GET.LLM_REPLIES."

// tenantStoredReplies is the part of the direct get a tenant imports.
func tenantStoredReplies(tenant string) string {
	return DirectGetReplies + "llm.replies." + tenant + ".>"
}

func (a *Authority) switchyardJWT() (string, error) {
	ac := jwt.NewAccountClaims(a.SwitchyardAccount())
	revoked, err := a.revokedPipelineUsers()
	if err != nil {
		return "", err
	}
	for key, at := range revoked {
		ac.RevokeAt(key, at)
	}
	ac.Name = AccountSwitchyard
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1, MaxAckPending: -1, MemoryMaxStreamBytes: -1, DiskMaxStreamBytes: -1}
	ac.Exports.Add(&jwt.Export{Name: "requests", Subject: jwt.Subject(RequestSubjectPrefix + "*"), Type: jwt.Service, ResponseType: jwt.ResponseTypeSingleton})
	for _, s := range exportStreams {
		ac.Exports.Add(&jwt.Export{Name: s, Subject: jwt.Subject(s), Type: jwt.Stream})
	}
	ac.Exports.Add(&jwt.Export{Name: "stored-replies", Subject: jwt.Subject(DirectGetReplies + "llm.replies.*.>"), Type: jwt.Service, ResponseType: jwt.ResponseTypeSingleton})
	return ac.Encode(a.operator)
}

// tenantSubjects are what a tenant's account sees of SWITCHYARD: its own
// replies, streamed deltas and core inboxes.
func tenantSubjects(tenant string) []string {
	return []string{"llm.replies." + tenant + ".>", "llm.deltas." + tenant + ".>", "_INBOX." + tenant + ".>"}
}

// TenantJWT is a tenant's account: no JetStream of its own; `llm.requests`
// imported as the service llm.requests.tenant.<tenant> (so the intake
// knows the publisher from the subject); its own replies, deltas and
// inboxes imported as streams; the direct get of its own stored replies as
// a service; its revoked users.
func (a *Authority) TenantJWT(tenant string) (string, error) {
	kp, err := a.tenantKey(tenant)
	if err != nil {
		return "", err
	}
	ac := jwt.NewAccountClaims(pub(kp))
	ac.Name = tenant
	ac.Imports.Add(&jwt.Import{Name: "requests", Subject: jwt.Subject(RequestSubjectPrefix + tenant), LocalSubject: "llm.requests", Account: a.SwitchyardAccount(), Type: jwt.Service})
	for _, s := range tenantSubjects(tenant) {
		ac.Imports.Add(&jwt.Import{Name: s, Subject: jwt.Subject(s), Account: a.SwitchyardAccount(), Type: jwt.Stream})
	}
	ac.Imports.Add(&jwt.Import{Name: "stored-replies", Subject: jwt.Subject(tenantStoredReplies(tenant)), Account: a.SwitchyardAccount(), Type: jwt.Service})
	reg, err := a.Tenants()
	if err != nil {
		return "", err
	}
	for _, t := range reg {
		if t.Tenant == tenant && t.RevokedAt != nil {
			ac.RevokeAt(t.UserKey, *t.RevokedAt)
		}
	}
	return ac.Encode(a.operator)
}

// Creds signs a user of an account and formats its credentials file.
func creds(account nkeys.KeyPair, name string, perms jwt.Permissions, tags ...string) ([]byte, string, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", err
	}
	uc := jwt.NewUserClaims(pub(ukp))
	uc.Name = name
	uc.Permissions = perms
	uc.Tags.Add(tags...)
	token, err := uc.Encode(account)
	if err != nil {
		return nil, "", err
	}
	seed, err := ukp.Seed()
	if err != nil {
		return nil, "", err
	}
	b, err := jwt.FormatUserConfig(token, seed)
	return b, pub(ukp), err
}

// WriteServiceCreds writes the credentials of the operator, the system
// user and every service into <data>/creds, 0600. vendors names the
// executors (one user each, bound to its vendor's consumer). A file whose
// user already has the right permissions is kept (a copy on another
// machine stays valid across restarts of `up`); one with other
// permissions (a new version, another vendor list) is replaced and its
// old user revoked.
func (a *Authority) WriteServiceCreds(vendors []string) error {
	for name, u := range a.pipelineUsers(vendors) {
		if _, err := a.writeUser(name, u.acc, u.perms, false); err != nil {
			return err
		}
	}
	return nil
}

type pipelineUser struct {
	acc   nkeys.KeyPair
	perms jwt.Permissions
}

func (a *Authority) pipelineUsers(vendors []string) map[string]pipelineUser {
	users := map[string]pipelineUser{
		OperatorUser: {a.switchyard, jwt.Permissions{}}, // everything in SWITCHYARD
		"sys":        {a.sys, jwt.Permissions{}},
	}
	for name, perms := range ServicePermissions(vendors) {
		users[name] = pipelineUser{a.switchyard, perms}
	}
	for _, v := range vendors {
		users[LeafUser(v)] = pipelineUser{a.switchyard, LeafPermissions(v)}
	}
	return users
}

// writeUser writes a user's credentials unless an existing file already
// holds them (force: always), revoking the user it replaces. It reports
// whether it wrote.
func (a *Authority) writeUser(name string, acc nkeys.KeyPair, perms jwt.Permissions, force bool) (bool, error) {
	path := CredsFile(a.dir, name)
	old, err := readUserClaims(path)
	if err == nil && !force && old.Issuer == pub(acc) && samePermissions(old.Permissions, perms) {
		return false, nil
	}
	b, _, err := creds(acc, name, perms)
	if err != nil {
		return false, err
	}
	if old != nil && old.Issuer == a.SwitchyardAccount() {
		if err := a.revokePipelineUser(old.Subject, time.Now()); err != nil {
			return false, err
		}
	}
	return true, writeSecret(path, b)
}

func samePermissions(a, b jwt.Permissions) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func readUserClaims(path string) (*jwt.UserClaims, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return nil, err
	}
	return jwt.DecodeUserClaims(token)
}

func (a *Authority) revokedFile() string { return filepath.Join(AuthDir(a.dir), "revoked.json") }

// revokedPipelineUsers are the SWITCHYARD users replaced by a rotation.
func (a *Authority) revokedPipelineUsers() (map[string]time.Time, error) {
	out := map[string]time.Time{}
	b, err := os.ReadFile(a.revokedFile())
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	return out, json.Unmarshal(b, &out)
}

func (a *Authority) revokePipelineUser(key string, now time.Time) error {
	list, err := a.revokedPipelineUsers()
	if err != nil {
		return err
	}
	list[key] = now.UTC().Add(time.Second).Truncate(time.Second)
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return writeSecret(a.revokedFile(), b)
}

// RotateService writes new credentials for a service user (or a vendor's
// executor) and revokes the old ones: push SwitchyardJWT (PushSwitchyard)
// for the running server to refuse them. A process that reads its file
// from <data>/creds picks the new one up when it reconnects.
func (a *Authority) RotateService(name string, vendors []string) error {
	u, ok := a.pipelineUsers(vendors)[name]
	if !ok || name == OperatorUser || name == "sys" {
		return fmt.Errorf("no service user %q (rotate the operator's and sys's by regenerating everything: docs/security.md)", name)
	}
	_, err := a.writeUser(name, u.acc, u.perms, true)
	return err
}

// Tenant is one issued tenant user.
type Tenant struct {
	Tenant    string     `json:"tenant"`
	Account   string     `json:"account"`
	UserKey   string     `json:"user_key"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

var tenantName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidTenant is the form of a tenant id usable in a subject token.
func ValidTenant(t string) error {
	if !tenantName.MatchString(t) {
		return fmt.Errorf("tenant %q: use 1-64 letters, digits, '-' or '_'", t)
	}
	return nil
}

func (a *Authority) registryFile() string { return filepath.Join(AuthDir(a.dir), "tenants.json") }

// Tenants lists every tenant user issued, oldest first.
func (a *Authority) Tenants() ([]Tenant, error) {
	b, err := os.ReadFile(a.registryFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []Tenant
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", a.registryFile(), err)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].CreatedAt.Before(list[j].CreatedAt) })
	return list, nil
}

func (a *Authority) saveTenants(list []Tenant) error {
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return writeSecret(a.registryFile(), b)
}

// TenantPermissions: publish requests (the account's import makes them
// its own), read its replies (live, and stored through the direct get),
// deltas and inboxes; nothing else. The account holds only this tenant's
// users, so any inbox prefix is private.
func TenantPermissions(tenant string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add("llm.requests", tenantStoredReplies(tenant))
	p.Sub.Allow.Add("llm.replies."+tenant+".>", "llm.deltas."+tenant+".>", "_INBOX.>")
	return p
}

// CreateTenant issues a new user for tenant (and, the first time, its
// account) and returns its credentials file. The caller pushes the
// account (PushTenant) for a running server to accept it. Earlier users of
// the tenant stay valid until revoked.
func (a *Authority) CreateTenant(tenant string, now time.Time) ([]byte, Tenant, error) {
	if err := ValidTenant(tenant); err != nil {
		return nil, Tenant{}, err
	}
	list, err := a.Tenants()
	if err != nil {
		return nil, Tenant{}, err
	}
	kp, err := a.tenantKey(tenant)
	if err != nil {
		return nil, Tenant{}, err
	}
	b, key, err := creds(kp, tenant, TenantPermissions(tenant), "tenant:"+tenant)
	if err != nil {
		return nil, Tenant{}, err
	}
	t := Tenant{Tenant: tenant, Account: pub(kp), UserKey: key, CreatedAt: now.UTC()}
	if err := a.saveTenants(append(list, t)); err != nil {
		return nil, Tenant{}, err
	}
	return b, t, nil
}

// RevokeTenant marks every live user of tenant (or the one user key given)
// revoked at now and returns the tenant and how many were. The caller
// pushes the tenant's account (PushTenant) for it to take effect while
// running.
func (a *Authority) RevokeTenant(tenantOrKey string, now time.Time) (string, int, error) {
	list, err := a.Tenants()
	if err != nil {
		return "", 0, err
	}
	n, tenant := 0, ""
	at := now.UTC().Add(time.Second).Truncate(time.Second) // covers JWTs issued this very second
	for i := range list {
		if (list[i].Tenant == tenantOrKey || list[i].UserKey == tenantOrKey) && list[i].RevokedAt == nil {
			list[i].RevokedAt = &at
			n, tenant = n+1, list[i].Tenant
		}
	}
	if n == 0 {
		return "", 0, fmt.Errorf("no live credentials for %q", tenantOrKey)
	}
	return tenant, n, a.saveTenants(list)
}

// PushSwitchyard sends the SWITCHYARD account (with the revoked service
// users) to the running server through the system account.
func (a *Authority) PushSwitchyard(nc *nats.Conn) error {
	token, err := a.switchyardJWT()
	if err != nil {
		return err
	}
	return push(nc, AccountSwitchyard, token)
}

// PushTenant sends a tenant's account JWT (with its revocations) to the
// running server through the system account (nc is the sys user's): the
// server accepts a new tenant's users, or disconnects and refuses the
// revoked ones, at once.
func (a *Authority) PushTenant(nc *nats.Conn, tenant string) error {
	token, err := a.TenantJWT(tenant)
	if err != nil {
		return err
	}
	return push(nc, "tenant "+tenant, token)
}

func push(nc *nats.Conn, what, token string) error {
	resp, err := nc.Request("$SYS.REQ.CLAIMS.UPDATE", []byte(token), 5*time.Second)
	if err != nil {
		return fmt.Errorf("push the account of %s to the server: %w", what, err)
	}
	var r struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if json.Unmarshal(resp.Data, &r) == nil && r.Error != nil {
		return fmt.Errorf("the server refused the account of %s: %s", what, r.Error.Description)
	}
	return nil
}

// CredsUser describes the user of a credentials file.
type CredsUser struct {
	Name string
	// Tenant is set for a tenant user.
	Tenant string
	// Restricted users may subscribe only where their permissions say,
	// so their connection needs its private inbox prefix.
	Restricted bool
}

// ReadCreds decodes the user JWT of a credentials file.
func ReadCreds(path string) (CredsUser, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return CredsUser{}, err
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return CredsUser{}, fmt.Errorf("%s: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return CredsUser{}, fmt.Errorf("%s: %w", path, err)
	}
	u := CredsUser{Name: uc.Name, Restricted: len(uc.Sub.Allow) > 0 || len(uc.Pub.Allow) > 0}
	for _, t := range uc.Tags {
		if rest, ok := strings.CutPrefix(t, "tenant:"); ok {
			u.Tenant = rest
		}
	}
	return u, nil
}

// InboxPrefix is the inbox prefix a connection with this user uses: a
// pipeline user's own (`_INBOX_<user>`, outside the `_INBOX.>` space the
// tenants import, so no tenant account ever sees its acknowledgements);
// none for a tenant, alone in its account.
func (u CredsUser) InboxPrefix() string {
	if u.Tenant != "" {
		return ""
	}
	return ServiceInboxPrefix(u.Name)
}

// CreateOperator issues an unrestricted SWITCHYARD user named name (a
// person running the CLI): the name the policy history records for what
// they apply.
func (a *Authority) CreateOperator(name string) ([]byte, error) {
	if err := ValidTenant(name); err != nil {
		return nil, fmt.Errorf("operator name: %w", err)
	}
	b, _, err := creds(a.switchyard, name, jwt.Permissions{})
	return b, err
}

// Vendors are the vendors whose executor credentials `up` wrote.
func (a *Authority) Vendors() ([]string, error) {
	files, err := filepath.Glob(filepath.Join(CredsDir(a.dir), "executor-*.creds"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range files {
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "executor-"), ".creds"))
	}
	return out, nil
}

// StageNodeConfs copies the node configuration files (*.conf) of srcDir
// into dstDir and writes beside them the auth.conf they include
// (ServerConfig with resolverDir): a cluster's configuration as an operator
// installs it, ready to start.
func (a *Authority) StageNodeConfs(srcDir, dstDir, resolverDir string) error {
	files, err := filepath.Glob(filepath.Join(srcDir, "*.conf"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no node configuration in %s (%v)", srcDir, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dstDir, filepath.Base(f)), b, 0o600); err != nil {
			return err
		}
	}
	conf, err := a.ServerConfig(resolverDir)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dstDir, "auth.conf"), []byte(conf), 0o600)
}

// ServerConfig is the part of an external nats-server's configuration
// that trusts this authority: the operator JWT, the system account, a
// full directory resolver (every node keeps every account JWT and the
// nodes replicate what `tenants create`/`creds rotate` push through the
// system account) and, preloaded, every account JWT signed now: SYS,
// SWITCHYARD and each tenant's. resolverDir is written as given: a
// `$VARIABLE` is read from the server's environment (one directory per
// node). max_control_line is raised from the 4 KB default: a user JWT in
// the CONNECT line is longer.
func (a *Authority) ServerConfig(resolverDir string) (string, error) {
	op, err := a.OperatorClaims()
	if err != nil {
		return "", err
	}
	opJWT, err := op.Encode(a.operator)
	if err != nil {
		return "", err
	}
	accounts, err := a.AccountJWTs()
	if err != nil {
		return "", err
	}
	dir := resolverDir
	if !strings.HasPrefix(dir, "$") {
		dir = fmt.Sprintf("%q", dir)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by `switchyard creds server-config`: the server trusts Switchyard's operator.\n")
	fmt.Fprintf(&b, "operator: %s\nsystem_account: %s\nmax_control_line: 32KB\n", opJWT, a.SystemAccount())
	fmt.Fprintf(&b, "resolver: {\n  type: full\n  dir: %s\n  allow_delete: false\n  interval: \"2m\"\n}\n", dir)
	keys := make([]string, 0, len(accounts))
	for k := range accounts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("resolver_preload: {\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %s\n", k, accounts[k])
	}
	b.WriteString("}\n")
	return b.String(), nil
}

package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var npmOnce sync.Once

// sdkDir holds the official SDKs (package-lock.json pins them); `npm ci`
// installs them when node_modules is missing. Without node or npm the test
// skips, and fails when CI is set.
func sdkDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("sdk")
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required for the SDK tests: %v", tool, err)
			}
			t.Skipf("no %s: %v", tool, err)
		}
	}
	var installErr error
	npmOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "node_modules", "@anthropic-ai", "sdk")); err == nil {
				return
			}
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			installErr = err
			t.Logf("npm ci: %s", out)
		}
	})
	if installErr != nil {
		t.Fatalf("npm ci in %s failed (the SDK tests need the npm registry): %v", dir, installErr)
	}
	return dir
}

// The official OpenAI and Anthropic SDKs talk to the edge with nothing
// changed but the base URL and the key: a chat call answers with usage, a
// bad key raises the SDK's AuthenticationError, and a streamed chat read by
// the SDK's own stream reader gives the text and its usage, and a stream
// cut after deltas raises the SDK's error.
func TestEdgeOfficialSDKs(t *testing.T) {
	dir := sdkDir(t)
	e := start(t, withEdge)
	key := e.edgeKey("")
	tests := []struct {
		script, model, wantModel string
	}{
		{"openai.mjs", "chat", "openai/gpt-4o-mini"},
		{"anthropic.mjs", "anthropic/claude-haiku-4-5", "anthropic/claude-haiku-4-5"},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			cmd := exec.Command("node", tt.script)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "EDGE_URL=http://"+e.sys.EdgeAddr, "EDGE_KEY="+key, "EDGE_MODEL="+tt.model)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("node %s: %v\n%s", tt.script, err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			var got struct {
				Model     string         `json:"model"`
				Text      string         `json:"text"`
				Usage     map[string]any `json:"usage"`
				AuthError string         `json:"authError"`
				Stream    struct {
					Text   string         `json:"text"`
					Usage  map[string]any `json:"usage"`
					Chunks int            `json:"chunks"`
				} `json:"stream"`
				CutError string `json:"cutError"`
			}
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
				t.Fatalf("node %s printed %q: %v", tt.script, out, err)
			}
			if got.Model != tt.wantModel || got.Text == "" || got.AuthError != "AuthenticationError" {
				t.Fatalf("%s: %+v", tt.script, got)
			}
			if got.Stream.Text == "" || got.Stream.Chunks < 1 || len(got.Stream.Usage) == 0 {
				t.Fatalf("%s: stream %+v", tt.script, got.Stream)
			}
			if got.CutError == "" {
				t.Fatalf("%s: a cut stream raised no error", tt.script)
			}
			t.Logf("%s: %s", tt.script, lines[len(lines)-1])
		})
	}
}

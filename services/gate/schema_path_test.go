package gate

import (
	"os"
	"strings"
	"testing"
)

// TestSchemaMessagesShowNoServerPath: the gate's schema check names no
// file URL or working directory in the message a client reads.
func TestSchemaMessagesShowNoServerPath(t *testing.T) {
	cwd, _ := os.Getwd()
	err := validateSchema([]byte(`{"type":"object","required":["a"]}`), `{"b":1}`)
	if err == nil {
		t.Fatal("content without the required field passed")
	}
	if msg := err.Error(); strings.Contains(msg, "file:") || strings.Contains(msg, cwd) {
		t.Fatalf("message shows a server path: %s", msg)
	}
}
